//! Uplink ports: `kaos_net::uplink::Uplink` (an `AF_PACKET` socket pair on a physical NIC) as
//! a port of the fabric. Guests' frames reach it through [`UplinkIo::send`] from their TX
//! paths; its received frames are decided and delivered by one thread per uplink
//! ([`rx_loop`]): a batch from the ring, each frame decided (the frame is whole in host memory)
//! and copied once into the receivers' RX chains, each receiver signalled once per batch.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use kaos_net::switch::{Decision, PortId, PortKind, UplinkMode};
use kaos_net::uplink::Uplink;

use crate::fabric::{Attached, Fabric};
use crate::port::{Counters, DatapathDrop, GuestNic, UplinkIo, UplinkPort};
use crate::rx::{self, Frame, GuestRx, RxScratch};
use crate::vnet::NetHdr;
use vm_memory::GuestAddressSpace;

impl UplinkIo for Uplink {
    fn send(&mut self, vnet_hdr: Option<&[u8; 12]>, frame: &[u8]) -> io::Result<()> {
        Uplink::send(self, vnet_hdr, frame).map_err(|e| io::Error::other(e.to_string()))
    }

    fn flush(&mut self) {
        if let Err(e) = Uplink::flush(self) {
            log::warn!("uplink {}: {e}", self.name());
        }
    }

    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> usize {
        self.recv_batch(f)
    }
}

/// Adds an uplink port to `fabric`: in the core as `mode`, its datapath half sending through
/// `io`. Start [`rx_loop`] for its received frames.
///
/// # Errors
/// The core refused the port.
pub fn attach(
    fabric: &Fabric,
    mode: UplinkMode,
    io: Box<dyn UplinkIo>,
) -> io::Result<Arc<UplinkPort>> {
    let id = fabric
        .add_port(PortKind::Uplink(mode))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let port = Arc::new(UplinkPort::new(id, io));
    fabric.attach(id, Attached::Uplink(port.clone()));
    Ok(port)
}

/// What one uplink's receive thread reuses from frame to frame.
#[derive(Debug, Default)]
pub struct UplinkRx {
    to: Vec<PortId>,
    targets: Vec<Arc<GuestNic>>,
    copies: Vec<(PortId, bool)>,
    notify: Vec<Arc<GuestNic>>,
    rx: RxScratch,
}

/// Receives one batch of `port`'s frames and forwards them; returns how many it took.
pub fn rx_batch(fabric: &Fabric, port: &UplinkPort, s: &mut UplinkRx) -> usize {
    let mut io = port.io.lock().unwrap_or_else(|p| p.into_inner());
    let n = io.recv(&mut |frame| forward(fabric, port, frame, s));
    drop(io);
    for nic in s.notify.drain(..) {
        rx::signal(&nic);
    }
    n
}

fn forward(fabric: &Fabric, port: &UplinkPort, frame: &[u8], s: &mut UplinkRx) {
    Counters::add(&port.counters.rx_frames, 1);
    Counters::add(&port.counters.rx_bytes, frame.len() as u64);
    s.copies.clear();
    s.targets.clear();
    {
        let mut core = fabric.lock();
        let now = fabric.now();
        let Decision::Forward(fwd) = core.switch.ingress(port.id, frame, now) else {
            return;
        };
        let (tagged, vlan) = (fwd.ingress_tagged, fwd.vlan);
        s.to.clear();
        s.to.extend(fwd.to.iter().map(|e| e.port));
        core.vlan_bytes.count(vlan, frame.len());
        for &p in &s.to {
            // From an uplink, frames go to guests only (the core never forwards uplink to
            // uplink).
            if let Some(Attached::Guest(nic)) = core.attached(p) {
                s.targets.push(nic.clone());
                s.copies.push((p, tagged));
            }
        }
    }
    for (nic, &(_, tagged)) in s.targets.iter().zip(&s.copies) {
        let f = Frame {
            hdr: NetHdr::default(),
            head: frame,
            tail: None,
            tagged,
            staged: None,
        };
        let mem = nic.mem.memory();
        let Some(mut to) = GuestRx::open(nic, &mem) else {
            nic.counters.drop(DatapathDrop::NoRxBuffers);
            continue;
        };
        if let Err(why) = to.deliver(&f, &mut s.rx) {
            nic.counters.drop(why);
        }
        if to.finish() && !s.notify.iter().any(|n| Arc::ptr_eq(n, nic)) {
            s.notify.push(nic.clone());
        }
    }
}

/// The receive thread of an uplink: waits for `pollfd` (a duplicate of the uplink's receive
/// descriptor) and forwards batches, until the process ends.
pub fn rx_loop(fabric: Arc<Fabric>, port: Arc<UplinkPort>, pollfd: OwnedFd) {
    let mut s = UplinkRx::default();
    loop {
        let mut fds = [rustix::event::PollFd::new(
            &pollfd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                log::error!("uplink {}: poll: {e}", port.id);
                return;
            }
        }
        while rx_batch(&fabric, &port, &mut s) > 0 {}
    }
}

/// A duplicate of `uplink`'s receive descriptor, to poll while the uplink itself is shared.
///
/// # Errors
/// Out of descriptors.
pub fn poll_fd(uplink: &Uplink) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(uplink.as_fd(), 0)?)
}
