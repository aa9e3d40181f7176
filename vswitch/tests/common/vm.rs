//! A guest connected to the switch through a real vhost-user frontend.

use std::os::fd::AsRawFd;
use std::time::Duration;

use kaos_net::switch::fixture::Host;
use kaos_vswitch::control::{Controller, GuestPortSpec};
use kaos_vswitch::driver::Guest;
use kaos_vswitch::vnet::{self, NetHdr};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const QUEUE: u16 = 256;

/// A guest connected through vhost-user.
pub struct Vm {
    guest: Guest,
    _frontend: Frontend,
    kicks: [EventFd; 2],
    calls: [EventFd; 2],
}

impl Vm {
    pub fn connect(ctl: &mut Controller, port: u32, host: Host) -> Vm {
        let spec = GuestPortSpec {
            port,
            name: format!("vm-{port}/0"),
            vlan: host.vlan,
            mac: host.mac,
            ipv4: host.ip,
            published: Vec::new(),
            rules: Vec::new(),
        };
        let stream = ctl.add_guest(&spec).expect("the switch takes the port");
        let guest = Guest::new(QUEUE, 2048, 2048).expect("guest memory");
        let mut fe = Frontend::from_stream(stream, 2);
        fe.set_owner().expect("SET_OWNER");
        let features = fe.get_features().expect("GET_FEATURES");
        assert_eq!(features, vnet::FEATURES);
        // The driver emulation does not maintain used_event, so EVENT_IDX stays off here.
        fe.set_features(features & !(1 << 29))
            .expect("SET_FEATURES");
        let proto = fe.get_protocol_features().expect("GET_PROTOCOL_FEATURES");
        fe.set_protocol_features(proto & VhostUserProtocolFeatures::REPLY_ACK)
            .expect("SET_PROTOCOL_FEATURES");
        let region = guest.mem.find_region(GuestAddress(0)).expect("region 0");
        let uaddr = guest.mem.get_host_address(GuestAddress(0)).expect("mapped") as u64;
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: region.len(),
            userspace_addr: uaddr,
            mmap_offset: 0,
            mmap_handle: guest.memfd.as_raw_fd(),
        }])
        .expect("SET_MEM_TABLE");
        let kicks = [
            EventFd::new(EFD_NONBLOCK).expect("eventfd"),
            EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        ];
        let calls = [
            EventFd::new(EFD_NONBLOCK).expect("eventfd"),
            EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        ];
        for (i, q) in [&guest.rx, &guest.tx].into_iter().enumerate() {
            fe.set_vring_num(i, QUEUE).expect("SET_VRING_NUM");
            let config = VringConfigData {
                queue_max_size: QUEUE,
                queue_size: QUEUE,
                flags: 0,
                desc_table_addr: uaddr + q.desc.0,
                used_ring_addr: uaddr + q.used.0,
                avail_ring_addr: uaddr + q.avail.0,
                log_addr: None,
            };
            fe.set_vring_addr(i, &config).expect("SET_VRING_ADDR");
            fe.set_vring_base(i, 0).expect("SET_VRING_BASE");
            fe.set_vring_call(i, &calls[i]).expect("SET_VRING_CALL");
            fe.set_vring_kick(i, &kicks[i]).expect("SET_VRING_KICK");
            fe.set_vring_enable(i, true).expect("SET_VRING_ENABLE");
        }
        let mut vm = Vm {
            guest,
            _frontend: fe,
            kicks,
            calls,
        };
        vm.guest.post_rx(64);
        vm.kicks[0].write(1).expect("kick RX");
        vm
    }

    pub fn send(&mut self, frame: &[u8]) {
        self.guest
            .send(NetHdr::default(), frame)
            .expect("a TX descriptor");
        self.kicks[1].write(1).expect("kick TX");
    }

    /// Waits up to `wait` for an RX interrupt, then takes what arrived.
    pub fn receive(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        // SAFETY: the eventfd outlives this borrow of its descriptor.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.calls[0].as_raw_fd()) };
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let t = rustix::event::Timespec::try_from(wait).expect("a short wait");
        let _ = rustix::event::poll(&mut fds, Some(&t));
        let _ = self.calls[0].read();
        std::iter::from_fn(|| self.guest.recv())
            .map(|m| m.2)
            .collect()
    }
}
