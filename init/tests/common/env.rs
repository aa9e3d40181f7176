//! How the hosted tests run the `kaosctl` binary: with their own configuration directory and
//! none of the caller's `KAOS_*` choices.

use std::path::Path;
use std::process::Command;

/// `cmd ARGS` with `KAOS_CONFIG_DIR=dir` and no `KAOS_CONTEXT`, `KAOS_ENDPOINT`, `KAOS_KEY`.
pub fn kaosctl(mut cmd: Command, dir: &Path, args: &[&str]) -> Command {
    cmd.args(args)
        .env("KAOS_CONFIG_DIR", dir)
        .env_remove("KAOS_CONTEXT")
        .env_remove("KAOS_ENDPOINT")
        .env_remove("KAOS_KEY");
    cmd
}
