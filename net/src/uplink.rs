//! The virtual switch's uplink: a physical NIC attached through two `AF_PACKET` sockets, batched
//! both ways (issue 6).
//!
//! - **Receive**: a `TPACKET_V3` ring shared with the kernel. The kernel fills a block with
//!   frames and retires it to us when it is full or after `retire_ms`; [`Uplink::recv_batch`]
//!   walks retired blocks (every offset checked against the block, see `ring`) and hands them
//!   back. One `poll` wake-up and no copy per block, instead of a `recvmsg` per frame.
//! - **Frames as on the wire**: the kernel strips a VLAN tag into metadata before any packet
//!   socket sees the frame; the tag is put back (TPID from `tp_vlan_tpid` when the kernel says
//!   it is valid, else 802.1Q), in place in the ring's padding, so the switch can classify it.
//!   Frames this host sent (`PACKET_OUTGOING`) are ignored twice: the kernel is asked not to
//!   loop them (`PACKET_IGNORE_OUTGOING`) and the walk skips any that come anyway.
//! - **No merged frames**: GRO and LRO are turned off on the NIC, because a frame bigger than
//!   the MTU must never reach a guest unsegmented; a frame longer than MTU + Ethernet header +
//!   two tags that arrives anyway (a driver that cannot turn them off) is dropped and counted.
//! - **Transmit**: a second socket, bound without a protocol so that it receives nothing, with
//!   `PACKET_VNET_HDR` (so a guest's checksum and TSO offload survive: the kernel completes the
//!   checksum or segments, in the NIC or in software). Frames are queued by [`Uplink::send`] and
//!   leave in `sendmmsg` calls of up to 64 by [`Uplink::flush`]. The socket never blocks: when
//!   the NIC's queue or the socket buffer is full the rest of the batch is dropped and counted,
//!   as a NIC drops on a full ring; TCP recovers.
//! - **Through the qdisc by default**: `PACKET_QDISC_BYPASS` is an option, off, because the
//!   kernel's direct transmit path drops (`ENOBUFS`) any frame that needs software segmentation
//!   (`__dev_direct_xmit` refuses a segmented skb): with it, a guest's TSO frame reaches the wire
//!   only if the NIC segments that kind of frame itself. The veth test showed exactly that.
//! - **Promiscuous** through `PACKET_MR_PROMISC` membership, which the kernel withdraws when the
//!   socket closes, so a crashed switch leaves the NIC as it found it (except up, GRO/LRO off).
//!
//! Unsafe code (socket options with kernel structs, the ring mapping, `sendmmsg`, two ioctls)
//! lives in `uplink/sys.rs`; the parsing of ring memory is safe code on byte slices.

pub mod fixture;
mod ring;
mod sys;
mod tx;

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, netdevice, socket_with};

pub use tx::{SendError, shift_vnet_hdr};

/// `tp_frame_size` for the ring: with `TPACKET_V3` only a bookkeeping unit (frames are packed
/// by their real size), but it must divide the block size.
const FRAME_UNIT: u32 = 2048;
/// Ethernet header plus two tags: the longest header a frame of MTU-sized payload has.
const MAX_L2_OVERHEAD: usize = 14 + 8;
/// Room before frame data in a ring block: block descriptor, frame header, `sockaddr_ll`.
const RING_OVERHEAD: usize = 48 + 96;
/// Queued bytes at which [`Uplink::send`] flushes on its own.
const TX_QUEUE_BYTES: usize = 1 << 20;
/// `ETH_P_ALL`.
const ETH_P_ALL: u16 = 0x0003;

/// Ring and batch sizes. The defaults hold 8 MiB of received frames (about 5000 full-size
/// frames, several milliseconds at 10 Gbit/s) and add at most 1 ms of latency at low rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkConfig {
    /// Bytes per ring block: a power of two, at least 4 KiB and room for one frame at the MTU.
    pub block_size: u32,
    /// Blocks in the ring, at least 2.
    pub blocks: u32,
    /// Milliseconds after which the kernel retires a block that is not full (0: its choice,
    /// derived from the link speed, usually 8 ms).
    pub retire_ms: u32,
    /// Frames [`Uplink::recv_batch`] looks at per call (delivered or not), at least 1.
    pub rx_budget: usize,
    /// Frames [`Uplink::send`] queues before it flushes on its own, at least 1.
    pub tx_batch: usize,
    /// Whether sent frames skip the NIC's queueing discipline (`PACKET_QDISC_BYPASS`): faster,
    /// but a full NIC queue drops instead of queueing, and a GSO frame the NIC cannot segment
    /// in hardware is dropped (counted in `tx_dropped`) instead of segmented in software. Only
    /// for NICs with TSO for every kind of frame guests send (tagged, IPv6, ECN).
    pub qdisc_bypass: bool,
    /// Send buffer of the transmit socket in bytes: how much may be in flight to the NIC.
    pub send_buffer: usize,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            block_size: 1 << 18,
            blocks: 32,
            retire_ms: 1,
            rx_budget: 256,
            tx_batch: 64,
            qdisc_bypass: false,
            send_buffer: 4 << 20,
        }
    }
}

