//! Network diagnostics a vKaOS guest runs when its command line asks: a TCP echo service, ping
//! and TCP probes of other hosts, and frames forged on purpose (to show the host's switch drops
//! them). The guest has no shell and no tools; these are what an operator (or a test) would
//! otherwise reach for `ping`, `nc` and a packet generator to do.
//!
//! | key | value |
//! |---|---|
//! | `kaos.guest.echo=` | TCP ports to serve an echo service on, comma-separated |
//! | `kaos.guest.probe=` | comma-separated `ping:A.B.C.D` or `tcp:A.B.C.D:PORT` |
//! | `kaos.guest.forge=` | comma-separated `mac`, `ip:A.B.C.D` or `arp:A.B.C.D` |
//! | `kaos.guest.sink=` | TCP ports to accept and discard data on (throughput tests) |
//! | `kaos.guest.stream=` | comma-separated `A.B.C.D:PORT:SECONDS`: send to a sink for that long |
//!
//! Every result is one line on the console, whatever the kernel's log level:
//! `probe ping 10.0.10.3 ok in 3 ms`, `probe tcp 10.0.10.3:7 failed: timed out`,
//! `forged 5 frames (ip 10.0.10.3)`, `echo on tcp port 7`,
//! `stream 10.0.10.3:9 812000000 bytes in 3001 ms (2164 Mbit/s)`. A probe retries for
//! [`PROBE_DEADLINE`] (the peer may still be booting), then reports failure.
//!
//! The guest is not trusted by the host, so nothing here is a capability the guest would not
//! have anyway: a guest's root can send any frame it likes.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long a probe keeps trying.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(20);
/// Frames sent per forgery.
const FORGED_FRAMES: usize = 5;
/// The source MAC a `mac` forgery claims.
const FORGED_MAC: [u8; 6] = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];

/// One probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// ICMP echo.
    Ping(Ipv4Addr),
    /// A TCP connection to an echo service, a line sent and read back.
    Tcp(SocketAddrV4),
}

/// One forgery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    /// Frames with a source MAC that is not the NIC's.
    Mac,
    /// IPv4 packets with this source address instead of the guest's.
    Ip(Ipv4Addr),
    /// ARP replies claiming this address for the guest's MAC.
    Arp(Ipv4Addr),
}

/// What the command line asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Echo service ports.
    pub echo: Vec<u16>,
    /// Probes, run in order.
    pub probes: Vec<Probe>,
    /// Forgeries, sent before the probes.
    pub forge: Vec<Forge>,
    /// Discard service ports.
    pub sink: Vec<u16>,
    /// Throughput streams, after the probes: where, and for how many seconds.
    pub streams: Vec<(SocketAddrV4, u32)>,
}

impl Plan {
    /// Takes `key=value` if it is one of this module's; a problem is returned as text.
    pub fn take(&mut self, key: &str, value: &str) -> Option<Result<(), String>> {
        let port = |v: &str| v.parse::<u16>().ok().filter(|&p| p != 0);
        let parsed = match key {
            "kaos.guest.echo" => each(value, |v| port(v).map(|p| self.echo.push(p))),
            "kaos.guest.sink" => each(value, |v| port(v).map(|p| self.sink.push(p))),
            "kaos.guest.stream" => each(value, |v| {
                let (addr, secs) = v.rsplit_once(':')?;
                let secs = secs.parse::<u32>().ok().filter(|s| (1..=600).contains(s))?;
                self.streams.push((addr.parse().ok()?, secs));
                Some(())
            }),
            "kaos.guest.probe" => each(value, |v| {
                let probe = match v.split_once(':')? {
                    ("ping", a) => Probe::Ping(a.parse().ok()?),
                    ("tcp", a) => Probe::Tcp(a.parse().ok()?),
                    _ => return None,
                };
                self.probes.push(probe);
                Some(())
            }),
            "kaos.guest.forge" => each(value, |v| {
                let forge = match v.split_once(':') {
                    None if v == "mac" => Forge::Mac,
                    Some(("ip", a)) => Forge::Ip(a.parse().ok()?),
                    Some(("arp", a)) => Forge::Arp(a.parse().ok()?),
                    _ => return None,
                };
                self.forge.push(forge);
                Some(())
            }),
            _ => return None,
        };
        Some(parsed.map_err(|bad| format!("ignoring {bad:?} in {key}: invalid value")))
    }

