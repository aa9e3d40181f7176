//! The lab the datapath tests share: guests A and B on VLAN 10, C on VLAN 20 (the decision
//! core's fixture hosts), each a `driver::Guest` whose queues the switch serves in-process.

#![allow(dead_code)] // each test file uses its own part of the lab

pub mod vm;

use std::sync::Arc;

use kaos_net::switch::fixture::{self, Host};
use kaos_net::switch::{PortId, SwitchConfig};
use kaos_vswitch::driver::Guest;
use kaos_vswitch::fabric::{Attached, Fabric};
use kaos_vswitch::port::GuestNic;
use kaos_vswitch::tx::{self, Progress};
use kaos_vswitch::vnet::{NetHdr, Offloads};

pub use kaos_net::switch::fixture::{A, B, C};

/// A fourth host, on VLAN 10 beside A and B.
pub const D: Host = Host {
    mac: [0x02, 0, 0, 0, 0x10, 0x0d],
    ip: std::net::Ipv4Addr::new(10, 0, 10, 13),
    vlan: 10,
};

/// One guest of the lab: its driver side and its NIC in the fabric.
#[derive(Debug)]
pub struct Member {
    pub host: Host,
    pub guest: Guest,
    pub nic: Arc<GuestNic>,
}

impl Member {
    pub fn send(&mut self, frame: &[u8]) {
        self.send_hdr(NetHdr::default(), frame);
    }

    pub fn send_hdr(&mut self, hdr: NetHdr, frame: &[u8]) {
        self.guest.send(hdr, frame).expect("a free TX descriptor");
    }

    /// Sends `frame` with its header in the same descriptor.
    pub fn send_whole(&mut self, frame: &[u8]) {
        self.guest
            .send_whole(NetHdr::default(), frame)
            .expect("a free TX descriptor that holds the frame");
    }

    /// Every frame received so far.
    pub fn inbox(&mut self) -> Vec<(NetHdr, u16, Vec<u8>)> {
        std::iter::from_fn(|| self.guest.recv()).collect()
    }

    pub fn port(&self) -> PortId {
        self.nic.id()
    }
}

/// The fabric and its guests.
#[derive(Debug)]
pub struct Lab {
    pub fabric: Arc<Fabric>,
    pub members: Vec<Member>,
}

/// Queue entries, RX buffer bytes, TX buffer bytes of a default guest.
pub const QUEUE: u16 = 256;
pub const RX_BUF: u32 = 2048;
pub const TX_BUF: u32 = 2048;

impl Lab {
    pub fn new() -> Self {
        Self {
            fabric: Fabric::new(SwitchConfig::default(), 0x6b61_6f73),
            members: Vec::new(),
        }
    }

    /// Adds a guest with these queue parameters and offloads; `rx` RX buffers posted.
    pub fn add(&mut self, host: Host, offloads: Offloads, rx_buf: u32, rx: usize) -> usize {
        let id = self
            .fabric
            .add_port(fixture::guest(host, Vec::new()))
            .expect("the lab's guests are valid");
        let mut guest = Guest::new(QUEUE, rx_buf, TX_BUF).expect("guest memory");
        let nic = Arc::new(guest.nic(id, false).expect("the NIC's vrings"));
        nic.set_offloads(offloads);
        self.fabric.attach(id, Attached::Guest(nic.clone()));
        guest.post_rx(rx);
        self.members.push(Member { host, guest, nic });
        self.members.len() - 1
    }

    /// A, B, C with every offload and plenty of buffers.
    pub fn abc() -> Self {
        let mut lab = Self::new();
        for h in [A, B, C] {
            lab.add(h, Offloads::ALL, RX_BUF, 128);
        }
        lab
    }

    /// Runs member `i`'s TX queue once.
    pub fn tx(&mut self, i: usize) -> Progress {
        let m = &mut self.members[i];
        let p = tx::tx_batch(&self.fabric, &m.nic);
        m.guest.reap_tx();
        p
    }

    /// The core's drop counter of `reason` on member `i`'s port.
    pub fn core_drops(&self, i: usize, reason: kaos_net::switch::DropReason) -> u64 {
        let core = self.fabric.lock();
        core.switch
            .port_counters(self.members[i].port())
            .map_or(0, |c| c.drops.get(reason))
    }
}