impl UplinkConfig {
    fn check(&self, mtu: usize) -> Result<(), &'static str> {
        if !self.block_size.is_power_of_two() || self.block_size < 4096 {
            return Err("block size must be a power of two of at least 4096");
        }
        if self.block_size > 1 << 26 {
            return Err("block size must be at most 64 MiB");
        }
        if mtu + MAX_L2_OVERHEAD + RING_OVERHEAD > self.block_size as usize {
            return Err("block size must hold a frame at the MTU");
        }
        if self.blocks < 2 || u64::from(self.blocks) * u64::from(self.block_size) > 1 << 30 {
            return Err("the ring needs 2 blocks or more and at most 1 GiB");
        }
        if self.rx_budget == 0 || self.tx_batch == 0 {
            return Err("receive budget and transmit batch must be at least 1");
        }
        Ok(())
    }
}

/// Why an uplink could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UplinkError {
    /// The interface name is empty, too long or contains NUL or '/'.
    #[error("invalid interface name {0:?}")]
    BadName(String),
    /// The configuration cannot work.
    #[error("uplink configuration: {0}")]
    BadConfig(&'static str),
    /// A system call failed while opening the uplink.
    #[error("{what} on {iface}: {source}")]
    Sys {
        /// The step that failed.
        what: &'static str,
        /// The interface.
        iface: String,
        /// The error.
        source: Errno,
    },
}

impl From<UplinkError> for std::io::Error {
    fn from(e: UplinkError) -> Self {
        let kind = match &e {
            UplinkError::Sys { source, .. } => std::io::Error::from(*source).kind(),
            _ => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, e)
    }
}

/// Counters of one uplink since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Frames delivered by [`Uplink::recv_batch`].
    pub rx_frames: u64,
    /// Their bytes, as on the wire (tags included, no FCS).
    pub rx_bytes: u64,
    /// Frames the kernel dropped because the ring was full (`tp_drops`).
    pub rx_kernel_drops: u64,
    /// Times the ring was full (`tp_freeze_q_cnt`).
    pub rx_ring_full: u64,
    /// Frames the ring held only in part (bigger than a block): dropped.
    pub rx_truncated: u64,
    /// Frames longer than MTU + Ethernet header + two tags (merged by an offload that could not
    /// be turned off): dropped.
    pub rx_oversize: u64,
    /// Frames shorter than an Ethernet header, and ring entries that made no sense: dropped.
    pub rx_malformed: u64,
    /// Delivered frames whose checksum the kernel had not filled in (`TP_STATUS_CSUMNOTREADY`:
    /// only frames that never crossed a wire, e.g. from a veth peer on this host).
    pub rx_csum_partial: u64,
    /// Frames the kernel accepted for sending.
    pub tx_frames: u64,
    /// Their bytes (a GSO frame counts before segmentation).
    pub tx_bytes: u64,
    /// Frames dropped because the NIC's queue or the socket buffer was full, or the link down.
    pub tx_dropped: u64,
    /// Frames refused: by [`Uplink::send`]'s checks ([`SendError`]) or by the kernel.
    pub tx_errors: u64,
}

