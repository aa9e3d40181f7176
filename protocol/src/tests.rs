//! Encoding tests. The golden bytes pin the wire format: if one fails, the change broke
//! compatibility with deployed hosts and clients; append a variant or field instead.

use super::*;
extern crate std;
use std::{format, vec};

fn roundtrip<T>(msg: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut buf = [0u8; 512];
    let n = encode_message(msg, &mut buf).expect("encodes");
    decode_message::<T>(&buf[..n]).expect("decodes")
}

fn bytes<T: serde::Serialize>(msg: &T) -> ([u8; 512], usize) {
    let mut buf = [0u8; 512];
    let n = encode_message(msg, &mut buf).expect("encodes");
    (buf, n)
}

#[test]
fn golden_preambles() {
    assert_eq!(
        handshake::ClientPreamble::CURRENT.encode(),
        [b'K', b'A', b'O', b'S', 1, 0, 4, 0]
    );
    let server = handshake::ServerPreamble {
        version: Version { major: 1, minor: 2 },
        verdict: handshake::Verdict::BackingOff,
        retry_after_ms: 1000,
    };
    let wire = server.encode();
    assert_eq!(wire, [b'K', b'A', b'O', b'S', 1, 0, 2, 0, 3, 0, 0xe8, 0x03]);
    assert_eq!(handshake::ServerPreamble::decode(&wire), Ok(server));
    let mut bad = wire;
    bad[8] = 9;
    assert_eq!(
        handshake::ServerPreamble::decode(&bad),
        Err(handshake::PreambleError::BadVerdict(9))
    );
    assert_eq!(
        handshake::ClientPreamble::decode(b"GET / HT"),
        Err(handshake::PreambleError::BadMagic)
    );
    let prologue = handshake::ClientPreamble::CURRENT.prologue();
    assert_eq!(&prologue[..10], b"kaos-mgmt\0");
    assert_eq!(
        &prologue[10..],
        &handshake::ClientPreamble::CURRENT.encode()
    );
}

#[test]
fn golden_requests_by_index() {
    for (request, index) in [
        (Request::Status, 0u8),
        (Request::Reboot, 1),
        (Request::Shutdown, 2),
        (Request::StoreStatus, 3),
        (Request::HostGet, 5),
        (Request::Ping, 8),
        (Request::WhoAmI, 10),
        (Request::AccessList, 11),
    ] {
        let (buf, n) = bytes(&ClientFrame { id: 300, request });
        // id 300 is the varint [0xac, 0x02].
        assert_eq!(&buf[..n], &[0xac, 0x02, index]);
    }
    let (buf, n) = bytes(&ClientFrame {
        id: 1,
        request: Request::Cancel(300),
    });
    assert_eq!(&buf[..n], &[1, 9, 0xac, 0x02]);
}

#[test]
fn golden_store_host_and_event_requests() {
    let init = Request::StoreInit(StoreInit {
        device: truncated("vdb"),
        force: true,
    });
    let (buf, n) = bytes(&ClientFrame {
        id: 4,
        request: init,
    });
    // id | StoreInit=4 | "vdb" | force
    assert_eq!(&buf[..n], &[4, 4, 3, b'v', b'd', b'b', 1]);
    let set = Request::HostSet(HostSet {
        key: truncated("k"),
        value: truncated("v"),
    });
    let (buf, n) = bytes(&ClientFrame {
        id: 5,
        request: set,
    });
    assert_eq!(&buf[..n], &[5, 6, 1, b'k', 1, b'v']);
    let events = Request::Events(EventsQuery {
        after: Some(2),
        limit: 10,
        follow: true,
    });
    let (buf, n) = bytes(&ClientFrame {
        id: 6,
        request: events,
    });
    assert_eq!(&buf[..n], &[6, 7, 1, 2, 10, 1]);
}

