//! The uplink on a real kernel: a veth pair between two network namespaces made here, the uplink
//! on one end ("the NIC"), plain packet sockets on the other end and on its VLAN 10 sub-interface
//! ("the wire"). Needs root (network namespaces, `CAP_NET_RAW`); skipped with the reason
//! otherwise. Nothing outside the namespaces is touched; they are deleted even when a test fails.
#![allow(unsafe_code)] // The peer's raw sockets and ethtool calls: libc, each block with its SAFETY.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kaos_net::uplink::{SendError, Uplink, UplinkConfig, UplinkStats};
use linux_raw_sys::if_packet::{
    PACKET_AUXDATA, PACKET_OUTGOING, TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID,
    tpacket_auxdata,
};
use rustix::event::{PollFd, PollFlags, poll};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0xaa, 0, 1];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0xbb, 0, 2];
const BROADCAST: [u8; 6] = [0xff; 6];
/// IEEE 802 local experimental EtherType: nothing in the namespaces answers it.
const EXPERIMENTAL: u16 = 0x88b5;

// ---------------------------------------------------------------------------------------------
// Namespaces and the veth pair.

/// A network namespace of our own, deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new(tag: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("kaos-ul-{}-{n}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name]);
        Self { name }
    }

    fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full);
    }

    /// Runs `f` on a thread inside the namespace; sockets it opens stay there.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).expect("the namespace's file");
        std::thread::scope(|s| {
            s.spawn(|| {
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns");
                f()
            })
            .join()
            .expect("the thread in the namespace")
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `vA` (MAC_A) in namespace `nic`, `vB` (MAC_B) and, where the kernel has 802.1Q, `vB.10` in
/// namespace `wire`.
struct Pair {
    nic: Ns,
    wire: Ns,
    /// Whether `vB.10` exists.
    vlan_dev: bool,
}

/// The pair, or `None` (with the reason printed) where the test cannot run.
fn pair() -> Option<Pair> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root for network namespaces and packet sockets");
        return None;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipped: no `ip` (iproute2)");
        return None;
    }
    let mut p = Pair {
        nic: Ns::new("nic"),
        wire: Ns::new("wire"),
        vlan_dev: false,
    };
    // A quiet wire: no IPv6 autoconfiguration chatter (router solicitations, MLD, DAD) beside
    // the test's own frames.
    for ns in [&p.nic, &p.wire] {
        ns.enter(|| {
            for conf in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                // Absent without IPv6 in the kernel: quiet already.
                let _ = std::fs::write(path, "1");
            }
        });
    }
    let (a, b) = (mac_str(MAC_A), mac_str(MAC_B));
    p.nic.ip(&[
        "link",
        "add",
        "vA",
        "address",
        &a,
        "type",
        "veth",
        "peer",
        "name",
        "vB",
        "address",
        &b,
        "netns",
        &p.wire.name,
    ]);
    p.wire.ip(&["link", "set", "vB", "up"]);
    let vlan = Command::new("ip")
        .args([
            "-n",
            &p.wire.name,
            "link",
            "add",
            "link",
            "vB",
            "name",
            "vB.10",
        ])
        .args(["type", "vlan", "id", "10"])
        .output()
        .expect("ip link add … type vlan");
    p.vlan_dev = vlan.status.success();
    if p.vlan_dev {
        p.wire.ip(&["link", "set", "vB.10", "up"]);
    } else {
        // Tagged frames are then written and read raw on vB (the kernel's tag stripping,
        // which the uplink undoes, is core code and works without 802.1Q devices).
        eprintln!(
            "note: no VLAN devices in this kernel ({}): VLAN 10 sub-interface checks skipped",
            String::from_utf8_lossy(&vlan.stderr).trim()
        );
    }
    Some(p)
}

