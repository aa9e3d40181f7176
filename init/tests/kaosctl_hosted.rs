//! Tier 2: the `kaosctl` binary against `kattach --hosted`, run inside the host's namespace as a
//! user runs it: first contact and pinning, a changed host key, `--host-key`, unknown keys,
//! roles, keys added and withdrawn at run time, and followed events.
//!
//! `kaosctl` is not a binary of this package, so it is taken from beside `kattach`
//! (`target/debug/kaosctl`); build it first with `cargo build -p kaosctl`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

#[path = "common/env.rs"]
mod env;

use kaos_protocol::keys::{Fingerprint, PublicKey};
use kaos_qemu_tests::hosted::{HOST_IP, HostedHost};
use kaos_qemu_tests::keys;

const KATTACH: &str = env!("CARGO_BIN_EXE_kattach");
const READY: Duration = Duration::from_secs(10);

/// The `kaosctl` binary, or why the test cannot run.
fn kaosctl(test: &str) -> Option<PathBuf> {
    kaos_qemu_tests::kaosctl_beside(Path::new(KATTACH), test, "--trust-new-host")
}

fn launch(hostname: &str, extra: &[&str]) -> HostedHost {
    let host = HostedHost::launch_with(Path::new(KATTACH), hostname, extra).expect("launch");
    drop(host.wait_ready(READY).expect("ready"));
    host
}

/// The host's key, as the harness's client saw it.
fn host_key(host: &HostedHost) -> PublicKey {
    host.client().expect("harness client").host_key()
}

/// `HOST_IP:1289`.
fn endpoint() -> String {
    format!("{HOST_IP}:{}", kaos_protocol::PORT)
}

/// A user: a configuration directory of their own holding the harness's admin key as
/// `keys/admin.key`, removed on drop.
struct User {
    kaosctl: PathBuf,
    dir: PathBuf,
}