#[test]
fn golden_access_requests() {
    let add = Request::AccessAdd(AccessAdd {
        name: truncated("ci"),
        role: Role::Operator,
        key: keys::PublicKey([7; 32]),
    });
    let (buf, n) = bytes(&ClientFrame {
        id: 1,
        request: add,
    });
    let mut want = vec![1u8, 12, 2, b'c', b'i', 1];
    want.extend_from_slice(&[7; 32]);
    assert_eq!(&buf[..n], &want[..]);
    let remove = Request::AccessRemove(AccessRemove {
        name: truncated("ci"),
    });
    let (buf, n) = bytes(&ClientFrame {
        id: 1,
        request: remove,
    });
    assert_eq!(&buf[..n], &[1, 13, 2, b'c', b'i']);
}

#[test]
fn roles_are_ordered_and_every_request_has_one() {
    assert!(Role::Reader < Role::Operator && Role::Operator < Role::Admin);
    assert_eq!(Request::Status.required_role(), Role::Reader);
    assert_eq!(Request::Reboot.required_role(), Role::Operator);
    assert_eq!(Request::AccessList.required_role(), Role::Admin);
    for role in [Role::Reader, Role::Operator, Role::Admin] {
        assert_eq!(Role::parse(role.as_str()), Some(role));
    }
    assert_eq!(Role::parse("root"), None);
}

#[test]
fn key_names_are_bounded_and_plain() {
    assert!(valid_key_name("ci-runner_2.lab"));
    assert!(!valid_key_name(""));
    assert!(!valid_key_name("a b"));
    assert!(!valid_key_name("../x"));
    assert!(!valid_key_name(&"a".repeat(33)));
}

#[test]
fn key_text_roundtrips_and_rejects_garbage() {
    let key = keys::PublicKey([0; 32]);
    let line = key.to_line();
    assert_eq!(
        line.as_str(),
        "kaos-x25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    let text = format!("{line}  alice@laptop \n");
    let (back, comment) = keys::PublicKey::parse_line(&text).expect("parses");
    assert_eq!((back, comment), (key, "alice@laptop"));
    assert_eq!(
        keys::PublicKey::parse_line("ssh-ed25519 AAAA"),
        Err(keys::KeyError::WrongType)
    );
    assert_eq!(
        keys::PublicKey::parse_line("kaos-x25519AAAA"),
        Err(keys::KeyError::WrongType)
    );
    assert_eq!(
        keys::PublicKey::parse_line("kaos-x25519 AAAA"),
        Err(keys::KeyError::BadKey),
        "too short"
    );
    let long = format!("kaos-x25519 {}", "A".repeat(48));
    assert_eq!(
        keys::PublicKey::parse_line(&long),
        Err(keys::KeyError::BadKey)
    );
    // SHA-256 of 32 zero bytes, as OpenSSH would print it.
    let fp = key.fingerprint();
    assert_eq!(
        format!("{fp}"),
        "SHA256:Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU"
    );
    assert_eq!(keys::Fingerprint::parse(&format!("{fp}")), Some(fp));
    assert_eq!(keys::Fingerprint::parse("SHA256:short"), None);
    // RFC 7748 section 6.1, Alice.
    let alice = keys::SecretKey(hex32(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ));
    assert_eq!(
        alice.public().0,
        hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    let secret = keys::SecretKey([1; 32]);
    assert_eq!(keys::SecretKey::parse(&secret.to_text()), Ok(secret));
    assert_eq!(
        format!("{:?}", keys::SecretKey([1; 32])),
        "SecretKey(..)",
        "a secret is never printed"
    );
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
        last: false,
        response: Response::Events(EventPage { events, more: true }),
    };
    let mut buf = [0u8; MAX_FRAME];
    assert!(
        encode_message(&page, &mut buf).is_ok(),
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
        last: true,
        response: Response::StoreStatus(report),
    };
    assert!(
        encode_message(&frame, &mut buf).is_ok(),
        "a full store report fits one frame"
    );
    let entry = AccessEntry {
        name: truncated(&"n".repeat(32)),
        role: Role::Admin,
        key: keys::PublicKey([0xff; 32]),
        source: KeySource::File,
    };
    let mut entries = heapless::Vec::new();
    while entries.push(entry.clone()).is_ok() {}
    let frame = ServerFrame {
        id: u32::MAX,
        last: true,
        response: Response::Access(AccessList { entries }),
    };
    assert!(
        encode_message(&frame, &mut buf).is_ok(),
        "a full access list fits one frame"
    );
}

#[test]
fn golden_error_reply() {
    let msg = ServerFrame {
        id: 7,
        last: true,
        response: Response::Error(ErrorReply::new(ErrorCode::PermissionDenied, "no")),
    };
    let (buf, n) = bytes(&msg);
    // id | last | Error=1 | PermissionDenied=2 | "no"
    assert_eq!(&buf[..n], &[7, 1, 1, 2, 2, b'n', b'o']);
    assert_eq!(ErrorCode::PermissionDenied.code(), 3);
    assert_eq!(ErrorCode::Busy.code(), 11);
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
        host_key: keys::PublicKey([3; 32]),
        host_key_persistent: true,
    }
}

