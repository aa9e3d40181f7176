//! A port's datapath half: a guest NIC's two vrings and memory, or an uplink, and the counters
//! the datapath keeps beside the decision core's.

use std::io;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use kaos_net::switch::PortId;
use vhost_user_backend::VringRwLock;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::tx::TxScratch;
use crate::vnet::Offloads;

/// Guest memory as vhost-user-backend shares it between a port's threads.
pub type Mem = GuestMemoryAtomic<GuestMemoryMmap>;
/// A vring of a guest port.
pub type Vring = VringRwLock<Mem>;

/// Queue 0 receives (switch → guest), queue 1 transmits (guest → switch).
pub const RX: usize = 0;
/// The transmit queue.
pub const TX: usize = 1;

/// Why the datapath (rather than the decision core) dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatapathDrop {
    /// A TX chain that loops, is too long, leads outside guest memory or holds a writable
    /// descriptor. Counted on the sender.
    BadChain,
    /// A TX chain shorter than the virtio-net header and an Ethernet header. On the sender.
    Truncated,
    /// A virtio-net header no receiver could honour (a checksum offset beyond the frame, GSO
    /// without a segment size or checksum request). On the sender.
    BadHeader,
    /// Longer than a 64 KiB packet with its Ethernet header and a tag. On the sender.
    Oversize,
    /// The receiver had no RX buffer (or its queue was not running). On the receiver.
    NoRxBuffers,
    /// The receiver did not negotiate `MRG_RXBUF` and its buffer was too small, or the frame
    /// needed more than the most buffers one frame may take. On the receiver.
    RxBufferTooSmall,
    /// A GSO frame for a receiver that did not negotiate that kind of GSO (uplinks get it
    /// whole through the kernel). On the receiver.
    GsoUnsupported,
    /// The receiver's RX chain was malformed. On the receiver.
    BadRxChain,
    /// The uplink refused the frame. On the uplink.
    UplinkError,
}

impl DatapathDrop {
    /// Number of reasons.
    pub const COUNT: usize = 9;
    /// Every reason, in counter order.
    pub const ALL: [DatapathDrop; Self::COUNT] = [
        Self::BadChain,
        Self::Truncated,
        Self::BadHeader,
        Self::Oversize,
        Self::NoRxBuffers,
        Self::RxBufferTooSmall,
        Self::GsoUnsupported,
        Self::BadRxChain,
        Self::UplinkError,
    ];

    /// A short stable name, for statistics (distinct from the core's reasons' names).
    pub const fn name(self) -> &'static str {
        match self {
            Self::BadChain => "bad-chain",
            Self::Truncated => "truncated",
            Self::BadHeader => "bad-virtio-header",
            Self::Oversize => "oversize-chain",
            Self::NoRxBuffers => "no-rx-buffers",
            Self::RxBufferTooSmall => "rx-buffer-too-small",
            Self::GsoUnsupported => "gso-unsupported",
            Self::BadRxChain => "bad-rx-chain",
            Self::UplinkError => "uplink-error",
        }
    }
}

/// The datapath's own counters of a port: what really crossed it (the core sees only the
/// bytes it decides on), and the drops the core never saw.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames taken from the port (decided or not).
    pub rx_frames: AtomicU64,
    /// Their bytes, without the virtio-net header.
    pub rx_bytes: AtomicU64,
    /// Frames delivered to the port.
    pub tx_frames: AtomicU64,
    /// Their bytes, as delivered.
    pub tx_bytes: AtomicU64,
    drops: [AtomicU64; DatapathDrop::COUNT],
}

impl Counters {
    pub(crate) fn drop(&self, why: DatapathDrop) {
        self.drops[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Frames dropped for `why`.
    pub fn drops(&self, why: DatapathDrop) -> u64 {
        self.drops[why as usize].load(Ordering::Relaxed)
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A guest NIC: its memory, its vrings once the daemon made them, what its driver acked.
pub struct GuestNic {
    pub(crate) id: PortId,
    pub(crate) mem: Mem,
    vrings: OnceLock<[Vring; 2]>,
    offloads: AtomicU8,
    pub(crate) counters: Counters,
    pub(crate) scratch: Mutex<TxScratch>,
}

impl std::fmt::Debug for GuestNic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestNic").field("id", &self.id).finish()
    }
}

impl GuestNic {
    /// A NIC for port `id` of the fabric, over `mem`.
    pub fn new(id: PortId, mem: Mem) -> Self {
        Self {
            id,
            mem,
            vrings: OnceLock::new(),
            offloads: AtomicU8::new(0),
            counters: Counters::default(),
            scratch: Mutex::new(TxScratch::default()),
        }
    }

    /// The port in the decision core.
    pub fn id(&self) -> PortId {
        self.id
    }

    /// Hands over the vrings (`[RX, TX]`); the first call wins.
    pub fn set_vrings(&self, vrings: [Vring; 2]) -> io::Result<()> {
        self.vrings
            .set(vrings)
            .map_err(|_| io::Error::other("the NIC has its vrings already"))
    }

    /// The vring `which` ([`RX`] or [`TX`]), once set.
    pub fn vring(&self, which: usize) -> Option<&Vring> {
        self.vrings.get()?.get(which)
    }

    /// Records what the driver acked.
    pub fn set_offloads(&self, o: Offloads) {
        let bits = u8::from(o.mrg_rxbuf)
            | u8::from(o.guest_csum) << 1
            | u8::from(o.guest_tso4) << 2
            | u8::from(o.guest_tso6) << 3;
        self.offloads.store(bits, Ordering::Relaxed);
    }

    /// What the driver acked.
    pub fn offloads(&self) -> Offloads {
        let b = self.offloads.load(Ordering::Relaxed);
        Offloads {
            mrg_rxbuf: b & 1 != 0,
            guest_csum: b & 2 != 0,
            guest_tso4: b & 4 != 0,
            guest_tso6: b & 8 != 0,
        }
    }

    /// The datapath's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// What an uplink port must do for the datapath (`kaos_net::uplink::Uplink` in the switch
/// process; an in-memory twin in tests).
pub trait UplinkIo: Send {
    /// Queues a frame for sending, with a virtio-net header for the kernel's offloads.
    fn send(&mut self, vnet_hdr: Option<&[u8; 12]>, frame: &[u8]) -> io::Result<()>;
    /// Sends what was queued.
    fn flush(&mut self);
    /// Calls `f` with received frames (whole, tags as on the wire), a bounded number per
    /// call; returns how many. Never blocks.
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> usize;
}

/// An uplink's datapath half.
pub struct UplinkPort {
    pub(crate) id: PortId,
    pub(crate) io: Mutex<Box<dyn UplinkIo>>,
    pub(crate) counters: Counters,
}

impl std::fmt::Debug for UplinkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkPort").field("id", &self.id).finish()
    }
}

impl UplinkPort {
    /// The uplink of port `id`, sending through `io`.
    pub fn new(id: PortId, io: Box<dyn UplinkIo>) -> Self {
        Self {
            id,
            io: Mutex::new(io),
            counters: Counters::default(),
        }
    }

    /// The datapath's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The port in the decision core.
    pub fn id(&self) -> PortId {
        self.id
    }
}
