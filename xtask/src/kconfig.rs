//! Kconfig fragment parsing, profile includes, and verification of a final `.config` against
//! fragments.
//!
//! A profile may start with `#include <name>.config` lines: each names a fragment in the same
//! directory that is merged *before* the profile (recursively, each file once, cycles are
//! errors). To Kconfig and `merge_config.sh` the directive is just a comment; xtask resolves it
//! ([`resolve_profile`]) and hands the files to `merge_config.sh` in merge order.
//!
//! A profile may also say what it builds with one `#kind host` or `#kind guest` line at its top
//! ([`ProfileKind`]; default `host`). Only the profile itself may say it, not a file it includes:
//! the kind decides what xtask wraps around the kernel, which is a property of the profile.
//!
//! `merge_config.sh` + `olddefconfig` silently drop settings whose dependencies are not met, so
//! after configuring we check that every line of every fragment survived ([`verify_layers`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

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

/// A fragment line that is neither a setting, an include, a comment nor blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// The offending text.
    pub text: String,
    /// What is wrong with it.
    pub kind: ParseErrorKind,
}

/// Why a fragment line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Not a setting, a comment or a blank line.
    Setting,
    /// `#include` with anything but one plain `<name>.config` file name.
    Include,
    /// `#include` after the first setting: includes are merged first, so they go at the top.
    IncludeAfterSetting,
    /// `#include` in a fragment that cannot have includes (xtask's generated one).
    IncludeNotAllowed,
    /// `#kind` with anything but `host` or `guest`, twice, or after the first setting.
    Kind,
    /// `#kind` in a file that is included, not built.
    KindNotAllowed,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expected = match self.kind {
            ParseErrorKind::Setting => {
                "expected CONFIG_X=value, `# CONFIG_X is not set`, `#include <name>.config`, a \
                 comment or a blank line (no trailing comments)"
            }
            ParseErrorKind::Include => {
                "expected `#include <name>.config` naming one file in the same directory \
                 (letters, digits, `-`, `_`)"
            }
            ParseErrorKind::IncludeAfterSetting => {
                "`#include` must come before the first setting (included files are merged \
                 first)"
            }
            ParseErrorKind::IncludeNotAllowed => "this fragment cannot include others",
            ParseErrorKind::Kind => {
                "expected one `#kind host` or `#kind guest` line, before the first setting"
            }
            ParseErrorKind::KindNotAllowed => {
                "only the profile that is built may say its `#kind`, not a file it includes"
            }
        };
        write!(f, "line {}: {expected}, got `{}`", self.line, self.text)
    }
}

/// `Some(argument)` when `line` is the directive `#<word>` (then whitespace or the end of the
/// line).
fn directive<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix('#')?.strip_prefix(word)?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim())
}

/// What a profile builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProfileKind {
    /// A host image: the kernel with kattach as its built-in initramfs (`kaos-<profile>.bzImage`).
    #[default]
    Host,
    /// A vKaOS guest platform: the kernel alone, without a built-in initramfs (the VMM hands the
    /// guest its initrd), packed as a platform module (`vkaos-<release>.aqi`).
    Guest,
}

impl ProfileKind {
    fn parse(word: &str) -> Option<Self> {
        match word {
            "host" => Some(Self::Host),
            "guest" => Some(Self::Guest),
            _ => None,
        }
    }
}

/// An `#include` directive of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The file name (`base-x86_64.config`), relative to the including file's directory.
    pub file: String,
    /// 1-based line number of the directive.
    pub line: usize,
}

/// A parsed fragment file: its kind and includes (all before its first setting) and its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The `#kind` directive and its line, if the file has one.
    pub kind: Option<(ProfileKind, usize)>,
    /// `#include` directives, in order.
    pub includes: Vec<Include>,
    /// Settings, in order.
    pub settings: Vec<Setting>,
}

/// Profile and include names: letters, digits, `-` and `_` (so never a path).
pub fn is_profile_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_not_set(line: &str) -> Option<&str> {
    let name = line.strip_prefix("# ")?.strip_suffix(" is not set")?;
    (name.starts_with("CONFIG_") && is_symbol(name)).then_some(name)
}

