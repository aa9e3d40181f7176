//! The datapath in one process: guests' queues in memfd memory, driven by `driver::Guest`, the
//! switch serving them through `tx::tx_batch` as a port's vhost-user thread would. Frames,
//! drops and counters are checked from both ends.

mod common;

use common::*;
use kaos_net::switch::DropReason;
use kaos_net::switch::fixture::{self, ACK, BROADCAST, SYN};
use kaos_vswitch::driver::{self, F_NEXT, F_WRITE};
use kaos_vswitch::port::DatapathDrop;
use kaos_vswitch::vnet::{self, GSO_TCPV4, NEEDS_CSUM, NetHdr, Offloads};
use smoltcp::wire::ArpOperation;

fn arp_request(from: fixture::Host, to: fixture::Host) -> Vec<u8> {
    fixture::arp(
        (from.mac, BROADCAST),
        ArpOperation::Request,
        (from.mac, from.ip),
        to.ip,
    )
}

/// A TCP frame with `payload` bytes after a 20-byte header.
fn tcp_with(from: fixture::Host, to: fixture::Host, payload: usize) -> Vec<u8> {
    let mut l4 = fixture::tcp(40000, 80, ACK);
    l4.extend((0..payload).map(|i| u8::try_from(i * 7 % 251).unwrap_or(0)));
    fixture::ipv4((from.mac, to.mac), (from.ip, to.ip), 6, &l4)
}

