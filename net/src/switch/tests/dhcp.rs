//! The switch's DHCP server (`dhcp`): answers, where they go, what is never forwarded, what
//! is refused.

use core::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, IpAddress, Ipv4Packet,
    Ipv4Repr, UdpPacket,
};

use super::super::dhcp::{DhcpConfig, FALLBACK_SERVER_ID, MAX_ANSWERS, SERVER_MAC};
use super::super::fixture::{A, B, BROADCAST, C, Host, R10, ipv4, udp, udp_frame};
use super::super::{ConfigError, PortId, Switch};
use super::{DropReason, Fate, at, default_lab, send, v};

const DNS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(9, 9, 9, 9)];
const DAY: u32 = 86_400;
const XID: u32 = 0xfeed_beef;

fn config(gateway: Option<Ipv4Addr>) -> DhcpConfig {
    DhcpConfig {
        prefix: 24,
        gateway,
        dns: DNS.to_vec(),
        lease_secs: DAY,
    }
}

/// The lab with DHCP served on VLAN 10 (gateway R10), not on VLAN 20.
fn served() -> super::super::fixture::Lab {
    let mut lab = default_lab();
    lab.switch
        .set_vlan_dhcp(v(10), Some(config(Some(R10.ip))))
        .expect("valid settings");
    lab
}

/// A client message from `mac`, shaped by `f`.
fn message(kind: DhcpMessageType, mac: [u8; 6], f: impl FnOnce(&mut DhcpRepr<'_>)) -> Vec<u8> {
    let mut repr = DhcpRepr {
        message_type: kind,
        transaction_id: XID,
        secs: 3,
        client_hardware_address: EthernetAddress(mac),
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: Ipv4Addr::UNSPECIFIED,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: Some(EthernetAddress(mac)),
        server_identifier: None,
        parameter_request_list: Some(&[1, 3, 6, 51, 54]),
        dns_servers: None,
        max_size: Some(576),
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    f(&mut repr);
    let mut payload = vec![0; repr.buffer_len()];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut payload[..]))
        .expect("sized by buffer_len");
    payload
}

/// A frame from `host` (MAC `mac`, source `src`) to `dst_mac`/`dst` from port 68 to 67.
fn from(host: Host, src: Ipv4Addr, (dst_mac, dst): ([u8; 6], Ipv4Addr), dhcp: &[u8]) -> Vec<u8> {
    ipv4((host.mac, dst_mac), (src, dst), 17, &udp(68, 67, dhcp))
}

/// A broadcast from a client without an address.
fn broadcast(host: Host, dhcp: &[u8]) -> Vec<u8> {
    from(
        host,
        Ipv4Addr::UNSPECIFIED,
        (BROADCAST, Ipv4Addr::BROADCAST),
        dhcp,
    )
}

/// An answer, read back with smoltcp, checksums verified.
#[derive(Debug)]
struct Answer {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    ports: (u16, u16),
    kind: DhcpMessageType,
    xid: u32,
    chaddr: [u8; 6],
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    broadcast: bool,
    mask: Option<Ipv4Addr>,
    router: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    lease: Option<u32>,
    server_id: Option<Ipv4Addr>,
    client_id: Option<EthernetAddress>,
    message_len: usize,
}

fn read(frame: &[u8]) -> Answer {
    let eth = EthernetFrame::new_checked(frame).expect("Ethernet");
    let ip = Ipv4Packet::new_checked(eth.payload()).expect("IPv4");
    assert!(ip.verify_checksum(), "IPv4 checksum");
    Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()).expect("IPv4 header");
    let udp = UdpPacket::new_checked(ip.payload()).expect("UDP");
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    assert!(udp.verify_checksum(&src, &dst), "UDP checksum");
    let dhcp = DhcpPacket::new_checked(udp.payload()).expect("DHCP");
    let r = DhcpRepr::parse(&dhcp).expect("a DHCP reply");
    Answer {
        eth_dst: eth.dst_addr().0,
        eth_src: eth.src_addr().0,
        ip_src: ip.src_addr(),
        ip_dst: ip.dst_addr(),
        ports: (udp.src_port(), udp.dst_port()),
        kind: r.message_type,
        xid: r.transaction_id,
        chaddr: r.client_hardware_address.0,
        ciaddr: r.client_ip,
        yiaddr: r.your_ip,
        broadcast: r.broadcast,
        mask: r.subnet_mask,
        router: r.router,
        dns: r.dns_servers.map(|d| d.to_vec()).unwrap_or_default(),
        lease: r.lease_duration,
        server_id: r.server_identifier,
        client_id: r.client_identifier,
        message_len: udp.payload().len(),
    }
}