fn mac_str(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

// ---------------------------------------------------------------------------------------------
// The wire's side: a plain packet socket, and ethtool.

const ETH_P_ALL: u16 = 0x0003;
/// 20 bytes.
#[allow(clippy::cast_possible_truncation)]
const SOCKADDR_LL_LEN: libc::socklen_t = size_of::<libc::sockaddr_ll>() as libc::socklen_t;

/// A non-blocking `AF_PACKET` socket bound to one interface.
struct Raw {
    fd: OwnedFd,
}

impl Raw {
    fn open(ifname: &str) -> Self {
        let name = std::ffi::CString::new(ifname).expect("no NUL");
        // SAFETY: `name` is a NUL-terminated string alive for the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(index, 0, "{ifname} exists");
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `sockaddr_ll` is plain data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = u16::try_from(libc::AF_PACKET).expect("small");
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = i32::try_from(index).expect("small index");
        // SAFETY: `addr` is a complete `sockaddr_ll` of the size passed, alive for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast(),
                SOCKADDR_LL_LEN,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let on: libc::c_int = 1;
        // SAFETY: an int option, read by the kernel from `on`, alive for the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                i32::try_from(PACKET_AUXDATA).expect("small"),
                std::ptr::from_ref(&on).cast(),
                libc::socklen_t::try_from(size_of_val(&on)).expect("small"),
            )
        };
        assert_eq!(rc, 0, "PACKET_AUXDATA: {}", std::io::Error::last_os_error());
        Self { fd }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is a live slice of the length passed; the kernel only reads it.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            usize::try_from(rc).ok(),
            Some(frame.len()),
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Incoming frames (not the ones this socket's interface sent), as on the wire: a tag the
    /// kernel stripped is put back from `PACKET_AUXDATA` (a path independent of the uplink's
    /// ring). Until `done` says so or `timeout` passes.
    fn recv_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Vec<u8>]) -> bool,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !done(&got) && Instant::now() < deadline {
            wait_readable(self.fd.as_fd(), deadline);
            while let Some((n, pkttype, aux)) = self.recv_one(&mut buf) {
                if u32::from(pkttype) == PACKET_OUTGOING {
                    continue;
                }
                let frame = &buf[..n];
                got.push(match aux {
                    Some(a) if a.tp_status & TP_STATUS_VLAN_VALID != 0 => {
                        let tpid = if a.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                            a.tp_vlan_tpid
                        } else {
                            0x8100
                        };
                        tagged(frame, tpid, a.tp_vlan_tci)
                    }
                    _ => frame.to_vec(),
                });
            }
        }
        got
    }

    /// One frame into `buf`: its length, `sll_pkttype` and auxiliary data.
    fn recv_one(&self, buf: &mut [u8]) -> Option<(usize, u8, Option<tpacket_auxdata>)> {
        // SAFETY: `sockaddr_ll` is plain data; all-zero is valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `msghdr` is plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = std::ptr::from_mut(&mut from).cast();
        msg.msg_namelen = SOCKADDR_LL_LEN;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: every pointer in `msg` points at memory writable for the length given
        // (`from`, `buf` through `iov`, `control`), all alive for the call.
        let rc = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        let n = usize::try_from(rc).ok()?;
        let mut aux = None;
        // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR stay within
        // `msg_controllen` of `control`.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: non-null headers from CMSG_FIRSTHDR/NXTHDR lie inside `control`.
            let hdr = unsafe { &*cmsg };
            if hdr.cmsg_level == libc::SOL_PACKET
                && u32::try_from(hdr.cmsg_type) == Ok(PACKET_AUXDATA)
            {
                // SAFETY: a PACKET_AUXDATA message carries a `tpacket_auxdata`; the read is
                // unaligned-safe.
                aux = Some(unsafe {
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<tpacket_auxdata>())
                });
            }
            // SAFETY: as above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
        Some((n, from.sll_pkttype, aux))
    }
}

fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    let ts = rustix::time::Timespec::try_from(left.min(Duration::from_millis(50)))
        .expect("short timeout");
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let _ = poll(&mut fds, Some(&ts));
}

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

/// A legacy ethtool get/set command on `ifname` in the calling thread's namespace.
fn ethtool(ifname: &str, cmd: u32, data: u32) -> u32 {
    // SAFETY: plain socket(2), checked, then owned.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0);
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: `ifreq` is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s.cast_signed();
    }
    req.ifr_ifru.ifru_data = std::ptr::from_mut(&mut value).cast();
    // SAFETY: SIOCETHTOOL with a named `ifreq` whose `ifru_data` points at an `ethtool_value`
    // (what these commands take), all alive for the call.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCETHTOOL,
            std::ptr::from_mut(&mut req),
        )
    };
    assert_eq!(
        rc,
        0,
        "ethtool {cmd:#x} on {ifname}: {}",
        std::io::Error::last_os_error()
    );
    value.data
}

