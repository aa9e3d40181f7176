//! The unsafe corner of the uplink: socket options with kernel structs, the shared `mmap` of the
//! receive ring, `sendmmsg`, and two interface ioctls (MTU, LRO). Everything else in
//! [`super`] is safe code over the byte slices handed out here.
#![allow(unsafe_code)] // The fence: every block names its invariant.

use std::ffi::c_void;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use linux_raw_sys::if_packet::{
    PACKET_ADD_MEMBERSHIP, PACKET_IGNORE_OUTGOING, PACKET_MR_PROMISC, PACKET_QDISC_BYPASS,
    PACKET_RX_RING, PACKET_STATISTICS, PACKET_VERSION, PACKET_VNET_HDR, TP_STATUS_KERNEL,
    TP_STATUS_USER, packet_mreq, tpacket_req3, tpacket_stats_v3, tpacket_versions,
};
use rustix::io::Errno;

/// `SOL_PACKET` from `<linux/socket.h>`.
const SOL_PACKET: i32 = 263;
/// Offset of `hdr.bh1.block_status` in `struct tpacket_block_desc`.
const BLOCK_STATUS: usize = 8;

type Result<T> = std::result::Result<T, Errno>;

fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// Sets socket option `name` at `level` to `value`, a plain C struct or integer.
fn set_opt<T: Copy>(fd: BorrowedFd<'_>, level: i32, name: u32, value: &T) -> Result<()> {
    let name = i32::try_from(name).map_err(|_| Errno::INVAL)?;
    let len = libc::socklen_t::try_from(size_of::<T>()).map_err(|_| Errno::INVAL)?;
    // SAFETY: `value` points at an initialised `T` of `len` bytes that outlives the call; the
    // kernel only reads it. `fd` is a live descriptor.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if rc == 0 { Ok(()) } else { Err(last_errno()) }
}

/// Sets an integer `SOL_PACKET` option.
pub(super) fn set_packet_int(fd: BorrowedFd<'_>, name: u32, value: i32) -> Result<()> {
    set_opt(fd, SOL_PACKET, name, &value)
}

/// `PACKET_VERSION = TPACKET_V3`.
pub(super) fn set_tpacket_v3(fd: BorrowedFd<'_>) -> Result<()> {
    set_packet_int(fd, PACKET_VERSION, tpacket_versions::TPACKET_V3 as i32)
}

/// `PACKET_IGNORE_OUTGOING`: frames this host sends are not looped into the socket (4.20+).
pub(super) fn ignore_outgoing(fd: BorrowedFd<'_>) -> Result<()> {
    set_packet_int(fd, PACKET_IGNORE_OUTGOING, 1)
}

/// `PACKET_VNET_HDR`: every frame sent is preceded by a 10-byte `virtio_net_hdr`.
pub(super) fn vnet_hdr(fd: BorrowedFd<'_>) -> Result<()> {
    set_packet_int(fd, PACKET_VNET_HDR, 1)
}

/// `PACKET_QDISC_BYPASS`: frames go straight to the driver's queue.
pub(super) fn qdisc_bypass(fd: BorrowedFd<'_>) -> Result<()> {
    set_packet_int(fd, PACKET_QDISC_BYPASS, 1)
}

/// `PACKET_ADD_MEMBERSHIP` with `PACKET_MR_PROMISC`: promiscuous for as long as the socket lives
/// (the kernel counts such requests and drops ours when the socket closes).
pub(super) fn promiscuous(fd: BorrowedFd<'_>, ifindex: u32) -> Result<()> {
    let mreq = packet_mreq {
        mr_ifindex: i32::try_from(ifindex).map_err(|_| Errno::INVAL)?,
        mr_type: u16::try_from(PACKET_MR_PROMISC).map_err(|_| Errno::INVAL)?,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    set_opt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)
}

/// `PACKET_STATISTICS` of a `TPACKET_V3` socket. The kernel resets its counters on every read.
pub(super) fn take_stats(fd: BorrowedFd<'_>) -> Result<tpacket_stats_v3> {
    let mut stats = tpacket_stats_v3 {
        tp_packets: 0,
        tp_drops: 0,
        tp_freeze_q_cnt: 0,
    };
    let mut len =
        libc::socklen_t::try_from(size_of::<tpacket_stats_v3>()).map_err(|_| Errno::INVAL)?;
    // SAFETY: `stats` is a writable `tpacket_stats_v3` of `len` bytes and `len` a writable
    // socklen_t, both alive for the call; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_PACKET,
            PACKET_STATISTICS as i32,
            std::ptr::from_mut(&mut stats).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(stats)
    } else {
        Err(last_errno())
    }
}

