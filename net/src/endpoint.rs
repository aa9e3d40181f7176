//! The management endpoint: a smoltcp interface, DHCPv4 or a static address, and a pool of TCP
//! sockets serving [`Session`]s on one port.
//!
//! smoltcp has no listen backlog: a listening socket becomes the connection. The endpoint keeps
//! [`EndpointConfig::listen_pool`] sockets listening at all times, up to
//! [`EndpointConfig::max_connections`] sockets in all; beyond that, new connections are refused
//! (RST) until one closes. [`Endpoint::poll`] takes the time and the device as arguments, so tests
//! drive it with any [`smoltcp::phy::Device`].

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, TxToken as _};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr,
};

use crate::guard::{Guard, GuardConfig};
use crate::session::{AuthOutcome, Handler, Session};

/// How the endpoint gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpConfig {
    /// DHCPv4 client.
    Dhcp,
    /// A fixed address and optional default gateway.
    Static {
        /// Address and prefix.
        address: Ipv4Cidr,
        /// Default gateway.
        gateway: Option<Ipv4Address>,
    },
}

/// Endpoint settings.
#[derive(Debug, Clone, Copy)]
pub struct EndpointConfig {
    /// MAC address on the link.
    pub mac: [u8; 6],
    /// Addressing.
    pub ip: IpConfig,
    /// TCP port served.
    pub port: u16,
    /// Sockets kept listening.
    pub listen_pool: usize,
    /// Sockets in all (listening plus connected).
    pub max_connections: usize,
    /// Seed for smoltcp's initial sequence numbers and ports.
    pub random_seed: u64,
    /// Per-source handshake rate limit and failed-authentication back-off.
    pub guard: GuardConfig,
}

impl EndpointConfig {
    /// Defaults for the management port.
    pub fn new(mac: [u8; 6], ip: IpConfig, random_seed: u64) -> Self {
        Self {
            mac,
            ip,
            port: kaos_protocol::PORT,
            listen_pool: 4,
            max_connections: 128,
            random_seed,
            guard: GuardConfig::default(),
        }
    }
}

/// Address changes reported to the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressEvent {
    /// The endpoint has an address and accepts connections.
    Configured {
        /// Address and prefix.
        address: Ipv4Cidr,
        /// Default gateway.
        gateway: Option<Ipv4Address>,
    },
    /// The DHCP lease was lost.
    Deconfigured,
}

/// Connection state kept beside each TCP socket.
#[derive(Debug)]
struct Conn {
    /// Created when the connection is established, with the guard's verdict.
    session: Option<Session>,
    out: Vec<u8>,
    /// The socket was seen connected, so a later `Closed` means this connection ended.
    connected: bool,
    peer: Option<IpAddress>,
    since: Instant,
    last_request: Instant,
}

impl Default for Conn {
    fn default() -> Self {
        Self {
            session: None,
            out: Vec::new(),
            connected: false,
            peer: None,
            since: Instant::ZERO,
            last_request: Instant::ZERO,
        }
    }
}

const SOCKET_RX: usize = 8 * 1024;
const SOCKET_TX: usize = 16 * 1024;
/// TCP: a peer that acknowledges nothing (keepalives included) for this long is dropped.
const TCP_TIMEOUT: Duration = Duration::from_secs(120);
const KEEPALIVE: Duration = Duration::from_secs(30);
/// A connection must complete its handshake within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An established connection that sends no request for this long (and has no open stream) is
/// closed. Clients keep a session alive with `Ping`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The management endpoint.
pub struct Endpoint {
    iface: Interface,
    sockets: SocketSet<'static>,
    conns: Vec<(SocketHandle, Conn)>,
    dhcp: Option<SocketHandle>,
    config: EndpointConfig,
    address: Option<(Ipv4Cidr, Option<Ipv4Address>)>,
    pending: Option<AddressEvent>,
    /// A gratuitous ARP is due for this address.
    announce: Option<Ipv4Address>,
    guard: Guard,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("config", &self.config)
            .field("address", &self.address)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Creates the interface on `device`. A static address is reported by the first poll.
    pub fn new(config: EndpointConfig, device: &mut impl Device, now: Instant) -> Self {
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        iface_config.random_seed = config.random_seed;
        let iface = Interface::new(iface_config, device, now);
        let mut endpoint = Self {
            iface,
            sockets: SocketSet::new(Vec::new()),
            conns: Vec::new(),
            dhcp: None,
            config,
            address: None,
            pending: None,
            announce: None,
            guard: Guard::new(config.guard),
        };
        match config.ip {
            IpConfig::Dhcp => {
                endpoint.dhcp = Some(endpoint.sockets.add(dhcpv4::Socket::new()));
            }
            IpConfig::Static { address, gateway } => {
                endpoint.configure(address, gateway);
            }
        }
        endpoint.refill_pool();
        endpoint
    }