#[test]
fn status_roundtrips() {
    let msg = ServerFrame {
        id: 2,
        last: true,
        response: Response::Status(sample_status()),
    };
    assert_eq!(roundtrip(&msg), msg);
}

#[test]
fn partial_frames_wait_for_more() {
    let body = [0xabu8; 300];
    let mut wire = frame_header(body.len()).expect("fits").to_vec();
    wire.extend_from_slice(&body);
    for cut in 0..wire.len() {
        assert_eq!(split_frame(&wire[..cut]), Ok(None), "cut at {cut}");
    }
    wire.push(0);
    assert_eq!(split_frame(&wire), Ok(Some((&body[..], 304))));
}

#[test]
fn oversize_header_is_refused_before_the_body() {
    let header = u32::try_from(MAX_FRAME + 1).expect("fits").to_le_bytes();
    assert_eq!(
        split_frame(&header),
        Err(FrameError::Oversize(u32::from_le_bytes(header)))
    );
    assert_eq!(split_frame(&[0xff; 4]), Err(FrameError::Oversize(u32::MAX)));
    assert_eq!(frame_header(MAX_FRAME + 1), None);
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    assert_eq!(
        decode_message::<ClientFrame>(&[1, 99]),
        Err(FrameError::Malformed)
    );
    assert_eq!(
        decode_message::<ClientFrame>(&[]),
        Err(FrameError::Malformed)
    );
    assert_eq!(
        decode_message::<ClientFrame>(&[1, 0, 0]),
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
        let n = usize::from(buf[0] % 24);
        let _ = decode_message::<ClientFrame>(&buf[..n]);
        let _ = decode_message::<ServerFrame>(&buf[..n]);
    }
}

#[test]
fn encode_refuses_small_buffers() {
    let msg = ServerFrame {
        id: 2,
        last: true,
        response: Response::Status(sample_status()),
    };
    let mut small = [0u8; 16];
    assert_eq!(
        encode_message(&msg, &mut small),
        Err(FrameError::BufferTooSmall)
    );
}

