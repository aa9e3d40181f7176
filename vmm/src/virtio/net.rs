//! A virtio-net device (VIRTIO 1.2, 5.1) whose datapath is a vhost-user backend: the switch
//! process (`kattach switch`, crate `kaos-vswitch`).
//!
//! **Who does what.** This VMM keeps what the guest reads in the configuration space (the MAC the
//! host assigned, link up) and the negotiation with the driver. When the driver sets
//! `DRIVER_OK` it hands the backend everything the datapath needs and then stays out of it:
//! - guest RAM: its memfd ([`VhostUserMemoryRegionInfo`]), which the backend maps;
//! - each queue's rings, as addresses in this process (the vhost-user convention);
//! - each queue's kick: an eventfd that KVM signals itself when the guest writes the queue's
//!   index to `QueueNotify` (an ioeventfd, registered when the VM is built, see
//!   [`VirtioDevice::kick_fds`]), so a guest's kick never becomes a VM exit to this process;
//! - each queue's call: the device's irqfd, which the backend writes to raise the guest's
//!   interrupt line. The VMM never sees used buffers, so `InterruptStatus` keeps the used-buffer
//!   bit set while the device is active
//!   ([`Interrupt::set_external_used_buffers`](super::Interrupt::set_external_used_buffers)).
//!
//! A frame from one guest to another is copied once, by the switch, from the sender's buffer to
//! the receiver's; the VMM process is off the packet path.
//!
//! **Features.** The guest is offered the backend's datapath features (checksum offload both
//! ways, TSO4/6 both ways, mergeable receive buffers, indirect descriptors, event index) among
//! those this device knows, plus `MAC` and `STATUS`, which this device serves itself.
//!
//! **Reset.** A driver reset stops the backend's rings (`GET_VRING_BASE`, which the backend
//! answers only after it stopped using them); the next `DRIVER_OK` sets them up again.
//!
//! The vhost-user messages go out from the vCPU thread that wrote `DRIVER_OK` or the reset: a
//! few round trips at driver set-up, none per packet. The vCPU seccomp filter allows
//! `sendmsg`/`recvmsg` on the vhost-user socket only.

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_net as vnet;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util_vhost::eventfd::EventFd as VhostEventFd;

use super::{ActivateError, Activation, F_VERSION_1, VirtioDevice};

/// Device type 1: a network card.
pub const DEVICE_TYPE: u32 = 1;
/// Queue 0 receives (device to driver), queue 1 transmits.
pub const RX: u16 = 0;
/// The transmit queue.
pub const TX: u16 = 1;
/// Entries per queue the device allows (the driver may pick fewer).
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE, QUEUE_SIZE];

const fn bit(n: u32) -> u64 {
    1 << n
}

/// Datapath features the backend may offer and this device passes on to the guest.
pub const DATAPATH_FEATURES: u64 = bit(vnet::VIRTIO_NET_F_CSUM)
    | bit(vnet::VIRTIO_NET_F_GUEST_CSUM)
    | bit(vnet::VIRTIO_NET_F_GUEST_TSO4)
    | bit(vnet::VIRTIO_NET_F_GUEST_TSO6)
    | bit(vnet::VIRTIO_NET_F_HOST_TSO4)
    | bit(vnet::VIRTIO_NET_F_HOST_TSO6)
    | bit(vnet::VIRTIO_NET_F_MRG_RXBUF)
    | bit(VIRTIO_RING_F_INDIRECT_DESC)
    | bit(VIRTIO_RING_F_EVENT_IDX)
    | F_VERSION_1;
/// Features this device serves itself from its configuration space.
pub const CONFIG_FEATURES: u64 = bit(vnet::VIRTIO_NET_F_MAC) | bit(vnet::VIRTIO_NET_F_STATUS);
/// `VHOST_USER_F_PROTOCOL_FEATURES`: a vhost-user bit, never shown to the guest.
const PROTOCOL_FEATURES: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
/// `VIRTIO_NET_S_LINK_UP`.
const LINK_UP: u16 = 1;

