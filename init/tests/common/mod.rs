//! What the hosted tests that drive the `kaosctl` binary share: a user with a configuration
//! directory, the harness's admin key and a context for the hosted host.

use std::path::PathBuf;
use std::process::Output;

use kaos_qemu_tests::hosted::{HOST_IP, HostedHost};
use serde_json::Value;

pub mod env;

/// A user with a configuration directory holding the harness's admin key and a context for
/// the hosted host; removed on drop.
pub struct User {
    kaosctl: PathBuf,
    dir: PathBuf,
}

impl User {
    pub fn new(kaosctl: PathBuf, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kaos-user-{tag}-{}", std::process::id()));
        env::config_dir_with_admin_key(&dir);
        let user = Self { kaosctl, dir };
        let endpoint = format!("{HOST_IP}:{}", kaos_protocol::PORT);
        let add = [
            "context",
            "add",
            "lab",
            "--endpoint",
            &endpoint,
            "--key",
            "admin",
            "--use",
        ];
        let out = user
            .command(std::process::Command::new(&user.kaosctl), &add)
            .output();
        assert!(out.expect("kaosctl").status.success());
        user
    }

    fn command(&self, cmd: std::process::Command, args: &[&str]) -> std::process::Command {
        env::kaosctl(cmd, &self.dir, args)
    }

    pub fn run(&self, host: &HostedHost, args: &[&str]) -> Output {
        let mut args = args.to_vec();
        args.extend(["--timeout", "5"]);
        self.command(host.ns().command(&self.kaosctl.to_string_lossy()), &args)
            .output()
            .expect("run kaosctl in the namespace")
    }

    /// `kaosctl ARGS`, expecting success; stdout.
    pub fn ok(&self, host: &HostedHost, args: &[&str]) -> String {
        let out = self.run(host, args);
        assert!(
            out.status.success(),
            "kaosctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kaosctl --output json ARGS`, parsed.
    pub fn json(&self, host: &HostedHost, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend(args);
        serde_json::from_str(&self.ok(host, &all)).expect("JSON output")
    }

    /// `kaosctl ARGS`, expecting exit `code` and `why` in stderr.
    pub fn fails(&self, host: &HostedHost, args: &[&str], code: i32, why: &str) {
        let out = self.run(host, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "kaosctl {args:?}: {err}");
        assert!(err.contains(why), "kaosctl {args:?}: {err:?} lacks {why:?}");
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