/// An open uplink. `Send`, not `Sync`: one thread (the switch's datapath) owns it.
pub struct Uplink {
    name: String,
    ifindex: u32,
    mac: [u8; 6],
    mtu: usize,
    rx: OwnedFd,
    ring: sys::RxRing,
    /// The block the walk is in or waits for.
    block: usize,
    /// Where the walk stands in `block`, once it has started.
    cursor: Option<ring::Cursor>,
    /// Frames whose tag cannot be restored in place.
    scratch: Vec<u8>,
    rx_budget: usize,
    tx: OwnedFd,
    queue: tx::TxQueue,
    tx_batch: usize,
    /// A link error met by a flush inside `send`, reported by the next `flush`.
    pending_error: Option<Errno>,
    stats: UplinkStats,
    /// `PACKET_STATISTICS` summed (the kernel resets it on each read): drops, freezes.
    kernel: Cell<(u64, u64)>,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .field("mtu", &self.mtu)
            .field("blocks", &self.ring.blocks())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Uplink {
    /// Opens NIC `ifname` with the default configuration: brings it up, makes it promiscuous,
    /// turns GRO/LRO off, maps the receive ring. Needs `CAP_NET_RAW` and `CAP_NET_ADMIN`.
    pub fn open(ifname: &str) -> Result<Self, UplinkError> {
        Self::open_with(ifname, UplinkConfig::default())
    }

    /// [`Self::open`] with ring and batch sizes of one's own.
    pub fn open_with(ifname: &str, config: UplinkConfig) -> Result<Self, UplinkError> {
        if ifname.is_empty() || ifname.len() >= 16 || ifname.contains(['\0', '/']) {
            return Err(UplinkError::BadName(ifname.to_owned()));
        }
        let err = |what: &'static str| {
            move |source| UplinkError::Sys {
                what,
                iface: ifname.to_owned(),
                source,
            }
        };
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        // No protocol yet: nothing is queued before the ring exists and the bind says what to take.
        let rx = socket_with(AddressFamily::PACKET, SocketType::RAW, flags, None)
            .map_err(err("socket(AF_PACKET)"))?;
        let ifindex = netdevice::name_to_index(&rx, ifname).map_err(err("interface index"))?;
        let mtu = sys::mtu(rx.as_fd(), ifname).map_err(err("MTU"))? as usize;
        config.check(mtu).map_err(UplinkError::BadConfig)?;
        crate::sys::set_up(rx.as_fd(), ifname).map_err(err("bring up"))?;
        // Drivers without the offload refuse to change it; then nothing is merged anyway, and
        // `rx_oversize` catches a driver that merges regardless.
        if let Err(e) = crate::sys::disable_gro(rx.as_fd(), ifname) {
            log::debug!("{ifname}: cannot turn GRO off: {e}");
        }
        if let Err(e) = sys::disable_lro(rx.as_fd(), ifname) {
            log::debug!("{ifname}: cannot turn LRO off: {e}");
        }
        let mac = crate::sys::hw_addr(rx.as_fd(), ifname).map_err(err("hardware address"))?;

        sys::set_tpacket_v3(rx.as_fd()).map_err(err("PACKET_VERSION"))?;
        let ring = sys::RxRing::new(
            rx.as_fd(),
            config.block_size,
            config.blocks,
            FRAME_UNIT,
            config.retire_ms,
        )
        .map_err(err("PACKET_RX_RING"))?;
        if let Err(e) = sys::ignore_outgoing(rx.as_fd()) {
            // Before Linux 4.20; the walk skips PACKET_OUTGOING frames itself.
            log::debug!("{ifname}: no PACKET_IGNORE_OUTGOING: {e}");
        }
        sys::promiscuous(rx.as_fd(), ifindex).map_err(err("promiscuous"))?;
        let addr = sys::PacketAddr::new(ifindex, ETH_P_ALL).map_err(err("bind"))?;
        rustix::net::bind(&rx, &addr).map_err(err("bind"))?;

        let tx = socket_with(AddressFamily::PACKET, SocketType::RAW, flags, None)
            .map_err(err("socket(AF_PACKET)"))?;
        sys::vnet_hdr(tx.as_fd()).map_err(err("PACKET_VNET_HDR"))?;
        if config.qdisc_bypass {
            sys::qdisc_bypass(tx.as_fd()).map_err(err("PACKET_QDISC_BYPASS"))?;
        }
        use rustix::net::sockopt;
        if sockopt::set_socket_send_buffer_size_force(&tx, config.send_buffer).is_err() {
            sockopt::set_socket_send_buffer_size(&tx, config.send_buffer)
                .map_err(err("SO_SNDBUF"))?;
        }
        // Protocol 0: bound to the NIC for sending, receiving nothing.
        let addr = sys::PacketAddr::new(ifindex, 0).map_err(err("bind"))?;
        rustix::net::bind(&tx, &addr).map_err(err("bind"))?;

        log::info!(
            "uplink {ifname}: index {ifindex}, MTU {mtu}, ring {}×{} KiB",
            config.blocks,
            config.block_size / 1024
        );
        Ok(Self {
            name: ifname.to_owned(),
            ifindex,
            mac,
            mtu,
            rx,
            ring,
            block: 0,
            cursor: None,
            scratch: Vec::new(),
            rx_budget: config.rx_budget,
            tx,
            queue: tx::TxQueue::default(),
            tx_batch: config.tx_batch,
            pending_error: None,
            stats: UplinkStats::default(),
            kernel: Cell::new((0, 0)),
        })
    }

    /// The descriptor to poll for readability: readable while a retired block waits, i.e.
    /// while [`Self::recv_batch`] has work. Level-triggered; with edge-triggered polling, call
    /// `recv_batch` until [`Self::pending`] is false.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// Whether received frames wait (the walk is inside a block, or the next block is retired).
    pub fn pending(&self) -> bool {
        self.cursor.is_some() || self.ring.is_user(self.block)
    }