#[test]
fn guests_of_a_vlan_exchange_frames_and_another_vlan_sees_none() {
    let mut lab = Lab::abc();
    let (a, b, c) = (0, 1, 2);
    let ask = arp_request(A, B);
    lab.members[a].send(&ask);
    assert_eq!(lab.tx(a).frames, 1);
    let got = lab.members[b].inbox();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, ask);
    assert_eq!(got[0].1, 1, "num_buffers");
    assert!(driver::signalled(&lab.members[b].guest.calls[0]) > 0);

    let reply = fixture::arp((B.mac, A.mac), ArpOperation::Reply, (B.mac, B.ip), A.ip);
    let syn = fixture::tcp_frame(A, B, (40000, 80), SYN);
    let synack = fixture::tcp_frame(B, A, (80, 40000), SYN | ACK);
    let udp = fixture::udp_frame(A, B, (5000, 53), b"hello");
    lab.members[b].send(&reply);
    lab.members[a].send(&syn);
    lab.members[a].send(&udp);
    lab.tx(b);
    lab.tx(a);
    lab.members[b].send(&synack);
    lab.tx(b);
    let at_a: Vec<_> = lab.members[a].inbox().into_iter().map(|m| m.2).collect();
    let at_b: Vec<_> = lab.members[b].inbox().into_iter().map(|m| m.2).collect();
    assert_eq!(at_a, [reply, synack]);
    assert_eq!(at_b, [syn, udp]);
    assert!(
        lab.members[c].inbox().is_empty(),
        "VLAN 20 saw VLAN 10's frames"
    );
    let c_nic = &lab.members[c].nic;
    assert_eq!(
        c_nic
            .counters()
            .tx_frames
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn forged_frames_are_dropped_and_counted() {
    let mut lab = Lab::abc();
    let (a, b) = (0, 1);
    let forged_mac = fixture::udp_frame(fixture::Host { mac: B.mac, ..A }, B, (1, 2), b"x");
    let forged_ip = fixture::udp_frame(fixture::Host { ip: D.ip, ..A }, B, (1, 2), b"x");
    let forged_arp = fixture::arp((A.mac, BROADCAST), ArpOperation::Reply, (A.mac, B.ip), B.ip);
    for f in [&forged_mac, &forged_ip, &forged_arp] {
        lab.members[a].send(f);
    }
    assert_eq!(lab.tx(a).frames, 3);
    assert!(lab.members[b].inbox().is_empty());
    assert_eq!(lab.core_drops(a, DropReason::SpoofedMac), 1);
    assert_eq!(lab.core_drops(a, DropReason::SpoofedIpv4), 1);
    assert_eq!(lab.core_drops(a, DropReason::SpoofedArp), 1);
}

/// Frames sent as one descriptor (header and frame together, as Linux sends them) or split,
/// received into one buffer that holds them exactly or into mergeable buffers one byte too
/// small: every combination arrives as sent, at each length where the datapath changes how it
/// copies (an ARP request, the longest decided on whole, one byte more, the longest).
#[test]
fn frames_arrive_as_sent_however_their_descriptors_fall() {
    use kaos_vswitch::head::WHOLE_MAX;
    for len in [42, 64, WHOLE_MAX, WHOLE_MAX + 1, 1514] {
        let frame = if len == 42 {
            arp_request(A, B)
        } else {
            tcp_with(A, B, len - 54)
        };
        assert_eq!(frame.len(), len);
        let exact = u32::try_from(vnet::HDR_LEN + len).expect("small");
        for (rx_buf, buffers) in [(exact, 1), (exact - 1, 2)] {
            let mut lab = Lab::new();
            let a = lab.add(A, Offloads::ALL, RX_BUF, 8);
            let b = lab.add(B, Offloads::ALL, rx_buf, 8);
            lab.members[a].send_whole(&frame);
            lab.members[a].send(&frame);
            assert_eq!(lab.tx(a).frames, 2);
            let got = lab.members[b].inbox();
            assert_eq!(got.len(), 2, "{len} bytes into {rx_buf}-byte buffers");
            for (hdr, num, bytes) in got {
                assert_eq!(num, buffers, "{len} bytes into {rx_buf}-byte buffers");
                assert_eq!(hdr, NetHdr::default());
                assert_eq!(bytes, frame, "{len} bytes into {rx_buf}-byte buffers");
            }
        }
    }
}

#[test]
fn mergeable_buffers_carry_a_frame_over_small_ones() {
    let mut lab = Lab::new();
    let a = lab.add(A, Offloads::ALL, RX_BUF, 8);
    let b = lab.add(B, Offloads::ALL, 256, 64);
    let plain = Offloads {
        mrg_rxbuf: false,
        ..Offloads::ALL
    };
    let d = lab.add(D, plain, 256, 64);
    // A broadcast of 1400 bytes: B takes it in 6 buffers, D (no MRG_RXBUF) cannot take it.
    let big = fixture::udp_frame(
        A,
        fixture::Host {
            mac: BROADCAST,
            ip: std::net::Ipv4Addr::BROADCAST,
            vlan: 10,
        },
        (1, 2),
        &[9; 1358],
    );
    assert_eq!(big.len(), 1400);
    lab.members[a].send(&big);
    lab.tx(a);
    let got = lab.members[b].inbox();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].1, 6,
        "num_buffers for 12 + 1400 bytes in 256-byte buffers"
    );
    assert_eq!(got[0].2, big);
    assert!(lab.members[d].inbox().is_empty());
    assert_eq!(
        lab.members[d]
            .nic
            .counters()
            .drops(DatapathDrop::RxBufferTooSmall),
        1
    );
    // D still takes a frame that fits.
    let small = arp_request(A, D);
    lab.members[a].send(&small);
    lab.tx(a);
    assert_eq!(lab.members[d].inbox().len(), 1);
}

