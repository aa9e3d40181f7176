//! Configuration groups: named values for one App Module's schema, checked on the host when a
//! group is created or edited and rendered inside the guest as TOML
//! (`/etc/kaos/<module>/<group>.toml`).
//!
//! Values are typed text (`--set key=value` as the operator typed it). [`parse_text`] is the
//! one place a text becomes a [`ConfigValue`], and [`resolve`] the one place a group is held
//! against a schema, so the host's refusal and the guest's rendering cannot disagree.

use crate::manifest::{App, ConfigType, ConfigValue};

/// Most bytes of a string value.
pub const MAX_STRING: usize = 256;

/// A group that does not fit its module's schema: the key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct GroupError {
    /// The key at fault.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

fn error(key: &str, reason: impl Into<String>) -> GroupError {
    GroupError {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// `text` as a value of type `ty`: a string as is (at most [`MAX_STRING`] bytes, no control
/// characters), an `int` in decimal, a `bool` as `true`/`false`, a `port` as 1–65535, an
/// `ipv4` as `a.b.c.d`. The error says what was expected.
pub fn parse_text(ty: ConfigType, text: &str) -> Result<ConfigValue, String> {
    let expected = || format!("{text:?} is not {}", describe(ty));
    match ty {
        ConfigType::String => {
            if text.len() > MAX_STRING || text.contains(char::is_control) {
                return Err(format!(
                    "a string of at most {MAX_STRING} bytes without control characters"
                ));
            }
            Ok(ConfigValue::String(text.to_owned()))
        }
        ConfigType::Int => text.parse().map(ConfigValue::Int).map_err(|_| expected()),
        ConfigType::Bool => match text {
            "true" => Ok(ConfigValue::Bool(true)),
            "false" => Ok(ConfigValue::Bool(false)),
            _ => Err(expected()),
        },
        ConfigType::Port => text
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .map(ConfigValue::Port)
            .ok_or_else(expected),
        ConfigType::Ipv4 => text
            .parse::<core::net::Ipv4Addr>()
            .map(|a| ConfigValue::Ipv4(a.octets()))
            .map_err(|_| expected()),
    }
}

fn describe(ty: ConfigType) -> &'static str {
    match ty {
        ConfigType::String => "a string",
        ConfigType::Int => "an integer (type int)",
        ConfigType::Bool => "true or false (type bool)",
        ConfigType::Port => "a port number 1-65535 (type port)",
        ConfigType::Ipv4 => "an IPv4 address a.b.c.d (type ipv4)",
    }
}

/// Holds `set` (key, text) against `app`'s schema: every key must be in it, once, with a value
/// of its type, and every key without a default must be set. Returns every key of the schema,
/// in schema order, with its value (set, or the default).
pub fn resolve(
    app: &App,
    set: &[(String, String)],
) -> Result<Vec<(String, ConfigValue)>, GroupError> {
    for (i, (key, _)) in set.iter().enumerate() {
        if !app.config.iter().any(|c| &c.key == key) {
            let known: Vec<&str> = app.config.iter().map(|c| c.key.as_str()).collect();
            return Err(error(
                key,
                if known.is_empty() {
                    "not a key of the module's schema (it has none)".to_owned()
                } else {
                    format!("not a key of the module's schema ({})", known.join(", "))
                },
            ));
        }
        if set[..i].iter().any(|(k, _)| k == key) {
            return Err(error(key, "set twice"));
        }
    }
    let mut out = Vec::with_capacity(app.config.len());
    for c in &app.config {
        let value = match set.iter().find(|(k, _)| *k == c.key) {
            Some((_, text)) => parse_text(c.ty, text).map_err(|e| error(&c.key, e))?,
            None => c
                .default
                .clone()
                .ok_or_else(|| error(&c.key, "has no default and must be set"))?,
        };
        out.push((c.key.clone(), value));
    }
    Ok(out)
}

/// A group rendered as TOML: a comment naming it, then `key = value` per key, in order.
/// Strings are TOML basic strings (quotes, backslashes and control characters escaped), IPv4
/// addresses strings, the rest bare.
pub fn render_toml(module: &str, group: &str, values: &[(String, ConfigValue)]) -> String {
    use core::fmt::Write as _;
    let mut out = format!("# configuration group {group:?} of module {module:?}\n");
    for (key, value) in values {
        let _ = match value {
            ConfigValue::String(s) => writeln!(out, "{key} = {}", toml_string(s)),
            ConfigValue::Ipv4([a, b, c, d]) => writeln!(out, "{key} = \"{a}.{b}.{c}.{d}\""),
            ConfigValue::Int(i) => writeln!(out, "{key} = {i}"),
            ConfigValue::Bool(b) => writeln!(out, "{key} = {b}"),
            ConfigValue::Port(p) => writeln!(out, "{key} = {p}"),
        };
    }
    out
}

fn toml_string(s: &str) -> String {
    use core::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ConfigKey;

    fn app() -> App {
        let key = |key: &str, ty, default| ConfigKey {
            key: key.into(),
            ty,
            default,
            description: String::new(),
        };
        App {
            config: vec![
                key(
                    "greeting",
                    ConfigType::String,
                    Some(ConfigValue::String("hi".into())),
                ),
                key("port", ConfigType::Port, None),
                key("debug", ConfigType::Bool, Some(ConfigValue::Bool(false))),
                key(
                    "peer",
                    ConfigType::Ipv4,
                    Some(ConfigValue::Ipv4([1, 2, 3, 4])),
                ),
                key("workers", ConfigType::Int, Some(ConfigValue::Int(-2))),
            ],
            ..App::default()
        }
    }

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn values_are_parsed_by_their_schema_type() {
        assert_eq!(
            parse_text(ConfigType::Port, "8080"),
            Ok(ConfigValue::Port(8080))
        );
        assert_eq!(
            parse_text(ConfigType::Ipv4, "10.0.0.1"),
            Ok(ConfigValue::Ipv4([10, 0, 0, 1]))
        );
        assert_eq!(parse_text(ConfigType::Int, "-7"), Ok(ConfigValue::Int(-7)));
        assert_eq!(
            parse_text(ConfigType::Bool, "true"),
            Ok(ConfigValue::Bool(true))
        );
        for (ty, bad) in [
            (ConfigType::Port, "0"),
            (ConfigType::Port, "65536"),
            (ConfigType::Port, "http"),
            (ConfigType::Int, "1.5"),
            (ConfigType::Bool, "yes"),
            (ConfigType::Ipv4, "10.0.0"),
            (ConfigType::String, "a\nb"),
        ] {
            assert!(parse_text(ty, bad).is_err(), "{ty:?} {bad:?}");
        }
        let long = "x".repeat(MAX_STRING + 1);
        assert!(parse_text(ConfigType::String, &long).is_err());
    }

    #[test]
    fn resolve_fills_defaults_and_names_what_is_wrong() {
        let all = resolve(&app(), &set(&[("port", "81"), ("greeting", "hey")])).expect("valid");
        assert_eq!(
            all,
            vec![
                ("greeting".into(), ConfigValue::String("hey".into())),
                ("port".into(), ConfigValue::Port(81)),
                ("debug".into(), ConfigValue::Bool(false)),
                ("peer".into(), ConfigValue::Ipv4([1, 2, 3, 4])),
                ("workers".into(), ConfigValue::Int(-2)),
            ]
        );
        let missing = resolve(&app(), &[]).expect_err("port has no default");
        assert_eq!(missing.key, "port");
        let unknown =
            resolve(&app(), &set(&[("port", "1"), ("colour", "red")])).expect_err("unknown key");
        assert_eq!(unknown.key, "colour");
        assert!(unknown.reason.contains("greeting, port"), "{unknown}");
        let twice = resolve(&app(), &set(&[("port", "1"), ("port", "2")])).expect_err("twice");
        assert_eq!(twice.reason, "set twice");
        let typed = resolve(&app(), &set(&[("port", "eighty")])).expect_err("not a port");
        assert!(
            typed
                .to_string()
                .starts_with("port: \"eighty\" is not a port"),
            "{typed}"
        );
    }

    #[test]
    fn rendering_is_valid_toml_with_escapes() {
        let values = vec![
            (
                "greeting".into(),
                ConfigValue::String("say \"hi\" \\ \u{1}".into()),
            ),
            ("port".into(), ConfigValue::Port(80)),
            ("peer".into(), ConfigValue::Ipv4([10, 0, 0, 1])),
            ("debug".into(), ConfigValue::Bool(true)),
            ("workers".into(), ConfigValue::Int(-3)),
        ];
        let text = render_toml("httpd", "web", &values);
        assert_eq!(
            text,
            "# configuration group \"web\" of module \"httpd\"\n\
             greeting = \"say \\\"hi\\\" \\\\ \\u0001\"\n\
             port = 80\n\
             peer = \"10.0.0.1\"\n\
             debug = true\n\
             workers = -3\n"
        );
    }
}
