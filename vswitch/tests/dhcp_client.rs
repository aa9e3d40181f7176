//! A stock DHCP client (busybox `udhcpc`) gets its port's address from the switch: the VLAN's
//! settings go through the control channel (`Controller::set_vlan_dhcp`), the client runs on a
//! TAP in a network namespace of its own, and this test carries its frames to the switch's core
//! and the core's answers back, as the datapath does for a guest's queues.
//!
//! Needs root (a network namespace and a TAP) and `udhcpc` (Debian: `apt-get install udhcpc`);
//! without them the test says so and passes.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaos_net::switch::fixture::{self, A, B, R10};
use kaos_net::switch::{DhcpConfig, PortId, SwitchConfig};
use kaos_vswitch::control::server::Server;
use kaos_vswitch::control::{self, Controller};
use kaos_vswitch::fabric::Fabric;

const TAP: &str = "kdhcp0";
const DNS: [std::net::Ipv4Addr; 2] = [
    std::net::Ipv4Addr::new(10, 0, 0, 53),
    std::net::Ipv4Addr::new(9, 9, 9, 9),
];

fn udhcpc() -> Option<PathBuf> {
    ["/usr/sbin/udhcpc", "/sbin/udhcpc", "/usr/bin/udhcpc"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A TAP named [`TAP`] in the calling thread's network namespace.
fn tap() -> io::Result<OwnedFd> {
    // SAFETY: a constant NUL-terminated path; the descriptor is checked before use.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = [0u8; 40];
    ifr[..TAP.len()].copy_from_slice(TAP.as_bytes());
    let flags: libc::c_short = 0x0002 | 0x1000; // IFF_TAP | IFF_NO_PI
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes), which `ifr` is.
    if unsafe { libc::ioctl(fd.as_raw_fd(), 0x4004_54ca, ifr.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{cmd:?}: {status}")))
    }
}

/// Carries frames between the TAP and the core until `client` exits or 20 s pass.
fn carry(tap: &OwnedFd, fabric: &Fabric, port: PortId, client: &mut Child) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if client.try_wait()?.is_some() {
            return Ok(());
        }
        let mut pfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(tap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else { continue };
        let answers: Vec<_> = {
            let mut core = fabric.lock();
            let now = fabric.now();
            let _ = core.switch.ingress(port, &buf[..n], now);
            core.switch.take_answers().collect()
        };
        for (to, frame) in answers {
            assert_eq!(to, port, "an answer for another port");
            // SAFETY: `frame` is readable for its length.
            let w = unsafe { libc::write(tap.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            assert_eq!(usize::try_from(w).ok(), Some(frame.len()), "TAP write");
        }
    }
    let _ = client.kill();
    Err(io::Error::other("udhcpc did not finish in 20 s"))
}

/// In a new network namespace (this thread's): the TAP with A's MAC, `udhcpc` on it, frames
/// carried. Returns what the client's script saw when it was bound.
fn lease(
    fabric: &Fabric,
    port: PortId,
    udhcpc: &Path,
    dir: &Path,
    flags: &[&str],
) -> io::Result<String> {
    // SAFETY: unshare affects only this thread, which this test made for it.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let tap = tap()?;
    let mac = A.mac.map(|b| format!("{b:02x}")).join(":");
    run(Command::new("ip").args(["link", "set", "dev", TAP, "address", &mac, "up"]))?;
    let out = dir.join("bound.env");
    let script = dir.join("script.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
            out.display()
        ),
    )?;
    run(Command::new("chmod").arg("755").arg(&script))?;
    let mut client = Command::new(udhcpc)
        .args(["-f", "-q", "-n", "-t", "5", "-T", "1", "-i", TAP, "-s"])
        .arg(&script)
        .args(flags)
        .spawn()?;
    carry(&tap, fabric, port, &mut client)?;
    let status = client.wait()?;
    if !status.success() {
        return Err(io::Error::other(format!("udhcpc: {status}")));
    }
    fs::read_to_string(out)
}

fn var<'a>(env: &'a str, name: &str) -> Option<&'a str> {
    env.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

#[test]
fn udhcpc_gets_its_ports_address_and_the_vlans_settings() {
    let Some(udhcpc) = udhcpc() else {
        eprintln!("skipped: no udhcpc (apt-get install udhcpc)");
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a network namespace and a TAP");
        return;
    }
    let (host_end, switch_end) = control::socketpair().expect("socketpair");
    let fabric = Fabric::new(SwitchConfig::default(), 7);
    let served = Arc::clone(&fabric);
    let server = std::thread::spawn(move || Server::new(switch_end, served).serve());
    let mut ctl = Controller::from_fd(host_end).expect("hello");
    let settings = DhcpConfig {
        prefix: 24,
        gateway: Some(R10.ip),
        dns: DNS.to_vec(),
        lease_secs: 86_400,
    };
    ctl.set_vlan_dhcp(10, Some(&settings)).expect("settings");
    let bad = DhcpConfig {
        lease_secs: 1,
        ..settings.clone()
    };
    let refused = ctl.set_vlan_dhcp(10, Some(&bad)).expect_err("refused");
    assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
    let a = fabric
        .add_port(fixture::guest(A, Vec::new()))
        .expect("A's port");
    let b = fabric
        .add_port(fixture::guest(B, Vec::new()))
        .expect("B's port");

    let dir = std::env::temp_dir().join(format!("kaos-dhcp-client-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    for flags in [&[][..], &["-B"][..]] {
        let env = std::thread::scope(|s| {
            s.spawn(|| lease(&fabric, a, &udhcpc, &dir, flags))
                .join()
                .expect("the client thread")
        });
        let env = match env {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: {e}");
                return;
            }
            r => r.expect("a lease"),
        };
        assert_eq!(var(&env, "ip"), Some("10.0.10.10"), "{env}");
        assert_eq!(var(&env, "subnet"), Some("255.255.255.0"));
        assert_eq!(var(&env, "router"), Some("10.0.10.1"));
        assert_eq!(var(&env, "dns").map(str::trim), Some("10.0.0.53 9.9.9.9"));
        assert_eq!(var(&env, "lease"), Some("86400"));
        assert_eq!(var(&env, "serverid"), Some("10.0.10.1"));
    }
    let _ = fs::remove_dir_all(&dir);

    let core = fabric.lock();
    let answered = core.switch.port_counters(a).expect("A").dhcp_answers;
    assert!(
        answered >= 4,
        "an OFFER and an ACK per run, {answered} in all"
    );
    let b = core.switch.port_counters(b).expect("B");
    assert_eq!(b.tx_frames, 0, "B saw A's DHCP");
    drop(core);
    drop(ctl);
    server.join().expect("server thread").expect("served");
}