    /// Whether there is anything to do.
    pub fn is_empty(&self) -> bool {
        self.echo.is_empty()
            && self.probes.is_empty()
            && self.forge.is_empty()
            && self.sink.is_empty()
            && self.streams.is_empty()
    }

    /// Starts the echo services and a thread for the forgeries and probes; results go to the
    /// console through `say`.
    pub fn start(self, say: fn(&str)) {
        for port in self.echo {
            match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
                Ok(listener) => {
                    say(&format!("echo on tcp port {port}"));
                    spawn("echo", move || serve_echo(&listener));
                }
                Err(e) => say(&format!("echo on tcp port {port} failed: {e}")),
            }
        }
        for port in self.sink {
            match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
                Ok(listener) => {
                    say(&format!("sink on tcp port {port}"));
                    spawn("sink", move || serve_sink(&listener));
                }
                Err(e) => say(&format!("sink on tcp port {port} failed: {e}")),
            }
        }
        if self.forge.is_empty() && self.probes.is_empty() && self.streams.is_empty() {
            return;
        }
        spawn("probes", move || {
            for forge in self.forge {
                match send_forged(forge) {
                    Ok(n) => say(&format!("forged {n} frames ({})", describe_forge(forge))),
                    Err(e) => say(&format!("forging ({}) failed: {e}", describe_forge(forge))),
                }
            }
            for probe in self.probes {
                let start = Instant::now();
                let what = match probe {
                    Probe::Ping(a) => format!("ping {a}"),
                    Probe::Tcp(a) => format!("tcp {a}"),
                };
                match run_probe(probe) {
                    Ok(()) => say(&format!(
                        "probe {what} ok in {} ms",
                        start.elapsed().as_millis()
                    )),
                    Err(e) => say(&format!("probe {what} failed: {e}")),
                }
            }
            for (to, secs) in self.streams {
                match stream(to, Duration::from_secs(u64::from(secs))) {
                    Ok((bytes, took)) => {
                        let ms = took.as_millis().max(1);
                        let mbits = u128::from(bytes) * 8 / 1000 / ms;
                        say(&format!(
                            "stream {to} {bytes} bytes in {ms} ms ({mbits} Mbit/s)"
                        ));
                    }
                    Err(e) => say(&format!("stream {to} failed: {e}")),
                }
            }
        });
    }
}

/// Applies `f` to each comma-separated item; the first it refuses is the error.
fn each(value: &str, mut f: impl FnMut(&str) -> Option<()>) -> Result<(), String> {
    for item in value.split(',').filter(|i| !i.is_empty()) {
        f(item).ok_or_else(|| item.to_owned())?;
    }
    Ok(())
}

fn describe_forge(f: Forge) -> String {
    match f {
        Forge::Mac => "mac".into(),
        Forge::Ip(a) => format!("ip {a}"),
        Forge::Arp(a) => format!("arp {a}"),
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        log::error!("cannot start the {name} thread: {e}");
    }
}

fn serve_echo(listener: &TcpListener) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        spawn("echo-conn", move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = conn.read(&mut buf) {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

fn serve_sink(listener: &TcpListener) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        spawn("sink-conn", move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(1..) = conn.read(&mut buf) {}
        });
    }
}

