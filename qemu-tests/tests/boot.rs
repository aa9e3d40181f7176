//! Tier 3: the host image under QEMU, managed through its forwarded management port.
//!
//! The read-only tests share one booted host; tests that reboot or power off get their own.

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::Duration;

use kaos_protocol::{MAX_FRAME, Request, Response, Status};
use kaos_qemu_tests::qemu::{self, QemuConfig, QemuHost};
use kaos_qemu_tests::skip;

/// TCG boots in a few seconds; CI machines are slower and busier.
const BOOT: Duration = Duration::from_secs(120);

fn boot(hostname: &str) -> QemuHost {
    let image = qemu::image_from_env().expect("checked by unavailable()");
    let mut config = QemuConfig::new(&image).expect("config");
    config.append = format!("kaos.hostname={hostname}");
    QemuHost::launch(&config).expect("launch QEMU")
}

/// The host shared by tests that leave it as they found it.
fn shared() -> Option<&'static QemuHost> {
    if let Some(reason) = qemu::unavailable() {
        skip("qemu-tests", &reason);
        return None;
    }
    static HOST: OnceLock<QemuHost> = OnceLock::new();
    let host = HOST.get_or_init(|| boot("kaos-shared"));
    host.wait_ready(BOOT).expect("shared host ready");
    Some(host)
}

fn status(client: &mut kaosctl::Client) -> Status {
    match client.request(Request::Status).expect("status") {
        Response::Status(s) => s,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn status_is_right_and_kattach_is_the_only_process() {
    let Some(host) = shared() else { return };
    let mut client = host.client().expect("connect");
    let s = status(&mut client);
    assert_eq!(s.hostname.as_str(), "kaos-shared", "{}", host.tail());
    assert_eq!(s.version.as_str(), env!("CARGO_PKG_VERSION"));
    assert!(!s.hosted, "runs as PID 1");
    assert_eq!(
        s.processes,
        1,
        "exactly one userspace process\n{}",
        host.tail()
    );
    // QEMU user networking's DHCP server: 10.0.2.15/24 via 10.0.2.2.
    assert!(s.mgmt.dhcp);
    assert_eq!(
        s.mgmt.address.map(|a| a.to_string()).as_deref(),
        Some("10.0.2.15/24")
    );
    assert_eq!(s.mgmt.gateway, Some([10, 0, 2, 2]));
    let t = s.timeline;
    let (mounts, link, ready) = (
        t.mounts_ms.expect("mounts"),
        t.link_up_ms.expect("link"),
        t.endpoint_ready_ms.expect("ready"),
    );
    assert!(0 < t.init_exec_ms && t.init_exec_ms <= mounts && mounts <= link && link <= ready);
    assert!(s.uptime_ms >= u64::from(ready));
    assert!(
        host.wait_console(Duration::from_secs(30), |c| c.contains("kattach: kattach ")),
        "{}",
        host.tail()
    );
}

#[test]
fn garbage_and_oversize_frames_close_only_their_connection() {
    let Some(host) = shared() else { return };
    let mut good = host.client().expect("connect");
    let mut buf = [0u8; 64];

    let mut garbage = host.raw().expect("connect");
    garbage
        .write_all(b"\x16\x03\x01\x02\x00garbage that is not a frame")
        .expect("send");
    assert!(
        matches!(garbage.read(&mut buf), Ok(0) | Err(_)),
        "garbage connection left open"
    );

    let mut oversize = host.raw().expect("connect");
    let header = u32::try_from(MAX_FRAME + 1).expect("fits").to_le_bytes();
    oversize.write_all(&header).expect("send");
    assert!(
        matches!(oversize.read(&mut buf), Ok(0) | Err(_)),
        "oversize connection left open"
    );

    assert_eq!(status(&mut good).hostname.as_str(), "kaos-shared");
    assert!(host.client().is_ok(), "new clients still served");
}

/// Waits for a status whose boot id differs from `old`.
fn next_boot(host: &QemuHost, old: [u8; 16]) -> Status {
    let deadline = std::time::Instant::now() + BOOT;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no new boot\n{}",
            host.tail()
        );
        std::thread::sleep(Duration::from_secs(1));
        let Ok(mut c) = host.client() else { continue };
        let Ok(Response::Status(s)) = c.request(Request::Status) else {
            continue;
        };
        if s.boot_id != old {
            return s;
        }
    }
}

#[test]
fn reboot_by_request_and_by_ctrl_alt_del_brings_the_host_back() {
    if let Some(reason) = qemu::unavailable() {
        return skip("reboot_brings_the_host_back", &reason);
    }
    let host = boot("kaos-reboot");
    let mut client = host.wait_ready(BOOT).expect("ready");
    let first = status(&mut client);
    assert_eq!(
        client.request(Request::Reboot).expect("reboot"),
        Response::Accepted
    );
    let second = next_boot(&host, first.boot_id);
    assert_eq!(second.hostname.as_str(), "kaos-reboot");
    assert_eq!(second.processes, 1);

    // Ctrl-Alt-Del reaches kattach as SIGINT (CAD off), which reboots in order.
    host.ctrl_alt_del().expect("send ctrl-alt-del");
    next_boot(&host, second.boot_id);
    assert!(
        host.try_exit().expect("wait").is_none(),
        "QEMU must keep running across reboots"
    );
    let console = host.console();
    assert_eq!(
        console.matches("Linux version").count(),
        3,
        "{}",
        host.tail()
    );
    assert_eq!(
        console.matches("kattach: Reboot: stopping").count(),
        2,
        "{}",
        host.tail()
    );
}

#[test]
fn power_button_powers_off_in_order() {
    if let Some(reason) = qemu::unavailable() {
        return skip("power_button_powers_off_in_order", &reason);
    }
    let host = boot("kaos-button");
    drop(host.wait_ready(BOOT).expect("ready"));
    host.press_power_button().expect("press the power button");
    let exit = host.wait_exit(Duration::from_secs(15)).expect("wait");
    assert!(
        exit.is_some_and(|s| s.success()),
        "QEMU still running: {exit:?}\n{}",
        host.tail()
    );
    assert!(
        host.console().contains("power button pressed"),
        "{}",
        host.tail()
    );
    assert!(
        host.console().contains("kattach: PowerOff: stopping"),
        "{}",
        host.tail()
    );
}

#[test]
fn shutdown_powers_off_and_ends_qemu() {
    if let Some(reason) = qemu::unavailable() {
        return skip("shutdown_powers_off_and_ends_qemu", &reason);
    }
    let host = boot("kaos-shutdown");
    let mut client = host.wait_ready(BOOT).expect("ready");
    assert_eq!(
        client.request(Request::Shutdown).expect("shutdown"),
        Response::Accepted
    );
    let exit = host.wait_exit(Duration::from_secs(15)).expect("wait");
    assert!(
        exit.is_some_and(|s| s.success()),
        "QEMU still running or failed: {exit:?}\n{}",
        host.tail()
    );
}