#[test]
fn checksum_and_tso_headers_pass_through_or_are_handled_here() {
    let mut lab = Lab::new();
    let a = lab.add(A, Offloads::ALL, RX_BUF, 8);
    let b = lab.add(B, Offloads::ALL, RX_BUF, 128);
    let d = lab.add(D, Offloads::default(), RX_BUF, 128);
    // A UDP datagram with a partial checksum: the pseudo-header sum in the checksum field.
    let mut udp = fixture::udp_frame(A, B, (7, 9), b"checksum me");
    let partial = pseudo_sum(&udp);
    udp[40..42].copy_from_slice(&partial.to_be_bytes());
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..NetHdr::default()
    };
    let mut to_d = udp.clone();
    to_d[..6].copy_from_slice(&D.mac);
    to_d[30..34].copy_from_slice(&D.ip.octets());
    let partial_d = pseudo_sum(&to_d);
    to_d[40..42].copy_from_slice(&partial_d.to_be_bytes());
    lab.members[a].send_hdr(hdr, &udp);
    lab.members[a].send_hdr(hdr, &to_d);
    lab.tx(a);
    let at_b = lab.members[b].inbox();
    assert_eq!(
        at_b[0].0.flags, NEEDS_CSUM,
        "passed through to a GUEST_CSUM receiver"
    );
    assert_eq!((at_b[0].0.csum_start, at_b[0].0.csum_offset), (34, 6));
    assert_eq!(at_b[0].2, udp);
    let at_d = lab.members[d].inbox();
    assert_eq!(
        at_d[0].0.flags, 0,
        "completed for a receiver without GUEST_CSUM"
    );
    assert_eq!(
        vnet::fold(vnet::ones_sum(&at_d[0].2[34..]) + pseudo(&at_d[0].2)),
        0xffff
    );

    // A TSO super-frame: to B with its GSO header, never to D.
    let tso = tcp_with(A, B, 20_000);
    let gso = NetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut tso_d = tcp_with(A, D, 20_000);
    tso_d[..6].copy_from_slice(&D.mac);
    lab.members[a].send_hdr(gso, &tso);
    lab.members[a].send_hdr(gso, &tso_d);
    lab.tx(a);
    let at_b = lab.members[b].inbox();
    assert_eq!(at_b.len(), 1);
    assert_eq!((at_b[0].0.gso_type, at_b[0].0.gso_size), (GSO_TCPV4, 1448));
    assert_eq!(at_b[0].2, tso);
    assert!(lab.members[d].inbox().is_empty());
    assert_eq!(
        lab.members[d]
            .nic
            .counters()
            .drops(DatapathDrop::GsoUnsupported),
        1
    );
}

/// The pseudo-header sum of the UDP datagram in an untagged IPv4 frame.
fn pseudo(frame: &[u8]) -> u64 {
    let udp_len = frame.len() - 34;
    vnet::ones_sum(&frame[26..34]) + 17 + udp_len as u64
}

fn pseudo_sum(frame: &[u8]) -> u16 {
    vnet::fold(pseudo(frame))
}

#[test]
fn a_guest_without_rx_buffers_stalls_nobody() {
    let mut lab = Lab::new();
    let a = lab.add(A, Offloads::ALL, RX_BUF, 8);
    let b = lab.add(B, Offloads::ALL, RX_BUF, 0);
    let d = lab.add(D, Offloads::ALL, RX_BUF, 128);
    for _ in 0..10 {
        let f = arp_request(A, D);
        lab.members[a].send(&f);
    }
    assert_eq!(lab.tx(a).frames, 10);
    assert_eq!(lab.members[d].inbox().len(), 10);
    assert_eq!(
        lab.members[b]
            .nic
            .counters()
            .drops(DatapathDrop::NoRxBuffers),
        10
    );
    assert_eq!(
        lab.members[a].guest.tx.free(),
        usize::from(QUEUE),
        "every chain went back"
    );
}