    /// The current address and gateway, if any.
    pub fn address(&self) -> Option<(Ipv4Cidr, Option<Ipv4Address>)> {
        self.address
    }

    /// Starts DHCP discovery over at once, if the endpoint has no address yet. Called when the
    /// NIC's carrier comes up: a DISCOVER sent before that was lost, and the DHCP client's own
    /// back-off would wait seconds before the next one.
    pub fn restart_dhcp(&mut self) {
        if let (Some(handle), None) = (self.dhcp, self.address) {
            self.sockets.get_mut::<dhcpv4::Socket>(handle).reset();
        }
    }

    /// Connected (not listening) sockets.
    pub fn connections(&self) -> usize {
        self.conns.iter().filter(|(_, c)| c.connected).count()
    }

    /// Runs the stack once: frames in and out, DHCP, sessions. Returns how long the caller may
    /// sleep before the next poll if no frame arrives, and the address event, if one happened.
    pub fn poll(
        &mut self,
        now: Instant,
        device: &mut impl Device,
        handler: &mut impl Handler,
    ) -> (Option<Duration>, Option<AddressEvent>) {
        self.iface.poll_maintenance(now);
        // Bounded: each round either moves frames or stops; a flood cannot starve sessions.
        for _ in 0..64 {
            let mut moved = false;
            // One frame at a time, refilling the listening pool after each: a burst of SYNs
            // finds a listening socket for every one, up to `max_connections`, as a kernel's
            // listen backlog would.
            for _ in 0..256 {
                let ingress = self
                    .iface
                    .poll_ingress_single(now, device, &mut self.sockets);
                if ingress == smoltcp::iface::PollIngressSingleResult::None {
                    break;
                }
                moved = true;
                self.refill_pool();
            }
            self.poll_dhcp();
            moved |= self.serve(now, handler);
            for _ in 0..256 {
                if self.iface.poll_egress(now, device, &mut self.sockets)
                    == smoltcp::iface::PollResult::None
                {
                    break;
                }
                moved = true;
            }
            self.refill_pool();
            if !moved {
                break;
            }
        }
        if let Some(ip) = self.announce.take() {
            announce(device, now, self.config.mac, ip);
        }
        let event = self.pending.take();
        (self.iface.poll_delay(now, &self.sockets), event)
    }

    fn configure(&mut self, address: Ipv4Cidr, gateway: Option<Ipv4Address>) {
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            // One address: the vector has room for it.
            let _ = addrs.push(IpCidr::Ipv4(address));
        });
        let routes = self.iface.routes_mut();
        match gateway {
            Some(gw) => {
                let _ = routes.add_default_ipv4_route(gw);
            }
            None => {
                routes.remove_default_ipv4_route();
            }
        }
        self.address = Some((address, gateway));
        self.pending = Some(AddressEvent::Configured { address, gateway });
        self.announce = Some(address.address());
    }

    fn poll_dhcp(&mut self) {
        let Some(handle) = self.dhcp else { return };
        let lease = match self.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
            None => None,
            Some(dhcpv4::Event::Configured(lease)) => {
                log::info!(
                    "dhcp: bound {} gateway {:?} from {}",
                    lease.address,
                    lease.router,
                    lease.server.address
                );
                Some((lease.address, lease.router))
            }
            // smoltcp also reports this once at start; only a lease we held can be lost.
            Some(dhcpv4::Event::Deconfigured) if self.address.is_none() => None,
            Some(dhcpv4::Event::Deconfigured) => {
                log::warn!("dhcp: lease lost");
                self.iface.update_ip_addrs(|addrs| addrs.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                self.address = None;
                self.pending = Some(AddressEvent::Deconfigured);
                None
            }
        };
        if let Some((address, gateway)) = lease {
            self.configure(address, gateway);
        }
    }

    /// Moves bytes between sockets and sessions. Returns true if anything moved.
    fn serve(&mut self, now: Instant, handler: &mut impl Handler) -> bool {
        let mut moved = false;
        for (handle, conn) in &mut self.conns {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            if matches!(socket.state(), tcp::State::Listen | tcp::State::SynReceived) {
                continue;
            }
            if !conn.connected {
                conn.connected = true;
                let remote = socket.remote_endpoint();
                conn.peer = remote.map(|e| e.addr);
                let admission = match conn.peer {
                    Some(ip) => self.guard.admit(ip, now),
                    None => crate::session::Admission::PROCEED,
                };
                let from = remote.map_or_else(|| "unknown peer".to_owned(), |e| e.to_string());
                log::debug!("connection from {from}: {:?}", admission.verdict);
                conn.session = Some(Session::new(admission, from));
                conn.since = now;
                conn.last_request = now;
            }
            moved |= serve_one(socket, conn, now, handler);
            let outcome = conn.session.as_mut().and_then(Session::take_outcome);
            if let (Some(outcome), Some(ip)) = (outcome, conn.peer) {
                match outcome {
                    AuthOutcome::Succeeded => self.guard.succeeded(ip),
                    AuthOutcome::Failed => self.guard.failed(ip, now),
                }
            }
        }
        moved
    }

    /// Recycles closed sockets and keeps `listen_pool` sockets listening.
    fn refill_pool(&mut self) {
        let (pool, port) = (self.config.listen_pool, self.config.port);
        let sockets = &mut self.sockets;
        let mut listening = 0;
        // In place: this runs every round of the poll loop.
        self.conns.retain_mut(|(handle, conn)| {
            let socket = sockets.get_mut::<tcp::Socket>(*handle);
            match socket.state() {
                tcp::State::Listen => listening += 1,
                tcp::State::Closed if listening < pool => {
                    if socket.listen(port).is_ok() {
                        listening += 1;
                    }
                    *conn = Conn::default();
                }
                tcp::State::Closed => {
                    sockets.remove(*handle);
                    return false;
                }
                _ => {}
            }
            true
        });
        while listening < self.config.listen_pool && self.conns.len() < self.config.max_connections
        {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; SOCKET_RX]),
                tcp::SocketBuffer::new(vec![0; SOCKET_TX]),
            );
            socket.set_timeout(Some(TCP_TIMEOUT));
            socket.set_keep_alive(Some(KEEPALIVE));
            if socket.listen(self.config.port).is_err() {
                break;
            }
            self.conns.push((self.sockets.add(socket), Conn::default()));
            listening += 1;
        }
    }
}

