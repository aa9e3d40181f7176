//! Client keys for tests: one admin key per test process, authorised on every host the harness
//! starts (`--authorize` hosted, `kaos.authorize=` under QEMU), and fresh keys for tests that
//! need strangers, readers or operators.

use std::sync::OnceLock;
use std::time::Duration;

use kaos_protocol::Role;
use kaos_protocol::keys::{PublicKey, SecretKey};
use kaosctl::{ConnectOptions, HostKeyCheck};

/// A fresh random key.
pub fn generate() -> SecretKey {
    let mut bytes = [0u8; 32];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).expect("getrandom");
    SecretKey::from_random(bytes)
}

/// This test process's admin key.
pub fn admin() -> &'static SecretKey {
    static ADMIN: OnceLock<SecretKey> = OnceLock::new();
    ADMIN.get_or_init(generate)
}

/// The `BASE64:ROLE` form of `key` for `--authorize` and `kaos.authorize=`.
pub fn authorize_arg(key: &PublicKey, role: Role) -> String {
    format!("{}:{}", key.to_base64(), role.as_str())
}

/// Options for `key`, trusting whatever host key is presented (tests that check pinning use
/// `kaosctl` itself). Each step may take 20 s: a QEMU host running four nested guests under
/// TCG on a loaded machine can leave its endpoint unscheduled for several seconds.
pub fn options(key: &SecretKey) -> ConnectOptions {
    ConnectOptions::new(key.clone(), HostKeyCheck::TrustNew, Duration::from_secs(20))
}