/// Sends `frame` from `port`: it must be taken (forwarded nowhere); returns the answers.
fn ask(switch: &mut Switch, port: PortId, frame: &[u8]) -> Vec<(PortId, Vec<u8>)> {
    let fate = send(switch, port, frame, at(1));
    assert_eq!(fate.ports(), [], "a DHCP request was forwarded");
    switch.take_answers().collect()
}

/// The one answer to `frame`, for `port` itself.
fn answer(switch: &mut Switch, port: PortId, frame: &[u8]) -> Answer {
    let answers = ask(switch, port, frame);
    assert_eq!(answers.len(), 1, "one answer");
    assert_eq!(answers[0].0, port, "answered to another port");
    read(&answers[0].1)
}

#[test]
fn discover_is_offered_the_ports_address_and_settings() {
    let mut lab = served();
    let discover = message(DhcpMessageType::Discover, A.mac, |r| r.broadcast = true);
    let offer = answer(&mut lab.switch, lab.a, &broadcast(A, &discover));
    assert_eq!(offer.kind, DhcpMessageType::Offer);
    assert_eq!((offer.eth_dst, offer.eth_src), (A.mac, SERVER_MAC));
    assert_eq!((offer.ip_src, offer.ip_dst), (R10.ip, Ipv4Addr::BROADCAST));
    assert_eq!(offer.ports, (67, 68));
    assert_eq!((offer.xid, offer.chaddr), (XID, A.mac));
    assert_eq!(offer.yiaddr, A.ip);
    assert_eq!(offer.ciaddr, Ipv4Addr::UNSPECIFIED);
    assert!(offer.broadcast, "the flag is echoed");
    assert_eq!(offer.mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(offer.router, Some(R10.ip));
    assert_eq!(offer.dns, DNS);
    assert_eq!(offer.lease, Some(DAY));
    assert_eq!(offer.server_id, Some(R10.ip));
    assert_eq!(offer.client_id, Some(EthernetAddress(A.mac)));
    assert!(offer.message_len >= 300, "padded to BOOTP's minimum");

    let c = lab.switch.port_counters(lab.a).expect("port A");
    assert_eq!((c.rx_frames, c.dhcp_answers, c.drops.total()), (1, 1, 0));
    for other in [lab.b, lab.trunk] {
        let c = lab.switch.port_counters(other).expect("port");
        assert_eq!(c.tx_frames, 0, "{other} saw the request");
    }
}

#[test]
fn without_the_broadcast_flag_the_offer_is_unicast_to_the_address() {
    let mut lab = served();
    let discover = message(DhcpMessageType::Discover, A.mac, |_| {});
    let offer = answer(&mut lab.switch, lab.a, &broadcast(A, &discover));
    assert_eq!((offer.eth_dst, offer.ip_dst), (A.mac, A.ip));
    assert!(!offer.broadcast);
}

#[test]
fn the_requested_address_is_offered_only_if_it_is_the_ports() {
    let mut lab = served();
    let discover = message(DhcpMessageType::Discover, A.mac, |r| {
        r.requested_ip = Some(B.ip);
    });
    let offer = answer(&mut lab.switch, lab.a, &broadcast(A, &discover));
    assert_eq!(offer.yiaddr, A.ip);
}

#[test]
fn request_selecting_renewing_and_rebinding_are_acked() {
    let mut lab = served();
    // SELECTING: broadcast from 0.0.0.0, requested address and server identifier.
    let select = message(DhcpMessageType::Request, A.mac, |r| {
        r.requested_ip = Some(A.ip);
        r.server_identifier = Some(R10.ip);
        r.broadcast = true;
    });
    let ack = answer(&mut lab.switch, lab.a, &broadcast(A, &select));
    assert_eq!(ack.kind, DhcpMessageType::Ack);
    assert_eq!((ack.yiaddr, ack.ip_dst), (A.ip, Ipv4Addr::BROADCAST));
    assert_eq!(ack.lease, Some(DAY));
    assert_eq!(ack.router, Some(R10.ip));

    // RENEWING: unicast from its address to the server identifier (the router's MAC).
    let renew = message(DhcpMessageType::Request, A.mac, |r| r.client_ip = A.ip);
    let frame = from(A, A.ip, (R10.mac, R10.ip), &renew);
    let ack = answer(&mut lab.switch, lab.a, &frame);
    assert_eq!(ack.kind, DhcpMessageType::Ack);
    assert_eq!((ack.ciaddr, ack.yiaddr), (A.ip, A.ip));
    assert_eq!((ack.eth_dst, ack.ip_dst), (A.mac, A.ip));
    assert_eq!(
        lab.switch
            .port_counters(lab.trunk)
            .expect("trunk")
            .tx_frames,
        0
    );

    // REBINDING: broadcast from its address.
    let frame = from(A, A.ip, (BROADCAST, Ipv4Addr::BROADCAST), &renew);
    let ack = answer(&mut lab.switch, lab.a, &frame);
    assert_eq!((ack.kind, ack.ip_dst), (DhcpMessageType::Ack, A.ip));
    assert_eq!(lab.switch.port_counters(lab.a).expect("A").dhcp_answers, 3);
}

#[test]
fn request_for_another_address_or_none_is_naked() {
    let mut lab = served();
    let cases = [
        message(DhcpMessageType::Request, A.mac, |r| {
            r.requested_ip = Some(Ipv4Addr::new(10, 0, 10, 99));
        }),
        message(DhcpMessageType::Request, A.mac, |r| {
            r.requested_ip = Some(B.ip);
            r.server_identifier = Some(R10.ip);
        }),
        message(DhcpMessageType::Request, A.mac, |_| {}),
    ];
    for request in cases {
        let nak = answer(&mut lab.switch, lab.a, &broadcast(A, &request));
        assert_eq!(nak.kind, DhcpMessageType::Nak);
        assert_eq!((nak.eth_dst, nak.ip_dst), (A.mac, Ipv4Addr::BROADCAST));
        assert_eq!(nak.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!((nak.lease, nak.router, nak.mask), (None, None, None));
        assert_eq!(nak.server_id, Some(R10.ip));
    }
}

#[test]
fn inform_gets_the_settings_without_a_lease() {
    let mut lab = served();
    let inform = message(DhcpMessageType::Inform, A.mac, |r| r.client_ip = A.ip);
    let frame = from(A, A.ip, (BROADCAST, Ipv4Addr::BROADCAST), &inform);
    let ack = answer(&mut lab.switch, lab.a, &frame);
    assert_eq!(ack.kind, DhcpMessageType::Ack);
    assert_eq!(
        (ack.yiaddr, ack.ciaddr, ack.ip_dst),
        (Ipv4Addr::UNSPECIFIED, A.ip, A.ip)
    );
    assert_eq!((ack.lease, ack.router), (None, Some(R10.ip)));
    assert_eq!(ack.dns, DNS);
}

#[test]
fn release_decline_and_relayed_messages_are_taken_silently() {
    let mut lab = served();
    let release = message(DhcpMessageType::Release, A.mac, |r| r.client_ip = A.ip);
    let decline = message(DhcpMessageType::Decline, A.mac, |r| {
        r.requested_ip = Some(A.ip)
    });
    let relayed = message(DhcpMessageType::Discover, A.mac, |r| {
        r.relay_agent_ip = Ipv4Addr::new(10, 0, 10, 250);
    });
    let frames = [
        from(A, A.ip, (R10.mac, R10.ip), &release),
        broadcast(A, &decline),
        broadcast(A, &relayed),
    ];
    for frame in frames {
        assert!(ask(&mut lab.switch, lab.a, &frame).is_empty());
    }
    let c = lab.switch.port_counters(lab.a).expect("A");
    assert_eq!((c.rx_frames, c.dhcp_answers, c.drops.total()), (3, 0, 0));
}

#[test]
fn a_vlan_without_settings_forwards_dhcp_as_before() {
    let mut lab = served();
    let discover = message(DhcpMessageType::Discover, C.mac, |_| {});
    assert_eq!(
        send(&mut lab.switch, lab.c, &broadcast(C, &discover), at(1)).ports(),
        [lab.trunk]
    );
    // Cleared settings: VLAN 10 floods again.
    lab.switch.set_vlan_dhcp(v(10), None).expect("clearing");
    assert_eq!(lab.switch.vlan_dhcp(v(10)), None);
    let discover = message(DhcpMessageType::Discover, A.mac, |_| {});
    assert_eq!(
        send(&mut lab.switch, lab.a, &broadcast(A, &discover), at(1)).ports(),
        [lab.b, lab.trunk]
    );
    assert_eq!(lab.switch.take_answers().count(), 0);
    // A guest's server message on a VLAN without settings goes through too.
    let offer = udp_frame(
        B,
        Host {
            ip: Ipv4Addr::BROADCAST,
            mac: BROADCAST,
            ..A
        },
        (67, 68),
        b"",
    );
    assert_eq!(
        send(&mut lab.switch, lab.b, &offer, at(1)).ports(),
        [lab.a, lab.trunk]
    );
}

#[test]
fn a_guest_cannot_serve_dhcp_on_a_served_vlan() {
    let mut lab = served();
    let everyone = Host {
        ip: Ipv4Addr::BROADCAST,
        mac: BROADCAST,
        ..A
    };
    let rogue = message(DhcpMessageType::Discover, B.mac, |_| {});
    for to in [everyone, A] {
        let offer = udp_frame(B, to, (67, 68), &rogue);
        assert_eq!(
            send(&mut lab.switch, lab.b, &offer, at(1)).dropped(),
            DropReason::Firewall
        );
    }
    assert_eq!(lab.switch.take_answers().count(), 0);
}

#[test]
fn a_request_for_another_hardware_address_gets_nothing() {
    let mut lab = served();
    // From 0.0.0.0: anti-spoofing's, as before.
    let starve = message(DhcpMessageType::Discover, B.mac, |_| {});
    assert_eq!(
        send(&mut lab.switch, lab.a, &broadcast(A, &starve), at(1)).dropped(),
        DropReason::SpoofedIpv4
    );
    // From its own address, for B's MAC: the switch's.
    let renew = message(DhcpMessageType::Request, B.mac, |r| r.client_ip = B.ip);
    let frame = from(A, A.ip, (BROADCAST, Ipv4Addr::BROADCAST), &renew);
    assert_eq!(
        send(&mut lab.switch, lab.a, &frame, at(1)).dropped(),
        DropReason::SpoofedMac
    );
    assert_eq!(lab.switch.take_answers().count(), 0);
    assert_eq!(lab.switch.port_counters(lab.b).expect("B").tx_frames, 0);
}

#[test]
fn malformed_truncated_and_oversize_messages_are_dropped() {
    let mut lab = served();
    let good = message(DhcpMessageType::Discover, A.mac, |_| {});
    let mut bad_magic = good.clone();
    bad_magic[236] ^= 0xff;
    let mut no_type = good.clone();
    no_type.truncate(240);
    let mut cut_option = good[..240].to_vec();
    cut_option.extend_from_slice(&[53, 200, 1]);
    let mut oversize = good.clone();
    let end = oversize.len() - 1;
    oversize.splice(end..end, std::iter::repeat_n(0, 1300));
    let mut bad_hlen = good.clone();
    bad_hlen[2] = 16;
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        good[..100].to_vec(),
        good[..239].to_vec(),
        bad_magic,
        no_type,
        cut_option,
        oversize,
        bad_hlen,
    ];
    for dhcp in &cases {
        let fate = send(
            &mut lab.switch,
            lab.a,
            &from(A, A.ip, (BROADCAST, Ipv4Addr::BROADCAST), dhcp),
            at(1),
        );
        assert_eq!(
            fate.dropped(),
            DropReason::Malformed,
            "{} bytes",
            dhcp.len()
        );
    }
    // From a port other than 68.
    let frame = ipv4(
        (A.mac, BROADCAST),
        (A.ip, Ipv4Addr::BROADCAST),
        17,
        &udp(1068, 67, &good),
    );
    assert_eq!(
        send(&mut lab.switch, lab.a, &frame, at(1)).dropped(),
        DropReason::Malformed
    );
    // A first fragment of a request.
    let mut frame = from(A, A.ip, (BROADCAST, Ipv4Addr::BROADCAST), &good);
    super::super::fixture::fragment(&mut frame, 7, 0, true);
    assert_eq!(
        send(&mut lab.switch, lab.a, &frame, at(1)).dropped(),
        DropReason::Malformed
    );
    assert_eq!(lab.switch.take_answers().count(), 0);
    // Short options and padding are fine as long as they parse.
    let mut padded = good.clone();
    let end = padded.len() - 1;
    padded.splice(end..end, std::iter::repeat_n(0, 600));
    assert_eq!(ask(&mut lab.switch, lab.a, &broadcast(A, &padded)).len(), 1);
}

#[test]
fn unicast_to_port_67_elsewhere_is_not_the_switchs() {
    let mut lab = served();
    let request = message(DhcpMessageType::Request, A.mac, |r| r.client_ip = A.ip);
    let frame = from(A, A.ip, (B.mac, B.ip), &request);
    assert_eq!(send(&mut lab.switch, lab.a, &frame, at(1)).ports(), [lab.b]);
    assert_eq!(lab.switch.take_answers().count(), 0);
}

#[test]
fn without_a_gateway_the_server_is_link_local_and_no_router_is_given() {
    let mut lab = default_lab();
    lab.switch
        .set_vlan_dhcp(v(10), Some(config(None)))
        .expect("valid");
    let discover = message(DhcpMessageType::Discover, B.mac, |_| {});
    let offer = answer(&mut lab.switch, lab.b, &broadcast(B, &discover));
    assert_eq!(
        (offer.ip_src, offer.server_id),
        (FALLBACK_SERVER_ID, Some(FALLBACK_SERVER_ID))
    );
    assert_eq!((offer.router, offer.yiaddr), (None, B.ip));
    // A renewal to that identifier is the switch's too.
    let renew = message(DhcpMessageType::Request, B.mac, |r| r.client_ip = B.ip);
    let frame = from(B, B.ip, (SERVER_MAC, FALLBACK_SERVER_ID), &renew);
    assert_eq!(
        answer(&mut lab.switch, lab.b, &frame).kind,
        DhcpMessageType::Ack
    );
}

#[test]
fn the_outbox_is_bounded_and_forgets_removed_ports() {
    let mut lab = served();
    let discover = broadcast(A, &message(DhcpMessageType::Discover, A.mac, |_| {}));
    for _ in 0..MAX_ANSWERS + 10 {
        send(&mut lab.switch, lab.a, &discover, at(1));
    }
    assert_eq!(lab.switch.take_answers().count(), MAX_ANSWERS);
    send(&mut lab.switch, lab.a, &discover, at(1));
    lab.switch.remove_port(lab.a).expect("A goes");
    assert_eq!(lab.switch.take_answers().count(), 0);
}

#[test]
fn bad_settings_are_refused() {
    let mut lab = default_lab();
    let bad = [
        DhcpConfig {
            prefix: 0,
            ..config(None)
        },
        DhcpConfig {
            prefix: 33,
            ..config(None)
        },
        config(Some(Ipv4Addr::BROADCAST)),
        DhcpConfig {
            dns: vec![DNS[0]; 3],
            ..config(None)
        },
        DhcpConfig {
            dns: vec![Ipv4Addr::UNSPECIFIED],
            ..config(None)
        },
        DhcpConfig {
            lease_secs: 59,
            ..config(None)
        },
    ];
    for c in bad {
        assert!(matches!(
            lab.switch.set_vlan_dhcp(v(10), Some(c)),
            Err(ConfigError::BadDhcp(_))
        ));
    }
    assert_eq!(lab.switch.vlan_dhcp(v(10)), None);
    // Settings outlive the VLAN's ports (a VLAN may be served before its first guest).
    lab.switch
        .set_vlan_dhcp(v(30), Some(config(None)))
        .expect("valid");
    assert_eq!(lab.switch.vlan_dhcp(v(30)), Some(&config(None)));
}

#[test]
fn fate_of_a_taken_request_is_a_forward_to_no_port() {
    let mut lab = served();
    let discover = broadcast(A, &message(DhcpMessageType::Discover, A.mac, |_| {}));
    let fate = send(&mut lab.switch, lab.a, &discover, at(1));
    assert_eq!(
        fate,
        Fate::To {
            vlan: 10,
            ingress_tagged: false,
            to: Vec::new()
        }
    );
}