// ---------------------------------------------------------------------------------------------
// Frames.

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = [&dst[..], &src[..], &ethertype.to_be_bytes()[..], payload].concat();
    f.resize(f.len().max(60), 0);
    f
}

/// `frame` with a tag inserted after the MAC addresses.
fn tagged(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    [
        &frame[..12],
        &tpid.to_be_bytes()[..],
        &tci.to_be_bytes()[..],
        &frame[12..],
    ]
    .concat()
}

fn marker(n: u32) -> Vec<u8> {
    let mut m = b"kaos-uplink-test".to_vec();
    m.extend_from_slice(&n.to_be_bytes());
    m
}

fn has_marker(frame: &[u8]) -> bool {
    frame.windows(16).any(|w| w == b"kaos-uplink-test")
}

/// Frames with our marker the uplink delivers within `timeout` (or once `want` arrived).
fn uplink_frames(up: &mut Uplink, timeout: Duration, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        wait_readable(up.fd(), deadline);
        up.recv_batch(|f| {
            if has_marker(f) {
                got.push(f.to_vec());
            }
        });
    }
    got
}

fn open_uplink(p: &Pair) -> Uplink {
    let up = p
        .nic
        .enter(|| Uplink::open("vA"))
        .expect("the uplink opens");
    assert_eq!(up.mac(), MAC_A);
    assert_eq!(up.mtu(), 1500);
    up
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Frames from the wire arrive whole and as they were on it: the tags the kernel strips before
/// any packet socket sees them are back, with their TPID and priority bits.
#[test]
fn frames_from_the_wire_arrive_with_their_tags() {
    let Some(p) = pair() else { return };
    let mut up = open_uplink(&p);
    let raw = p.wire.enter(|| Raw::open("vB"));

    let plain = eth(BROADCAST, MAC_B, EXPERIMENTAL, &marker(1));
    let elsewhere = eth([0x02, 0, 0, 0x99, 0, 9], MAC_B, EXPERIMENTAL, &marker(2));
    let q_tagged = tagged(&eth(MAC_A, MAC_B, EXPERIMENTAL, &marker(3)), 0x8100, 0xa00a);
    let ad_tagged = tagged(&eth(BROADCAST, MAC_B, EXPERIMENTAL, &marker(4)), 0x88a8, 20);
    let qinq = tagged(&q_tagged, 0x88a8, 30);
    let mut expected = vec![plain, elsewhere, q_tagged, ad_tagged, qinq];
    for f in &expected {
        raw.send(f);
    }
    if p.vlan_dev {
        let via_vlan_dev = eth(BROADCAST, MAC_B, EXPERIMENTAL, &marker(6));
        p.wire.enter(|| Raw::open("vB.10")).send(&via_vlan_dev);
        expected.push(tagged(&via_vlan_dev, 0x8100, 10));
    }

    let got = uplink_frames(&mut up, Duration::from_secs(3), expected.len());
    for (f, what) in expected.iter().zip([
        "broadcast",
        "unicast to another MAC (promiscuous)",
        "802.1Q tag with priority 5",
        "802.1ad tag, TPID kept",
        "802.1ad outer and 802.1Q inner tag",
        "tagged by the VLAN device",
    ]) {
        assert!(got.contains(f), "{what}: {f:02x?} not among {got:02x?}");
    }
    assert_eq!(got.len(), expected.len(), "each frame once");

    let s = up.stats();
    assert!(s.rx_frames >= expected.len() as u64, "{s:?}");
    assert_eq!((s.rx_malformed, s.rx_truncated, s.rx_oversize), (0, 0, 0));
    assert_eq!(s.rx_kernel_drops, 0);
    let link = Command::new("ip")
        .args(["-n", &p.nic.name, "-d", "link", "show", "vA"])
        .output()
        .expect("ip link show");
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        link.contains("promiscuity 1"),
        "promiscuous by membership: {link}"
    );
    assert_eq!(p.nic.enter(|| ethtool("vA", ETHTOOL_GGRO, 0)), 0, "GRO off");
    drop(up);
    // The kernel withdraws the membership as the socket is released, which can trail the
    // close by a moment on a loaded machine: look for up to a second.
    let mut link = String::new();
    for _ in 0..20 {
        let out = Command::new("ip")
            .args(["-n", &p.nic.name, "-d", "link", "show", "vA"])
            .output()
            .expect("ip link show");
        link = String::from_utf8_lossy(&out.stdout).into_owned();
        if link.contains("promiscuity 0") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        link.contains("promiscuity 0"),
        "promiscuity withdrawn on close: {link}"
    );
}