fn is_symbol(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses a fragment: `#kind host|guest` (once) and `#include <name>.config` lines (only before
/// the first setting, one plain file name each), `CONFIG_X=value`, `CONFIG_X=n` /
/// `# CONFIG_X is not set`, comments and blank lines.
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let mut out = Parsed::default();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let trimmed = raw.trim_end();
        let err = |kind| ParseError {
            line,
            text: raw.to_owned(),
            kind,
        };
        if let Some(word) = directive(trimmed, "kind") {
            let kind = ProfileKind::parse(word)
                .filter(|_| out.kind.is_none() && out.settings.is_empty())
                .ok_or_else(|| err(ParseErrorKind::Kind))?;
            out.kind = Some((kind, line));
            continue;
        }
        if let Some(file) = directive(trimmed, "include") {
            if !out.settings.is_empty() {
                return Err(err(ParseErrorKind::IncludeAfterSetting));
            }
            let stem = file.strip_suffix(".config").unwrap_or_default();
            if !is_profile_name(stem) {
                return Err(err(ParseErrorKind::Include));
            }
            out.includes.push(Include {
                file: file.to_owned(),
                line,
            });
            continue;
        }
        if let Some(name) = parse_not_set(trimmed) {
            out.settings.push(Setting {
                name: name.to_owned(),
                value: None,
                line,
            });
            continue;
        }
        if trimmed.trim_start().is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        let (name, value) = trimmed
            .split_once('=')
            .ok_or_else(|| err(ParseErrorKind::Setting))?;
        if !name.starts_with("CONFIG_") || !is_symbol(name) || value.is_empty() {
            return Err(err(ParseErrorKind::Setting));
        }
        // Kconfig has no trailing comments: `CONFIG_X=y # why` would be read as a bad value.
        let unquoted_tail = if value.starts_with('"') {
            value.len() < 2 || !value.ends_with('"')
        } else {
            value.contains(char::is_whitespace) || value.contains('#')
        };
        if unquoted_tail {
            return Err(err(ParseErrorKind::Setting));
        }
        out.settings.push(Setting {
            name: name.to_owned(),
            value: (value != "n").then(|| value.to_owned()),
            line,
        });
    }
    Ok(out)
}

/// Parses a fragment that must not include others (xtask's generated recipe fragment, tests).
pub fn parse_fragment(text: &str) -> Result<Vec<Setting>, ParseError> {
    let parsed = parse(text)?;
    if let Some((_, line)) = parsed.kind {
        return Err(ParseError {
            line,
            text: text.lines().nth(line - 1).unwrap_or_default().to_owned(),
            kind: ParseErrorKind::KindNotAllowed,
        });
    }
    if let Some(inc) = parsed.includes.first() {
        return Err(ParseError {
            line: inc.line,
            text: format!("#include {}", inc.file),
            kind: ParseErrorKind::IncludeNotAllowed,
        });
    }
    Ok(parsed.settings)
}

/// One file of a resolved profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The file.
    pub path: PathBuf,
    /// Its own settings (not those of its includes).
    pub settings: Vec<Setting>,
}

/// Why a profile's includes could not be resolved.
#[derive(Debug)]
pub enum IncludeError {
    /// A file could not be read; `from` is the including file and line (`None`: the profile).
    Read {
        /// The file.
        path: PathBuf,
        /// Who included it.
        from: Option<(PathBuf, usize)>,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A file has a malformed line.
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: ParseError,
    },
    /// A file (directly or indirectly) includes itself; the chain ends with the repeated file.
    Cycle {
        /// Include chain from the profile to the repeated file.
        chain: Vec<PathBuf>,
    },
}

impl fmt::Display for IncludeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, from, error } => {
                write!(f, "cannot read {}: {error}", path.display())?;
                if let Some((by, line)) = from {
                    write!(f, " (included from {}:{line})", by.display())?;
                }
                Ok(())
            }
            Self::Parse { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Cycle { chain } => {
                let names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
                write!(f, "include cycle: {}", names.join(" includes "))
            }
        }
    }
}

impl std::error::Error for IncludeError {}