#[test]
fn truncation_respects_char_boundaries() {
    let s: heapless::String<4> = truncated("abcé");
    assert_eq!(s.as_str(), "abc");
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

#[test]
fn golden_vm_and_module_requests() {
    let act = Request::VmAct(VmActRequest {
        name: truncated("web-1"),
        action: VmAction::Restart,
    });
    let (buf, n) = bytes(&ClientFrame {
        id: 3,
        request: act,
    });
    assert_eq!(&buf[..n], &[3, 20, 5, b'w', b'e', b'b', b'-', b'1', 2]);
    let (buf, n) = bytes(&ClientFrame {
        id: 1,
        request: Request::VmList,
    });
    assert_eq!(&buf[..n], &[1, 18]);
    assert_eq!(
        Request::ModuleList.required_role(),
        Role::Reader,
        "listing is read-only"
    );
    assert_eq!(
        Request::VmCreate(VmCreate {
            spec: sample_spec(),
            start: false
        })
        .required_role(),
        Role::Operator
    );
    assert_eq!(
        Request::VmLogs(VmLogsQuery {
            name: truncated("a"),
            follow: true
        })
        .required_role(),
        Role::Reader
    );
}

#[test]
fn object_names_are_lower_case_words() {
    assert!(valid_object_name("vkaos"));
    assert!(valid_object_name("web-01"));
    for bad in ["", "-web", "Web", "a b", "a/b", "..", &"a".repeat(33)] {
        assert!(!valid_object_name(bad), "{bad:?} accepted");
    }
    for p in [
        RestartPolicy::Never,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
    ] {
        assert_eq!(RestartPolicy::parse(p.as_str()), Some(p));
    }
}

pub(crate) fn sample_spec() -> VmSpec {
    VmSpec {
        name: truncated(&"v".repeat(32)),
        vcpus: VM_VCPUS_MAX,
        memory_mib: u32::MAX,
        cmdline: truncated(&"c".repeat(VM_CMDLINE_MAX)),
        platform: truncated(&"p".repeat(32)),
        restart: RestartPolicy::OnFailure,
        nics: heapless::Vec::new(),
    }
}

#[test]
fn full_vm_and_module_messages_fit_a_frame() {
    let mut buf = [0u8; MAX_MESSAGE];
    let mut data = heapless::Vec::new();
    while data.push(0xffu8).is_ok() {}
    let upload = ClientFrame {
        id: u32::MAX,
        request: Request::ModuleUpload(ModuleUpload {
            sha256: [0xff; 32],
            size: u64::MAX,
            offset: u64::MAX,
            data,
        }),
    };
    assert!(
        encode_message(&upload, &mut buf).is_ok(),
        "a full chunk fits"
    );
    let mut data = heapless::Vec::new();
    while data.push(0xffu8).is_ok() {}
    let console = ServerFrame {
        id: u32::MAX,
        last: false,
        response: Response::Console(ConsoleChunk {
            data,
            dropped: u64::MAX,
        }),
    };
    assert!(encode_message(&console, &mut buf).is_ok());
    let info = VmInfo {
        spec: sample_spec(),
        state: VmState::BackingOff,
        desired_running: true,
        pid: Some(u32::MAX),
        restarts: u32::MAX,
        since_ms: u64::MAX,
        guest_up: true,
        last_exit: Some(VmExit {
            kind: VmExitKind::StartFailed,
            message: truncated(&"m".repeat(128)),
            at_ms: u64::MAX,
        }),
        platform_sha256: Some([0xff; 32]),
        nics: heapless::Vec::new(),
        image: Some(truncated(&"i".repeat(32))),
        apps: crate::tests_apps::fullest_apps(),
    };
    let frame = ServerFrame {
        id: u32::MAX,
        last: true,
        response: Response::Vm(info),
    };
    assert!(encode_message(&frame, &mut buf).is_ok());
    let summary = VmSummary {
        name: truncated(&"v".repeat(32)),
        state: VmState::Failed,
        vcpus: u8::MAX,
        memory_mib: u32::MAX,
        restarts: u32::MAX,
        guest_up: true,
        ipv4: Some(core::net::Ipv4Addr::BROADCAST),
        image: Some(truncated(&"i".repeat(32))),
    };
    let mut entries = heapless::Vec::new();
    while entries.push(summary.clone()).is_ok() {}
    let frame = ServerFrame {
        id: u32::MAX,
        last: true,
        response: Response::Vms(VmList { entries }),
    };
    assert!(encode_message(&frame, &mut buf).is_ok(), "a full VM list");
    let module = ModuleInfo {
        name: truncated(&"m".repeat(32)),
        version: truncated(&"1".repeat(64)),
        kind: ModuleKind::Platform,
        sha256: [0xff; 32],
        size: u64::MAX,
    };
    let mut entries = heapless::Vec::new();
    while entries.push(module.clone()).is_ok() {}
    let frame = ServerFrame {
        id: u32::MAX,
        last: true,
        response: Response::Modules(ModuleList { entries }),
    };
    assert!(
        encode_message(&frame, &mut buf).is_ok(),
        "a full module list"
    );
}
