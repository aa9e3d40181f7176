//! Tier 3: the host image under QEMU, managed through its forwarded management port.
//!
//! The read-only tests share one booted host; tests that reboot or power off get their own.
//! Every host authorises the harness's admin key on the kernel command line, except the one
//! that proves the key built into the image (`$KAOS_IMAGE_KEY`) is enough.

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::Duration;

use kaos_protocol::handshake::ClientPreamble;
use kaos_protocol::{HostSet, KeySource, MAX_FRAME, Request, Response, Role, Status, truncated};
use kaos_qemu_tests::qemu::{self, QemuConfig, QemuHost};
use kaos_qemu_tests::{keys, skip};
use kaosctl::ClientError;

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

/// True if the host closed `stream` (end of file or reset) without sending anything; false if
/// it sent bytes or left it open until the read timed out.
fn closed_silently(stream: &mut std::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn garbage_and_oversize_frames_close_only_their_connection() {
    let Some(host) = shared() else { return };
    let mut good = host.client().expect("connect");

    // Not a KaOS client (a TLS ClientHello): closed before any cryptography.
    let mut garbage = host.raw().expect("connect");
    garbage
        .write_all(b"\x16\x03\x01\x02\x00garbage that is not a frame")
        .expect("send");
    assert!(
        closed_silently(&mut garbage),
        "garbage connection left open"
    );

    // A valid preamble, then a first handshake frame announcing more than MAX_FRAME bytes.
    let mut oversize = host.raw().expect("connect");
    let mut bytes = ClientPreamble::CURRENT.encode().to_vec();
    bytes.extend_from_slice(&u32::try_from(MAX_FRAME + 1).expect("fits").to_le_bytes());
    oversize.write_all(&bytes).expect("send");
    assert!(
        closed_silently(&mut oversize),
        "oversize connection left open"
    );

    assert_eq!(status(&mut good).hostname.as_str(), "kaos-shared");
    assert!(host.client().is_ok(), "new clients still served");
}

/// Waits for a status, as the harness's admin, whose boot id differs from `old`.
fn next_boot(host: &QemuHost, old: [u8; 16]) -> Status {
    host.wait_next_boot(keys::admin(), old, BOOT)
        .expect("the host comes back")
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

/// A host booted with no key on its command line is managed with the key built into the image
/// (`cargo xtask image --authorize`, `$KAOS_IMAGE_KEY`), and refuses every other key; with no
/// store disk, its host key lives in memory and changes at the next boot.
#[test]
fn image_key_manages_a_host_that_refuses_every_other_key() {
    let test = "image_key_manages_a_host_that_refuses_every_other_key";
    if let Some(reason) = qemu::unavailable() {
        return skip(test, &reason);
    }
    let key = match qemu::image_key_from_env() {
        Ok(key) => key,
        Err(reason) => return skip(test, &reason),
    };
    let image = qemu::image_from_env().expect("checked by unavailable()");
    let mut config = QemuConfig::new(&image).expect("config");
    config.append = "kaos.hostname=kaos-imagekey".into();
    config.authorize = None;
    let host = QemuHost::launch(&config).expect("launch QEMU");

    let mut client = host
        .wait_ready_as(&key, BOOT)
        .expect("the image key is authorised");
    let first = status(&mut client);
    assert_eq!(first.hostname.as_str(), "kaos-imagekey");
    let me = client.identity();
    assert_eq!(
        (me.source, me.role),
        (KeySource::Image, Role::Admin),
        "{me:?}"
    );
    assert_eq!(
        first.host_key,
        client.host_key(),
        "status shows the key the handshake proved"
    );
    assert!(
        !first.host_key_persistent,
        "no store disk: the host key is in memory"
    );

    // A stranger, and the harness's admin key (not on this command line), are refused.
    for (who, stranger) in [
        ("a fresh key", keys::generate()),
        ("the harness key", keys::admin().clone()),
    ] {
        match host.client_as(&stranger) {
            Err(ClientError::Unauthorized(message)) => {
                assert!(!message.is_empty(), "{who}: the refusal says why");
            }
            other => panic!(
                "{who} was not refused as unauthorised: {other:?}\n{}",
                host.tail()
            ),
        }
    }

    let set = Request::HostSet(HostSet {
        key: truncated("hostname"),
        value: truncated("renamed-by-image-key"),
    });
    match client.request(set).expect("host set") {
        Response::Host(h) => assert_eq!(h.hostname.as_str(), "renamed-by-image-key"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        client.request(Request::Reboot).expect("reboot"),
        Response::Accepted
    );

    let second = host
        .wait_next_boot(&key, first.boot_id, BOOT)
        .expect("the host comes back");
    assert_ne!(
        second.host_key, first.host_key,
        "an in-memory host key is new at every boot"
    );
    assert_eq!(
        second.hostname.as_str(),
        "kaos-imagekey",
        "no store disk: the renaming did not survive"
    );
}
