//! Management-protocol figures for `cargo xtask bench`, each beside an anchor from the same run.
//!
//! | figure | anchor |
//! |---|---|
//! | `status`, `ping` round trip p50/p99, hosted kattach | kernel TCP, same byte counts: TAP relay, veth |
//! | bytes on the wire of a `status` answer and request | JSON of the same values |
//! | handshakes/s in process, one core | the X25519 work of those handshakes alone |
//! | connect + handshake + `status` + close/s over the TAP | kernel TCP, same flights, TAP relay |
//!
//! **The anchor link.** kattach's TAP has a process at its far end, so kernel TCP cannot run on
//! that very link. The closest we can build: two namespaces, each with a TAP whose fd is held by
//! a relay thread here that copies frames between them, with a kernel TCP server in one and the
//! client in the other. Each frame then leaves the kernel through a TAP and is handled by a poll
//! loop in userspace, as kattach's frames are; the anchor also pays a second TAP write and the
//! server thread's socket wake-up, so it leans pessimistic. A veth pair between the same
//! namespaces (kernel to kernel, no userspace on the path) is the optimistic anchor. Round-trip
//! samples are taken in interleaved blocks, so drift hits every series alike.
//!
//! **Release build.** Unoptimised X25519 is some 300 times slower and ChaCha20 much slower
//! too, so a debug `xtask` (what `cargo xtask` runs) measures none of this itself: it runs
//! `cargo run --release -p xtask -- bench` with [`CHILD_ENV`] set, which runs only this part
//! and prints its rows as JSON. kattach is the release binary the image holds.

mod anchor;
mod handshake;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kaos_protocol::handshake::TAG_LEN;
use kaos_protocol::{
    ClientFrame, HEADER_LEN, MAX_MESSAGE, Request, Response, ServerFrame, Status, encode_message,
};
use kaos_qemu_tests::hosted::HostedHost;
use kaos_qemu_tests::netns;
use kaosctl::Client;

use crate::bench::stats;
use anchor::{AnchorNet, Sizes};

/// Set to the path of kattach: run only the management figures and print them as JSON.
pub const CHILD_ENV: &str = "KAOS_BENCH_MGMT_KATTACH";

/// Timed round trips per series, in [`BLOCKS`] interleaved blocks.
const ROUND_TRIPS: usize = 2000;
const BLOCKS: usize = 20;
const WARM_UP: usize = 200;
/// Sequential connections timed over the TAP: under the host's burst of 128 handshakes per
/// source (`net/src/guard.rs`), so none is refused or delayed by the rate limit.
const CONNECTS: usize = 100;
/// A request id of the size the timed requests carry (postcard varint of 128..16384: 2 bytes).
const TYPICAL_ID: u32 = 1000;

/// Appends the management rows to `rows`, measured by a release build of this crate.
pub fn rows(rows: &mut Vec<[String; 3]>, kattach: &Path) -> Result<()> {
    if !cfg!(debug_assertions) {
        rows.extend(measure(kattach)?);
        return Ok(());
    }
    eprintln!("[bench] management protocol: measured by a release build of xtask");
    let out = crate::cmd::output(
        Command::new(crate::paths::cargo())
            .current_dir(crate::paths::workspace_root())
            .args(["run", "--release", "--quiet", "-p", "xtask", "--", "bench"])
            .env(CHILD_ENV, kattach),
    )?;
    let json = out
        .lines()
        .rev()
        .find(|l| l.starts_with('['))
        .context("the release bench printed no rows")?;
    rows.extend(serde_json::from_str::<Vec<[String; 3]>>(json)?);
    Ok(())
}

/// The child's part: measure, then print the rows as one JSON line on stdout.
pub fn child(kattach: &Path) -> Result<()> {
    let rows = measure(kattach)?;
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}

fn measure(kattach: &Path) -> Result<Vec<[String; 3]>> {
    eprintln!("[bench] management protocol: handshakes in process...");
    let mut rows = vec![handshake::row()?];
    match netns::unavailable() {
        Some(reason) => rows.push([
            "mgmt: round trips over a TAP".into(),
            "skipped".into(),
            reason,
        ]),
        None => over_tap(&mut rows, kattach)?,
    }
    Ok(rows)
}

