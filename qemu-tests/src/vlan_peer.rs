//! A Linux host on one VLAN of the QEMU host's uplink trunk: a TAP in a network namespace the
//! test owns, with the namespace's own kernel IP stack behind it, joined to QEMU's second NIC
//! through a relay that adds and removes the 802.1Q tag.
//!
//! **Why a relay, not a VLAN sub-interface.** The natural peer is `ip link add link tap0 name
//! tap0.10 type vlan id 10`; the kernels of the machines these tests run on are built without
//! `CONFIG_VLAN_8021Q`, so the tag is pushed and popped here instead, exactly as the
//! sub-interface would: frames tagged with the VLAN lose their tag on the way in, every frame
//! the peer sends gets it on the way out, and anything else on the trunk (untagged, other
//! VLANs) is counted and not delivered. QEMU's end is a UDP socket pair
//! (`-netdev socket,udp=`): one datagram per frame.

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;

/// 802.1Q's TPID.
const TPID: [u8; 2] = [0x81, 0x00];

/// Frames the relay saw, by fate.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Tagged with the peer's VLAN, untagged and delivered to the peer.
    pub to_peer: AtomicU64,
    /// From the peer, tagged and sent to QEMU.
    pub from_peer: AtomicU64,
    /// Untagged or of another VLAN: not the peer's.
    pub other: AtomicU64,
}

/// The peer and its relay; stops and removes the TAP on drop (with the namespace's help).
#[derive(Debug)]
pub struct VlanPeer {
    /// QEMU's UDP port (the relay sends there).
    pub qemu_port: u16,
    /// The relay's UDP port (QEMU sends there).
    pub relay_port: u16,
    /// The TAP's name inside the namespace.
    pub tap: String,
    /// What crossed the relay.
    pub counters: Arc<RelayCounters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl VlanPeer {
    /// Makes the TAP `tap` in `ns`, gives it `cidr` (e.g. `10.0.10.200/24`), and relays it on
    /// VLAN `vlan`. Start QEMU with [`VlanPeer::qemu_netdev`] afterwards.
    ///
    /// # Errors
    /// The TAP, its address or the sockets could not be set up.
    pub fn start(ns: &NetNs, tap: &str, vlan: u16, cidr: &str) -> Result<VlanPeer> {
        if !(1..=4094).contains(&vlan) {
            bail!("VLAN {vlan} is not 1-4094");
        }
        let name = tap.to_owned();
        let fd = ns.enter(move || open_tap(&name))??;
        ns.ip(&["addr", "add", cidr, "dev", tap])?;
        ns.ip(&["link", "set", tap, "up"])?;
        let relay = UdpSocket::bind("127.0.0.1:0").context("bind the relay's UDP socket")?;
        let relay_port = relay.local_addr()?.port();
        let qemu_port = {
            let probe = UdpSocket::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        relay.set_read_timeout(Some(Duration::from_millis(200)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(RelayCounters::default());
        let tap_file = Arc::new(std::fs::File::from(fd));
        let relay = Arc::new(relay);
        let mut threads = Vec::new();
        {
            let (relay, tap_file, stop, counters) = (
                relay.clone(),
                tap_file.clone(),
                stop.clone(),
                counters.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = relay.recv(&mut buf) else {
                        continue;
                    };
                    let frame = &buf[..n];
                    match untag(frame, vlan) {
                        Some(inner) => {
                            use std::io::Write as _;
                            if (&*tap_file).write_all(&inner).is_ok() {
                                counters.to_peer.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        None => {
                            counters.other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        {
            let (relay, tap_file, stop, counters) = (
                relay.clone(),
                tap_file.clone(),
                stop.clone(),
                counters.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if !readable(&tap_file, 200) {
                        continue;
                    }
                    use std::io::Read as _;
                    let Ok(n) = (&*tap_file).read(&mut buf) else {
                        continue;
                    };
                    if let Some(tagged) = tag(&buf[..n], vlan)
                        && relay.send_to(&tagged, ("127.0.0.1", qemu_port)).is_ok()
                    {
                        counters.from_peer.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(VlanPeer {
            qemu_port,
            relay_port,
            tap: tap.to_owned(),
            counters,
            stop,
            threads,
        })
    }

    /// QEMU's `-netdev` value for its end.
    pub fn qemu_netdev(&self, id: &str) -> String {
        format!(
            "socket,id={id},udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
            self.relay_port, self.qemu_port
        )
    }
}

impl Drop for VlanPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The frame without its tag, if it carries VLAN `vlan`.
pub fn untag(frame: &[u8], vlan: u16) -> Option<Vec<u8>> {
    if frame.len() < 18 || frame[12..14] != TPID {
        return None;
    }
    let vid = u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff;
    (vid == vlan).then(|| [&frame[..12], &frame[16..]].concat())
}

/// The frame with a tag for VLAN `vlan` (priority 0) after the MAC addresses.
pub fn tag(frame: &[u8], vlan: u16) -> Option<Vec<u8>> {
    if frame.len() < 14 {
        return None;
    }
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&frame[..12]);
    out.extend_from_slice(&TPID);
    out.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    Some(out)
}

fn readable(file: &std::fs::File, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

/// Opens (creating) TAP `name` in the calling thread's network namespace.
fn open_tap(name: &str) -> Result<OwnedFd> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("open /dev/net/tun")?;
    // struct ifreq: the name, then flags (short) in the union.
    let mut ifr = [0u8; 40];
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= 16 {
        bail!("TAP name {name:?} must be 1-15 bytes");
    }
    ifr[..bytes.len()].copy_from_slice(bytes);
    let flags = u16::try_from(libc::IFF_TAP | libc::IFF_NO_PI).context("TAP flags")?;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes on x86_64), which `ifr` is.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) };
    if rc != 0 {
        bail!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
    // SAFETY: the descriptor was just released by the File that owned it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_go_on_and_come_off() {
        let frame: Vec<u8> = (0u8..60).collect();
        let tagged = tag(&frame, 10).expect("long enough");
        assert_eq!(&tagged[12..16], &[0x81, 0, 0, 10]);
        assert_eq!(untag(&tagged, 10), Some(frame.clone()));
        assert_eq!(untag(&tagged, 20), None, "another VLAN");
        assert_eq!(untag(&frame, 10), None, "untagged");
        assert_eq!(tag(&frame[..10], 10), None);
    }
}
