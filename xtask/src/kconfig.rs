//! Kconfig fragment parsing and verification of a final `.config` against fragments.
//!
//! `merge_config.sh` + `olddefconfig` silently drop settings whose dependencies are not met, so
//! after configuring we check that every line of every fragment survived.

use std::collections::BTreeMap;
use std::fmt;

/// One requested setting from a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Symbol name including the `CONFIG_` prefix.
    pub name: String,
    /// Requested value (`y`, `m`, a number or a quoted string); `None` means "not set" (`=n` or
    /// `# CONFIG_X is not set`).
    pub value: Option<String>,
    /// 1-based line number in the fragment, for error messages.
    pub line: usize,
}

/// A fragment line that is neither a setting, a comment nor blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// The offending text.
    pub text: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: expected CONFIG_X=value, `# CONFIG_X is not set`, a comment or a blank \
             line (no trailing comments), got `{}`",
            self.line, self.text
        )
    }
}

fn parse_not_set(line: &str) -> Option<&str> {
    let name = line.strip_prefix("# ")?.strip_suffix(" is not set")?;
    (name.starts_with("CONFIG_") && is_symbol(name)).then_some(name)
}

fn is_symbol(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses a fragment (or a full `.config`).
pub fn parse_fragment(text: &str) -> Result<Vec<Setting>, ParseError> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let trimmed = raw.trim_end();
        if let Some(name) = parse_not_set(trimmed) {
            out.push(Setting {
                name: name.to_owned(),
                value: None,
                line,
            });
            continue;
        }
        if trimmed.trim_start().is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        let err = || ParseError {
            line,
            text: raw.to_owned(),
        };
        let (name, value) = trimmed.split_once('=').ok_or_else(err)?;
        if !name.starts_with("CONFIG_") || !is_symbol(name) || value.is_empty() {
            return Err(err());
        }
        // Kconfig has no trailing comments: `CONFIG_X=y # why` would be read as a bad value.
        let unquoted_tail = if value.starts_with('"') {
            value.len() < 2 || !value.ends_with('"')
        } else {
            value.contains(char::is_whitespace) || value.contains('#')
        };
        if unquoted_tail {
            return Err(err());
        }
        out.push(Setting {
            name: name.to_owned(),
            value: (value != "n").then(|| value.to_owned()),
            line,
        });
    }
    Ok(out)
}

/// Parses a final `.config` into symbol → value; "is not set" symbols are omitted.
pub fn parse_dotconfig(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A requested setting that the final configuration does not honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Fragment file name (for the message).
    pub fragment: String,
    /// The request.
    pub wanted: Setting,
    /// Value in the final `.config`, `None` if absent or not set.
    pub got: Option<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "n (unset)".to_owned());
        write!(
            f,
            "{}:{}: {} wanted {}, final .config has {}",
            self.fragment,
            self.wanted.line,
            self.wanted.name,
            show(&self.wanted.value),
            show(&self.got)
        )
    }
}

/// Checks every setting of `fragment` against the final configuration. When a symbol appears
/// more than once in the fragment, the last occurrence wins (as in `merge_config.sh`).
pub fn verify(
    fragment_name: &str,
    fragment: &[Setting],
    final_config: &BTreeMap<String, String>,
) -> Vec<Mismatch> {
    let mut last: BTreeMap<&str, &Setting> = BTreeMap::new();
    for s in fragment {
        last.insert(&s.name, s);
    }
    let mut wanted: Vec<&Setting> = last.into_values().collect();
    wanted.sort_by_key(|s| s.line);
    wanted
        .into_iter()
        .filter_map(|s| {
            let got = final_config.get(&s.name).filter(|v| v.as_str() != "n");
            (got != s.value.as_ref()).then(|| Mismatch {
                fragment: fragment_name.to_owned(),
                wanted: s.clone(),
                got: got.cloned(),
            })
        })
        .collect()
}

/// Escapes a string for a Kconfig string value (`"..."`).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAG: &str = "\
# comment
CONFIG_A=y

  # indented comment
CONFIG_B=n
# CONFIG_C is not set
CONFIG_NR=4
CONFIG_S=\"hello world\"
CONFIG_A=y
";

    #[test]
    fn parses_all_forms() {
        let s = parse_fragment(FRAG).expect("valid fragment");
        let names: Vec<_> = s
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("CONFIG_A", Some("y")),
                ("CONFIG_B", None),
                ("CONFIG_C", None),
                ("CONFIG_NR", Some("4")),
                ("CONFIG_S", Some("\"hello world\"")),
                ("CONFIG_A", Some("y")),
            ]
        );
        assert_eq!(s[1].line, 5);
    }

    #[test]
    fn rejects_trailing_comments_and_junk() {
        assert_eq!(
            parse_fragment("CONFIG_A=y # why\n")
                .expect_err("trailing comment")
                .line,
            1
        );
        assert!(parse_fragment("\nFOO=y\n").is_err());
        assert!(parse_fragment("CONFIG_A\n").is_err());
        assert!(parse_fragment("CONFIG_A=\n").is_err());
        assert!(parse_fragment("CONFIG_S=\"open\n").is_err());
    }

    #[test]
    fn verification_reports_mismatches() {
        let frag = parse_fragment(FRAG).expect("valid fragment");
        let good = parse_dotconfig(
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_NR=4\nCONFIG_S=\"hello world\"\nCONFIG_Z=y\n",
        );
        assert!(verify("f", &frag, &good).is_empty());

        let bad = parse_dotconfig("CONFIG_B=y\nCONFIG_C=m\nCONFIG_NR=8\n");
        let m = verify("f", &frag, &bad);
        let got: Vec<_> = m.iter().map(|m| m.wanted.name.as_str()).collect();
        assert_eq!(
            got,
            ["CONFIG_B", "CONFIG_C", "CONFIG_NR", "CONFIG_S", "CONFIG_A"]
        );
        assert_eq!(
            m[2].to_string(),
            "f:7: CONFIG_NR wanted 4, final .config has 8"
        );
        assert_eq!(
            m[4].to_string(),
            "f:9: CONFIG_A wanted y, final .config has n (unset)"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("/a/b.list"), "\"/a/b.list\"");
        assert_eq!(quote("a\"b\\"), "\"a\\\"b\\\\\"");
    }
}
