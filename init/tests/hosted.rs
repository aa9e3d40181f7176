//! Tier 2: `kattach --hosted` on a TAP inside a network namespace, managed over real kernel TCP
//! from the namespace's side, exactly as `kaosctl` manages a host.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use kaos_net::client::ClientHandshake;
use kaos_protocol::handshake::ClientPreamble;
use kaos_protocol::{MAX_FRAME, Request, Response};
use kaos_qemu_tests::hosted::{HOST_IP, HostedHost, read};
use kaos_qemu_tests::{keys, netns, skip};

const KATTACH: &str = env!("CARGO_BIN_EXE_kattach");
const READY: Duration = Duration::from_secs(10);

fn launch(test: &str, hostname: &str) -> Option<HostedHost> {
    if let Some(reason) = netns::unavailable() {
        skip(test, &reason);
        return None;
    }
    Some(HostedHost::launch(Path::new(KATTACH), hostname).expect("launch hosted kattach"))
}

fn status(client: &mut kaosctl::Client) -> kaos_protocol::Status {
    match client.request(Request::Status).expect("status") {
        Response::Status(s) => s,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn status_reports_the_host() {
    let Some(host) = launch("status_reports_the_host", "hosted-1") else {
        return;
    };
    let mut client = host.wait_ready(READY).expect("ready");
    assert_eq!(client.server().hostname.as_str(), "hosted-1");
    let s = status(&mut client);
    assert_eq!(s.hostname.as_str(), "hosted-1");
    assert_eq!(s.version.as_str(), env!("CARGO_PKG_VERSION"));
    assert!(s.hosted);
    assert_eq!(s.mgmt.interface.as_str(), "tap0");
    assert!(!s.mgmt.dhcp);
    assert_eq!(
        s.mgmt.address.map(|a| a.to_string()),
        Some(format!("{HOST_IP}/24"))
    );
    assert_eq!(
        s.mgmt.mac[0] & 0x03,
        0x02,
        "locally administered unicast MAC"
    );
    let t = s.timeline;
    let ready = t.endpoint_ready_ms.expect("endpoint ready recorded");
    let link = t.link_up_ms.expect("link up recorded");
    assert!(
        t.init_exec_ms <= link && link <= ready,
        "milestones in order: {t:?}"
    );
    assert!(s.uptime_ms >= u64::from(ready));
}

#[test]
fn garbage_and_oversize_frames_close_only_their_connection() {
    let Some(host) = launch("garbage_and_oversize", "hosted-2") else {
        return;
    };
    let mut good = host.wait_ready(READY).expect("ready");

    let mut garbage = host.raw().expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut buf = [0u8; 64];
    // Closed by the host: EOF or reset, never a reply.
    assert!(
        matches!(read(&mut garbage, &mut buf), Ok(0) | Err(_)),
        "garbage connection stays open"
    );

    let mut oversize = host.raw().expect("connect");
    let mut bytes = ClientPreamble::CURRENT.encode().to_vec();
    bytes.extend_from_slice(&u32::try_from(MAX_FRAME + 1).expect("fits").to_le_bytes());
    oversize.write_all(&bytes).expect("send header");
    let mut preamble = [0u8; 12];
    assert!(
        oversize.read_exact(&mut preamble).is_err(),
        "an oversize handshake frame got an answer"
    );

    // A truncated handshake: the preamble and half of message 1, then the client goes away.
    let mut truncated = host.raw().expect("connect");
    let (_, first) = ClientHandshake::start(&keys::generate()).expect("start");
    truncated
        .write_all(&first[..first.len() - 10])
        .expect("send part");
    drop(truncated);
    assert!(
        matches!(read(&mut oversize, &mut buf), Ok(0) | Err(_)),
        "oversize connection stays open"
    );

    // The authenticated client is unaffected.
    assert_eq!(status(&mut good).hostname.as_str(), "hosted-2");
    assert!(
        host.log().contains("closing connection"),
        "log: {}",
        host.log()
    );
}

#[test]
fn many_concurrent_clients_are_all_served() {
    let Some(host) = launch("many_concurrent_clients", "hosted-3") else {
        return;
    };
    drop(host.wait_ready(READY).expect("ready"));
    // 64 clients connect at once (far more than the listening pool: it must refill between
    // SYNs), then each makes 200 requests. Zero errors.
    const CLIENTS: usize = 64;
    const REQUESTS: usize = 200;
    let barrier = std::sync::Barrier::new(CLIENTS);
    let served = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let mut c = host.client().expect("connect");
                    (0..REQUESTS)
                        .filter(|_| status(&mut c).processes > 0)
                        .count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .sum::<usize>()
    });
    assert_eq!(served, CLIENTS * REQUESTS);
}

