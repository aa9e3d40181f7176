//! The switch's DHCP answers reach the asking guest's RX queue through the datapath, and its
//! request reaches nobody else.

mod common;

use common::*;
use kaos_net::switch::DhcpConfig;
use kaos_net::switch::fixture::{self, A, BROADCAST};
use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr, EthernetFrame, Ipv4Packet, UdpPacket};

#[test]
fn a_dhcp_discover_is_answered_into_the_senders_rx_queue() {
    let mut lab = Lab::abc();
    let settings = DhcpConfig {
        prefix: 24,
        gateway: Some(std::net::Ipv4Addr::new(10, 0, 10, 1)),
        dns: Vec::new(),
        lease_secs: 3600,
    };
    lab.fabric
        .lock()
        .switch
        .set_vlan_dhcp(fixture::vlan(10), Some(settings))
        .expect("valid settings");
    let discover = fixture::ipv4(
        (A.mac, BROADCAST),
        (
            std::net::Ipv4Addr::UNSPECIFIED,
            std::net::Ipv4Addr::BROADCAST,
        ),
        17,
        &fixture::udp(68, 67, &fixture::dhcp(DhcpMessageType::Discover, A.mac)),
    );
    lab.members[0].send(&discover);
    lab.tx(0);
    let inbox = lab.members[0].inbox();
    assert_eq!(inbox.len(), 1, "one OFFER");
    let frame = &inbox[0].2;
    let eth = EthernetFrame::new_checked(&frame[..]).expect("Ethernet");
    let ip = Ipv4Packet::new_checked(eth.payload()).expect("IPv4");
    let udp = UdpPacket::new_checked(ip.payload()).expect("UDP");
    let dhcp = DhcpPacket::new_checked(udp.payload()).expect("DHCP");
    let offer = DhcpRepr::parse(&dhcp).expect("a reply");
    assert_eq!(offer.message_type, DhcpMessageType::Offer);
    assert_eq!(offer.your_ip, A.ip);
    assert!(lab.members[1].inbox().is_empty(), "B saw A's request");
    assert!(lab.members[2].inbox().is_empty());
}
