//! Handshakes in process: a [`Session`] and a [`ClientHandshake`] trading bytes in memory, on
//! one core, beside the X25519 work those handshakes cannot avoid.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use curve25519_dalek::montgomery::MontgomeryPoint;
use kaos_net::client::{ClientHandshake, HostReply};
use kaos_net::{Admission, Answer, Handler, Session};
use kaos_protocol::handshake::{ClientHello, ServerHello};
use kaos_protocol::keys::{PublicKey, SecretKey};
use kaos_protocol::{
    ErrorCode, ErrorReply, Identity, KeySource, Request, Response, Role, truncated,
};

use super::anchor::Sizes;

/// Handshakes per run.
const PER_RUN: u32 = 100;
/// Runs (median reported).
const RUNS: usize = 11;

/// The row: handshakes per second, beside the X25519 floor.
pub fn row() -> Result<[String; 3]> {
    let mut host = Fake::new();
    let client = SecretKey([1; 32]);
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    handshake(&mut host, &client)?;
    for _ in 0..RUNS {
        let start = Instant::now();
        for _ in 0..PER_RUN {
            handshake(&mut host, &client)?;
        }
        ours.push(start.elapsed());
        floor.push(x25519(PER_RUN));
    }
    ours.sort();
    let each = ours[RUNS / 2].as_secs_f64() * 1e6 / f64::from(PER_RUN);
    Ok([
        "mgmt: handshakes in process, one core (through the welcome)".into(),
        format!("{} — {each:.0} µs each", super::rate_stats(&ours, PER_RUN)),
        format!(
            "their X25519 work alone (4 fixed-base + 6 variable-base multiplications): {}",
            super::rate_stats(&floor, PER_RUN)
        ),
    ])
}

/// The byte counts of the two handshake flights: (preamble + message 1 → preamble + message 2),
/// (message 3 → welcome), as the hosted host's would be within a few bytes of names.
pub fn flights() -> Result<[Sizes; 2]> {
    handshake(&mut Fake::new(), &SecretKey([1; 32]))
}

/// One complete handshake; returns its flights' sizes.
fn handshake(host: &mut Fake, client: &SecretKey) -> Result<[Sizes; 2]> {
    let mut session = Session::new(Admission::PROCEED, "bench");
    let (mut hs, first) = ClientHandshake::start(client)?;
    let reply = feed(&mut session, host, &first)?;
    let Some((HostReply::Hello { host_key, .. }, _)) = hs.read_reply(&reply)? else {
        bail!("the session refused or did not answer message 1");
    };
    ensure!(host_key == host.public, "wrong host key");
    let (mut transport, msg3) = hs.finish(&ClientHello::new("bench"))?;
    let welcome = feed(&mut session, host, &msg3)?;
    let Some((frame, _)) = transport.open(&welcome)? else {
        bail!("no welcome");
    };
    ensure!(
        matches!(frame.response, Response::Identity(_)),
        "not welcomed"
    );
    Ok([
        Sizes {
            request: first.len(),
            response: reply.len(),
        },
        Sizes {
            request: msg3.len(),
            response: welcome.len(),
        },
    ])
}

/// Feeds `bytes` to the session; returns what it sent.
fn feed(session: &mut Session, host: &mut Fake, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = session.receive(rest);
        ensure!(n > 0, "the session refused bytes");
        rest = &rest[n..];
        session.process(host, &mut out)?;
    }
    Ok(out)
}

/// What `n` XX handshakes must spend on X25519, both sides: per side, the static and the
/// ephemeral public keys (fixed base) and the ee, es, se agreements (variable base).
fn x25519(n: u32) -> Duration {
    let start = Instant::now();
    let mut point = MontgomeryPoint::mul_base_clamped([7; 32]);
    for _ in 0..n {
        for _ in 0..4 {
            point = MontgomeryPoint::mul_base_clamped(point.to_bytes());
        }
        for _ in 0..6 {
            point = point.mul_clamped(black_box([9; 32]));
        }
    }
    black_box(point);
    start.elapsed()
}

/// A host with one key and one authorised admin client.
struct Fake {
    key: SecretKey,
    public: PublicKey,
    client: PublicKey,
}

impl Fake {
    fn new() -> Self {
        let key = SecretKey([100; 32]);
        Self {
            public: key.public(),
            key,
            client: SecretKey([1; 32]).public(),
        }
    }
}

impl Handler for Fake {
    fn host_key(&self) -> Option<SecretKey> {
        Some(self.key.clone())
    }

    fn server_hello(&self) -> ServerHello {
        ServerHello {
            version: kaos_protocol::VERSION,
            hostname: truncated("bench"),
            key_persistent: true,
        }
    }

    fn identity(&self, key: &PublicKey) -> Option<Identity> {
        (*key == self.client).then(|| Identity {
            name: truncated("bench-admin"),
            role: Role::Admin,
            key: *key,
            source: KeySource::CommandLine,
        })
    }

    fn denied(&mut self, _: &Identity, _: &Request) {}

    fn request(&mut self, _: &Identity, _: &Request) -> Answer {
        Answer::Reply(Response::Error(ErrorReply::new(
            ErrorCode::Unsupported,
            "bench host",
        )))
    }
}