/// Sends zeros to a sink for `how_long` (connecting for up to [`PROBE_DEADLINE`]); the bytes
/// written and the time taken.
fn stream(to: SocketAddrV4, how_long: Duration) -> std::io::Result<(u64, Duration)> {
    let deadline = Instant::now() + PROBE_DEADLINE;
    let mut conn = loop {
        match TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    };
    let buf = vec![0u8; 64 << 10];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < how_long {
        conn.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    Ok((sent, start.elapsed()))
}

/// Tries `probe` until it succeeds or [`PROBE_DEADLINE`] passes.
fn run_probe(probe: Probe) -> Result<(), String> {
    let deadline = Instant::now() + PROBE_DEADLINE;
    let mut last = String::from("timed out");
    while Instant::now() < deadline {
        let attempt = match probe {
            Probe::Ping(a) => ping(a),
            Probe::Tcp(a) => tcp_echo(a),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(last)
}

fn tcp_echo(addr: SocketAddrV4) -> std::io::Result<()> {
    let mut conn = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let line = b"kaos probe\n";
    conn.write_all(line)?;
    let mut back = [0u8; 11];
    conn.read_exact(&mut back)?;
    if &back == line {
        Ok(())
    } else {
        Err(std::io::Error::other("the echo differs"))
    }
}

/// One ICMP echo request and its reply, through a raw socket (PID 1 is root).
fn ping(addr: Ipv4Addr) -> std::io::Result<()> {
    use rustix::net::{AddressFamily, SocketType, ipproto, sockopt};
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::ICMP))?;
    sockopt::set_socket_timeout(
        &sock,
        sockopt::Timeout::Recv,
        Some(Duration::from_millis(500)),
    )?;
    let id = u16::try_from(std::process::id() & 0xffff).unwrap_or(1);
    let mut req = [0u8; 16];
    req[0] = 8; // echo request
    req[4..6].copy_from_slice(&id.to_be_bytes());
    req[6..8].copy_from_slice(&1u16.to_be_bytes());
    req[8..16].copy_from_slice(b"kaosping");
    let sum = checksum(&req);
    req[2..4].copy_from_slice(&sum.to_be_bytes());
    rustix::net::sendto(
        &sock,
        &req,
        rustix::net::SendFlags::empty(),
        &SocketAddrV4::new(addr, 0),
    )?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, _, from) = rustix::net::recvfrom(&sock, &mut buf, rustix::net::RecvFlags::empty())?;
        let packet = &buf[..n];
        let ihl = usize::from(packet.first().copied().unwrap_or(0) & 0xf) * 4;
        let Some(icmp) = packet.get(ihl..) else {
            continue;
        };
        let src_ok = from.is_some_and(|f| {
            std::net::SocketAddr::try_from(f).is_ok_and(|s| s.ip() == std::net::IpAddr::V4(addr))
        });
        if src_ok && icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
            return Ok(());
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// The first NIC's MAC and the guest's address.
fn identity() -> std::io::Result<([u8; 6], Ipv4Addr, i32)> {
    let text = std::fs::read_to_string("/sys/class/net/eth0/address")?;
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.trim().split(':')) {
        *byte = u8::from_str_radix(part, 16).map_err(std::io::Error::other)?;
    }
    let fib = std::fs::read_to_string("/proc/net/fib_trie")?;
    let ip = crate::guest::local_addresses(&fib)
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("eth0 has no address"))?;
    let index = std::fs::read_to_string("/sys/class/net/eth0/ifindex")?
        .trim()
        .parse()
        .map_err(std::io::Error::other)?;
    Ok((mac, ip, index))
}

/// The frames of a forgery: a broadcast ARP or a UDP packet to the subnet's broadcast.
fn forged_frame(forge: Forge, mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let (src_mac, claimed_ip) = match forge {
        Forge::Mac => (FORGED_MAC, ip),
        Forge::Ip(a) | Forge::Arp(a) => (mac, a),
    };
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src_mac);
    if let Forge::Ip(_) = forge {
        // IPv4 / UDP from the claimed address to the limited broadcast, port 9 (discard).
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip_hdr = [
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
        ];
        let total = 20u16 + 8 + 8;
        ip_hdr[2..4].copy_from_slice(&total.to_be_bytes());
        ip_hdr[12..16].copy_from_slice(&claimed_ip.octets());
        let sum = checksum(&ip_hdr);
        ip_hdr[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip_hdr);
        f.extend_from_slice(&[0x30, 0x39, 0, 9, 0, 16, 0, 0]);
        f.extend_from_slice(b"forgery!");
    } else {
        // ARP reply (gratuitous): claimed address is at the source MAC.
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&claimed_ip.octets());
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&claimed_ip.octets());
    }
    f.resize(60, 0);
    f
}

