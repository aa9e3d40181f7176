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
    eprintln!("SKIPPED {test}: {reason}");
}
