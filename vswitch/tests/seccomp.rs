//! The switch under its own seccomp filter: this test binary re-runs itself as the switch
//! (the filter installed, the control channel on descriptor 3), and the test drives it as the
//! host and the VMMs would: ports added, vhost-user set up, frames forwarded, statistics
//! read, a port removed, the channel closed. A call outside the allowlist would kill the child
//! with SIGSYS, which the test reports.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::time::Duration;

use common::vm::Vm;
use kaos_net::switch::SwitchConfig;
use kaos_net::switch::fixture::{self, A, B, BROADCAST};
use kaos_vswitch::control::server::Server;
use kaos_vswitch::control::{self, CHILD_FD, Controller};
use kaos_vswitch::fabric::Fabric;
use smoltcp::wire::ArpOperation;

const CHILD: &str = "KAOS_VSWITCH_SECCOMP_CHILD";

/// The switch side, when this binary runs as the child (a no-op test otherwise).
#[test]
fn child_switch() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    rustix::thread::set_no_new_privs(true).expect("no_new_privs");
    kaos_vswitch::seccomp::install().expect("the filter installs");
    // SAFETY: the parent put the channel at CHILD_FD for us; nothing else owns it.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(CHILD_FD) };
    let code = match Server::new(sock, Fabric::new(SwitchConfig::default(), 1)).serve() {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code);
}

#[test]
fn the_switch_serves_under_its_seccomp_filter() {
    let (host_end, switch_end) = control::socketpair().expect("socketpair");
    let fd = switch_end.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([
        "--exact",
        "child_switch",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD, "1");
    // SAFETY: only dup2, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, CHILD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn the child switch");
    drop(switch_end);
    let mut ctl = Controller::from_fd(host_end).expect("hello");
    let mut a = Vm::connect(&mut ctl, 1, A);
    let mut b = Vm::connect(&mut ctl, 2, B);
    let ask = fixture::arp(
        (A.mac, BROADCAST),
        ArpOperation::Request,
        (A.mac, A.ip),
        B.ip,
    );
    // The switch sets B's queues up on its own threads; a frame sent before B's receive queue
    // is ready is dropped (as for a real guest whose driver is still starting), so keep asking.
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= 3 {
            break;
        }
        a.send(&ask);
        got.extend(b.receive(Duration::from_millis(500)));
    }
    assert!(got.len() >= 3, "B received {} of A's requests", got.len());
    let stats = ctl.stats().expect("stats");
    assert_eq!(stats.ports.len(), 2);
    ctl.remove_port(2).expect("remove");
    drop(ctl);
    let status = child.wait().expect("the child ends");
    assert_eq!(
        status.signal(),
        None,
        "the switch was killed (SIGSYS = {}: a call outside the allowlist)",
        libc::SIGSYS
    );
    assert_eq!(status.code(), Some(0));
}

const REFUSED_CHILD: &str = "KAOS_VSWITCH_SECCOMP_REFUSED";

/// The child of the next test: a call outside the allowlist (`getppid`) under the filter.
#[test]
fn child_refused_call() {
    if std::env::var_os(REFUSED_CHILD).is_none() {
        return;
    }
    rustix::thread::set_no_new_privs(true).expect("no_new_privs");
    kaos_vswitch::seccomp::install().expect("the filter installs");
    // SAFETY: a raw system call without arguments; the filter ends the process.
    unsafe { libc::syscall(libc::SYS_getppid) };
    std::process::exit(0);
}

#[test]
fn a_refused_call_ends_the_process_and_is_named() {
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "child_refused_call",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(REFUSED_CHILD, "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(kaos_vswitch::seccomp::EXIT_REFUSED),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "seccomp refused system call {}",
            libc::SYS_getppid
        )),
        "{stderr}"
    );
}