/// The management link's `sockaddr_ll`, shared.
pub(super) use crate::sys::PacketAddr;

/// A `TPACKET_V3` receive ring mapped into this process: `blocks` blocks of `block_size` bytes,
/// each owned by the kernel or by us according to its `block_status` word.
#[derive(Debug)]
pub(super) struct RxRing {
    base: NonNull<u8>,
    block_size: usize,
    blocks: usize,
}

// SAFETY: the mapping belongs to this value alone (no other Rust reference to it exists outside
// borrows of `self`); moving it to another thread moves that ownership. The kernel side does not
// care which thread reads.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Asks the kernel for the ring on packet socket `fd` (`PACKET_RX_RING`) and maps it.
    /// `block_size` is a power of two of at least a page; `frame_size` divides it.
    pub(super) fn new(
        fd: BorrowedFd<'_>,
        block_size: u32,
        blocks: u32,
        frame_size: u32,
        retire_ms: u32,
    ) -> Result<Self> {
        let req = tpacket_req3 {
            tp_block_size: block_size,
            tp_block_nr: blocks,
            tp_frame_size: frame_size,
            tp_frame_nr: (block_size / frame_size)
                .checked_mul(blocks)
                .ok_or(Errno::INVAL)?,
            tp_retire_blk_tov: retire_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_opt(fd, SOL_PACKET, PACKET_RX_RING, &req)?;
        let block_size = usize::try_from(block_size).map_err(|_| Errno::INVAL)?;
        let blocks = usize::try_from(blocks).map_err(|_| Errno::INVAL)?;
        let len = block_size.checked_mul(blocks).ok_or(Errno::INVAL)?;
        // SAFETY: a fresh shared mapping chosen by the kernel (no address hint), so it overlaps
        // nothing of ours; the ring the kernel just set up backs exactly `len` bytes. (Its pages
        // are the kernel's own and never swapped: no MAP_LOCKED needed.)
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_errno());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(Errno::NOMEM)?;
        Ok(Self {
            base,
            block_size,
            blocks,
        })
    }

    pub(super) fn blocks(&self) -> usize {
        self.blocks
    }

    /// The `block_status` word of block `index` (< `blocks`), as an atomic shared with the kernel.
    fn status(&self, index: usize) -> &AtomicU32 {
        assert!(index < self.blocks, "block index {index} within the ring");
        // SAFETY: `index < blocks`, so the word at `index * block_size + 8` lies inside the
        // mapping, which lives as long as `self`; blocks start page-aligned, so the word is
        // 4-aligned. The kernel accesses it only atomically (smp_wmb/smp_rmb around plain
        // 32-bit stores and loads), as we do.
        unsafe {
            AtomicU32::from_ptr(
                self.base
                    .as_ptr()
                    .add(index * self.block_size + BLOCK_STATUS)
                    .cast(),
            )
        }
    }

    /// Whether block `index` has been retired to us.
    pub(super) fn is_user(&self, index: usize) -> bool {
        self.status(index).load(Ordering::Acquire) & TP_STATUS_USER != 0
    }

    /// Block `index`, if the kernel has retired it to us; it stays ours until [`Self::release`].
    pub(super) fn user_block(&mut self, index: usize) -> Option<&mut [u8]> {
        if !self.is_user(index) {
            return None;
        }
        // SAFETY: the block lies inside the mapping (`index < blocks`, checked by `status`).
        // Its status says TP_STATUS_USER (loaded with Acquire, pairing with the kernel's write
        // barrier before it set the status), so the kernel no longer writes to it until we store
        // TP_STATUS_KERNEL in `release`, which needs `&mut self` and so ends this borrow first.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.base.as_ptr().add(index * self.block_size),
                self.block_size,
            )
        })
    }

    /// Hands block `index` back to the kernel.
    pub(super) fn release(&mut self, index: usize) {
        self.status(index)
            .store(TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`; no borrow of it can outlive
        // `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.block_size * self.blocks);
        }
    }
}

