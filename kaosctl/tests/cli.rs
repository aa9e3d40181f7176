//! The CLI as a user runs it.

use std::process::Command;

const KAOSCTL: &str = env!("CARGO_BIN_EXE_kaosctl");

#[test]
fn unreachable_host_is_a_clear_error_with_exit_code_3() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let out = Command::new(KAOSCTL)
        .args(["--endpoint", "127.0.0.1:1", "--timeout", "2", "status"])
        .output()
        .expect("run kaosctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot reach 127.0.0.1:1"),
        "stderr: {stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn unresolvable_endpoint_is_reported_as_unreachable() {
    let out = Command::new(KAOSCTL)
        .args(["--endpoint", "no-port-here", "status"])
        .output()
        .expect("run kaosctl");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot resolve endpoint"));
}

#[test]
fn help_documents_exit_codes() {
    let out = Command::new(KAOSCTL)
        .arg("--help")
        .output()
        .expect("run kaosctl");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes"));
}
