//! Neighbour learning smoltcp does not do on its own.
//!
//! smoltcp fills its neighbour cache only from ARP packets aimed at it, and drops a packet whose
//! next hop is unresolved while it asks (then stays silent for a second). A client that already
//! knows our MAC — from our gratuitous ARP, or because its cache outlives smoltcp's 60 s entries —
//! sends a SYN without ARPing first; our SYN-ACK is then dropped and the client retries only after
//! its 1 s SYN timeout. So before a TCP SYN addressed to us reaches smoltcp, the link hands it an
//! ARP request from the SYN's sender: smoltcp learns the neighbour, answers it (one harmless ARP
//! reply), and the SYN-ACK goes out at once.

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Packet, TcpPacket,
};

/// Length of the synthesized frame: Ethernet header plus an Ethernet/IPv4 ARP packet.
pub const ARP_FRAME_LEN: usize = 14 + 28;

/// If `frame` is a TCP SYN (without ACK) sent to `our_mac`, writes into `out` an ARP request
/// from its sender for its destination address and returns true. Never panics on any input.
pub fn arp_for_syn(frame: &[u8], our_mac: [u8; 6], out: &mut [u8; ARP_FRAME_LEN]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if eth.dst_addr() != EthernetAddress(our_mac) || eth.ethertype() != EthernetProtocol::Ipv4 {
        return false;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
        return false;
    }
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
        return false;
    };
    if !tcp.syn() || tcp.ack() {
        return false;
    }
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: eth.src_addr(),
        source_protocol_addr: ip.src_addr(),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip.dst_addr(),
    };
    let header = EthernetRepr {
        src_addr: eth.src_addr(),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut out_frame = EthernetFrame::new_unchecked(&mut out[..]);
    header.emit(&mut out_frame);
    arp.emit(&mut ArpPacket::new_unchecked(out_frame.payload_mut()));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 9];

    /// Ethernet + IPv4 (20 B) + TCP (20 B) with `flags`, from PEER 10.0.0.9 to US 10.0.0.1.
    fn tcp_frame(dst: [u8; 6], flags: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&PEER);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 9, 10, 0, 0, 1]);
        f.extend_from_slice(&[0x9c, 0x40, 0x05, 0x09, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags]);
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    #[test]
    fn syn_to_us_becomes_an_arp_request_from_the_sender() {
        let mut out = [0u8; ARP_FRAME_LEN];
        assert!(arp_for_syn(&tcp_frame(US, 0x02), US, &mut out));
        let eth = EthernetFrame::new_checked(&out[..]).expect("frame");
        assert_eq!(eth.src_addr(), EthernetAddress(PEER));
        let arp =
            ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("arp")).expect("repr");
        let ArpRepr::EthernetIpv4 {
            operation,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = arp
        else {
            unreachable!("one variant")
        };
        assert_eq!(operation, ArpOperation::Request);
        assert_eq!(source_protocol_addr.octets(), [10, 0, 0, 9]);
        assert_eq!(target_protocol_addr.octets(), [10, 0, 0, 1]);
    }

    #[test]
    fn other_frames_are_left_alone() {
        let mut out = [0u8; ARP_FRAME_LEN];
        assert!(!arp_for_syn(&tcp_frame(US, 0x12), US, &mut out), "SYN-ACK");
        assert!(!arp_for_syn(&tcp_frame(US, 0x10), US, &mut out), "ACK");
        assert!(
            !arp_for_syn(&tcp_frame(PEER, 0x02), US, &mut out),
            "not to us"
        );
        let frame = tcp_frame(US, 0x02);
        for cut in 0..frame.len() - 1 {
            assert!(
                !arp_for_syn(&frame[..cut], US, &mut out),
                "truncated at {cut}"
            );
        }
    }
}
