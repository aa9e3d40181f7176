//! Seed inputs: a valid example of each message and each kind of session step, so the fuzzer
//! starts from the encodings instead of discovering them. `cargo +nightly run --example seeds`
//! (in `fuzz/`) writes them to `seeds/<target>/`; they are committed, and `cargo xtask fuzz`
//! passes them beside the (uncommitted) corpus.

use kaos_protocol::handshake::{ClientHello, ClientPreamble, ServerPreamble, Verdict};
use kaos_protocol::keys::PublicKey;
use kaos_protocol::{
    AccessAdd, AccessRemove, ClientFrame, ErrorCode, ErrorReply, EventsQuery, HostSet, MAX_FRAME,
    Request, Response, Role, ServerFrame, StoreInit, encode_message, frame_header, truncated,
};
use serde::Serialize;

use crate::host::{CLIENT_NAME, Host, server_hello};
use crate::script::{self, Step};

/// A named seed input.
pub type Seed = (String, Vec<u8>);

/// Every seed, by target name.
pub fn all() -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("frame_decode", frame_decode()),
        ("request_decode", request_decode()),
        ("handshake", handshake()),
        ("session_established", session_established()),
    ]
}

/// One request of each kind, with a short name.
pub fn requests() -> Vec<(&'static str, Request)> {
    let events = |follow| EventsQuery {
        after: Some(1),
        limit: 3,
        follow,
    };
    vec![
        ("status", Request::Status),
        ("reboot", Request::Reboot),
        ("shutdown", Request::Shutdown),
        ("store-status", Request::StoreStatus),
        (
            "store-init",
            Request::StoreInit(StoreInit {
                device: truncated("vdb"),
                force: true,
            }),
        ),
        ("host-get", Request::HostGet),
        (
            "host-set",
            Request::HostSet(HostSet {
                key: truncated("hostname"),
                value: truncated("h2"),
            }),
        ),
        ("events", Request::Events(events(false))),
        ("events-follow", Request::Events(events(true))),
        ("ping", Request::Ping),
        ("cancel", Request::Cancel(5)),
        ("whoami", Request::WhoAmI),
        ("access-list", Request::AccessList),
        (
            "access-add",
            Request::AccessAdd(AccessAdd {
                name: truncated("other"),
                role: Role::Operator,
                key: PublicKey([5; 32]),
            }),
        ),
        (
            "access-remove",
            Request::AccessRemove(AccessRemove {
                name: truncated(CLIENT_NAME),
            }),
        ),
    ]
}

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = vec![0; MAX_FRAME];
    let n = encode_message(msg, &mut buf).expect("a seed message fits a frame");
    buf.truncate(n);
    buf
}

fn frame(id: u32, request: Request) -> Vec<u8> {
    encode(&ClientFrame { id, request })
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = frame_header(body.len()).expect("small body").to_vec();
    out.extend_from_slice(body);
    out
}

fn frame_decode() -> Vec<Seed> {
    let ping = framed(&frame(1, Request::Ping));
    let status = framed(&frame(2, Request::Status));
    vec![
        ("ping".into(), ping.clone()),
        ("two-frames".into(), [ping.clone(), status].concat()),
        ("cut".into(), ping[..ping.len() - 1].to_vec()),
        (
            "oversize".into(),
            (MAX_FRAME as u32 + 1).to_le_bytes().to_vec(),
        ),
        (
            "server-pong".into(),
            framed(&encode(&server_frame(Response::Pong))),
        ),
    ]
}

fn server_frame(response: Response) -> ServerFrame {
    ServerFrame {
        id: 7,
        last: true,
        response,
    }
}

fn request_decode() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = requests()
        .into_iter()
        .map(|(name, request)| (format!("request-{name}"), frame(9, request)))
        .collect();
    // The host's answers to each request, as the fake host gives them.
    let mut host = Host::new(Role::Admin);
    let who = kaos_net::Handler::identity(&host, &crate::host::public_keys().1);
    let who = who.expect("the client key is authorised");
    for (name, request) in requests() {
        if let kaos_net::Answer::Reply(response) =
            kaos_net::Handler::request(&mut host, &who, &request)
        {
            seeds.push((format!("response-{name}"), encode(&server_frame(response))));
        }
    }
    let error = ErrorReply::new(ErrorCode::Busy, "busy");
    seeds.extend([
        (
            "response-error".into(),
            encode(&server_frame(Response::Error(error))),
        ),
        (
            "response-identity".into(),
            encode(&server_frame(Response::Identity(who))),
        ),
        ("server-hello".into(), encode(&server_hello())),
        (
            "client-hello".into(),
            encode(&ClientHello::new("kaosctl 0.1.0")),
        ),
        (
            "client-preamble".into(),
            ClientPreamble::CURRENT.encode().to_vec(),
        ),
        (
            "server-preamble".into(),
            ServerPreamble {
                version: kaos_protocol::VERSION,
                verdict: Verdict::BackingOff,
                retry_after_ms: 2000,
            }
            .encode()
            .to_vec(),
        ),
    ]);
    seeds
}

