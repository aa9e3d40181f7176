//! The only unsafe code in `kaos-net`: interface ioctls, the packet-socket address and the TAP
//! attach, on raw Linux ABI types from `linux-raw-sys`, issued through rustix.
#![allow(unsafe_code)] // This module is the fence: everything here has a SAFETY argument.

use std::ffi::c_void;
use std::os::fd::BorrowedFd;

use linux_raw_sys::if_packet::sockaddr_ll;
use linux_raw_sys::ioctl::{SIOCGIFFLAGS, SIOCGIFHWADDR, SIOCSIFFLAGS, TUNSETIFF};
use linux_raw_sys::net::ifreq;
use rustix::io;
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, ioctl};
use rustix::net::addr::{SocketAddrArg, SocketAddrLen, SocketAddrOpaque};

/// `IFF_UP` from `<linux/if.h>`.
const IFF_UP: i16 = 1;
/// `IFF_RUNNING` from `<linux/if.h>`: the link is operational (carrier up).
const IFF_RUNNING: i16 = 0x40;
/// `IFF_TAP | IFF_NO_PI` from `<linux/if_tun.h>`: Ethernet frames, no packet-info header.
const TAP_FLAGS: i16 = 0x0002 | 0x1000;
/// `ETH_P_ALL`, host order.
pub(crate) const ETH_P_ALL: u16 = 0x0003;
/// `ARPHRD_ETHER`.
const ARPHRD_ETHER: u16 = 1;

/// An `ifreq` ioctl that reads and writes the whole request in place.
struct IfreqIoctl<'a> {
    opcode: u32,
    req: &'a mut ifreq,
}

// SAFETY: every opcode used with this type (SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCGIFHWADDR, TUNSETIFF,
// SIOCETHTOOL) takes a pointer to a `struct ifreq`, which `as_ptr` provides and which lives as
// long as `self`; for SIOCETHTOOL the caller keeps the command `ifru_data` points at alive.
unsafe impl Ioctl for IfreqIoctl<'_> {
    type Output = ();
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.opcode
    }

    fn as_ptr(&mut self) -> *mut c_void {
        std::ptr::from_mut(self.req).cast()
    }

    unsafe fn output_from_ptr(_: IoctlOutput, _: *mut c_void) -> io::Result<()> {
        Ok(())
    }
}

fn ifreq_named(name: &str) -> io::Result<ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= 16 || bytes.contains(&0) {
        return Err(io::Errno::INVAL);
    }
    // SAFETY: `ifreq` is a plain C struct of integers, arrays and unions of those; all-zero is a
    // valid value of every field.
    let mut req: ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: writing the `ifrn_name` arm of a union of plain arrays, within its 16 bytes.
    let slot = unsafe { &mut req.ifr_ifrn.ifrn_name };
    for (dst, &src) in slot.iter_mut().zip(bytes) {
        *dst = src as std::ffi::c_char;
    }
    Ok(req)
}

fn ifreq_call(fd: BorrowedFd<'_>, opcode: u32, req: &mut ifreq) -> io::Result<()> {
    // SAFETY: see the `Ioctl` impl: `req` is a valid, exclusively borrowed `ifreq`.
    unsafe { ioctl(fd, IfreqIoctl { opcode, req }) }
}

