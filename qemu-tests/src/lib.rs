//! `kaos-qemu-tests`: the harness of the whole-system tests.
//!
//! Tests read like an operator's session: launch a host, wait for its endpoint, act with the same
//! client library `kaosctl` uses, assert what a user would check.
//!
//! - [`netns`]: network namespaces the tests create (never the machine's own network).
//! - [`hosted`]: tier 2, `kattach --hosted` on a TAP inside a namespace.
//! - [`qemu`]: tier 3, the real host image booted under QEMU.
//! - [`disk`]: raw disk images to attach, and fingerprints to prove they were not written.
//! - [`vkaos`]: an operator's steps with vKaOS guests (push, create, consoles, waits).
//! - [`vlan_peer`]: a Linux host on one VLAN of a QEMU host's uplink trunk.
//! - [`keys`]: the admin key every harness host authorises, and fresh keys for other roles.
//!
//! A test that cannot run here (not root, no image built) prints `SKIPPED: <reason>` and returns.

pub mod disk;
pub mod hosted;
pub mod keys;
pub mod netns;
pub mod qemu;
pub mod vkaos;
pub mod vlan_peer;

/// Prints why a test is skipped, in one greppable form.
pub fn skip(test: &str, reason: &str) {
    say(&format!("SKIPPED {test}: {reason}"));
}

/// Writes `text` and a newline straight to the process's stderr: the test harness captures
/// `eprintln!` of a test that passes, and a skip (with its evidence) must show in every log.
pub fn say(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{text}\n").as_bytes());
}

/// The `kaosctl` binary beside `kattach` (cargo puts both in `target/debug`), or `None` with
/// `SKIPPED` printed when the namespaces cannot be made or it is not built. `marker` is text
/// its `--help` must contain, so a stale binary fails loudly instead of confusing a test.
pub fn kaosctl_beside(
    kattach: &std::path::Path,
    test: &str,
    marker: &str,
) -> Option<std::path::PathBuf> {
    if let Some(reason) = netns::unavailable() {
        skip(test, &reason);
        return None;
    }
    let path = kattach.with_file_name("kaosctl");
    if !path.exists() {
        let why = format!(
            "{} is not built: run `cargo build -p kaosctl` first",
            path.display()
        );
        skip(test, &why);
        return None;
    }
    let help = std::process::Command::new(&path)
        .arg("--help")
        .output()
        .expect("run kaosctl --help");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains(marker),
        "{} is stale: rebuild it with `cargo build -p kaosctl`",
        path.display()
    );
    Some(path)
}