fn send_forged(forge: Forge) -> std::io::Result<usize> {
    let (mac, ip, ifindex) = identity()?;
    let frame = forged_frame(forge, mac, ip);
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned here alone.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let mut sent = 0;
    for _ in 0..FORGED_FRAMES {
        // SAFETY: `frame` and `addr` outlive the call; the lengths are theirs.
        let n = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(20),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_parses_and_refuses() {
        let mut p = Plan::default();
        assert_eq!(p.take("kaos.guest.echo", "7,80"), Some(Ok(())));
        assert_eq!(
            p.take("kaos.guest.probe", "ping:10.0.10.3,tcp:10.0.10.3:7"),
            Some(Ok(()))
        );
        assert_eq!(
            p.take("kaos.guest.forge", "mac,ip:10.0.10.9,arp:10.0.10.3"),
            Some(Ok(()))
        );
        assert_eq!(p.echo, [7, 80]);
        assert_eq!(
            p.probes,
            [
                Probe::Ping(Ipv4Addr::new(10, 0, 10, 3)),
                Probe::Tcp(SocketAddrV4::new(Ipv4Addr::new(10, 0, 10, 3), 7))
            ]
        );
        assert_eq!(p.forge.len(), 3);
        assert!(p.take("kaos.guest.echo", "0").is_some_and(|r| r.is_err()));
        assert!(
            p.take("kaos.guest.probe", "udp:1.2.3.4:5")
                .is_some_and(|r| r.is_err())
        );
        assert!(p.take("kaos.guest.forge", "ip").is_some_and(|r| r.is_err()));
        assert_eq!(p.take("kaos.guest.sink", "9"), Some(Ok(())));
        assert_eq!(
            p.take("kaos.guest.stream", "10.0.10.3:9:3,127.0.0.1:9:1"),
            Some(Ok(()))
        );
        assert_eq!(p.sink, [9]);
        assert_eq!(
            p.streams,
            [
                (SocketAddrV4::new(Ipv4Addr::new(10, 0, 10, 3), 9), 3),
                (SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9), 1)
            ]
        );
        assert!(
            p.take("kaos.guest.stream", "10.0.10.3:9")
                .is_some_and(|r| r.is_err())
        );
        assert!(
            p.take("kaos.guest.stream", "10.0.10.3:9:0")
                .is_some_and(|r| r.is_err())
        );
        assert_eq!(p.take("kaos.name", "x"), None, "not ours");
    }

    #[test]
    fn forged_frames_claim_what_they_should() {
        let mac = [2, 0, 0, 0, 0, 1];
        let ip = Ipv4Addr::new(10, 0, 10, 2);
        let other = Ipv4Addr::new(10, 0, 10, 3);
        let f = forged_frame(Forge::Mac, mac, ip);
        assert_eq!(&f[6..12], &FORGED_MAC);
        let f = forged_frame(Forge::Ip(other), mac, ip);
        assert_eq!((&f[6..12], &f[12..14]), (&mac[..], &[8u8, 0][..]));
        assert_eq!(&f[26..30], &other.octets());
        assert_eq!(checksum(&f[14..34]), 0, "a valid IPv4 header checksum");
        let f = forged_frame(Forge::Arp(other), mac, ip);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[28..32], &other.octets(), "ARP sender address");
        assert_eq!(f.len(), 60);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071's example words sum to 0xddf2; the checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }
}