/// Everything that needs the hosted kattach and the anchor namespaces.
fn over_tap(rows: &mut Vec<[String; 3]>, kattach: &Path) -> Result<()> {
    eprintln!("[bench] management protocol: round trips over a TAP...");
    let host = HostedHost::launch(kattach, "bench")?;
    let mut client = host.wait_ready(Duration::from_secs(10))?;
    let Response::Status(status) = client.request(Request::Status)? else {
        bail!("no status");
    };
    let status_sizes = Sizes {
        request: wire_len(&ClientFrame {
            id: TYPICAL_ID,
            request: Request::Status,
        })?,
        response: wire_len(&server_frame(Response::Status(status.clone())))?,
    };
    let ping_sizes = Sizes {
        request: wire_len(&ClientFrame {
            id: TYPICAL_ID,
            request: Request::Ping,
        })?,
        response: wire_len(&server_frame(Response::Pong))?,
    };
    rows.extend(bytes_rows(&status, status_sizes)?);

    let net = AnchorNet::new()?;
    let mut kinds = [
        (Request::Status, Trio::new(&net, status_sizes)?),
        (Request::Ping, Trio::new(&net, ping_sizes)?),
    ];
    for block in 0..=BLOCKS {
        // Block 0 warms every path up and is discarded.
        let (keep, n) = match block {
            0 => (false, WARM_UP),
            _ => (true, ROUND_TRIPS / BLOCKS),
        };
        for (req, t) in &mut kinds {
            t.ours.take(keep, n, || request(&mut client, req.clone()))?;
            t.relay.take(keep, n, || t.relay_echo.exchange())?;
            t.veth.take(keep, n, || t.veth_echo.exchange())?;
        }
    }
    drop(client);
    let [(_, status_rt), (_, ping_rt)] = &mut kinds;
    let note = format!(
        "; each answer reads /proc/<pid>/cmdline of every process on this machine (hosted \
         kattach shares its pid namespace; {} userspace)",
        status.processes
    );
    rows.push(round_trip_row("status", status_rt, &note));
    rows.push(round_trip_row("ping", ping_rt, ""));

    eprintln!("[bench] management protocol: sequential connections over a TAP...");
    let flights = handshake::flights()?;
    let endpoint = host.endpoint.clone();
    let mut ours = host.ns().enter(|| connect_loop(&endpoint))??;
    let mut anchor = net.connect_loop(&[flights[0], flights[1], status_sizes], CONNECTS)?;
    rows.push(connect_row(&mut ours, &mut anchor, &flights, status_sizes));
    Ok(())
}

/// Round-trip samples of one request kind, µs: ours and both anchors, and the anchors'
/// connections.
#[derive(Debug)]
struct Trio {
    sizes: Sizes,
    ours: Samples,
    relay: Samples,
    veth: Samples,
    relay_echo: anchor::Echo,
    veth_echo: anchor::Echo,
}

impl Trio {
    fn new(net: &AnchorNet, sizes: Sizes) -> Result<Self> {
        Ok(Self {
            sizes,
            ours: Samples::default(),
            relay: Samples::default(),
            veth: Samples::default(),
            relay_echo: net.client(AnchorNet::relay_addr(), sizes)?,
            veth_echo: net.client(AnchorNet::veth_addr(), sizes)?,
        })
    }
}

#[derive(Debug, Default)]
struct Samples(Vec<f64>);

impl Samples {
    /// Times `n` calls of `f`, keeping the samples if `keep`.
    fn take(&mut self, keep: bool, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<()> {
        for _ in 0..n {
            let start = Instant::now();
            f()?;
            if keep {
                self.0.push(micros(start.elapsed()));
            }
        }
        Ok(())
    }
}

fn request(client: &mut Client, request: Request) -> Result<()> {
    client.request(request)?;
    Ok(())
}

fn server_frame(response: Response) -> ServerFrame {
    ServerFrame {
        id: TYPICAL_ID,
        last: true,
        response,
    }
}

/// Bytes of `msg` on the wire: frame header, postcard, authentication tag.
fn wire_len<T: serde::Serialize>(msg: &T) -> Result<usize> {
    Ok(HEADER_LEN + postcard_len(msg)? + TAG_LEN)
}

fn postcard_len<T: serde::Serialize>(msg: &T) -> Result<usize> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    encode_message(msg, &mut buf).map_err(|e| anyhow::anyhow!("encode: {e}"))
}

