//! The kernel-TCP anchors: a client namespace and a server namespace joined twice, by a TAP pair
//! whose fds a relay thread here bridges frame by frame, and by a veth pair.
//!
//! ```text
//!  client ns                     this process                     server ns
//!  10.78.0.1 tapc ──fd──▶ relay thread (poll, read, write) ──fd──▶ taps 10.78.0.2  :7001 :7002
//!  10.79.0.1 vethc ─────────────────── veth ─────────────────────▶ veths 10.79.0.2
//! ```
//!
//! The server answers each request with as many bytes as the request asks for: a request
//! starts with its own length and the response's (u32 LE each), so one server plays every
//! message size the protocol figures need. Port 7001 gives each connection a thread (the
//! long-lived round-trip connections); port 7002 serves connections one after the other, so
//! the timed sequential connections pay no thread start.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Result, ensure};
use kaos_net::Link;
use kaos_qemu_tests::netns::NetNs;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::{Errno, read, write};
use rustix::time::Timespec;

use super::Samples;

const RELAY_SERVER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const VETH_SERVER: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
/// One thread per connection.
const THREADED_PORT: u16 = 7001;
/// One connection at a time.
const SEQUENTIAL_PORT: u16 = 7002;
/// Bytes at the start of each request: its length and the response's.
const ECHO_HEADER: usize = 8;

/// A request of `request` bytes answered by `response` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Bytes the client sends.
    pub request: usize,
    /// Bytes the server answers.
    pub response: usize,
}

impl fmt::Display for Sizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}→{} B", self.request, self.response)
    }
}

/// The two namespaces, the relay and the servers; all stopped and deleted on drop.
#[derive(Debug)]
pub struct AnchorNet {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    listeners: Vec<TcpListener>,
    client: NetNs,
    _server: NetNs,
}

impl AnchorNet {
    /// Builds both links and starts the relay and the servers.
    pub fn new() -> Result<Self> {
        let client = NetNs::new("bench-c")?;
        let server = NetNs::new("bench-s")?;
        for (ns, tap, cidr) in [
            (&client, "tapc", "10.78.0.1/24"),
            (&server, "taps", "10.78.0.2/24"),
        ] {
            ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
            ns.ip(&["addr", "add", cidr, "dev", tap])?;
            ns.ip(&["link", "set", tap, "up"])?;
        }
        let veth = format!(
            "link add vethc type veth peer name veths netns {}",
            server.name()
        );
        client.ip(&veth.split(' ').collect::<Vec<_>>())?;
        client.ip(&["addr", "add", "10.79.0.1/24", "dev", "vethc"])?;
        client.ip(&["link", "set", "vethc", "up"])?;
        server.ip(&["addr", "add", "10.79.0.2/24", "dev", "veths"])?;
        server.ip(&["link", "set", "veths", "up"])?;

        // The MAC only filters a packet socket's own frames; a TAP never echoes them.
        let mac = [0x02, 0, 0, 0, 0, 0x99];
        let tapc = client.enter(|| Link::tap("tapc", mac))??;
        let taps = server.enter(|| Link::tap("taps", mac))??;
        let bind = |port| server.enter(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)));
        let (threaded, sequential) = (bind(THREADED_PORT)??, bind(SEQUENTIAL_PORT)??);

        let stop = Arc::new(AtomicBool::new(false));
        let relay_stop = Arc::clone(&stop);
        let listeners = vec![threaded.try_clone()?, sequential.try_clone()?];
        let threads = vec![
            std::thread::spawn(move || relay(&tapc, &taps, &relay_stop)),
            std::thread::spawn(move || accept(&threaded, true)),
            std::thread::spawn(move || accept(&sequential, false)),
        ];
        Ok(Self {
            stop,
            threads,
            listeners,
            client,
            _server: server,
        })
    }

    /// The server through the TAP relay.
    pub fn relay_addr() -> SocketAddr {
        (RELAY_SERVER, THREADED_PORT).into()
    }

    /// The server over the veth pair.
    pub fn veth_addr() -> SocketAddr {
        (VETH_SERVER, THREADED_PORT).into()
    }

    /// A long-lived connection from the client namespace to `addr`, exchanging `sizes`.
    pub fn client(&self, addr: SocketAddr, sizes: Sizes) -> Result<Echo> {
        let stream = self.client.enter(|| TcpStream::connect(addr))??;
        stream.set_nodelay(true)?;
        Echo::new(stream, sizes)
    }

    /// `n` connections in a row through the relay, each exchanging `flights` then closing:
    /// per-connection µs.
    pub fn connect_loop(&self, flights: &[Sizes], n: usize) -> Result<Samples> {
        let addr = SocketAddr::from((RELAY_SERVER, SEQUENTIAL_PORT));
        let requests: Vec<(Vec<u8>, usize)> = flights
            .iter()
            .map(|&s| Ok((request_bytes(s)?, s.response)))
            .collect::<Result<_>>()?;
        self.client.enter(|| {
            let mut samples = Samples::default();
            let mut buf = vec![0u8; 64 * 1024];
            samples.take(true, n, || {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                for (request, response) in &requests {
                    stream.write_all(request)?;
                    stream.read_exact(&mut buf[..*response])?;
                }
                Ok(())
            })?;
            Ok(samples)
        })?
    }
}

