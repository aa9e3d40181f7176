//! Encoding tests. The golden bytes pin the wire format: if one fails, the change broke
//! compatibility with deployed hosts and clients; append a variant or field instead.

use super::*;

fn roundtrip<T>(msg: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut buf = [0u8; 512];
    let n = encode_frame(msg, &mut buf).expect("encodes");
    let (back, used) = decode_frame::<T>(&buf[..n])
        .expect("decodes")
        .expect("complete");
    assert_eq!(used, n);
    back
}

fn frame_bytes<T: serde::Serialize>(msg: &T) -> ([u8; 512], usize) {
    let mut buf = [0u8; 512];
    let n = encode_frame(msg, &mut buf).expect("encodes");
    (buf, n)
}

#[test]
fn golden_hello() {
    let msg = ClientFrame {
        id: 1,
        request: Request::Hello(Hello::new("t")),
    };
    let (buf, n) = frame_bytes(&msg);
    // len=10 | id=1 | Request::Hello=0 | "KAOS" | major=0 minor=2 | "t"
    assert_eq!(
        &buf[..n],
        &[10, 0, 0, 0, 1, 0, b'K', b'A', b'O', b'S', 0, 2, 1, b't']
    );
}

#[test]
fn golden_requests_by_index() {
    for (request, index) in [
        (Request::Status, 1u8),
        (Request::Reboot, 2),
        (Request::Shutdown, 3),
    ] {
        let (buf, n) = frame_bytes(&ClientFrame { id: 300, request });
        // id 300 is the varint [0xac, 0x02].
        assert_eq!(&buf[..n], &[3, 0, 0, 0, 0xac, 0x02, index]);
    }
}

#[test]
fn golden_store_and_host_requests() {
    let init = Request::StoreInit(StoreInit {
        device: truncated("vdb"),
        force: true,
    });
    let (buf, n) = frame_bytes(&ClientFrame {
        id: 4,
        request: init,
    });
    // id | StoreInit=5 | "vdb" | force
    assert_eq!(&buf[..n], &[7, 0, 0, 0, 4, 5, 3, b'v', b'd', b'b', 1]);
    let set = Request::HostSet(HostSet {
        key: truncated("k"),
        value: truncated("v"),
    });
    let (buf, n) = frame_bytes(&ClientFrame {
        id: 5,
        request: set,
    });
    assert_eq!(&buf[..n], &[6, 0, 0, 0, 5, 7, 1, b'k', 1, b'v']);
    let events = Request::Events(EventsQuery {
        after: Some(2),
        limit: 10,
    });
    let (buf, n) = frame_bytes(&ClientFrame {
        id: 6,
        request: events,
    });
    assert_eq!(&buf[..n], &[5, 0, 0, 0, 6, 8, 1, 2, 10]);
}

#[test]
fn full_pages_fit_a_frame() {
    let entry = EventEntry {
        seq: u64::MAX,
        boot_id: [0xff; 16],
        uptime_ms: u64::MAX,
        kind: EventKind::AccessDenied,
        message: truncated(&"x".repeat(128)),
    };
    let mut events = heapless::Vec::new();
    while events.push(entry.clone()).is_ok() {}
    let page = ServerFrame {
        id: u32::MAX,
        response: Response::Events(EventPage { events, more: true }),
    };
    let mut buf = [0u8; HEADER_LEN + MAX_FRAME];
    assert!(
        encode_frame(&page, &mut buf).is_ok(),
        "a full event page fits one frame"
    );
    let disk = DiskInfo {
        name: truncated(&"d".repeat(32)),
        size_bytes: u64::MAX,
        state: DiskState::Corrupt,
        detail: truncated(&"y".repeat(64)),
    };
    let mut disks = heapless::Vec::new();
    while disks.push(disk.clone()).is_ok() {}
    let report = StoreReport {
        mode: StoreMode::Disk,
        location: truncated(&"/".repeat(64)),
        host_id: Some([1; 16]),
        degraded: Some(truncated(&"z".repeat(160))),
        ready_ms: Some(u32::MAX),
        schema_version: u32::MAX,
        disks,
    };
    let frame = ServerFrame {
        id: 1,
        response: Response::StoreStatus(report),
    };
    assert!(
        encode_frame(&frame, &mut buf).is_ok(),
        "a full store report fits one frame"
    );
}