/// Resolves `profile`'s includes into the layers `merge_config.sh` merges, in merge order: each
/// file's includes (recursively, in their order) before the file itself, so later layers
/// override earlier ones and the profile comes last. A file included more than once (a diamond)
/// is merged only the first time, so it cannot undo a later layer's overrides; a file including
/// itself, directly or not, is an error. `read` supplies file contents (the file system, or a
/// map in tests).
pub fn resolve_profile(
    profile: &Path,
    read: &mut dyn FnMut(&Path) -> std::io::Result<String>,
) -> Result<Vec<Layer>, IncludeError> {
    struct Walk<'a> {
        read: &'a mut dyn FnMut(&Path) -> std::io::Result<String>,
        stack: Vec<PathBuf>,
        done: BTreeSet<PathBuf>,
        out: Vec<Layer>,
    }
    impl Walk<'_> {
        fn visit(&mut self, path: &Path, from: Option<(&Path, usize)>) -> Result<(), IncludeError> {
            if self.stack.iter().any(|p| p == path) {
                let mut chain = self.stack.clone();
                chain.push(path.to_owned());
                return Err(IncludeError::Cycle { chain });
            }
            if self.done.contains(path) {
                return Ok(());
            }
            let text = (self.read)(path).map_err(|error| IncludeError::Read {
                path: path.to_owned(),
                from: from.map(|(p, l)| (p.to_owned(), l)),
                error,
            })?;
            let parsed = parse(&text).map_err(|error| IncludeError::Parse {
                path: path.to_owned(),
                error,
            })?;
            if let (Some((_, line)), Some(_)) = (parsed.kind, from) {
                return Err(IncludeError::Parse {
                    path: path.to_owned(),
                    error: ParseError {
                        line,
                        text: text.lines().nth(line - 1).unwrap_or_default().to_owned(),
                        kind: ParseErrorKind::KindNotAllowed,
                    },
                });
            }
            let dir = path.parent().unwrap_or(Path::new(""));
            self.stack.push(path.to_owned());
            for inc in &parsed.includes {
                self.visit(&dir.join(&inc.file), Some((path, inc.line)))?;
            }
            self.stack.pop();
            self.done.insert(path.to_owned());
            self.out.push(Layer {
                path: path.to_owned(),
                settings: parsed.settings,
            });
            Ok(())
        }
    }
    let mut walk = Walk {
        read,
        stack: Vec::new(),
        done: BTreeSet::new(),
        out: Vec::new(),
    };
    walk.visit(profile, None)?;
    Ok(walk.out)
}

/// A setting that repeats, with the same value, what an earlier layer already set: duplication
/// between a profile and its includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redundant {
    /// The repeating file and setting.
    pub path: PathBuf,
    /// The repeated setting.
    pub setting: Setting,
    /// The earlier file that set it first.
    pub first: PathBuf,
    /// Line there.
    pub first_line: usize,
}

/// Settings that repeat an earlier layer's value for the same symbol (overriding with a
/// different value is what layers are for and is not reported).
pub fn redundant(layers: &[Layer]) -> Vec<Redundant> {
    let mut current: BTreeMap<&str, (&Path, &Setting)> = BTreeMap::new();
    let mut out = Vec::new();
    for layer in layers {
        for s in &layer.settings {
            if let Some((first, earlier)) = current.get(s.name.as_str())
                && earlier.value == s.value
                && *first != layer.path.as_path()
            {
                out.push(Redundant {
                    path: layer.path.clone(),
                    setting: s.clone(),
                    first: first.to_path_buf(),
                    first_line: earlier.line,
                });
            }
            current.insert(&s.name, (&layer.path, s));
        }
    }
    out
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
    verify_layers(&[(fragment_name, fragment)], final_config)
}

