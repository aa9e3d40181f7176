//! The CLI as a user runs it, each test with a configuration directory of its own. Commands
//! that need a host are in `init/tests/kaosctl_hosted.rs`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

const KAOSCTL: &str = env!("CARGO_BIN_EXE_kaosctl");

/// A user with an empty configuration directory.
struct User {
    config: tempfile::TempDir,
}

impl User {
    fn new() -> Self {
        Self {
            config: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn dir(&self) -> &Path {
        self.config.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(KAOSCTL)
            .args(args)
            .env("KAOS_CONFIG_DIR", self.dir())
            .env_remove("KAOS_CONTEXT")
            .env_remove("KAOS_ENDPOINT")
            .env_remove("KAOS_KEY")
            .output()
            .expect("run kaosctl")
    }

    /// Runs `args`, expecting success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kaosctl {args:?}: {:?}\n{}",
            out.status,
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `args`, expecting exit `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "kaosctl {args:?}: {}",
            stderr(&out)
        );
        assert!(
            out.stdout.is_empty(),
            "stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr(&out)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn key_generate_writes_a_private_secret_and_a_pub_and_refuses_to_overwrite() {
    let user = User::new();
    let shown = user.ok(&["key", "generate"]);
    let secret = user.dir().join("keys/default.key");
    let public = std::fs::read_to_string(user.dir().join("keys/default.pub")).expect("pub");
    let mode = std::fs::metadata(&secret)
        .expect("secret")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&secret)
            .expect("secret")
            .starts_with("kaos-x25519-secret ")
    );
    assert!(public.starts_with("kaos-x25519 ") && public.ends_with(" default\n"));
    assert!(shown.contains(&secret.display().to_string()), "{shown}");
    assert!(shown.contains(public.trim()), "{shown}");
    assert!(shown.contains("SHA256:"), "{shown}");

    let before = std::fs::read(&secret).expect("secret");
    let e = user.fails(&["key", "generate"], 2);
    assert!(e.contains("exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&secret).expect("secret"), before, "untouched");
    user.ok(&["key", "generate", "--force"]);
    assert_ne!(std::fs::read(&secret).expect("secret"), before, "replaced");
    user.fails(&["key", "generate", "no/slashes"], 2);
}

#[test]
fn key_show_prints_the_public_line_of_the_key_commands_would_use() {
    let user = User::new();
    let generated: serde_json::Value =
        serde_json::from_str(&user.ok(&["key", "generate", "ops", "-o", "json"])).expect("json");
    let line = generated["public_key"].as_str().expect("public_key");
    assert!(line.ends_with(" ops"), "{line}");
    let fingerprint = generated["fingerprint"].as_str().expect("fingerprint");

    assert!(user.ok(&["key", "show", "ops"]).contains(fingerprint));
    assert!(
        user.ok(&["--key", "ops", "key", "show"])
            .contains(fingerprint)
    );
    let path = user.dir().join("keys/ops.key");
    assert!(
        user.ok(&["key", "show", &path.display().to_string()])
            .contains(fingerprint)
    );
    user.ok(&[
        "context",
        "add",
        "lab",
        "--endpoint",
        "h:1",
        "--key",
        "ops",
        "--use",
    ]);
    assert!(
        user.ok(&["key", "show"]).contains(fingerprint),
        "the context's key"
    );
    let e = user.fails(&["key", "show", "missing"], 2);
    assert!(e.contains("kaosctl key generate missing"), "{e}");
}

#[test]
fn contexts_are_added_listed_used_unpinned_and_removed() {
    let user = User::new();
    assert!(user.ok(&["context", "list"]).contains("no contexts"));
    user.ok(&["context", "add", "lab", "--endpoint", "10.0.0.5:1289"]);
    user.ok(&[
        "context",
        "add",
        "prod",
        "-e",
        "10.0.1.5:1289",
        "--key",
        "ops",
        "--use",
    ]);
    let list = user.ok(&["context", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[0].contains("NAME") && lines[0].contains("HOST KEY"),
        "{list}"
    );
    assert!(
        lines[1].starts_with("  lab ") && lines[1].contains("not pinned"),
        "{list}"
    );
    assert!(
        lines[2].starts_with("* prod ") && lines[2].contains(" ops "),
        "{list}"
    );

    user.ok(&["context", "use", "lab"]);
    let json: serde_json::Value =
        serde_json::from_str(&user.ok(&["context", "list", "-o", "json"])).expect("json");
    assert_eq!(json[0]["name"], "lab");
    assert_eq!(json[0]["current"], true);
    assert_eq!(json[1]["current"], false);
    assert_eq!(json[0]["host_key"], serde_json::Value::Null);

    let e = user.fails(&["context", "add", "lab", "--endpoint", "h:2"], 2);
    assert!(e.contains("exists"), "{e}");
    user.fails(&["context", "add", "x", "--endpoint", "no-port"], 2);
    user.fails(&["context", "add", "y"], 2);
    user.fails(&["context", "use", "nope"], 2);
    assert!(
        user.ok(&["context", "unpin"])
            .contains("nothing pinned for 10.0.0.5:1289")
    );

    user.ok(&["context", "remove", "lab"]);
    let config = std::fs::read_to_string(user.dir().join("config.toml")).expect("config");
    assert!(
        !config.contains("lab") && !config.contains("current-context"),
        "{config}"
    );
    assert!(config.contains("[contexts.prod]"), "{config}");
}

#[test]
fn endpoint_pins_live_in_known_hosts_and_unpin_drops_them() {
    let user = User::new();
    let key = "kaos-x25519 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let hosts = user.dir().join("known_hosts");
    std::fs::write(&hosts, format!("h:1 {key}\nh:2 {key}\n")).expect("write");
    let out = user.ok(&["--endpoint", "h:1", "context", "unpin"]);
    assert!(out.contains("dropped pin SHA256:"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&hosts).expect("read"),
        format!("h:2 {key}\n")
    );
}

#[test]
fn a_malformed_config_is_a_clear_exit_2_error() {
    let user = User::new();
    user.ok(&["key", "generate"]);
    let config = user.dir().join("config.toml");
    std::fs::write(
        &config,
        "current-context = \"lab\"\n[contexts.lab]\nendpont = \"h:1\"\n",
    )
    .expect("write");
    let e = user.fails(&["status"], 2);
    assert!(
        e.contains(&format!("{}:3:", config.display())) && e.contains("endpont"),
        "{e}"
    );
    user.fails(&["context", "list"], 2);
    std::fs::remove_file(&config).expect("remove");
    std::fs::write(user.dir().join("known_hosts"), "h:1 garbage\n").expect("write");
    let e = user.fails(&["--endpoint", "h:1", "status"], 2);
    assert!(e.contains("known_hosts:1:"), "{e}");
}

#[test]
fn completions_for_bash_mention_kaosctl_and_context() {
    let script = User::new().ok(&["completions", "bash"]);
    assert!(script.contains("kaosctl"), "{script}");
    assert!(script.contains("context"));
    assert!(script.contains("--trust-new-host"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(
            !User::new().ok(&["completions", shell]).is_empty(),
            "{shell}"
        );
    }
}

#[test]
fn without_a_key_a_remote_command_exits_2_and_says_how_to_make_one() {
    let e = User::new().fails(&["--endpoint", "127.0.0.1:1", "status"], 2);
    assert!(
        e.contains("no key at") && e.contains("kaosctl key generate"),
        "{e}"
    );
}

#[test]
fn context_and_endpoint_together_are_a_usage_error() {
    let user = User::new();
    let e = user.fails(&["--context", "a", "--endpoint", "h:1", "status"], 2);
    assert!(e.contains("not both"), "{e}");
    let e = user.fails(&["--trust-new-host", "--host-key", "SHA256:x", "status"], 2);
    assert!(e.contains("--host-key"), "{e}");
}

#[test]
fn unreachable_host_is_a_clear_error_with_exit_code_3() {
    let user = User::new();
    user.ok(&["key", "generate"]);
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let e = user.fails(
        &["--endpoint", "127.0.0.1:1", "--timeout", "2", "status"],
        3,
    );
    assert!(e.contains("cannot reach 127.0.0.1:1"), "{e}");
}

#[test]
fn unresolvable_endpoint_is_reported_as_unreachable() {
    let user = User::new();
    user.ok(&["key", "generate"]);
    let e = user.fails(&["--endpoint", "no-port-here", "status"], 3);
    assert!(e.contains("cannot resolve endpoint"), "{e}");
}

#[test]
fn help_documents_exit_codes() {
    let help = User::new().ok(&["--help"]);
    assert!(help.contains("Exit codes"), "{help}");
    for code in [
        "0  success",
        "1  the host refused",
        "2  usage or local configuration error",
        "3  host unreachable",
        "4  authentication failed",
    ] {
        assert!(help.contains(code), "{code}: {help}");
    }
}
