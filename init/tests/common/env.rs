//! How the hosted tests run the `kaosctl` binary: with their own configuration directory and
//! none of the caller's `KAOS_*` choices.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::Command;

/// Makes `dir` a fresh kaosctl configuration directory holding the harness's admin key as
/// `keys/admin.key` (0600).
pub fn config_dir_with_admin_key(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("keys")).expect("config dir");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("keys/admin.key"))
        .expect("admin key file");
    let key = kaos_qemu_tests::keys::admin().to_text();
    std::io::Write::write_all(&mut file, key.as_bytes()).expect("write");
}

/// `cmd ARGS` with `KAOS_CONFIG_DIR=dir` and no `KAOS_CONTEXT`, `KAOS_ENDPOINT`, `KAOS_KEY`.
pub fn kaosctl(mut cmd: Command, dir: &Path, args: &[&str]) -> Command {
    cmd.args(args)
        .env("KAOS_CONFIG_DIR", dir)
        .env_remove("KAOS_CONTEXT")
        .env_remove("KAOS_ENDPOINT")
        .env_remove("KAOS_KEY");
    cmd
}