/// Why a NIC could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The backend refused or broke off the vhost-user conversation.
    #[error("vhost-user backend: {what}: {source}")]
    Backend {
        /// The step that failed.
        what: &'static str,
        /// What the backend said.
        #[source]
        source: vhost::Error,
    },
    /// The backend offers no version-1 device.
    #[error("the vhost-user backend does not offer VIRTIO_F_VERSION_1 (features {0:#x})")]
    NotModern(u64),
    /// An eventfd could not be made or duplicated.
    #[error("virtio-net eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// The device was activated without an interrupt line (never on a built VM).
    #[error("the NIC has no interrupt line")]
    NotWired,
    /// The MAC is not a unicast address.
    #[error("{0:02x?} is not a unicast MAC address")]
    BadMac([u8; 6]),
}

fn backend(what: &'static str) -> impl FnOnce(vhost::Error) -> NetError {
    move |source| NetError::Backend { what, source }
}

/// A guest NIC backed by a vhost-user connection.
pub struct VhostUserNet {
    mac: [u8; 6],
    frontend: Frontend,
    socket: RawFd,
    backend_features: u64,
    protocol_features: bool,
    /// One per queue; KVM signals them (ioeventfds), the backend waits on them.
    kicks: Vec<EventFd>,
    /// The same kicks and the interrupt's irqfd, duplicated when the VM is built (as the type
    /// the vhost crate takes), so activation makes no system call but the socket's.
    backend_kicks: Vec<VhostEventFd>,
    call: Option<VhostEventFd>,
    running: bool,
}