/// Sends a gratuitous ARP (an RFC 5227 announcement) for `ip`, so that neighbours whose caches
/// hold another MAC for this address (the host came back on another NIC) update them. Linux
/// does not resolve an *incomplete* entry from it: a client that asked before we were up still
/// waits for its own ARP retry (about 1 s).
fn announce(device: &mut impl Device, now: Instant, mac: [u8; 6], ip: Ipv4Address) {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let Some(token) = device.transmit(now) else {
        return;
    };
    token.consume(eth.buffer_len() + arp.buffer_len(), |buf| {
        let mut frame = EthernetFrame::new_unchecked(buf);
        eth.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    });
}

/// Serves one socket: flush replies, read requests, answer them, poll streams, enforce the
/// handshake and idle timeouts. Returns true if anything moved.
fn serve_one(
    socket: &mut tcp::Socket<'_>,
    conn: &mut Conn,
    now: Instant,
    handler: &mut impl Handler,
) -> bool {
    let Some(session) = conn.session.as_mut() else {
        return false;
    };
    let mut moved = flush(socket, &mut conn.out);
    if conn.out.is_empty() && session.closing() {
        socket.close();
        return moved;
    }
    // Read only while replies are flushed: a client that does not read its answers stalls
    // itself, not the host.
    while conn.out.is_empty() && !session.closing() && socket.can_recv() {
        let taken = socket.recv(|data| {
            let n = session.receive(data);
            (n, n)
        });
        let Ok(taken) = taken else { break };
        if taken == 0 {
            break;
        }
        moved = true;
        conn.last_request = now;
        if let Err(e) = session.process(handler, &mut conn.out) {
            abort(socket, &mut conn.out, &e);
            return true;
        }
        flush(socket, &mut conn.out);
    }
    // The host key may have become available since the bytes arrived.
    if !session.established()
        && !session.closing()
        && let Err(e) = session.process(handler, &mut conn.out)
    {
        abort(socket, &mut conn.out, &e);
        return true;
    }
    if session.poll_streams(handler, &mut conn.out) {
        moved = true;
        flush(socket, &mut conn.out);
    }
    let timed_out = if session.established() {
        session.streams() == 0 && now - conn.last_request > IDLE_TIMEOUT
    } else {
        !session.closing() && now - conn.since > HANDSHAKE_TIMEOUT
    };
    if timed_out {
        log::info!(
            "closing connection from {:?}: {}",
            socket.remote_endpoint(),
            if session.established() {
                "idle"
            } else {
                "handshake timed out"
            }
        );
        socket.abort();
        conn.out.clear();
        return true;
    }
    if socket.state() == tcp::State::CloseWait && conn.out.is_empty() {
        socket.close();
    }
    moved
}

/// Resets a connection whose client broke the protocol, dropping unsent replies.
fn abort(socket: &mut tcp::Socket<'_>, out: &mut Vec<u8>, why: &crate::session::SessionError) {
    log::warn!(
        "closing connection from {:?}: {why}",
        socket.remote_endpoint()
    );
    socket.abort();
    out.clear();
}

/// Sends as much of `out` as the socket takes. Returns true if anything was sent.
fn flush(socket: &mut tcp::Socket<'_>, out: &mut Vec<u8>) -> bool {
    if out.is_empty() || !socket.can_send() {
        return false;
    }
    match socket.send_slice(out) {
        Ok(n) if n > 0 => {
            out.drain(..n);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
