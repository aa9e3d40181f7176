//! The command line, the instance name and the greeting from the rendered configuration group.

use std::path::{Path, PathBuf};

/// Where the guest renders this module's configuration groups.
pub const CONFIG_DIR: &str = "/etc/kaos/httpd";
/// Without a configured greeting.
pub const DEFAULT_GREETING: &str = "hello from KaOS";
/// Longest greeting kept (a module's string values are at most 1 KiB).
const MAX_GREETING: usize = 1024;

/// Parsed command line.
#[derive(Debug, Default)]
pub struct Options {
    /// `--listen`.
    pub listen: String,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--name`.
    pub name: Option<String>,
}

impl Options {
    /// Parses `args` (without the program name).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self {
            listen: "0.0.0.0:80".into(),
            ..Self::default()
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--listen" => o.listen = value()?,
                "--config" => o.config = Some(value()?.into()),
                "--name" => o.name = Some(value()?),
                other => {
                    return Err(format!(
                        "unknown argument {other:?} (usage: httpd [--listen ADDR:PORT] \
                         [--config FILE] [--name NAME])"
                    ));
                }
            }
        }
        Ok(o)
    }
}

/// `kaos.name=` from the kernel command line, else the host name, else `kaos`.
pub fn instance_name() -> String {
    std::fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|line| cmdline_name(&line))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "kaos".into())
}

/// The value of `kaos.name=` in a kernel command line.
pub fn cmdline_name(cmdline: &str) -> Option<String> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("kaos.name="))
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// The greeting from `path`, else from the first `*.toml` in [`CONFIG_DIR`], else the default.
pub fn greeting(path: Option<&Path>) -> String {
    let file = path.map(Path::to_path_buf).or_else(first_group);
    let Some(file) = file else {
        return DEFAULT_GREETING.into();
    };
    match std::fs::read_to_string(&file) {
        Ok(text) => greeting_in(&text).unwrap_or_else(|| DEFAULT_GREETING.into()),
        Err(e) => {
            eprintln!("httpd: {}: {e}; using the default greeting", file.display());
            DEFAULT_GREETING.into()
        }
    }
}

fn first_group() -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(CONFIG_DIR)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files.into_iter().next()
}

/// `greeting = "..."` in a rendered group (TOML: a basic string, with `\"`, `\\`, `\n`, `\t`
/// and `\uXXXX` escapes). Other lines are ignored; a malformed value is no greeting.
pub fn greeting_in(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "greeting").then(|| basic_string(value.trim()))?
    })
}

fn basic_string(value: &str) -> Option<String> {
    let inner = value.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let rest = chars.as_str().trim_start();
                return (rest.is_empty() || rest.starts_with('#')).then_some(out);
            }
            '\\' => out.push(match chars.next()? {
                '"' => '"',
                '\\' => '\\',
                'n' => '\n',
                't' => '\t',
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                }
                _ => return None,
            }),
            c => out.push(c),
        }
        if out.len() > MAX_GREETING {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_from_a_rendered_group() {
        assert_eq!(
            greeting_in("# group web\nport = 80\ngreeting = \"hi \\\"you\\\" \\u00e9\" # c\n"),
            Some("hi \"you\" é".into())
        );
        assert_eq!(greeting_in("port = 80\n"), None);
        assert_eq!(greeting_in("greeting = 'literal'\n"), None);
        assert_eq!(greeting_in("greeting = \"open\n"), None);
        assert_eq!(greeting_in("greeting = \"a\" b\n"), None);
        assert_eq!(greeting_in("greeting = \"\\q\"\n"), None);
        assert_eq!(greeting_in("greeting = \"\\u12\"\n"), None);
        let long = format!("greeting = \"{}\"\n", "a".repeat(2000));
        assert_eq!(greeting_in(&long), None);
    }

    #[test]
    fn name_and_options() {
        assert_eq!(
            cmdline_name("console=ttyS0 kaos.role=guest kaos.name=web-2 quiet"),
            Some("web-2".into())
        );
        assert_eq!(cmdline_name("kaos.name= x"), None);
        let args = ["--listen", "127.0.0.1:0", "--name", "n"].map(String::from);
        let o = Options::parse(&args).expect("valid");
        assert_eq!(
            (o.listen.as_str(), o.name.as_deref()),
            ("127.0.0.1:0", Some("n"))
        );
        assert!(Options::parse(&["--config".into()]).is_err());
        assert!(Options::parse(&["-x".into()]).is_err());
    }
}