    /// Calls `f` with each received frame, whole and as on the wire (Ethernet header first, a
    /// tag the kernel stripped put back). Looks at no more than `rx_budget` frames per call;
    /// returns the number delivered. Never blocks.
    pub fn recv_batch(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let max_len = self.mtu + MAX_L2_OVERHEAD;
        let (mut looked, mut delivered) = (0, 0);
        // Each round ends a block or the budget; an empty ring ends it at once.
        for _ in 0..=self.ring.blocks() {
            if looked >= self.rx_budget {
                break;
            }
            let Some(block) = self.ring.user_block(self.block) else {
                break;
            };
            let stats = &mut self.stats;
            let cursor = self
                .cursor
                .get_or_insert_with(|| ring::Cursor::start(block, stats));
            while looked < self.rx_budget {
                match ring::next_frame(block, cursor, &mut self.scratch, max_len, stats) {
                    ring::Step::Frame(frame) => {
                        f(frame);
                        delivered += 1;
                    }
                    ring::Step::Skip => {}
                    ring::Step::End => break,
                }
                looked += 1;
            }
            if cursor.done() {
                self.cursor = None;
                self.ring.release(self.block);
                self.block = (self.block + 1) % self.ring.blocks();
            }
        }
        delivered
    }

    /// Queues `frame` for sending. `vnet_hdr` is the 12-byte virtio-net header (v1;
    /// `num_buffers` ignored) the frame came with from a guest that uses checksum or
    /// segmentation offload, adjusted to this frame (see [`shift_vnet_hdr`] when the switch adds
    /// or strips a tag); `None` for a plain frame. A refused frame is counted in `tx_errors`.
    /// Flushes by itself when `tx_batch` frames or 1 MiB are queued.
    pub fn send(&mut self, vnet_hdr: Option<&[u8; 12]>, frame: &[u8]) -> Result<(), SendError> {
        let hdr = tx::check(vnet_hdr, frame, self.mtu).inspect_err(|_| {
            self.stats.tx_errors += 1;
        })?;
        self.queue.push(&hdr, frame);
        if self.queue.len() >= self.tx_batch || self.queue.bytes() >= TX_QUEUE_BYTES {
            self.send_queued();
        }
        Ok(())
    }

    /// Sends everything queued, up to 64 frames per system call; returns the frames the kernel
    /// accepted. Afterwards the queue is empty whatever happened: frames the NIC had no room
    /// for are counted in `tx_dropped`, frames the kernel refused in `tx_errors`. An error is
    /// returned only when the link itself failed (down, gone), here or in a flush `send` did.
    pub fn flush(&mut self) -> std::io::Result<usize> {
        let sent = self.send_queued();
        match self.pending_error.take() {
            Some(e) => Err(e.into()),
            None => Ok(sent),
        }
    }

    fn send_queued(&mut self) -> usize {
        let total = self.queue.len();
        let (mut next, mut sent) = (0, 0);
        while next < total {
            match sys::send_batch(self.tx.as_fd(), self.queue.messages(next)) {
                Ok(n) if n > 0 => {
                    for i in next..next + n {
                        self.stats.tx_bytes += self.queue.frame_len(i) as u64;
                    }
                    self.stats.tx_frames += n as u64;
                    sent += n;
                    next += n;
                }
                Err(Errno::INTR) => {}
                Ok(_) | Err(Errno::AGAIN | Errno::NOBUFS) => {
                    self.stats.tx_dropped += (total - next) as u64;
                    break;
                }
                Err(e @ (Errno::NETDOWN | Errno::NXIO | Errno::NODEV)) => {
                    self.stats.tx_dropped += (total - next) as u64;
                    self.pending_error.get_or_insert(e);
                    break;
                }
                Err(e) => {
                    // The first frame of the batch was refused (EMSGSIZE, EINVAL from a header
                    // the kernel disliked, …); the rest may be fine.
                    log::debug!("{}: frame refused: {e}", self.name);
                    self.stats.tx_errors += 1;
                    next += 1;
                }
            }
        }
        self.queue.clear();
        sent
    }

    /// Counters since the uplink was opened.
    pub fn stats(&self) -> UplinkStats {
        if let Ok(k) = sys::take_stats(self.rx.as_fd()) {
            let (drops, full) = self.kernel.get();
            self.kernel.set((
                drops + u64::from(k.tp_drops),
                full + u64::from(k.tp_freeze_q_cnt),
            ));
        }
        let (drops, full) = self.kernel.get();
        UplinkStats {
            rx_kernel_drops: drops,
            rx_ring_full: full,
            ..self.stats
        }
    }

    /// The NIC's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The NIC's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The NIC's MTU when the uplink was opened (`send`'s limit for frames without GSO).
    pub fn mtu(&self) -> usize {
        self.mtu
    }
}

impl AsFd for Uplink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}