impl Drop for AnchorNet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Shutting a listening socket down wakes its blocked accept with an error (Linux).
        for l in &self.listeners {
            let _ = rustix::net::shutdown(l, rustix::net::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One connection asking for the same sizes again and again.
#[derive(Debug)]
pub struct Echo {
    stream: TcpStream,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl Echo {
    fn new(stream: TcpStream, sizes: Sizes) -> Result<Self> {
        Ok(Self {
            stream,
            request: request_bytes(sizes)?,
            response: vec![0; sizes.response],
        })
    }

    /// One request, one whole response.
    pub fn exchange(&mut self) -> Result<()> {
        self.stream.write_all(&self.request)?;
        self.stream.read_exact(&mut self.response)?;
        Ok(())
    }
}

/// A request of `s.request` bytes asking for `s.response` bytes back.
fn request_bytes(s: Sizes) -> Result<Vec<u8>> {
    ensure!(
        s.request >= ECHO_HEADER,
        "a request of {} B cannot carry the echo header",
        s.request
    );
    let mut r = vec![0u8; s.request];
    r[..4].copy_from_slice(&u32::try_from(s.request)?.to_le_bytes());
    r[4..8].copy_from_slice(&u32::try_from(s.response)?.to_le_bytes());
    Ok(r)
}

/// Accepts until the listener is shut down; serves each connection on its own thread if
/// `threaded`, else in turn.
fn accept(listener: &TcpListener, threaded: bool) {
    loop {
        match listener.accept() {
            Ok((stream, _)) if threaded => {
                std::thread::spawn(move || echo(stream));
            }
            Ok((stream, _)) => echo(stream),
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
            Err(_) => return,
        }
    }
}

/// Answers requests on `stream` until the client closes it.
fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut header = [0u8; ECHO_HEADER];
        if stream.read_exact(&mut header).is_err() {
            return;
        }
        let [a, b, c, d, e, f, g, h] = header;
        let request = usize::try_from(u32::from_le_bytes([a, b, c, d])).unwrap_or(usize::MAX);
        let response = usize::try_from(u32::from_le_bytes([e, f, g, h])).unwrap_or(usize::MAX);
        if request < ECHO_HEADER || request > buf.len() || response > buf.len() {
            return;
        }
        if stream
            .read_exact(&mut buf[..request - ECHO_HEADER])
            .is_err()
            || stream.write_all(&buf[..response]).is_err()
        {
            return;
        }
    }
}

/// Copies frames between the two TAPs until `stop`.
fn relay(a: &Link, b: &Link, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    while !stop.load(Ordering::Relaxed) {
        let (fa, fb) = (a.as_fd(), b.as_fd());
        let mut fds = [
            PollFd::new(&fa, PollFlags::IN),
            PollFd::new(&fb, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&tick)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => return,
        }
        let ready = fds.map(|f| f.revents().contains(PollFlags::IN));
        if ready[0] {
            forward(a, b, &mut buf);
        }
        if ready[1] {
            forward(b, a, &mut buf);
        }
    }
}

/// Moves every frame waiting on `from` to `to`; a full queue drops the frame, as a wire would.
fn forward(from: &Link, to: &Link, buf: &mut [u8]) {
    loop {
        match read(from, &mut *buf) {
            Ok(0) | Err(Errno::AGAIN) => return,
            Ok(n) => {
                let _ = write(to, &buf[..n]);
            }
            Err(Errno::INTR) => {}
            Err(_) => return,
        }
    }
}
