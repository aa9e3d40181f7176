//! The endpoint driven with an in-memory device: frames in and out are plain byte vectors.

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol};

use super::*;
use crate::session::{Answer, Handler};
use kaos_protocol::handshake::ServerHello;
use kaos_protocol::keys::{PublicKey, SecretKey};
use kaos_protocol::{Identity, Request};

#[derive(Default)]
struct Wire {
    sent: Vec<Vec<u8>>,
}

struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

struct Rx;

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&[])
    }
}

impl phy::Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        None
    }
    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.sent))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

struct NoRequests;

impl Handler for NoRequests {
    fn host_key(&self) -> Option<SecretKey> {
        unreachable!("no client in these tests")
    }
    fn server_hello(&self) -> ServerHello {
        unreachable!("no client in these tests")
    }
    fn identity(&self, _: &PublicKey) -> Option<Identity> {
        unreachable!("no client in these tests")
    }
    fn denied(&mut self, _: &Identity, _: &Request) {
        unreachable!("no client in these tests")
    }
    fn request(&mut self, _: &Identity, _: &Request) -> Answer {
        unreachable!("no client in these tests")
    }
}

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 7];

fn static_config() -> EndpointConfig {
    let address = Ipv4Cidr::new(Ipv4Address::new(10, 1, 2, 3), 24);
    EndpointConfig::new(
        MAC,
        IpConfig::Static {
            address,
            gateway: None,
        },
        1,
    )
}

#[test]
fn static_address_is_reported_once_and_announced() {
    let mut wire = Wire::default();
    let now = Instant::from_millis(0);
    let mut ep = Endpoint::new(static_config(), &mut wire, now);
    let (_, event) = ep.poll(now, &mut wire, &mut NoRequests);
    assert!(matches!(
        event,
        Some(AddressEvent::Configured { gateway: None, .. })
    ));
    let (_, again) = ep.poll(now, &mut wire, &mut NoRequests);
    assert_eq!(again, None, "reported once");

    let garps: Vec<_> = wire
        .sent
        .iter()
        .filter_map(|f| {
            let eth = EthernetFrame::new_checked(f.as_slice()).ok()?;
            (eth.ethertype() == EthernetProtocol::Arp).then_some(())?;
            assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
            ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()
        })
        .collect();
    assert_eq!(garps.len(), 1, "one gratuitous ARP per configured address");
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = garps[0]
    else {
        unreachable!("only one ARP variant")
    };
    assert_eq!(operation, ArpOperation::Request);
    assert_eq!(source_hardware_addr, EthernetAddress(MAC));
    assert_eq!(source_protocol_addr, Ipv4Address::new(10, 1, 2, 3));
    assert_eq!(target_protocol_addr, source_protocol_addr);
}

#[test]
fn listen_pool_is_kept_full_and_bounded() {
    let mut wire = Wire::default();
    let now = Instant::from_millis(0);
    let mut config = static_config();
    config.listen_pool = 3;
    let mut ep = Endpoint::new(config, &mut wire, now);
    ep.poll(now, &mut wire, &mut NoRequests);
    assert_eq!(ep.conns.len(), 3);
    assert_eq!(ep.connections(), 0);
}

#[test]
fn dhcp_starts_unconfigured_and_sends_discover() {
    let mut wire = Wire::default();
    let now = Instant::from_millis(0);
    let config = EndpointConfig::new(MAC, IpConfig::Dhcp, 1);
    let mut ep = Endpoint::new(config, &mut wire, now);
    let (_, event) = ep.poll(now, &mut wire, &mut NoRequests);
    assert_eq!(event, None);
    assert_eq!(ep.address(), None);
    let ipv4 = wire.sent.iter().filter(|f| {
        EthernetFrame::new_checked(f.as_slice())
            .is_ok_and(|e| e.ethertype() == EthernetProtocol::Ipv4)
    });
    assert_eq!(ipv4.count(), 1, "a DHCPDISCOVER is sent at once");
}

#[test]
fn restarting_dhcp_sends_a_new_discover_at_once() {
    let mut wire = Wire::default();
    let t0 = Instant::from_millis(0);
    let config = EndpointConfig::new(MAC, IpConfig::Dhcp, 1);
    let mut ep = Endpoint::new(config, &mut wire, t0);
    ep.poll(t0, &mut wire, &mut NoRequests);
    let ipv4 = |wire: &Wire| {
        wire.sent
            .iter()
            .filter(|f| {
                EthernetFrame::new_checked(f.as_slice())
                    .is_ok_and(|e| e.ethertype() == EthernetProtocol::Ipv4)
            })
            .count()
    };
    assert_eq!(ipv4(&wire), 1);
    // 100 ms later the DHCP client would still be waiting out its retransmission delay...
    let t1 = Instant::from_millis(100);
    ep.poll(t1, &mut wire, &mut NoRequests);
    assert_eq!(ipv4(&wire), 1, "no retransmission yet");
    // ...but a carrier that just came up starts discovery over.
    ep.restart_dhcp();
    ep.poll(t1, &mut wire, &mut NoRequests);
    assert_eq!(ipv4(&wire), 2, "a new DISCOVER right away");
}