#[test]
fn hostile_chains_are_dropped_and_counted() {
    let mut lab = Lab::abc();
    let (a, b) = (0, 1);
    let m = &mut lab.members[a];
    let (q, mem) = (&mut m.guest.tx, &m.guest.mem);
    let buf = q.buf(250).0;
    // A loop: 200 → 201 → 200.
    q.raw(mem, 200, buf, 64, F_NEXT, 201);
    q.raw(mem, 201, buf, 64, F_NEXT, 200);
    q.reserve(&[200, 201], 200);
    q.publish(mem, 200);
    // Outside guest memory.
    q.raw(mem, 202, 1 << 40, 64, 0, 0);
    q.reserve(&[202], 202);
    q.publish(mem, 202);
    // A writable descriptor in a TX chain.
    q.raw(mem, 203, buf, 64, F_WRITE, 0);
    q.reserve(&[203], 203);
    q.publish(mem, 203);
    // A `next` beyond the table.
    q.raw(mem, 204, buf, 64, F_NEXT, 999);
    q.reserve(&[204], 204);
    q.publish(mem, 204);
    // Shorter than the virtio-net header.
    q.raw(mem, 205, buf, 10, 0, 0);
    q.reserve(&[205], 205);
    q.publish(mem, 205);
    // Longer than any frame: 2 × 40000 bytes.
    let low = q.buf(0).0;
    q.raw(mem, 206, low, 40_000, F_NEXT, 207);
    q.raw(mem, 207, low, 40_000, 0, 0);
    q.reserve(&[206, 207], 206);
    q.publish(mem, 206);
    // 70 one-byte descriptors (130..200).
    for i in 130..200u16 {
        let last = i == 199;
        q.raw(mem, i, buf, 1, if last { 0 } else { F_NEXT }, i + 1);
    }
    q.reserve(&(130..200).collect::<Vec<_>>(), 130);
    q.publish(mem, 130);
    // A checksum request beyond the frame.
    let bad = NetHdr {
        flags: NEEDS_CSUM,
        csum_start: 60,
        csum_offset: 6,
        ..NetHdr::default()
    };
    let ok = arp_request(A, B);
    m.send_hdr(bad, &ok);
    m.send(&ok);
    assert_eq!(lab.tx(a).frames, 9);
    let c = lab.members[a].nic.counters();
    assert_eq!(c.drops(DatapathDrop::BadChain), 5);
    assert_eq!(c.drops(DatapathDrop::Truncated), 1);
    assert_eq!(c.drops(DatapathDrop::Oversize), 1);
    assert_eq!(c.drops(DatapathDrop::BadHeader), 1);
    assert_eq!(
        lab.members[b]
            .inbox()
            .into_iter()
            .map(|m| m.2)
            .collect::<Vec<_>>(),
        [ok]
    );
    assert_eq!(
        lab.members[a].guest.tx.free(),
        usize::from(QUEUE),
        "every chain went back"
    );
}

#[test]
fn long_frames_arrive_whole_and_many_are_batched() {
    let mut lab = Lab::abc();
    let (a, b) = (0, 1);
    let frames: Vec<Vec<u8>> = (0..100).map(|i| tcp_with(A, B, 600 + i * 13)).collect();
    for f in &frames {
        lab.members[a].send(f);
    }
    assert_eq!(
        lab.tx(a),
        kaos_vswitch::tx::Progress {
            frames: 64,
            more: true
        }
    );
    assert_eq!(
        lab.tx(a),
        kaos_vswitch::tx::Progress {
            frames: 36,
            more: false
        }
    );
    let got: Vec<_> = lab.members[b].inbox().into_iter().map(|m| m.2).collect();
    assert_eq!(got, frames);
    let c = lab.members[b].nic.counters();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    assert_eq!(
        c.tx_bytes.load(std::sync::atomic::Ordering::Relaxed),
        bytes as u64
    );
    // A full batch that empties the queue does not ask for another.
    for f in &frames[..64] {
        lab.members[a].send(f);
    }
    assert_eq!(
        lab.tx(a),
        kaos_vswitch::tx::Progress {
            frames: 64,
            more: false
        }
    );
}