fn bytes_rows(status: &Status, sizes: Sizes) -> Result<[[String; 3]; 2]> {
    let answer = server_frame(Response::Status(status.clone()));
    let request = ClientFrame {
        id: TYPICAL_ID,
        request: Request::Status,
    };
    let parts = |n: usize| {
        format!(
            "{HEADER_LEN} header + {} postcard + {TAG_LEN} tag",
            n - HEADER_LEN - TAG_LEN
        )
    };
    Ok([
        [
            "mgmt: status answer on the wire".into(),
            format!("{} B ({})", sizes.response, parts(sizes.response)),
            format!(
                "JSON of the same Status: {} B, of its ServerFrame: {} B (byte arrays as number lists)",
                serde_json::to_vec(status)?.len(),
                serde_json::to_vec(&answer)?.len()
            ),
        ],
        [
            "mgmt: status request on the wire".into(),
            format!("{} B ({})", sizes.request, parts(sizes.request)),
            format!(
                "JSON of the same ClientFrame: {} B",
                serde_json::to_vec(&request)?.len()
            ),
        ],
    ])
}

fn round_trip_row(what: &str, t: &mut Trio, note: &str) -> [String; 3] {
    let (o50, o99) = percentiles(&mut t.ours);
    let (r50, r99) = percentiles(&mut t.relay);
    let (v50, v99) = percentiles(&mut t.veth);
    [
        format!("mgmt: {what} round trip, hosted kattach (smoltcp on a TAP, Noise)"),
        format!("p50 {o50:.0} µs, p99 {o99:.0} µs (n={})", t.ours.0.len()),
        format!(
            "kernel TCP, same {}: TAP→relay→TAP p50 {r50:.0} µs, p99 {r99:.0} µs (ours {:.2}×, \
             {:.2}×); veth p50 {v50:.0} µs, p99 {v99:.0} µs (ours {:.2}×, {:.2}×){note}",
            t.sizes,
            o50 / r50,
            o99 / r99,
            o50 / v50,
            o99 / v99
        ),
    ]
}

/// (p50, p99) of the samples.
fn percentiles(s: &mut Samples) -> (f64, f64) {
    s.0.sort_by(f64::total_cmp);
    let at = |q: usize| s.0[(s.0.len() * q / 100).min(s.0.len() - 1)];
    (at(50), at(99))
}

/// Connect, handshake, one `status`, close, [`CONNECTS`] times in a row: per-connection µs.
fn connect_loop(endpoint: &str) -> Result<Samples> {
    let options = kaos_qemu_tests::keys::options(kaos_qemu_tests::keys::admin());
    let mut samples = Samples::default();
    samples.take(true, CONNECTS, || {
        let mut client = Client::connect(endpoint, &options)?;
        request(&mut client, Request::Status)
    })?;
    Ok(samples)
}

fn connect_row(
    ours: &mut Samples,
    anchor: &mut Samples,
    flights: &[Sizes; 2],
    status: Sizes,
) -> [String; 3] {
    let rate = |s: &Samples| {
        1e6 * f64::from(u32::try_from(s.0.len()).unwrap_or(u32::MAX)) / s.0.iter().sum::<f64>()
    };
    let (r_ours, r_anchor) = (rate(ours), rate(anchor));
    let (o50, _) = percentiles(ours);
    let (a50, _) = percentiles(anchor);
    [
        "mgmt: connect + handshake + status + close, over a TAP".into(),
        format!(
            "{r_ours:.0} /s (median {o50:.0} µs each; {CONNECTS} in a row, within the host's \
             burst of 128 handshakes per source)"
        ),
        format!(
            "kernel TCP connect, {} + {} + {status}, close, through the TAP relay: {r_anchor:.0} /s \
             (median {a50:.0} µs); ours/anchor {:.2}× time",
            flights[0],
            flights[1],
            o50 / a50
        ),
    ]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `stats` of per-second rates from per-run durations of `n` operations.
fn rate_stats(runs: &[Duration], n: u32) -> String {
    let mut rates: Vec<f64> = runs
        .iter()
        .map(|d| f64::from(n) / d.as_secs_f64())
        .collect();
    stats(&mut rates, "/s")
}
