//! What crosses between a host and its guests about App Modules, from either side:
//!
//! - a console line from a guest (untrusted) through the host's `report::parse`;
//! - the plan the host hands a guest (`plan::decode`, bounded, format first);
//! - a configuration group's `key=value` text from a client, held against a schema with every
//!   type (`group::resolve`, `group::parse_text`), and rendered as the guest renders it.
//!
//! None may panic; what is accepted is consistent: a parsed report names valid module and
//! entrypoint names and prints back to a line that parses the same; a resolved group has one
//! value per schema key, each of its key's type, and renders one TOML line per key.
#![no_main]

use kaos_module::manifest::{App, ConfigKey, ConfigType, ConfigValue};
use kaos_module::{group, manifest, plan, report};
use libfuzzer_sys::fuzz_target;

fn schema() -> App {
    let key = |k: &str, ty, default| ConfigKey {
        key: k.into(),
        ty,
        default,
        description: String::new(),
    };
    App {
        config: vec![
            key("greeting", ConfigType::String, Some(ConfigValue::String("hi".into()))),
            key("port", ConfigType::Port, None),
            key("debug", ConfigType::Bool, Some(ConfigValue::Bool(false))),
            key("peer", ConfigType::Ipv4, None),
            key("workers", ConfigType::Int, Some(ConfigValue::Int(1))),
        ],
        ..App::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Some((module, entrypoint, r)) = report::parse(rest) {
                assert!(manifest::check_name("", &module).is_ok());
                assert!(manifest::check_name("", &entrypoint).is_ok());
                let again = format!(
                    "{}{}",
                    report::PREFIX,
                    report::line(&module, &entrypoint, &r, "not restarted")
                );
                assert_eq!(
                    report::parse(again.as_bytes()),
                    Some((module, entrypoint, r))
                );
            }
        }
        1 => {
            if let Ok(p) = plan::decode(rest) {
                assert_eq!(p.format, plan::PLAN_FORMAT);
                assert_eq!(plan::decode(&plan::encode(&p)), Ok(p));
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let pairs: Vec<(String, String)> = text
                .lines()
                .take(32)
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let app = schema();
            for (_, v) in &pairs {
                for c in &app.config {
                    if let Ok(value) = group::parse_text(c.ty, v) {
                        assert_eq!(value.ty(), c.ty);
                    }
                }
            }
            if let Ok(values) = group::resolve(&app, &pairs) {
                assert_eq!(values.len(), app.config.len());
                for ((key, value), c) in values.iter().zip(&app.config) {
                    assert_eq!((key, value.ty()), (&c.key, c.ty));
                }
                let toml = group::render_toml("m", "g", &values);
                assert_eq!(toml.lines().count(), values.len() + 1, "{toml}");
            }
        }
    }
});
