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
    EthernetRepr, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr,
};

use crate::session::{Handler, Session};

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
}

impl EndpointConfig {
    /// Defaults for the management port.
    pub fn new(mac: [u8; 6], ip: IpConfig, random_seed: u64) -> Self {
        Self {
            mac,
            ip,
            port: kaos_protocol::PORT,
            listen_pool: 4,
            max_connections: 32,
            random_seed,
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
#[derive(Debug, Default)]
struct Conn {
    session: Session,
    out: Vec<u8>,
    /// The socket was seen connected, so a later `Closed` means this connection ended.
    connected: bool,
}

const SOCKET_RX: usize = 8 * 1024;
const SOCKET_TX: usize = 32 * 1024;
/// A connection that sends nothing for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const KEEPALIVE: Duration = Duration::from_secs(30);

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
        // Bounded: each round either moves frames or stops; a flood cannot starve sessions.
        for _ in 0..64 {
            let moved = self.iface.poll(now, device, &mut self.sockets);
            self.poll_dhcp();
            let served = self.serve(handler);
            // Every round: clients that connect, ask and close within one `poll` would
            // otherwise drain the listening pool before it is refilled.
            self.refill_pool();
            if moved == smoltcp::iface::PollResult::None && !served {
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
    fn serve(&mut self, handler: &mut impl Handler) -> bool {
        let mut moved = false;
        for (handle, conn) in &mut self.conns {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            moved |= serve_one(socket, conn, handler);
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
            socket.set_timeout(Some(IDLE_TIMEOUT));
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

/// Serves one socket: flush replies, read requests, answer them. Returns true if anything moved.
fn serve_one(socket: &mut tcp::Socket<'_>, conn: &mut Conn, handler: &mut impl Handler) -> bool {
    if matches!(socket.state(), tcp::State::Listen | tcp::State::SynReceived) {
        return false;
    }
    if !conn.connected {
        conn.connected = true;
        log::debug!("connection from {:?}", socket.remote_endpoint());
    }
    let mut moved = false;
    if !conn.out.is_empty()
        && socket.can_send()
        && let Ok(n) = socket.send_slice(&conn.out)
    {
        conn.out.drain(..n);
        moved |= n > 0;
    }
    if conn.out.is_empty() && conn.session.closing() {
        socket.close();
        return moved;
    }
    // Read only while replies are flushed: a client that does not read its answers stalls
    // itself, not the host.
    while conn.out.is_empty() && !conn.session.closing() && socket.can_recv() {
        let taken = socket.recv(|data| {
            let n = conn.session.receive(data);
            (n, n)
        });
        let Ok(taken) = taken else { break };
        if taken == 0 {
            break;
        }
        moved = true;
        if let Err(e) = conn.session.process(handler, &mut conn.out) {
            log::warn!(
                "closing connection from {:?}: {e}",
                socket.remote_endpoint()
            );
            socket.abort();
            conn.out.clear();
            return true;
        }
        if let Ok(n) = socket.send_slice(&conn.out) {
            conn.out.drain(..n);
        }
    }
    if socket.state() == tcp::State::CloseWait && conn.out.is_empty() {
        socket.close();
    }
    moved
}

#[cfg(test)]
mod tests;