/// Frames queued with `send` leave in one flush and reach the wire exactly, tagged ones with
/// their tag; none of them comes back through the uplink's own ring; an oversize frame is
/// refused and counted.
#[test]
fn sent_frames_reach_the_wire_and_do_not_come_back() {
    let Some(p) = pair() else { return };
    let mut up = open_uplink(&p);
    let raw = p.wire.enter(|| Raw::open("vB"));
    let raw10 = p.vlan_dev.then(|| p.wire.enter(|| Raw::open("vB.10")));

    let mut frames: Vec<Vec<u8>> = (0..40)
        .map(|n| {
            let dst = if n % 2 == 0 { MAC_B } else { BROADCAST };
            eth(dst, MAC_A, EXPERIMENTAL, &marker(n))
        })
        .collect();
    let inner = eth(MAC_B, MAC_A, EXPERIMENTAL, &marker(100));
    frames.push(tagged(&inner, 0x8100, 10));
    let big = [marker(101), vec![7; 1500 - 20]].concat();
    frames.push(eth(MAC_B, MAC_A, EXPERIMENTAL, &big));
    frames.push(tagged(&eth(MAC_B, MAC_A, EXPERIMENTAL, &big), 0x8100, 10));
    assert_eq!(frames[42].len(), 1518);
    for f in &frames {
        up.send(None, f)
            .expect("a frame within the MTU is accepted");
    }
    let too_big = eth(MAC_B, MAC_A, EXPERIMENTAL, &vec![0; 1501]);
    assert_eq!(
        up.send(None, &too_big),
        Err(SendError::Oversize {
            len: 1515,
            max: 1514
        })
    );
    assert_eq!(up.flush().expect("the link is up"), frames.len());

    let on_wire = raw.recv_until(Duration::from_secs(3), |got| {
        got.iter().filter(|f| has_marker(f)).count() >= frames.len()
    });
    for (n, f) in frames.iter().enumerate() {
        assert!(on_wire.contains(f), "frame {n} reached the wire as sent");
    }
    if let Some(raw10) = raw10 {
        let on_vlan = raw10.recv_until(Duration::from_secs(2), |got| got.contains(&inner));
        assert!(
            on_vlan.contains(&inner),
            "the tagged frame reached VLAN 10's device"
        );
    }

    let echoed = uplink_frames(&mut up, Duration::from_millis(300), 1);
    assert!(
        echoed.is_empty(),
        "{} of our own frames came back",
        echoed.len()
    );

    let s = up.stats();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let expect = UplinkStats {
        tx_frames: frames.len() as u64,
        tx_bytes: bytes as u64,
        tx_errors: 1,
        tx_dropped: 0,
        ..s
    };
    assert_eq!(s, expect);
}

