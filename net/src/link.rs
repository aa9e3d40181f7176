//! Ethernet links the endpoint owns: a NIC through an `AF_PACKET` socket (the kernel keeps no IP
//! address on it) or a TAP device (hosted mode). Both are a non-blocking fd that reads and writes
//! whole frames, exposed to smoltcp as a [`phy::Device`].

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags, open};
use rustix::io::{self, read, write};
use rustix::net::{AddressFamily, SocketFlags, SocketType, netdevice, socket_with};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::sys;

/// Largest Ethernet frame we send or accept (no jumbo frames on the management link).
const MAX_FRAME: usize = 1514;

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The interface name is empty, too long or contains NUL.
    #[error("invalid interface name {0:?}")]
    BadName(String),
    /// A system call failed while opening the link.
    #[error("{what} on {iface}: {source}")]
    Sys {
        /// The step that failed.
        what: &'static str,
        /// The interface.
        iface: String,
        /// The error.
        source: io::Errno,
    },
}

/// Frame counters of one link.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkStats {
    /// Frames received and handed to the stack.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Receive or send errors other than "try again".
    pub errors: u64,
}

/// An open Ethernet link.
#[derive(Debug)]
pub struct Link {
    fd: OwnedFd,
    /// A NIC through a packet socket (false: a TAP, whose carrier is always up).
    nic: bool,
    name: String,
    mac: [u8; 6],
    rx: Vec<u8>,
    tx: Vec<u8>,
    stats: LinkStats,
}

impl Link {
    /// Opens NIC `name` through an `AF_PACKET` socket, brings it up and uses its own MAC.
    pub fn packet(name: &str) -> Result<Self, LinkError> {
        check_name(name)?;
        let sys_err = |what| sys_error(name, what);
        let fd = socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            Some(rustix::net::eth::ALL),
        )
        .map_err(sys_err("socket(AF_PACKET)"))?;
        let index = netdevice::name_to_index(&fd, name).map_err(sys_err("interface index"))?;
        sys::set_up(fd.as_fd(), name).map_err(sys_err("bring up"))?;
        if let Err(e) = sys::disable_gro(fd.as_fd(), name) {
            // Drivers without GRO support refuse; then nothing is merged anyway.
            log::debug!("{name}: cannot turn GRO off: {e}");
        }
        let mac = sys::hw_addr(fd.as_fd(), name).map_err(sys_err("hardware address"))?;
        let addr = sys::PacketAddr::all_protocols(index).map_err(sys_err("bind"))?;
        rustix::net::bind(&fd, &addr).map_err(sys_err("bind"))?;
        let mut link = Self::new(fd, name, mac);
        link.nic = true;
        Ok(link)
    }

    /// Attaches to TAP interface `name` (created if absent, which needs `CAP_NET_ADMIN`). The
    /// endpoint's MAC is `mac`: the kernel side of the TAP has its own.
    pub fn tap(name: &str, mac: [u8; 6]) -> Result<Self, LinkError> {
        check_name(name)?;
        let sys_err = |what| sys_error(name, what);
        let fd = open(
            "/dev/net/tun",
            OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys_err("open /dev/net/tun"))?;
        sys::tap_attach(fd.as_fd(), name).map_err(sys_err("TUNSETIFF"))?;
        Ok(Self::new(fd, name, mac))
    }

    fn new(fd: OwnedFd, name: &str, mac: [u8; 6]) -> Self {
        Self {
            fd,
            nic: false,
            name: name.to_owned(),
            mac,
            rx: vec![0; MAX_FRAME + 4],
            tx: vec![0; MAX_FRAME],
            stats: LinkStats::default(),
        }
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MAC address the endpoint uses on this link.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Frame counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Whether the NIC has a carrier; `None` for a TAP or if it cannot be read.
    pub fn carrier(&self) -> Option<bool> {
        if !self.nic {
            return None;
        }
        sys::running(self.fd.as_fd(), &self.name).ok()
    }
}

/// The error of step `what` on interface `iface`, for `map_err`.
fn sys_error<'a>(iface: &'a str, what: &'static str) -> impl FnOnce(io::Errno) -> LinkError + 'a {
    move |source| LinkError::Sys {
        what,
        iface: iface.to_owned(),
        source,
    }
}

fn check_name(name: &str) -> Result<(), LinkError> {
    if name.is_empty() || name.len() >= 16 || name.contains(['\0', '/']) {
        return Err(LinkError::BadName(name.to_owned()));
    }
    Ok(())
}

impl AsFd for Link {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl phy::Device for Link {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let Self {
            ref fd,
            ref mut rx,
            ref mut tx,
            ref mut stats,
            mac,
            ref name,
            nic: _,
        } = *self;
        let len = loop {
            match read(fd, &mut rx[..]) {
                Ok(0) => return None,
                // A packet socket also sees the frames we send; skip our own.
                Ok(len) if len >= 12 && rx[6..12] == mac => continue,
                Ok(len) => break len,
                Err(io::Errno::AGAIN | io::Errno::INTR) => return None,
                Err(e) => {
                    stats.errors += 1;
                    log::debug!("{name}: receive: {e}");
                    return None;
                }
            }
        };
        stats.rx_frames += 1;
        let tx = TxToken {
            fd: fd.as_fd(),
            buf: tx,
            stats,
        };
        Some((RxToken { frame: &rx[..len] }, tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            fd: self.fd.as_fd(),
            buf: &mut self.tx,
            stats: &mut self.stats,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps
    }
}

/// A received frame, borrowed from the link's receive buffer.
#[derive(Debug)]
pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Permission to send one frame.
#[derive(Debug)]
pub struct TxToken<'a> {
    fd: BorrowedFd<'a>,
    buf: &'a mut Vec<u8>,
    stats: &'a mut LinkStats,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buf.len());
        let result = f(&mut self.buf[..len]);
        match write(self.fd, &self.buf[..len]) {
            Ok(_) => self.stats.tx_frames += 1,
            // A full queue drops the frame, as a NIC would; TCP retransmits.
            Err(e) => {
                self.stats.errors += 1;
                log::debug!("send: {e}");
            }
        }
        result
    }
}