impl User {
    fn new(kaosctl: PathBuf) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kaosctl-hosted-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        env::config_dir_with_admin_key(&dir);
        Self { kaosctl, dir }
    }

    /// A user whose current context `lab` is the hosted host, with the admin key.
    fn with_context(kaosctl: PathBuf) -> Self {
        let user = Self::new(kaosctl);
        user.local(&[
            "context",
            "add",
            "lab",
            "--endpoint",
            &endpoint(),
            "--key",
            "admin",
        ]);
        user.local(&["context", "use", "lab"]);
        user
    }

    fn command(&self, cmd: std::process::Command, args: &[&str]) -> std::process::Command {
        env::kaosctl(cmd, &self.dir, args)
    }

    /// Runs a local command (it must not need the network), expecting success.
    fn local(&self, args: &[&str]) -> String {
        let out = self
            .command(std::process::Command::new(&self.kaosctl), args)
            .output()
            .expect("run kaosctl");
        assert!(out.status.success(), "kaosctl {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `kaosctl ARGS` inside `host`'s namespace.
    fn run(&self, host: &HostedHost, args: &[&str]) -> Output {
        let mut args = args.to_vec();
        args.extend(["--timeout", "5"]);
        self.command(host.ns().command(&self.kaosctl.to_string_lossy()), &args)
            .output()
            .expect("run kaosctl in the namespace")
    }

    /// As [`User::run`], expecting success; returns (stdout, stderr).
    fn ok(&self, host: &HostedHost, args: &[&str]) -> (String, String) {
        let out = self.run(host, args);
        assert!(
            out.status.success(),
            "kaosctl {args:?}: {:?}\n{}",
            out.status,
            stderr(&out)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    }

    /// As [`User::run`], expecting exit `code`; returns stderr.
    fn fails(&self, host: &HostedHost, args: &[&str], code: i32) -> String {
        let out = self.run(host, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "kaosctl {args:?}: {err}");
        err
    }

    /// `key generate NAME`; returns the public key.
    fn generate(&self, name: &str) -> PublicKey {
        self.local(&["key", "generate", name]);
        let line = std::fs::read_to_string(self.dir.join(format!("keys/{name}.pub"))).expect("pub");
        PublicKey::parse_line(&line).expect("public key line").0
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.dir.join("config.toml")).unwrap_or_default()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn first_contact_needs_trust_then_the_pin_is_used() {
    let Some(kaosctl) = kaosctl("first_contact") else {
        return;
    };
    let host = launch("ctl-1", &[]);
    let key = host_key(&host);
    let fp = key.fingerprint().to_string();
    let user = User::with_context(kaosctl);

    let e = user.fails(&host, &["status"], 4);
    assert!(e.contains(&fp) && e.contains("--trust-new-host"), "{e}");
    assert!(!user.config().contains("host-key"), "nothing pinned yet");

    let (out, err) = user.ok(&host, &["--trust-new-host", "status"]);
    assert!(
        err.contains(&format!("pinned host key {fp} for {}", endpoint())),
        "{err}"
    );
    assert!(out.contains("ctl-1") && out.contains(&fp), "{out}");
    assert!(out.contains("ephemeral"), "a hosted memory store: {out}");
    let pin = format!("host-key = \"{}\"", key.to_line());
    assert!(user.config().contains(&pin), "{}", user.config());

    // The pin is used from now on, without any flag.
    let (out, err) = user.ok(&host, &["status", "-o", "json"]);
    assert!(!err.contains("pinned"), "pinned only once: {err}");
    // This package has no JSON parser: kaosctl's pretty JSON is one field per line.
    assert!(
        out.contains(&format!("\"host_key_fingerprint\": \"{fp}\"")),
        "{out}"
    );
    assert!(out.contains("\"host_key_persistent\": false"), "{out}");
    assert!(user.local(&["context", "list"]).contains(&fp));
    let (whoami, _) = user.ok(&host, &["access", "whoami"]);
    assert!(whoami.contains("admin"), "{whoami}");
}

#[test]
fn a_changed_host_key_is_refused_even_with_trust_new_host() {
    let Some(kaosctl) = kaosctl("changed_host_key") else {
        return;
    };
    let user = User::with_context(kaosctl);
    let ep = endpoint();
    // The same host used without a context: its pin goes to known_hosts.
    let bare = [
        "--endpoint",
        &ep,
        "--key",
        "admin",
        "--trust-new-host",
        "status",
    ];
    let first = launch("ctl-2", &[]);
    user.ok(&first, &["--trust-new-host", "status"]);
    let (_, err) = user.ok(&first, &bare);
    assert!(err.contains("(known_hosts)"), "{err}");
    drop(first);

    // Another host at the same address, with a fresh in-memory key: an impersonator.
    let second = launch("ctl-2b", &[]);
    let new_fp = host_key(&second).fingerprint().to_string();
    for args in [&["status"][..], &["--trust-new-host", "status"]] {
        let e = user.fails(&second, args, 4);
        assert!(e.contains("HOST KEY CHANGED") && e.contains(&new_fp), "{e}");
    }
    let e = user.fails(&second, &bare, 4);
    assert!(e.contains("HOST KEY CHANGED"), "{e}");
    assert!(e.contains("context unpin --endpoint"), "{e}");

    // Once the user drops the pin, the new key can be trusted.
    assert!(user.local(&["context", "unpin"]).contains("dropped pin"));
    let (_, err) = user.ok(&second, &["--trust-new-host", "status"]);
    assert!(err.contains(&new_fp), "{err}");
}

#[test]
fn host_key_flag_accepts_only_the_right_fingerprint() {
    let Some(kaosctl) = kaosctl("host_key_flag") else {
        return;
    };
    let host = launch("ctl-3", &[]);
    let fp = host_key(&host).fingerprint().to_string();
    let user = User::with_context(kaosctl);
    let wrong: Fingerprint = keys::generate().public().fingerprint();
    let e = user.fails(&host, &["--host-key", &wrong.to_string(), "status"], 4);
    assert!(e.contains(&fp), "{e}");
    assert!(
        !user.config().contains("host-key"),
        "a wrong key is never pinned"
    );
    let (_, err) = user.ok(&host, &["--host-key", &fp, "status"]);
    assert!(err.contains(&format!("pinned host key {fp}")), "{err}");
    user.ok(&host, &["status"]);
}

#[test]
fn a_key_the_host_does_not_know_is_refused_with_its_message() {
    let Some(kaosctl) = kaosctl("unknown_key") else {
        return;
    };
    let host = launch("ctl-4", &[]);
    let user = User::with_context(kaosctl);
    let stranger = user.generate("stranger").fingerprint().to_string();
    let e = user.fails(
        &host,
        &["--key", "stranger", "--trust-new-host", "status"],
        4,
    );
    assert!(
        e.contains(&stranger) && e.contains("is not authorised on ctl-4"),
        "{e}"
    );
    assert!(e.contains("kaosctl access add"), "{e}");
}

#[test]
fn a_reader_can_read_but_not_reboot() {
    let Some(kaosctl) = kaosctl("reader") else {
        return;
    };
    let user = User::with_context(kaosctl);
    let reader = user.generate("reader");
    let authorize = format!("{}:reader", reader.to_base64());
    let host = launch("ctl-5", &["--authorize", &authorize]);
    let (out, _) = user.ok(&host, &["--key", "reader", "--trust-new-host", "status"]);
    assert!(out.contains("ctl-5"), "{out}");
    let (whoami, _) = user.ok(
        &host,
        &["--key", "reader", "access", "whoami", "-o", "json"],
    );
    assert!(whoami.contains("\"role\": \"reader\""), "{whoami}");
    assert!(whoami.contains("\"source\": \"command-line\""), "{whoami}");
    let e = user.fails(&host, &["--key", "reader", "reboot"], 1);
    assert!(e.contains("needs role operator"), "{e}");
    let e = user.fails(&host, &["--key", "reader", "access", "list"], 1);
    assert!(e.contains("needs role admin"), "{e}");
}

#[test]
fn access_add_lets_a_key_in_until_access_remove() {
    let Some(kaosctl) = kaosctl("access_add_remove") else {
        return;
    };
    let host = launch("ctl-6", &[]);
    let user = User::with_context(kaosctl);
    user.ok(&host, &["--trust-new-host", "access", "whoami"]);
    let ops = user.generate("ops");
    let pub_file = user.dir.join("keys/ops.pub");
    let pub_file = pub_file.to_string_lossy();
    let args = [
        "access",
        "add",
        "ops",
        "--role",
        "operator",
        "--key-file",
        &pub_file,
    ];
    let (list, _) = user.ok(&host, &args);
    let row = list
        .lines()
        .find(|l| l.starts_with("ops "))
        .expect("ops listed");
    assert!(row.contains("operator") && row.contains("store"), "{list}");
    assert!(row.contains(&ops.fingerprint().to_string()), "{list}");
    let viewer = keys::generate().public().to_line().to_string();
    user.ok(
        &host,
        &[
            "access",
            "add",
            "viewer",
            "--role",
            "reader",
            "--public-key",
            &viewer,
        ],
    );

    let (out, _) = user.ok(
        &host,
        &["--key", "ops", "host", "set", "hostname", "renamed"],
    );
    assert!(out.contains("renamed"), "{out}");
    let (list, _) = user.ok(&host, &["access", "list", "-o", "json"]);
    for name in ["ops", "viewer"] {
        assert!(list.contains(&format!("\"name\": \"{name}\"")), "{list}");
    }

    user.ok(&host, &["access", "remove", "ops"]);
    let e = user.fails(&host, &["--key", "ops", "status"], 4);
    assert!(e.contains("not authorised"), "{e}");
}

#[test]
fn events_follow_prints_new_events_as_they_happen() {
    let Some(kaosctl) = kaosctl("events_follow") else {
        return;
    };
    let host = launch("ctl-7", &[]);
    let user = User::with_context(kaosctl);
    user.ok(&host, &["--trust-new-host", "status"]);
    let mut follower = user
        .command(
            host.ns().command(&user.kaosctl.to_string_lossy()),
            &["events", "--follow", "-o", "json"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the follower");
    let stdout = follower.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // Past events arrive first; then the new one, as it is recorded.
    user.ok(&host, &["host", "set", "hostname", "followed"]);
    let seen = loop {
        let line = lines
            .recv_timeout(READY)
            .expect("the follower printed the new event in time");
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "one JSON object per line: {line}"
        );
        if line.contains("\"kind\":\"setting-changed\"") {
            break line;
        }
    };
    assert!(seen.contains("followed"), "{seen}");
    follower.kill().expect("stop the follower");
    let _ = follower.wait();

    // With --limit, the follower cancels its stream and ends by itself.
    let (out, _) = user.ok(&host, &["events", "--follow", "--limit", "1"]);
    assert_eq!(out.lines().count(), 2, "the header and one event: {out}");
}

#[test]
fn an_operator_pushes_a_platform_and_runs_a_vm_with_kaosctl() {
    let Some(kaosctl) = kaosctl("kaosctl_vm") else {
        return;
    };
    if !kaos_vmm::tiny::kvm_usable("kaosctl_vm") {
        return;
    }
    let host = launch("ctl-vm", &[]);
    let user = User::with_context(kaosctl);
    user.ok(&host, &["--trust-new-host", "status"]);

    // A platform whose kernel is a hand-made guest that prints and stays up.
    let code = kaos_vmm::tiny::idle_code(b"kattach guest: web up (tiny)\nhello from web\n");
    let elf = kaos_vmm::tiny::tiny_elf_with_code(&code);
    let module = kaos_module::pack_platform("vkaos", "1.0-test", "tiny", &elf).expect("pack");
    let file = user.dir.join("vkaos-test.aqi");
    std::fs::write(&file, &module).expect("write module");
    let (out, _) = user.ok(&host, &["module", "push", &file.to_string_lossy()]);
    assert!(
        out.contains("stored platform module vkaos 1.0-test"),
        "{out}"
    );
    let (out, _) = user.ok(&host, &["module", "list"]);
    assert!(out.contains("vkaos") && out.contains("platform"), "{out}");

    // Bad parameters: exit 1 with the host's reason; a bad memory size never leaves kaosctl.
    let err = user.fails(&host, &["vm", "create", "web", "--vcpus", "0"], 1);
    assert!(err.contains("vCPUs"), "{err}");
    let err = user.fails(&host, &["vm", "create", "web", "--memory", "lots"], 2);
    assert!(err.contains("--memory"), "{err}");

    user.ok(
        &host,
        &["vm", "create", "web", "--memory", "64M", "--start"],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (out, _) = user.ok(&host, &["vm", "list", "--output", "json"]);
        let list: serde_json::Value = serde_json::from_str(&out).expect("json");
        if list[0]["guest_up"] == true {
            assert_eq!(list[0]["state"], "running", "{list}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never up: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (out, _) = user.ok(&host, &["vm", "logs", "web"]);
    assert!(out.contains("hello from web"), "{out}");
    let (out, _) = user.ok(&host, &["vm", "inspect", "web"]);
    assert!(out.contains("running") && out.contains("64 MiB"), "{out}");
    let (out, _) = user.ok(&host, &["vm", "stop", "web"]);
    assert!(out.contains("stopped"), "{out}");
    let err = user.fails(&host, &["module", "remove", "vkaos"], 1);
    assert!(err.contains("web"), "{err}");
    user.ok(&host, &["vm", "destroy", "web"]);
    user.ok(&host, &["module", "remove", "vkaos"]);
    let err = user.fails(&host, &["vm", "inspect", "web"], 1);
    assert!(err.contains("no VM named"), "{err}");
}
