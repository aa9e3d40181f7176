//! The command line of `kaosctl group …` and `kaosctl image …` (protocol 1.4), and the checks
//! that turn `--set key=value` flags into a group's values. Each error names the flag or key at
//! fault; the module's schema (types, required keys) is checked by the host.

use clap::Subcommand;
use kaos_protocol::{
    GROUP_KEY_MAX, GROUP_VALUE_MAX, GroupValue, MAX_GROUP_VALUES, MAX_INSTANCES, VM_VCPUS_MAX,
};
use kaosctl::config::ConfigError;

/// `group` verbs. Changing verbs need the operator role.
#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Define a configuration group: values for one App Module's schema, e.g.
    /// `group create web --module httpd --set port=8080`. Keys left out take the schema's
    /// default; the host checks every value against the key's type.
    Create {
        /// Name: 1-32 of a-z 0-9 -.
        name: String,
        /// The App Module whose schema the group follows.
        #[arg(long, value_name = "MODULE")]
        module: String,
        /// A value, as text (repeatable, each key once).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
    },
    /// Every group: its module, how many values it sets, how many images use it.
    List,
    /// One group and its values.
    Show {
        /// The group.
        name: String,
    },
    /// Set and unset values, all together or none. Instances see the change at their next
    /// start.
    Edit {
        /// The group.
        name: String,
        /// Set (or replace) a value (repeatable, each key once).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// Unset a value: the key goes back to the schema's default (repeatable).
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Delete a group that no image uses.
    Delete {
        /// The group.
        name: String,
    },
}

/// `image` verbs. Changing verbs need the operator role.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Define a VM image: the platform, App Modules and groups every instance boots, and its
    /// size, e.g. `image create web --module httpd --group web --vcpus 1 --memory 128M
    /// --vlan 10`.
    Create {
        /// Name: 1-29 of a-z 0-9 - (instances are named NAME-1, NAME-2, …).
        name: String,
        /// An App Module (repeatable; started in the order given).
        #[arg(long = "module", value_name = "MODULE", required = true)]
        modules: Vec<String>,
        /// A configuration group of one of the modules (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Virtual CPUs per instance (1-8).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=i64::from(VM_VCPUS_MAX)))]
        vcpus: u8,
        /// Guest RAM per instance: MiB, or a number with M or G (e.g. 128M, 1G).
        #[arg(long, value_parser = crate::args::memory_mib)]
        memory: u32,
        /// The VLAN of each instance's one NIC (its address from the VLAN's pool, the modules'
        /// ports published) [default: no NIC].
        #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u16).range(1..=4094))]
        vlan: Option<u16>,
        /// The platform module instances boot.
        #[arg(long, default_value = "vkaos")]
        platform: String,
        /// Added to each instance's kernel command line (e.g. "quiet").
        #[arg(long, default_value = "")]
        cmdline: String,
    },
    /// Every image: platform, modules, size, VLAN, instances.
    List,
    /// One image: its definition and its instances (state, address).
    Show {
        /// The image.
        name: String,
    },
    /// Delete an image that has no instances (deploy it with --count 0 first).
    Delete {
        /// The image.
        name: String,
    },
    /// Make the image have exactly N instances, NAME-1 to NAME-N: missing ones are created and
    /// started (all or none), ones beyond N destroyed, stopped ones started. Prints the
    /// instances.
    Deploy {
        /// The image.
        name: String,
        /// Instances wanted (0-32).
        #[arg(long, value_parser = clap::value_parser!(u16).range(0..=i64::from(MAX_INSTANCES)))]
        count: u16,
    },
}

/// `--set KEY=VALUE`: split at the first `=`; the key must not be empty, the value may be.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?}: expected KEY=VALUE, e.g. port=8080")),
    }
}

fn key(key: &str) -> Result<heapless::String<GROUP_KEY_MAX>, ConfigError> {
    let bounded = kaos_protocol::truncated::<GROUP_KEY_MAX>(key);
    if bounded.len() != key.len() {
        return Err(ConfigError::Usage(format!(
            "key {key:?} is longer than {GROUP_KEY_MAX} bytes"
        )));
    }
    Ok(bounded)
}

fn too_many(flag: &str, given: usize) -> ConfigError {
    ConfigError::Usage(format!(
        "{given} {flag} flags: a group holds at most {MAX_GROUP_VALUES} values"
    ))
}