/// Checks fragments merged in this order against the final configuration: for every symbol the
/// last setting wins (as in `merge_config.sh`), and is reported with its own fragment and line.
pub fn verify_layers(
    layers: &[(&str, &[Setting])],
    final_config: &BTreeMap<String, String>,
) -> Vec<Mismatch> {
    let mut last: BTreeMap<&str, (usize, &str, &Setting)> = BTreeMap::new();
    for (idx, (name, settings)) in layers.iter().enumerate() {
        for s in *settings {
            last.insert(&s.name, (idx, name, s));
        }
    }
    let mut wanted: Vec<(usize, &str, &Setting)> = last.into_values().collect();
    wanted.sort_by_key(|(idx, _, s)| (*idx, s.line));
    wanted
        .into_iter()
        .filter_map(|(_, fragment, s)| {
            let got = final_config.get(&s.name).filter(|v| v.as_str() != "n");
            (got != s.value.as_ref()).then(|| Mismatch {
                fragment: fragment.to_owned(),
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
    fn includes_go_at_the_top_and_name_one_file() {
        let p = parse("# profile\n#include base.config\n\n#include more_2.config\nCONFIG_A=y\n")
            .expect("valid");
        let files: Vec<_> = p
            .includes
            .iter()
            .map(|i| (i.file.as_str(), i.line))
            .collect();
        assert_eq!(files, [("base.config", 2), ("more_2.config", 4)]);
        assert_eq!(p.settings.len(), 1);

        let kind = |t: &str| parse(t).expect_err("invalid").kind;
        assert_eq!(
            kind("CONFIG_A=y\n#include base.config\n"),
            ParseErrorKind::IncludeAfterSetting
        );
        assert_eq!(
            kind("# CONFIG_A is not set\n#include base.config\n"),
            ParseErrorKind::IncludeAfterSetting
        );
        for bad in [
            "#include",
            "#include base",
            "#include ../base.config",
            "#include /etc/base.config",
            "#include <base.config>",
            "#include \"base.config\"",
            "#include a.config b.config",
            "#include .config",
        ] {
            assert_eq!(kind(bad), ParseErrorKind::Include, "{bad}");
        }
        // Not directives: ordinary comments.
        assert_eq!(
            parse("#included by x\n# include y\n"),
            Ok(Parsed::default())
        );
        // The generated fragment cannot include.
        assert_eq!(
            parse_fragment("#include base.config\n")
                .expect_err("no includes")
                .kind,
            ParseErrorKind::IncludeNotAllowed
        );
    }

    #[test]
    fn kind_is_one_directive_at_the_top() {
        let kind = |t: &str| parse(t).map(|p| p.kind);
        assert_eq!(kind("CONFIG_A=y\n"), Ok(None));
        assert_eq!(
            kind("# guest\n#kind guest\nCONFIG_A=y\n"),
            Ok(Some((ProfileKind::Guest, 2)))
        );
        assert_eq!(kind("#kind host\n"), Ok(Some((ProfileKind::Host, 1))));
        let bad = |t: &str| parse(t).expect_err("invalid").kind;
        for t in [
            "#kind",
            "#kind vm",
            "#kind guest host",
            "#kind guest\n#kind guest\n",
            "CONFIG_A=y\n#kind guest\n",
        ] {
            assert_eq!(bad(t), ParseErrorKind::Kind, "{t}");
        }
        // Not directives: ordinary comments.
        assert_eq!(kind("#kindly\n# kind guest\n"), Ok(None));
        assert_eq!(
            parse_fragment("#kind guest\nCONFIG_A=y\n")
                .expect_err("not in a fragment")
                .kind,
            ParseErrorKind::KindNotAllowed
        );
    }

    #[test]
    fn only_the_built_profile_says_its_kind() {
        let fs = [
            ("base.config", "#kind guest\nCONFIG_A=y\n"),
            ("p.config", "#include base.config\n"),
        ];
        let e = resolve_profile(Path::new("/p/p.config"), &mut files(&fs)).expect_err("kind");
        assert!(
            e.to_string()
                .starts_with("/p/base.config: line 1: only the profile"),
            "{e}"
        );
        let fs = [
            ("base.config", "CONFIG_A=y\n"),
            ("p.config", "#kind guest\n#include base.config\n"),
        ];
        resolve_profile(Path::new("/p/p.config"), &mut files(&fs)).expect("fine");
    }

    fn files<'a>(
        files: &'a [(&'a str, &'a str)],
    ) -> impl FnMut(&Path) -> std::io::Result<String> + 'a {
        |p: &Path| {
            files
                .iter()
                .find(|(n, _)| Path::new("/p").join(n) == p)
                .map(|(_, t)| (*t).to_owned())
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }
    }

    fn names(layers: &[Layer]) -> Vec<String> {
        layers
            .iter()
            .map(|l| l.path.display().to_string())
            .collect()
    }

    #[test]
    fn includes_merge_first_recursively_and_once() {
        let fs = [
            ("base.config", "CONFIG_A=y\n"),
            ("nic.config", "#include base.config\nCONFIG_N=y\n"),
            ("disk.config", "#include base.config\nCONFIG_D=y\n"),
            (
                "p.config",
                "#include nic.config\n#include disk.config\nCONFIG_A=n\n",
            ),
        ];
        let layers = resolve_profile(Path::new("/p/p.config"), &mut files(&fs)).expect("ok");
        assert_eq!(
            names(&layers),
            [
                "/p/base.config",
                "/p/nic.config",
                "/p/disk.config",
                "/p/p.config"
            ],
            "includes first, depth first, base only once"
        );
        assert_eq!(layers[3].settings[0].name, "CONFIG_A");
        assert!(redundant(&layers).is_empty(), "an override is not a repeat");

        // Verification: the profile's override wins over the base, and mismatches name the file.
        let checked: Vec<(String, &[Setting])> = layers
            .iter()
            .map(|l| (l.path.display().to_string(), l.settings.as_slice()))
            .collect();
        let checked: Vec<(&str, &[Setting])> =
            checked.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let good = parse_dotconfig("# CONFIG_A is not set\nCONFIG_N=y\nCONFIG_D=y\n");
        assert!(verify_layers(&checked, &good).is_empty());
        let bad = parse_dotconfig("CONFIG_A=y\nCONFIG_D=y\n");
        let m: Vec<String> = verify_layers(&checked, &bad)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            m,
            [
                "/p/nic.config:2: CONFIG_N wanted y, final .config has n (unset)",
                "/p/p.config:3: CONFIG_A wanted n (unset), final .config has y",
            ]
        );
    }

    #[test]
    fn include_cycles_are_errors() {
        let selfish = [("p.config", "#include p.config\n")];
        let e = resolve_profile(Path::new("/p/p.config"), &mut files(&selfish)).expect_err("cycle");
        assert!(
            matches!(e, IncludeError::Cycle { ref chain } if chain.len() == 2),
            "{e}"
        );

        let fs = [
            ("a.config", "#include b.config\nCONFIG_A=y\n"),
            ("b.config", "#include c.config\n"),
            ("c.config", "#include a.config\n"),
            ("p.config", "#include a.config\n"),
        ];
        let e = resolve_profile(Path::new("/p/p.config"), &mut files(&fs)).expect_err("cycle");
        assert_eq!(
            e.to_string(),
            "include cycle: /p/p.config includes /p/a.config includes /p/b.config includes \
             /p/c.config includes /p/a.config"
        );
    }

    #[test]
    fn missing_and_malformed_includes_name_the_file() {
        let fs = [("p.config", "# x\n#include gone.config\nCONFIG_A=y\n")];
        let e = resolve_profile(Path::new("/p/p.config"), &mut files(&fs)).expect_err("missing");
        assert!(matches!(e, IncludeError::Read { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot read /p/gone.config: ")
                && msg.ends_with("(included from /p/p.config:2)"),
            "{msg}"
        );

        let e = resolve_profile(Path::new("/p/none.config"), &mut files(&fs)).expect_err("missing");
        assert!(!e.to_string().contains("included from"), "{e}");

        let fs = [
            ("base.config", "CONFIG_A=y # why\n"),
            ("p.config", "#include base.config\n"),
        ];
        let e = resolve_profile(Path::new("/p/p.config"), &mut files(&fs)).expect_err("bad line");
        assert!(e.to_string().starts_with("/p/base.config: line 1: "), "{e}");
    }

    #[test]
    fn repeats_of_included_settings_are_reported() {
        let fs = [
            ("base.config", "CONFIG_A=y\nCONFIG_B=y\n"),
            ("p.config", "#include base.config\nCONFIG_A=y\nCONFIG_B=n\n"),
        ];
        let layers = resolve_profile(Path::new("/p/p.config"), &mut files(&fs)).expect("ok");
        let r = redundant(&layers);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            (
                r[0].setting.name.as_str(),
                r[0].setting.line,
                r[0].first_line
            ),
            ("CONFIG_A", 2, 1)
        );
        assert_eq!(r[0].first, Path::new("/p/base.config"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("/a/b.list"), "\"/a/b.list\"");
        assert_eq!(quote("a\"b\\"), "\"a\\\"b\\\\\"");
    }
}