#[test]
fn remote_reboot_restarts_and_shutdown_exits() {
    let Some(mut host) = launch("remote_reboot_and_shutdown", "hosted-4") else {
        return;
    };
    let mut client = host.wait_ready(READY).expect("ready");
    let before = status(&mut client).boot_id;
    assert_eq!(
        client.request(Request::Reboot).expect("reboot"),
        Response::Accepted
    );
    // Hosted reboot re-executes in place: same process, new boot.
    std::thread::sleep(Duration::from_millis(400));
    let mut client = host.wait_ready(READY).expect("back after reboot");
    assert_ne!(
        status(&mut client).boot_id,
        before,
        "reboot gives a new boot id"
    );

    assert_eq!(
        client.request(Request::Shutdown).expect("shutdown"),
        Response::Accepted
    );
    let exit = host.wait_exit(Duration::from_secs(5)).expect("wait");
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit: {exit:?}\n{}",
        host.log()
    );
}

#[test]
fn plaintext_requests_are_never_decoded() {
    let Some(host) = launch("plaintext_requests", "hosted-5") else {
        return;
    };
    drop(host.wait_ready(READY).expect("ready"));
    // A v0-style client: the preamble, then an unencrypted shutdown request where the
    // handshake's first message belongs. It must not be obeyed, only disconnected.
    let mut raw = host.raw().expect("connect");
    let mut bytes = ClientPreamble::CURRENT.encode().to_vec();
    let mut body = vec![0u8; 64];
    let n = kaos_protocol::encode_message(
        &kaos_protocol::ClientFrame {
            id: 9,
            request: Request::Shutdown,
        },
        &mut body,
    )
    .expect("encode");
    bytes.extend_from_slice(&kaos_protocol::frame_header(n).expect("small"));
    bytes.extend_from_slice(&body[..n]);
    raw.write_all(&bytes).expect("send");
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    assert!(reply.is_empty(), "answered a plaintext request: {reply:?}");
    // And the host did not shut down.
    let mut client = host.client().expect("still serving");
    assert_eq!(status(&mut client).hostname.as_str(), "hosted-5");
}

#[test]
fn connection_cap_refuses_extra_clients_until_one_leaves() {
    let Some(host) = launch("connection_cap", "hosted-6") else {
        return;
    };
    drop(host.wait_ready(READY).expect("ready"));
    // Sequential clients, each authenticated: every one finishes its exchange before the
    // next connects, the pattern that once drained the listening pool inside a single poll.
    let mut clients = Vec::new();
    while clients.len() < 140 {
        match host.client() {
            Ok(c) => clients.push(c),
            Err(_) => break,
        }
    }
    // The cap (128 sockets) less the wait_ready connection still closing, at most.
    assert!(
        (127..=128).contains(&clients.len()),
        "served {} before refusing",
        clients.len()
    );
    assert!(host.client().is_err(), "beyond the cap a client is refused");
    drop(clients.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while host.client().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "a freed slot is never reused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SYN retransmissions counted by the namespace's kernel.
fn syn_retransmits(host: &HostedHost) -> u64 {
    let out = host
        .ns()
        .command("nstat")
        .args(["-az", "TcpExtTCPSynRetrans"])
        .output()
        .expect("run nstat (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("TcpExtTCPSynRetrans")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no TCPSynRetrans in nstat output: {text}"))
}

/// smoltcp must resolve the client itself (it never saw an ARP from it) without losing the
/// SYN-ACK: the client's kernel would only retry the SYN after a second.
#[test]
fn a_client_that_knows_our_mac_connects_without_a_syn_retry() {
    let Some(host) = launch("known_mac", "hosted-7") else {
        return;
    };
    let mut client = host.wait_ready(READY).expect("ready");
    let mac = status(&mut client)
        .mgmt
        .mac
        .map(|b| format!("{b:02x}"))
        .join(":");
    // The client's kernel will never ARP for us again; smoltcp forgets it on restart.
    host.ns()
        .ip(&[
            "neigh",
            "replace",
            HOST_IP,
            "lladdr",
            &mac,
            "dev",
            "tap0",
            "nud",
            "permanent",
        ])
        .expect("pin neighbour");
    assert_eq!(
        client.request(Request::Reboot).expect("reboot"),
        Response::Accepted
    );
    drop(client);
    let deadline = std::time::Instant::now() + READY;
    while host.log().matches("management endpoint ready").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no restart: {}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = syn_retransmits(&host);
    let mut client = host.client().expect("connect after restart");
    assert_eq!(status(&mut client).hostname.as_str(), "hosted-7");
    assert_eq!(
        syn_retransmits(&host),
        before,
        "the first SYN-ACK was dropped"
    );
}