#[test]
fn golden_error_reply() {
    let msg = ServerFrame {
        id: 7,
        response: Response::Error(ErrorReply::new(ErrorCode::BadMagic, "no")),
    };
    let (buf, n) = frame_bytes(&msg);
    assert_eq!(&buf[..n], &[6, 0, 0, 0, 7, 3, 2, 2, b'n', b'o']);
    assert_eq!(ErrorCode::BadMagic.code(), 3);
}

fn sample_status() -> Status {
    Status {
        hostname: truncated("kaos-1"),
        version: truncated("0.1.0"),
        boot_id: [9; 16],
        uptime_ms: 1234,
        hosted: false,
        timeline: BootTimeline {
            init_exec_ms: 800,
            mounts_ms: Some(801),
            link_up_ms: Some(810),
            address_ms: Some(900),
            endpoint_ready_ms: Some(901),
        },
        processes: 1,
        store: StoreMode::Absent,
        mgmt: MgmtLink {
            interface: truncated("eth0"),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            address: Some(Ipv4Cidr {
                addr: [10, 0, 2, 15],
                prefix: 24,
            }),
            gateway: Some([10, 0, 2, 2]),
            dhcp: true,
        },
    }
}

#[test]
fn status_roundtrips() {
    let msg = ServerFrame {
        id: 2,
        response: Response::Status(sample_status()),
    };
    assert_eq!(roundtrip(&msg), msg);
}

#[test]
fn partial_frames_wait_for_more() {
    let (buf, n) = frame_bytes(&ServerFrame {
        id: 2,
        response: Response::Status(sample_status()),
    });
    for cut in 0..n {
        assert_eq!(
            decode_frame::<ServerFrame>(&buf[..cut]),
            Ok(None),
            "cut at {cut}"
        );
    }
}

#[test]
fn oversize_header_is_refused_before_the_body() {
    let header = u32::try_from(MAX_FRAME + 1).expect("fits").to_le_bytes();
    assert_eq!(
        decode_frame::<ClientFrame>(&header),
        Err(FrameError::Oversize(u32::from_le_bytes(header)))
    );
    assert_eq!(
        decode_frame::<ClientFrame>(&[0xff; 4]),
        Err(FrameError::Oversize(u32::MAX))
    );
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    assert_eq!(
        decode_frame::<ClientFrame>(&[2, 0, 0, 0, 1, 99]),
        Err(FrameError::Malformed)
    );
    assert_eq!(
        decode_frame::<ClientFrame>(&[0, 0, 0, 0]),
        Err(FrameError::Malformed)
    );
    assert_eq!(
        decode_frame::<ClientFrame>(&[3, 0, 0, 0, 1, 1, 0]),
        Err(FrameError::TrailingBytes)
    );
    // Every short pseudo-random input decodes to an answer, never a panic.
    let mut x: u32 = 0x1234_5678;
    for _ in 0..20_000 {
        let mut buf = [0u8; 24];
        for b in &mut buf {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x.to_le_bytes()[0];
        }
        buf[0] %= 20;
        buf[1..4].fill(0);
        let _ = decode_frame::<ClientFrame>(&buf);
        let _ = decode_frame::<ServerFrame>(&buf);
    }
}

#[test]
fn encode_refuses_small_buffers() {
    let msg = ServerFrame {
        id: 2,
        response: Response::Status(sample_status()),
    };
    let mut small = [0u8; 16];
    assert_eq!(
        encode_frame(&msg, &mut small),
        Err(FrameError::BufferTooSmall)
    );
    assert_eq!(
        encode_frame(&msg, &mut small[..2]),
        Err(FrameError::BufferTooSmall)
    );
}

#[test]
fn truncation_respects_char_boundaries() {
    let s: heapless::String<4> = truncated("abcé");
    assert_eq!(s.as_str(), "abc");
}
