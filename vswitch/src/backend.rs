//! A guest port as a vhost-user virtio-net backend: `vhost_user_backend::VhostUserDaemon` runs
//! the protocol (one thread for the frontend's requests, one epoll thread for the kicks), and
//! [`NetBackend`] answers it: queue 0 is RX, queue 1 TX, the features of [`vnet::FEATURES`].
//! The frontend (the VMM) owns the device's config space (MAC, status), so none is served.
//!
//! The other ports' TX paths need this port's RX vring, which the daemon makes and keeps to
//! itself: [`PortVring`] is `VringRwLock` with one addition, its constructor records each vring
//! it makes in a thread-local list, and [`start`] hands the two that `VhostUserDaemon::new` made
//! (synchronously, in queue order, in the calling thread) to the port's [`GuestNic`].

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use vhost::vhost_user::Listener;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{
    VhostUserBackend, VhostUserDaemon, VringRwLock, VringStateGuard, VringStateMutGuard, VringT,
};
use virtio_queue::Error as QueueError;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::fabric::{Attached, Fabric};
use crate::port::{GuestNic, Mem, TX};
use crate::tx;
use crate::vnet::{self, Offloads};

/// Largest queue a driver may set up.
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Batches one TX kick may run before the port yields its thread (and re-arms itself).
const BATCHES_PER_WAKEUP: usize = 4;
/// The epoll event of the "more TX work" eventfd (0 and 1 are the queues, 2 the exit event).
const MORE: u16 = 3;

thread_local! {
    static MADE: RefCell<Vec<VringRwLock<Mem>>> = const { RefCell::new(Vec::new()) };
}

/// `VringRwLock`, recording the vrings it makes (see the module documentation).
#[derive(Clone)]
pub struct PortVring(VringRwLock<Mem>);

impl std::fmt::Debug for PortVring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortVring")
    }
}

impl<'a> VringStateGuard<'a, Mem> for PortVring {
    type G = <VringRwLock<Mem> as VringStateGuard<'a, Mem>>::G;
}

impl<'a> VringStateMutGuard<'a, Mem> for PortVring {
    type G = <VringRwLock<Mem> as VringStateMutGuard<'a, Mem>>::G;
}

impl VringT<Mem> for PortVring {
    fn new(mem: Mem, max_queue_size: u16) -> Result<Self, QueueError> {
        let vring = VringRwLock::new(mem, max_queue_size)?;
        MADE.with(|m| m.borrow_mut().push(vring.clone()));
        Ok(Self(vring))
    }
    fn get_ref(&self) -> <Self as VringStateGuard<'_, Mem>>::G {
        self.0.get_ref()
    }
    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, Mem>>::G {
        self.0.get_mut()
    }
    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), QueueError> {
        self.0.add_used(desc_index, len)
    }
    fn signal_used_queue(&self) -> io::Result<()> {
        self.0.signal_used_queue()
    }
    fn enable_notification(&self) -> Result<bool, QueueError> {
        self.0.enable_notification()
    }
    fn disable_notification(&self) -> Result<(), QueueError> {
        self.0.disable_notification()
    }
    fn needs_notification(&self) -> Result<bool, QueueError> {
        self.0.needs_notification()
    }
    fn set_enabled(&self, enabled: bool) {
        self.0.set_enabled(enabled);
    }
    fn set_queue_info(&self, desc: u64, avail: u64, used: u64) -> Result<(), QueueError> {
        self.0.set_queue_info(desc, avail, used)
    }
    fn queue_next_avail(&self) -> u16 {
        self.0.queue_next_avail()
    }
    fn set_queue_next_avail(&self, base: u16) {
        self.0.set_queue_next_avail(base);
    }
    fn set_queue_next_used(&self, idx: u16) {
        self.0.set_queue_next_used(idx);
    }
    fn queue_used_idx(&self) -> Result<u16, QueueError> {
        self.0.queue_used_idx()
    }
    fn set_queue_size(&self, num: u16) {
        self.0.set_queue_size(num);
    }
    fn set_queue_event_idx(&self, enabled: bool) {
        self.0.set_queue_event_idx(enabled);
    }
    fn set_queue_ready(&self, ready: bool) {
        self.0.set_queue_ready(ready);
    }
    fn set_kick(&self, file: Option<std::fs::File>) {
        self.0.set_kick(file);
    }
    fn read_kick(&self) -> io::Result<bool> {
        self.0.read_kick()
    }
    fn set_call(&self, file: Option<std::fs::File>) {
        self.0.set_call(file);
    }
    fn set_err(&self, file: Option<std::fs::File>) {
        self.0.set_err(file);
    }
}