/// Most messages one `sendmmsg` call carries.
pub(super) const SEND_BATCH: usize = 64;

/// Sends up to [`SEND_BATCH`] messages from `msgs`, each one datagram, in one `sendmmsg` on the
/// bound packet socket `fd`. Returns how many the kernel took (a prefix); an error means the
/// first of them was refused.
pub(super) fn send_batch<'a>(
    fd: BorrowedFd<'_>,
    msgs: impl Iterator<Item = &'a [u8]>,
) -> Result<usize> {
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; SEND_BATCH];
    let mut count = 0;
    for (iov, msg) in iovs.iter_mut().zip(msgs) {
        // The kernel only reads through the iovec; `*mut` is the C type's spelling.
        iov.iov_base = msg.as_ptr().cast_mut().cast::<c_void>();
        iov.iov_len = msg.len();
        count += 1;
    }
    if count == 0 {
        return Ok(0);
    }
    // SAFETY: `mmsghdr` is plain C data; all-zero is a valid value (null name and control).
    let mut hdrs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    for (hdr, iov) in hdrs.iter_mut().zip(iovs.iter_mut()).take(count) {
        hdr.msg_hdr.msg_iov = std::ptr::from_mut(iov);
        hdr.msg_hdr.msg_iovlen = 1;
    }
    // 64 at most: fits.
    #[allow(clippy::cast_possible_truncation)]
    let vlen = count as libc::c_uint;
    // SAFETY: `hdrs[..count]` are initialised headers whose iovecs point into `iovs`, which
    // point at the caller's slices; all outlive the call, and the kernel reads them only (it
    // writes `msg_len` into `hdrs`, which we own). No address: the socket is bound.
    let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), vlen, libc::MSG_DONTWAIT) };
    usize::try_from(rc).map_err(|_| last_errno())
}

/// `SIOCETHTOOL` and the legacy flag commands from `<linux/ethtool.h>`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GFLAGS: u32 = 0x25;
const ETHTOOL_SFLAGS: u32 = 0x26;
const ETH_FLAG_LRO: u32 = 1 << 15;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

fn ifreq(name: &str) -> Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(Errno::INVAL);
    }
    // SAFETY: `ifreq` is plain C data (arrays, integers and unions of those); all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src.cast_signed();
    }
    Ok(req)
}

/// An ioctl on `fd` that takes a `struct ifreq`.
///
/// # Safety
/// `request` must be an ioctl that reads and writes a `struct ifreq` and nothing else, except
/// through `ifru_data`, which the caller keeps pointing at live memory of the right type.
unsafe fn ifreq_ioctl(
    fd: BorrowedFd<'_>,
    request: libc::c_ulong,
    req: &mut libc::ifreq,
) -> Result<()> {
    // SAFETY: per this function's contract; `req` is exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, std::ptr::from_mut(req)) };
    if rc == 0 { Ok(()) } else { Err(last_errno()) }
}

/// The MTU of interface `name` (`SIOCGIFMTU`).
pub(super) fn mtu(fd: BorrowedFd<'_>, name: &str) -> Result<u32> {
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFMTU reads the name and writes `ifru_mtu` of the `ifreq`.
    unsafe { ifreq_ioctl(fd, libc::SIOCGIFMTU, &mut req)? };
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` arm, a plain integer.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| Errno::INVAL)
}

fn ethtool_value(fd: BorrowedFd<'_>, name: &str, value: &mut EthtoolValue) -> Result<()> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_data = std::ptr::from_mut(value).cast();
    // SAFETY: SIOCETHTOOL reads the command through `ifru_data`, which points at `value`, an
    // `ethtool_value` (what the flag commands take) alive until the call returns.
    unsafe { ifreq_ioctl(fd, SIOCETHTOOL, &mut req) }
}

/// Turns large receive offload off on interface `name` (`ETHTOOL_SFLAGS` without
/// `ETH_FLAG_LRO`), if it is on.
pub(super) fn disable_lro(fd: BorrowedFd<'_>, name: &str) -> Result<()> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    ethtool_value(fd, name, &mut value)?;
    if value.data & ETH_FLAG_LRO == 0 {
        return Ok(());
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SFLAGS,
        data: value.data & !ETH_FLAG_LRO,
    };
    ethtool_value(fd, name, &mut value)
}