/// Sets `IFF_UP` on interface `name`, returning whether it was already up.
pub(crate) fn set_up(fd: BorrowedFd<'_>, name: &str) -> io::Result<bool> {
    let mut req = ifreq_named(name)?;
    ifreq_call(fd, SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` arm.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & IFF_UP != 0 {
        return Ok(true);
    }
    req.ifr_ifru.ifru_flags = flags | IFF_UP;
    ifreq_call(fd, SIOCSIFFLAGS, &mut req)?;
    Ok(false)
}

/// Whether interface `name` has a carrier (`IFF_RUNNING`).
pub(crate) fn running(fd: BorrowedFd<'_>, name: &str) -> io::Result<bool> {
    let mut req = ifreq_named(name)?;
    ifreq_call(fd, SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` arm.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(flags & IFF_RUNNING != 0)
}

/// The hardware (MAC) address of Ethernet interface `name`.
pub(crate) fn hw_addr(fd: BorrowedFd<'_>, name: &str) -> io::Result<[u8; 6]> {
    let mut req = ifreq_named(name)?;
    ifreq_call(fd, SIOCGIFHWADDR, &mut req)?;
    // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` arm.
    // linux-raw-sys models `struct sockaddr` as a sockaddr_storage: family, then the data bytes.
    // SAFETY: reading the plain-struct arm of a union of plain data filled by the kernel.
    let addr = unsafe {
        req.ifr_ifru
            .ifru_hwaddr
            .__storage
            .__bindgen_anon_1
            .__bindgen_anon_1
    };
    if addr.ss_family != ARPHRD_ETHER {
        return Err(io::Errno::AFNOSUPPORT);
    }
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(addr.__data.iter()) {
        *dst = src.cast_unsigned();
    }
    Ok(mac)
}

/// `SIOCETHTOOL` from `<linux/sockios.h>`.
const SIOCETHTOOL: u32 = 0x8946;
/// `ETHTOOL_SGRO` from `<linux/ethtool.h>`: set generic receive offload.
const ETHTOOL_SGRO: u32 = 0x2c;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns generic receive offload off on interface `name`. A packet socket would otherwise be
/// handed TCP segments the kernel merged into one frame larger than the MTU, with the checksum
/// of the first: a user-space stack must see frames as they were on the wire.
pub(crate) fn disable_gro(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut req = ifreq_named(name)?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: 0,
    };
    req.ifr_ifru.ifru_data = std::ptr::from_mut(&mut value).cast();
    // SIOCETHTOOL reads the command through `ifru_data`, which points at `value`, alive until
    // the call returns.
    ifreq_call(fd, SIOCETHTOOL, &mut req)
}

/// Attaches the open `/dev/net/tun` descriptor to TAP interface `name` (created if absent).
pub(crate) fn tap_attach(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut req = ifreq_named(name)?;
    req.ifr_ifru.ifru_flags = TAP_FLAGS;
    ifreq_call(fd, TUNSETIFF, &mut req)
}

/// A `sockaddr_ll` that binds a packet socket to one interface for all protocols.
pub(crate) struct PacketAddr(sockaddr_ll);

impl PacketAddr {
    pub(crate) fn all_protocols(ifindex: u32) -> io::Result<Self> {
        Self::new(ifindex, ETH_P_ALL)
    }

    /// Interface `ifindex`, EtherType `protocol` (host order; 0 binds the interface for sending
    /// without receiving anything).
    pub(crate) fn new(ifindex: u32, protocol: u16) -> io::Result<Self> {
        Ok(Self(sockaddr_ll {
            sll_family: u16::try_from(linux_raw_sys::net::AF_PACKET)
                .map_err(|_| io::Errno::INVAL)?,
            sll_protocol: protocol.to_be(),
            sll_ifindex: i32::try_from(ifindex).map_err(|_| io::Errno::INVAL)?,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        }))
    }
}

// SAFETY: `with_sockaddr` passes a pointer to a complete `sockaddr_ll` and its exact size, valid
// for the duration of the call.
unsafe impl SocketAddrArg for PacketAddr {
    unsafe fn with_sockaddr<R>(
        &self,
        f: impl FnOnce(*const SocketAddrOpaque, SocketAddrLen) -> R,
    ) -> R {
        // 20 bytes: fits.
        #[allow(clippy::cast_possible_truncation)]
        let len = std::mem::size_of::<sockaddr_ll>() as SocketAddrLen;
        f(std::ptr::from_ref(&self.0).cast(), len)
    }
}