/// A 64 KiB TSO super-frame reaches a guest whose driver posted the smallest mergeable
/// buffers Linux uses (1536 bytes, where a new driver starts): 43 of them.
#[test]
fn a_64k_tso_frame_fills_linux_sized_mergeable_buffers() {
    let mut lab = Lab::new();
    let a = lab.add(A, Offloads::ALL, RX_BUF, 8);
    let b = lab.add(B, Offloads::ALL, 1536, 128);
    let tso = tcp_with(A, B, 65_000);
    let gso = NetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    lab.members[a].send_hdr(gso, &tso);
    lab.tx(a);
    let at_b = lab.members[b].inbox();
    assert_eq!(at_b.len(), 1, "delivered whole");
    assert_eq!(at_b[0].2, tso);
    let buffers = (12 + tso.len()).div_ceil(1536);
    assert_eq!(usize::from(at_b[0].1), buffers, "num_buffers");
    assert!(buffers > 32, "more buffers than the old limit: {buffers}");
}

/// One batch whose frames go to two receivers interleaved, with a flood to both and a dropped
/// frame among them: each receiver gets its frames in the order they were sent (the delivery
/// list keeps runs of frames per receiver, sorted by receiver and first frame), and the
/// dropped one nowhere.
#[test]
fn a_batch_for_two_receivers_arrives_in_order_at_each() {
    let d = fixture::Host {
        mac: [0x02, 0, 0, 0, 0x10, 0x0d],
        ip: std::net::Ipv4Addr::new(10, 0, 10, 13),
        vlan: 10,
    };
    let mut lab = Lab::new();
    let (a, b, dd) = (
        lab.add(A, Offloads::ALL, RX_BUF, 128),
        lab.add(B, Offloads::ALL, RX_BUF, 128),
        lab.add(d, Offloads::ALL, RX_BUF, 128),
    );
    let to = |host: fixture::Host, port: u16| fixture::udp_frame(A, host, (port, 53), b"x");
    let mut forged = to(B, 9);
    forged[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x66, 0x66]);
    let flood = arp_request(A, B);
    let sent = [
        to(B, 1),
        to(B, 2),
        to(d, 3),
        to(B, 4),
        flood.clone(),
        to(d, 5),
        to(d, 6),
        forged,
        to(d, 7),
        to(B, 8),
    ];
    for f in &sent {
        lab.members[a].send(f);
    }
    assert_eq!(lab.tx(a).frames, sent.len());
    let at = |lab: &mut Lab, i: usize| -> Vec<Vec<u8>> {
        lab.members[i].inbox().into_iter().map(|m| m.2).collect()
    };
    let want_b = [&sent[0], &sent[1], &sent[3], &flood, &sent[9]];
    let want_d = [&sent[2], &flood, &sent[5], &sent[6], &sent[8]];
    assert_eq!(at(&mut lab, b), want_b.map(|f| f.clone()));
    assert_eq!(at(&mut lab, dd), want_d.map(|f| f.clone()));
    assert_eq!(lab.core_drops(a, DropReason::SpoofedMac), 1);
}

/// A sender's frames mostly carry the same virtio-net header, which the switch then parses once
/// per batch; a checksum request must still lie within each frame it comes with.
#[test]
fn a_header_repeated_in_a_batch_is_checked_against_each_frame() {
    let mut lab = Lab::abc();
    let (a, b) = (0, 1);
    // The checksum field at 64..66: within an 82-byte frame, beyond a 42-byte one.
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 30,
        ..NetHdr::default()
    };
    let long = |i: u8| fixture::udp_frame(A, B, (4000, 5000), &[i; 40]);
    let short = fixture::udp_frame(A, B, (4000, 5000), &[]);
    for f in [long(1), short.clone(), long(2), short] {
        lab.members[a].send_hdr(hdr, &f);
    }
    assert_eq!(lab.tx(a).frames, 4);
    let c = lab.members[a].nic.counters();
    assert_eq!(c.drops(DatapathDrop::BadHeader), 2);
    let got: Vec<_> = lab.members[b].inbox().into_iter().map(|m| m.2).collect();
    assert_eq!(got, [long(1), long(2)]);
}