/// The vhost-user backend of one guest port.
#[derive(Clone)]
pub struct NetBackend {
    nic: Arc<GuestNic>,
    fabric: Arc<Fabric>,
    more: Arc<EventFd>,
}

impl std::fmt::Debug for NetBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetBackend")
            .field("port", &self.nic.id())
            .finish()
    }
}

impl NetBackend {
    /// Runs the TX queue: batches until it is empty (notifications re-enabled, checked once
    /// more), or [`BATCHES_PER_WAKEUP`] batches, after which the port re-arms itself through
    /// its "more" eventfd so the epoll thread serves its other events first.
    fn run_tx(&self, tx_vring: &PortVring) {
        for _ in 0..BATCHES_PER_WAKEUP {
            let _ = tx_vring.disable_notification();
            let progress = tx::tx_batch(&self.fabric, &self.nic);
            if progress.more {
                continue;
            }
            match tx_vring.enable_notification() {
                // New chains arrived while notifications were off.
                Ok(true) => continue,
                Ok(false) | Err(_) => return,
            }
        }
        let _ = self.more.write(1);
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = PortVring;

    fn num_queues(&self) -> usize {
        2
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        vnet::FEATURES
    }

    fn acked_features(&self, features: u64) {
        self.nic.set_offloads(Offloads::from_features(features));
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The vrings apply it themselves (VringT::set_queue_event_idx).
    }

    fn update_memory(&self, _mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        // The same atomic the NIC holds: it already sees the new memory.
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[PortVring],
        _thread_id: usize,
    ) -> io::Result<()> {
        match device_event {
            // Buffers posted: nothing waits for them (frames for a port without buffers are
            // dropped, not queued).
            0 => {}
            1 => {
                if let Some(tx_vring) = vrings.get(TX) {
                    self.run_tx(tx_vring);
                }
            }
            MORE => {
                let _ = self.more.read();
                if let Some(tx_vring) = vrings.get(TX) {
                    self.run_tx(tx_vring);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A running guest port: its NIC and the daemon serving its vhost-user connection.
pub struct GuestPortRunner {
    nic: Arc<GuestNic>,
    daemon: VhostUserDaemon<NetBackend>,
}

impl std::fmt::Debug for GuestPortRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestPortRunner")
            .field("port", &self.nic.id())
            .finish()
    }
}

impl GuestPortRunner {
    /// The port's NIC.
    pub fn nic(&self) -> &Arc<GuestNic> {
        &self.nic
    }

    /// Stops the port's epoll thread. Its request thread ends when the frontend hangs up.
    pub fn stop(self) {
        for h in self.daemon.get_epoll_handlers() {
            h.send_exit_event();
        }
    }
}

/// Starts the vhost-user backend of port `nic` of `fabric`: accepts the one connection that
/// is already waiting on `listener` (the host connected before handing it over), serves it on
/// the daemon's threads, and attaches the port so frames flow to it.
///
/// # Errors
/// The daemon could not be made or the connection accepted.
pub fn start(
    fabric: &Arc<Fabric>,
    nic: Arc<GuestNic>,
    name: &str,
    listener: UnixListener,
) -> io::Result<GuestPortRunner> {
    let more = Arc::new(EventFd::new(EFD_NONBLOCK)?);
    let backend = NetBackend {
        nic: nic.clone(),
        fabric: fabric.clone(),
        more: more.clone(),
    };
    MADE.with(|m| m.borrow_mut().clear());
    let daemon = VhostUserDaemon::new(name.to_owned(), backend, nic.mem.clone());
    let made = MADE.with(|m| std::mem::take(&mut *m.borrow_mut()));
    let mut daemon = daemon.map_err(|e| io::Error::other(e.to_string()))?;
    let [rx, tx]: [VringRwLock<Mem>; 2] = made
        .try_into()
        .map_err(|_| io::Error::other("the daemon did not make two vrings"))?;
    nic.set_vrings([rx, tx])?;
    let handlers = daemon.get_epoll_handlers();
    let handler = handlers
        .first()
        .ok_or_else(|| io::Error::other("the daemon has no epoll thread"))?;
    handler.register_listener(more.as_raw_fd(), EventSet::IN, u64::from(MORE))?;
    daemon
        .start(&mut Listener::from(listener))
        .map_err(|e| io::Error::other(e.to_string()))?;
    fabric.attach(nic.id(), Attached::Guest(nic.clone()));
    Ok(GuestPortRunner { nic, daemon })
}

/// Memory for a port until the frontend sends its table: none.
pub fn empty_memory() -> Mem {
    GuestMemoryAtomic::new(GuestMemoryMmap::new())
}