/// A TCP segment far bigger than the MTU, sent with a guest's TSO header (partial checksum),
/// leaves as MTU-sized segments with correct checksums whose payloads add up to the original,
/// untagged and tagged. The NIC's own checksum offload (and with it TSO) is off, so the kernel's
/// software GSO does the work a NIC would and the wire sees finished frames.
#[test]
fn a_tso_segment_leaves_segmented_with_checksums() {
    let Some(p) = pair() else { return };
    let mut up = open_uplink(&p);
    p.nic.enter(|| ethtool("vA", ETHTOOL_STXCSUM, 0));
    let raw = p.wire.enter(|| {
        ethtool("vB", ETHTOOL_SGRO, 0);
        Raw::open("vB")
    });
    let payload: Vec<u8> = (0..4000u32)
        .map(|i| (i * 7 % 251).to_le_bytes()[0])
        .collect();

    for (port, tag) in [(40000u16, None), (40010, Some(10u16))] {
        let (frame, hdr) = tso_frame(&payload, port, tag);
        up.send(Some(&hdr), &frame).expect("TSO frame accepted");
        assert_eq!(up.flush().expect("sent"), 1);

        let segs = raw.recv_until(Duration::from_secs(3), |got| {
            let segs = tcp_payloads(got, port, tag);
            segs.iter().map(|s| s.1.len()).sum::<usize>() >= payload.len()
        });
        let mut segs = tcp_payloads(&segs, port, tag);
        assert!(segs.len() >= 3, "{} segments", segs.len());
        segs.sort_by_key(|s| s.0);
        let joined: Vec<u8> = segs.iter().flat_map(|s| s.1.clone()).collect();
        assert_eq!(joined, payload, "segments carry the payload, in sequence");
    }
    let s = up.stats();
    assert_eq!((s.tx_frames, s.tx_errors, s.tx_dropped), (2, 0, 0));
}

/// A small budget stops the walk inside a block and the next call resumes there: every frame
/// once, in order. The descriptor is readable exactly while frames wait.
#[test]
fn a_small_budget_resumes_inside_a_block() {
    let Some(p) = pair() else { return };
    let config = UplinkConfig {
        rx_budget: 3,
        ..UplinkConfig::default()
    };
    let mut up = p
        .nic
        .enter(|| Uplink::open_with("vA", config))
        .expect("opens");
    assert!(!up.pending());
    assert!(
        !readable(&up, Duration::from_millis(20)),
        "nothing to read yet"
    );
    let raw = p.wire.enter(|| Raw::open("vB"));
    let sent: Vec<Vec<u8>> = (0..10)
        .map(|n| eth(BROADCAST, MAC_B, EXPERIMENTAL, &marker(n)))
        .collect();
    for f in &sent {
        raw.send(f);
    }
    assert!(
        readable(&up, Duration::from_secs(2)),
        "a retired block wakes the poller"
    );
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < sent.len() && Instant::now() < deadline {
        wait_readable(up.fd(), deadline);
        let n = up.recv_batch(|f| {
            if has_marker(f) {
                got.push(f.to_vec());
            }
        });
        assert!(n <= 3, "{n} frames from one call with a budget of 3");
    }
    assert_eq!(got, sent, "every frame once, in order");
    assert!(!up.pending());
    assert!(
        !readable(&up, Duration::from_millis(20)),
        "nothing left to read"
    );
}

/// A ring nobody reads fills up: the kernel drops and says so, the counters show it, and
/// reading resumes cleanly once blocks come back.
#[test]
fn a_full_ring_counts_its_drops() {
    let Some(p) = pair() else { return };
    let config = UplinkConfig {
        block_size: 4096,
        blocks: 2,
        ..UplinkConfig::default()
    };
    let mut up = p
        .nic
        .enter(|| Uplink::open_with("vA", config))
        .expect("opens");
    let raw = p.wire.enter(|| Raw::open("vB"));
    let big = eth(
        BROADCAST,
        MAC_B,
        EXPERIMENTAL,
        &[marker(0), vec![1; 1000]].concat(),
    );
    for _ in 0..20 {
        raw.send(&big);
    }
    std::thread::sleep(Duration::from_millis(20));
    let s = up.stats();
    assert!(s.rx_kernel_drops > 0, "{s:?}");
    assert!(s.rx_ring_full > 0, "{s:?}");
    let before = uplink_frames(&mut up, Duration::from_millis(200), 20).len();
    assert!(
        (2..20).contains(&before),
        "{before} of 20 fitted in two 4 KiB blocks"
    );
    let after = eth(BROADCAST, MAC_B, EXPERIMENTAL, &marker(1));
    raw.send(&after);
    assert_eq!(
        uplink_frames(&mut up, Duration::from_secs(2), 1),
        vec![after]
    );
    assert_eq!(
        up.stats().rx_kernel_drops,
        s.rx_kernel_drops,
        "counters only grow"
    );
}