/// Flags of the handshake target (see `fuzz_targets/handshake.rs`).
const ASSISTED: u8 = 1;
const STRANGER: u8 = 1 << 1;
const RAW_HELLO: u8 = 1 << 2;
const BUSY: u8 = 3 << 3;
const KEY_LATE: u8 = 1 << 5;
const VERSION: u8 = 1 << 6;

fn handshake() -> Vec<Seed> {
    let mut raw = vec![0, 0];
    raw.extend_from_slice(&ClientPreamble::CURRENT.encode());
    raw.extend_from_slice(&framed(&[0x42; 32]));
    let assisted = |piece: u8, flags: u8, tail: &[u8]| {
        // piece, flags, version (major 1, minor 7), message 1 payload, hello, requests.
        let mut s = vec![piece, flags, 1, 0, 7, 0, 0, 4];
        s.extend_from_slice(b"fuzz");
        s.extend_from_slice(tail);
        s
    };
    let mut requests = Vec::new();
    for request in [Request::Ping, Request::Status, Request::Cancel(3)] {
        let body = frame(4, request);
        requests.push(u8::try_from(body.len()).expect("short frame"));
        requests.extend_from_slice(&body);
    }
    requests.extend_from_slice(&[2, 0xff, 0xff]);
    vec![
        ("raw".into(), raw.clone()),
        (
            "raw-bytewise-key-late".into(),
            [&[1, KEY_LATE][..], &raw[2..]].concat(),
        ),
        ("assisted".into(), assisted(0, ASSISTED, &requests)),
        (
            "assisted-pieces".into(),
            assisted(3, ASSISTED | KEY_LATE, &requests),
        ),
        ("stranger".into(), assisted(0, ASSISTED | STRANGER, &[])),
        ("raw-hello".into(), assisted(0, ASSISTED | RAW_HELLO, &[])),
        ("busy".into(), assisted(0, ASSISTED | BUSY, &[])),
        ("version".into(), assisted(0, ASSISTED | VERSION, &[])),
    ]
}

fn session_established() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let bodies: Vec<(&str, Vec<u8>)> = requests()
        .into_iter()
        .map(|(name, r)| (name, frame(3, r)))
        .collect();
    // Each request, then a ping in one-byte TCP pieces: the session still answers after it.
    let after = frame(4, Request::Ping);
    for role in [Role::Reader, Role::Admin] {
        for (name, body) in &bodies {
            let steps = [
                Step::Send { body, piece: 0 },
                Step::Send {
                    body: &after,
                    piece: 1,
                },
            ];
            seeds.push((format!("{role}-{name}"), script::encode(role, &steps)));
        }
    }
    let follow = frame(
        5,
        Request::Events(EventsQuery {
            after: None,
            limit: 2,
            follow: true,
        }),
    );
    let cancel = frame(6, Request::Cancel(5));
    let ping = frame(7, Request::Ping);
    let stream = [
        Step::Send {
            body: &follow,
            piece: 0,
        },
        Step::Poll,
        Step::Send {
            body: &cancel,
            piece: 0,
        },
        Step::Send {
            body: &follow,
            piece: 2,
        },
        Step::Poll,
        Step::Poll,
        Step::Poll,
    ];
    seeds.push(("stream".into(), script::encode(Role::Reader, &stream)));
    let tamper = [
        Step::Send {
            body: &ping,
            piece: 0,
        },
        Step::Tamper {
            body: &ping,
            piece: 0,
            at: 9,
            mask: 1,
        },
    ];
    seeds.push(("tamper".into(), script::encode(Role::Reader, &tamper)));
    let replay = [Step::Replay {
        body: &ping,
        piece: 5,
    }];
    seeds.push(("replay".into(), script::encode(Role::Reader, &replay)));
    seeds
}