impl VhostUserNet {
    /// Starts the vhost-user conversation on `stream` (`SET_OWNER`, features, protocol
    /// features) so the device knows what to offer the guest.
    ///
    /// # Errors
    /// [`NetError`] when the backend does not answer as a version-1 network device would.
    pub fn connect(stream: UnixStream, mac: [u8; 6]) -> Result<Self, NetError> {
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(NetError::BadMac(mac));
        }
        let socket = stream.as_raw_fd();
        let mut frontend = Frontend::from_stream(stream, QUEUE_SIZES.len() as u64);
        frontend.set_owner().map_err(backend("SET_OWNER"))?;
        let backend_features = frontend.get_features().map_err(backend("GET_FEATURES"))?;
        if backend_features & F_VERSION_1 == 0 {
            return Err(NetError::NotModern(backend_features));
        }
        let protocol_features = backend_features & PROTOCOL_FEATURES != 0;
        if protocol_features {
            // None of the optional messages is needed: the configuration space is ours and the
            // rings are set up once per driver reset.
            let offered = frontend
                .get_protocol_features()
                .map_err(backend("GET_PROTOCOL_FEATURES"))?;
            frontend
                .set_protocol_features(offered & VhostUserProtocolFeatures::empty())
                .map_err(backend("SET_PROTOCOL_FEATURES"))?;
        }
        let kicks: Vec<EventFd> = QUEUE_SIZES
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(NetError::EventFd))
            .collect::<Result<_, _>>()?;
        let backend_kicks = kicks
            .iter()
            .map(|k| dup_eventfd(k.as_raw_fd()))
            .collect::<Result<_, _>>()?;
        Ok(VhostUserNet {
            mac,
            frontend,
            socket,
            backend_features,
            protocol_features,
            kicks,
            backend_kicks,
            call: None,
            running: false,
        })
    }

    /// The vhost-user socket, for the seccomp filter of the threads that talk on it.
    pub fn socket_fd(&self) -> RawFd {
        self.socket
    }

    fn start(&mut self, a: &Activation) -> Result<(), NetError> {
        let features =
            (a.features & self.backend_features) | (self.backend_features & PROTOCOL_FEATURES);
        self.frontend
            .set_features(features)
            .map_err(backend("SET_FEATURES"))?;
        let regions = a
            .mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend("guest memory region"))?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(backend("SET_MEM_TABLE"))?;
        let call = self.call.as_ref().ok_or(NetError::NotWired)?;
        for (index, queue) in a.queues.iter().enumerate() {
            if !queue.ready() {
                continue;
            }
            let rings = VringConfigData {
                queue_max_size: queue.max_size(),
                queue_size: queue.size(),
                flags: 0,
                desc_table_addr: host_addr(&a.mem, queue.desc_table())?,
                used_ring_addr: host_addr(&a.mem, queue.used_ring())?,
                avail_ring_addr: host_addr(&a.mem, queue.avail_ring())?,
                log_addr: None,
            };
            let f = &mut self.frontend;
            f.set_vring_num(index, queue.size())
                .map_err(backend("SET_VRING_NUM"))?;
            f.set_vring_addr(index, &rings)
                .map_err(backend("SET_VRING_ADDR"))?;
            f.set_vring_base(index, 0)
                .map_err(backend("SET_VRING_BASE"))?;
            f.set_vring_call(index, call)
                .map_err(backend("SET_VRING_CALL"))?;
            let kick = self.backend_kicks.get(index).ok_or(NetError::NotWired)?;
            f.set_vring_kick(index, kick)
                .map_err(backend("SET_VRING_KICK"))?;
            if self.protocol_features {
                f.set_vring_enable(index, true)
                    .map_err(backend("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for VhostUserNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserNet")
            .field("mac", &self.mac)
            .field("socket", &self.socket)
            .field("backend_features", &self.backend_features)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// The address in this process of guest-physical `gpa` (vhost-user rings are given so).
fn host_addr(mem: &GuestMemoryMmap, gpa: u64) -> Result<u64, NetError> {
    mem.get_host_address(GuestAddress(gpa))
        .map(|p| p as u64)
        .map_err(|_| NetError::Backend {
            what: "ring address",
            source: vhost::Error::InvalidGuestMemory,
        })
}

/// A second handle on eventfd `fd`, as the type the vhost crate takes (vmm-sys-util 0.15).
fn dup_eventfd(fd: RawFd) -> Result<VhostEventFd, NetError> {
    let owned = rustix::io::fcntl_dupfd_cloexec(
        // SAFETY: `fd` is an eventfd this device or its interrupt owns, open for the call.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        0,
    )
    .map_err(|e| NetError::EventFd(e.into()))?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(owned);
    // SAFETY: `raw` is a freshly duplicated eventfd descriptor nothing else owns.
    Ok(unsafe { VhostEventFd::from_raw_fd(raw) })
}

impl VirtioDevice for VhostUserNet {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        (self.backend_features & DATAPATH_FEATURES) | CONFIG_FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: mac[6], status (le16); the rest reads as zero.
        let mut space = [0u8; 8];
        space[..6].copy_from_slice(&self.mac);
        space[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| space.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // With VERSION_1 the MAC is read-only (5.1.4.1); nothing else is writable.
        log::debug!("virtio-net: ignored config write of {data:02x?} at {offset:#x}");
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if !activation.queues.iter().all(QueueT::ready) {
            let missing = activation.queues.iter().position(|q| !q.ready());
            return Err(ActivateError::QueueNotReady(
                missing.and_then(|i| u16::try_from(i).ok()).unwrap_or(0),
            ));
        }
        self.start(&activation)
            .map_err(|e| ActivateError::Device(e.to_string()))?;
        activation.interrupt.set_external_used_buffers(true);
        self.running = true;
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) {
        // The guest wrote QueueNotify with a width KVM's ioeventfd does not match: pass it on.
        if let Some(Err(e)) = self.kicks.get(usize::from(queue)).map(|k| k.write(1)) {
            log::warn!("virtio-net: kick of queue {queue}: {e}");
        }
    }

    fn reset(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        for index in 0..QUEUE_SIZES.len() {
            // The backend answers after it stopped using the ring.
            if let Err(e) = self.frontend.get_vring_base(index) {
                log::warn!("virtio-net: stopping queue {index}: {e}");
            }
        }
    }

    fn wire(&mut self, irqfd: &EventFd) -> std::io::Result<()> {
        self.call = Some(dup_eventfd(irqfd.as_raw_fd()).map_err(std::io::Error::other)?);
        Ok(())
    }

    fn kick_fds(&self) -> Vec<(u16, &EventFd)> {
        (0u16..).zip(self.kicks.iter()).collect()
    }

    fn socket_fds(&self) -> Vec<RawFd> {
        vec![self.socket]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_sees_only_known_datapath_features_plus_mac_and_status() {
        let all = u64::MAX;
        let offered = (all & DATAPATH_FEATURES) | CONFIG_FEATURES;
        assert_eq!(offered & PROTOCOL_FEATURES, 0, "a vhost-user bit");
        assert_ne!(offered & bit(vnet::VIRTIO_NET_F_MRG_RXBUF), 0);
        assert_eq!(
            offered & bit(vnet::VIRTIO_NET_F_GUEST_UFO),
            0,
            "UFO is not offered"
        );
    }
}