/// The switch's datapath moves the uplink to its own thread.
#[test]
fn the_uplink_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<Uplink>();
}

fn readable(up: &Uplink, timeout: Duration) -> bool {
    let fd = up.fd();
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ts = rustix::time::Timespec::try_from(timeout).expect("short timeout");
    poll(&mut fds, Some(&ts)).expect("poll") > 0
}

const IP_A: [u8; 4] = [10, 77, 0, 1];
const IP_B: [u8; 4] = [10, 77, 0, 2];
const MSS: u16 = 1448;

/// An Ethernet/IPv4/TCP frame carrying `payload` in one segment, and the virtio-net header a
/// guest with TSO gives it: partial checksum (the pseudo-header sum in the checksum field),
/// segment size 1448.
fn tso_frame(payload: &[u8], sport: u16, tag: Option<u16>) -> (Vec<u8>, [u8; 12]) {
    let tcp_len = 20 + payload.len();
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&u16::try_from(20 + tcp_len).expect("< 64 KiB").to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&IP_A);
    ip.extend_from_slice(&IP_B);
    let check = !fold(sum(&ip));
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&9u16.to_be_bytes());
    tcp.extend_from_slice(&1000u32.to_be_bytes()); // seq
    tcp.extend_from_slice(&1u32.to_be_bytes()); // ack
    tcp.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // ACK|PSH
    tcp.extend_from_slice(payload);
    let pseudo = fold(pseudo_sum(tcp_len));
    tcp[16..18].copy_from_slice(&pseudo.to_be_bytes());
    let mut frame = eth(MAC_B, MAC_A, 0x0800, &[ip, tcp].concat());
    let mut l2 = 14u16;
    if let Some(vid) = tag {
        frame = tagged(&frame, 0x8100, vid);
        l2 += 4;
    }
    let mut hdr = [0u8; 12];
    hdr[0] = 1; // NEEDS_CSUM
    hdr[1] = 1; // GSO_TCPV4
    hdr[2..4].copy_from_slice(&(l2 + 40).to_le_bytes());
    hdr[4..6].copy_from_slice(&MSS.to_le_bytes());
    hdr[6..8].copy_from_slice(&(l2 + 20).to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
    (frame, hdr)
}

fn sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    u16::try_from(s).expect("folded")
}

fn pseudo_sum(tcp_len: usize) -> u32 {
    sum(&IP_A) + sum(&IP_B) + 6 + u32::try_from(tcp_len).expect("small")
}

/// (sequence number, payload) of the IPv4/TCP frames from source port `sport` in `frames`
/// tagged with VID `tag` (or untagged), each checked: at most MTU-sized, IPv4 and TCP checksums
/// correct.
fn tcp_payloads(frames: &[Vec<u8>], sport: u16, tag: Option<u16>) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    for f in frames {
        let (l2, limit) = match tag {
            Some(vid) if f.get(12..16) == Some(&[&[0x81, 0][..], &vid.to_be_bytes()].concat()) => {
                (18, 1518)
            }
            None if f.get(12..14) != Some(&[0x81, 0]) => (14, 1514),
            _ => continue,
        };
        let Some(ip) = f.get(l2..l2 + 20) else {
            continue;
        };
        if f[l2 - 2..l2] != [0x08, 0x00]
            || ip[9] != 6
            || f.get(l2 + 20..l2 + 22) != Some(&sport.to_be_bytes())
        {
            continue;
        }
        assert!(
            f.len() <= limit,
            "a {}-byte frame on a 1500-byte link",
            f.len()
        );
        assert_eq!(fold(sum(ip)), 0xffff, "IPv4 header checksum");
        let ip_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let tcp = &f[l2 + 20..l2 + ip_len];
        assert_eq!(
            fold(pseudo_sum(tcp.len()) + sum(tcp)),
            0xffff,
            "TCP checksum"
        );
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let data_off = usize::from(tcp[12] >> 4) * 4;
        out.push((seq, tcp[data_off..].to_vec()));
    }
    out
}