/// The values of `--set` flags as a group holds them: sorted by key, each key once, each
/// within the protocol's bounds.
pub fn group_values(
    set: &[(String, String)],
) -> Result<heapless::Vec<GroupValue, MAX_GROUP_VALUES>, ConfigError> {
    if set.len() > MAX_GROUP_VALUES {
        return Err(too_many("--set", set.len()));
    }
    let mut sorted: Vec<&(String, String)> = set.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(twice) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ConfigError::Usage(format!(
            "--set: key {:?} is given twice",
            twice[0].0
        )));
    }
    let mut values = heapless::Vec::new();
    for (k, v) in sorted {
        let value = kaos_protocol::truncated::<GROUP_VALUE_MAX>(v);
        if value.len() != v.len() {
            return Err(ConfigError::Usage(format!(
                "--set {k}: the value is {} bytes, at most {GROUP_VALUE_MAX} fit",
                v.len()
            )));
        }
        values
            .push(GroupValue {
                key: key(k)?,
                value,
            })
            .map_err(|_| too_many("--set", set.len()))?;
    }
    Ok(values)
}

/// The keys of `--unset` flags: each once, none also given to `--set`.
pub fn unset_keys(
    unset: &[String],
    set: &[(String, String)],
) -> Result<heapless::Vec<heapless::String<GROUP_KEY_MAX>, MAX_GROUP_VALUES>, ConfigError> {
    let mut keys = heapless::Vec::new();
    for (i, k) in unset.iter().enumerate() {
        if k.is_empty() {
            return Err(ConfigError::Usage("--unset: a key is empty".into()));
        }
        if unset[..i].contains(k) {
            return Err(ConfigError::Usage(format!(
                "--unset: key {k:?} is given twice"
            )));
        }
        if set.iter().any(|(s, _)| s == k) {
            return Err(ConfigError::Usage(format!(
                "key {k:?} is given to both --set and --unset"
            )));
        }
        keys.push(key(k)?)
            .map_err(|_| too_many("--unset", unset.len()))?;
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn usage(e: ConfigError) -> String {
        match e {
            ConfigError::Usage(m) => m,
            other => panic!("not a usage error: {other}"),
        }
    }

    #[test]
    fn set_flags_split_at_the_first_equals_sign() {
        assert_eq!(key_value("port=8080"), Ok(("port".into(), "8080".into())));
        assert_eq!(key_value("motd=a=b"), Ok(("motd".into(), "a=b".into())));
        assert_eq!(key_value("motd="), Ok(("motd".into(), String::new())));
        for bad in ["port", "=8080", ""] {
            let e = key_value(bad).expect_err(bad);
            assert!(e.contains("KEY=VALUE"), "{bad}: {e}");
        }
    }

    #[test]
    fn values_are_sorted_and_each_key_is_given_once() {
        let values = group_values(&kv(&[("port", "80"), ("greeting", "hi")])).expect("valid");
        let keys: Vec<&str> = values.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, ["greeting", "port"]);
        let e = usage(group_values(&kv(&[("a", "1"), ("b", "2"), ("a", "3")])).expect_err("twice"));
        assert!(e.contains("\"a\" is given twice"), "{e}");
    }

    #[test]
    fn over_long_values_and_keys_are_named() {
        let long = "v".repeat(GROUP_VALUE_MAX + 1);
        let e = usage(group_values(&kv(&[("motd", &long)])).expect_err("too long"));
        assert!(e.contains("--set motd") && e.contains("257 bytes"), "{e}");
        let at_max = "v".repeat(GROUP_VALUE_MAX);
        assert!(group_values(&kv(&[("motd", &at_max)])).is_ok());
        let long_key = "k".repeat(GROUP_KEY_MAX + 1);
        let e = usage(group_values(&kv(&[(&long_key, "1")])).expect_err("long key"));
        assert!(e.contains(&long_key) && e.contains("longer than 64"), "{e}");
        let many: Vec<(String, String)> = (0..=MAX_GROUP_VALUES)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        let e = usage(group_values(&many).expect_err("too many"));
        assert!(e.contains("at most 16"), "{e}");
    }

    #[test]
    fn unset_keys_are_distinct_from_each_other_and_from_set() {
        let set = kv(&[("port", "80")]);
        let keys = unset_keys(&["motd".into()], &set).expect("valid");
        assert_eq!(keys[0].as_str(), "motd");
        let e = usage(unset_keys(&["port".into()], &set).expect_err("both"));
        assert!(e.contains("both --set and --unset"), "{e}");
        let e = usage(unset_keys(&["a".into(), "a".into()], &[]).expect_err("twice"));
        assert!(e.contains("twice"), "{e}");
        assert!(unset_keys(&[String::new()], &[]).is_err());
    }
}
