//! The switch process's end of the control channel: one request at a time, each answered,
//! until the host's end closes. Nothing the host sends can panic it: every message is decoded
//! with bounds, every value checked by the wire types and the core, every failure a
//! [`Reply::Refused`].

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use kaos_net::switch::{DhcpConfig, GuestPort, PortId, PortKind, Vlan, VlanSet};

use super::wire::{self, MAX_MESSAGE, MAX_NAME, Reply, Request, VERSION, WireGuest};
use super::{PortStats, Stats, VlanStats, recv, send};
use crate::backend::{self, GuestPortRunner};
use crate::fabric::{Attached, Fabric};
use crate::port::{Counters, DatapathDrop, GuestNic};

/// Most guest ports one switch serves.
pub const MAX_GUESTS: usize = 1024;

#[derive(Debug)]
struct Guest {
    port: u32,
    name: String,
    id: PortId,
    runner: GuestPortRunner,
}

#[derive(Debug)]
struct NamedUplink {
    name: String,
    id: PortId,
}

/// The switch side of the channel, and the ports it made.
#[derive(Debug)]
pub struct Server {
    sock: OwnedFd,
    fabric: Arc<Fabric>,
    guests: Vec<Guest>,
    uplinks: Vec<NamedUplink>,
    buf: Vec<u8>,
}

type Outcome = Result<Reply, String>;

impl Server {
    /// Serves `sock` (a `SOCK_SEQPACKET` end) for `fabric`.
    pub fn new(sock: OwnedFd, fabric: Arc<Fabric>) -> Self {
        Self {
            sock,
            fabric,
            guests: Vec::new(),
            uplinks: Vec::new(),
            buf: vec![0; MAX_MESSAGE],
        }
    }

    /// Names an uplink already attached to the fabric, for statistics.
    pub fn name_uplink(&mut self, name: &str, id: PortId) {
        self.uplinks.push(NamedUplink {
            name: format!("uplink:{name}"),
            id,
        });
    }

    /// Answers requests until the host's end closes (`Ok`) or the channel fails.
    ///
    /// # Errors
    /// The channel failed (not a refused request: those are answered).
    pub fn serve(&mut self) -> io::Result<()> {
        loop {
            let (n, fd) = match recv(self.sock.as_fd(), &mut self.buf) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.reply(&Reply::Refused {
                        message: e.to_string(),
                    })?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let reply = match postcard::from_bytes::<Request>(&self.buf[..n]) {
                Ok(req) => self.handle(req, fd),
                Err(e) => Err(format!("undecodable request: {e}")),
            };
            let reply = reply.unwrap_or_else(|message| Reply::Refused { message });
            self.reply(&reply)?;
        }
    }

    fn reply(&self, reply: &Reply) -> io::Result<()> {
        send(self.sock.as_fd(), reply, &[])
    }

    /// One request. A descriptor that came with a request that takes none is closed.
    pub fn handle(&mut self, req: Request, fd: Option<OwnedFd>) -> Outcome {
        match req {
            Request::Hello { .. } => Ok(Reply::Hello { version: VERSION }),
            Request::AddGuest(g) => {
                let fd = fd.ok_or("AddGuest comes with its listening socket")?;
                self.add_guest(g, fd)
            }
            Request::RemovePort { port } => self.remove(port),
            Request::SetVlanRules { vlan, rules } => {
                let vlan = Vlan::new(vlan).ok_or(format!("VLAN {vlan} is not in 1..=4094"))?;
                let rules = wire::rules(&rules).ok_or("a rule has an invalid field")?;
                let mut core = self.fabric.lock();
                core.switch
                    .set_vlan_rules(vlan, rules)
                    .map_err(|e| e.to_string())?;
                Ok(Reply::Done)
            }
            Request::SetPortRules { port, rules } => {
                let id = self.guest(port)?.id;
                let rules = wire::rules(&rules).ok_or("a rule has an invalid field")?;
                let mut core = self.fabric.lock();
                core.switch
                    .set_port_rules(id, rules)
                    .map_err(|e| e.to_string())?;
                Ok(Reply::Done)
            }
            Request::SetPublished { port, published } => {
                let id = self.guest(port)?.id;
                let published = wire::published(&published).ok_or("a published port is invalid")?;
                let mut core = self.fabric.lock();
                core.switch
                    .set_published(id, published)
                    .map_err(|e| e.to_string())?;
                Ok(Reply::Done)
            }
            Request::Stats => Ok(Reply::Stats(self.stats())),
            Request::FlushFlows => {
                self.fabric.lock().switch.flush_flows();
                Ok(Reply::Done)
            }
            Request::SetTrunkVlans { uplink, vlans } => {
                let name = format!("uplink:{uplink}");
                let id = self
                    .uplinks
                    .iter()
                    .find(|u| u.name == name)
                    .map(|u| u.id)
                    .ok_or(format!("no uplink {uplink}"))?;
                let mut allowed = VlanSet::new();
                for v in vlans {
                    allowed.insert(Vlan::new(v).ok_or(format!("VLAN {v} is not in 1..=4094"))?);
                }
                let mut core = self.fabric.lock();
                core.switch
                    .set_trunk_vlans(id, allowed)
                    .map_err(|e| e.to_string())?;
                Ok(Reply::Done)
            }
            Request::SetVlanDhcp { vlan, config } => {
                let vlan = Vlan::new(vlan).ok_or(format!("VLAN {vlan} is not in 1..=4094"))?;
                let mut core = self.fabric.lock();
                core.switch
                    .set_vlan_dhcp(vlan, config.map(DhcpConfig::from))
                    .map_err(|e| e.to_string())?;
                Ok(Reply::Done)
            }
        }
    }

    fn guest(&self, port: u32) -> Result<&Guest, String> {
        self.guests
            .iter()
            .find(|g| g.port == port)
            .ok_or_else(|| format!("no guest port {port}"))
    }

    fn add_guest(&mut self, g: WireGuest, listener: OwnedFd) -> Outcome {
        if self.guests.iter().any(|x| x.port == g.port) {
            return Err(format!("guest port {} exists", g.port));
        }
        if self.guests.len() >= MAX_GUESTS {
            return Err(format!("a switch serves at most {MAX_GUESTS} guest ports"));
        }
        if g.name.len() > MAX_NAME {
            return Err(format!("a port name is at most {MAX_NAME} bytes"));
        }
        let listener = checked_listener(listener)?;
        let kind = PortKind::Guest(GuestPort {
            vlan: Vlan::new(g.vlan).ok_or(format!("VLAN {} is not in 1..=4094", g.vlan))?,
            mac: g.mac,
            ipv4: Ipv4Addr::from(g.ipv4),
            published: wire::published(&g.published).ok_or("a published port is invalid")?,
            rules: wire::rules(&g.rules).ok_or("a rule has an invalid field")?,
        });
        let id = self.fabric.add_port(kind).map_err(|e| e.to_string())?;
        let nic = Arc::new(GuestNic::new(id, backend::empty_memory()));
        match backend::start(&self.fabric, nic, &g.name, listener) {
            Ok(runner) => {
                log::info!("guest port {} ({}) is {id}", g.port, g.name);
                self.guests.push(Guest {
                    port: g.port,
                    name: g.name,
                    id,
                    runner,
                });
                Ok(Reply::Done)
            }
            Err(e) => {
                let _ = self.fabric.remove_port(id);
                Err(format!("cannot serve the port: {e}"))
            }
        }
    }

    fn remove(&mut self, port: u32) -> Outcome {
        let at = self
            .guests
            .iter()
            .position(|g| g.port == port)
            .ok_or_else(|| format!("no guest port {port}"))?;
        let g = self.guests.swap_remove(at);
        let _ = self.fabric.remove_port(g.id);
        g.runner.stop();
        Ok(Reply::Done)
    }

    /// The counters of every port and VLAN.
    pub fn stats(&self) -> Stats {
        let core = self.fabric.lock();
        let named = self
            .guests
            .iter()
            .map(|g| (g.id, Some(g.port), g.name.as_str()))
            .chain(self.uplinks.iter().map(|u| (u.id, None, u.name.as_str())));
        let mut ports = Vec::new();
        for (id, port, name) in named {
            let (Some(c), Some(half)) = (core.switch.port_counters(id), core.attached(id)) else {
                continue;
            };
            let dp = match half {
                Attached::Guest(nic) => nic.counters(),
                Attached::Uplink(up) => up.counters(),
            };
            let mut drops: Vec<(String, u64)> = c
                .drops
                .iter()
                .map(|(r, n)| (r.name().to_owned(), n))
                .collect();
            drops.extend(DatapathDrop::ALL.iter().filter_map(|&r| {
                let n = dp.drops(r);
                (n > 0).then(|| (r.name().to_owned(), n))
            }));
            ports.push(PortStats {
                port,
                name: name.to_owned(),
                rx_frames: Counters::get(&dp.rx_frames),
                rx_bytes: Counters::get(&dp.rx_bytes),
                tx_frames: Counters::get(&dp.tx_frames),
                tx_bytes: Counters::get(&dp.tx_bytes),
                tx_denied: c.tx_denied,
                drops,
            });
        }
        let vlans = core
            .switch
            .vlans()
            .filter_map(|v| {
                let c = core.switch.vlan_counters(v)?;
                Some(VlanStats {
                    vlan: v.get(),
                    frames: c.frames,
                    bytes: core.vlan_bytes.get(v),
                    floods: c.floods,
                    drops: c
                        .drops
                        .iter()
                        .map(|(r, n)| (r.name().to_owned(), n))
                        .collect(),
                })
            })
            .collect();
        Stats { ports, vlans }
    }
}

/// The descriptor as a listening unix stream socket, or why not.
fn checked_listener(fd: OwnedFd) -> Result<UnixListener, String> {
    use rustix::net::sockopt;
    let ok = sockopt::socket_type(&fd).is_ok_and(|t| t == rustix::net::SocketType::STREAM)
        && sockopt::socket_acceptconn(&fd).unwrap_or(false)
        && rustix::net::getsockname(&fd)
            .is_ok_and(|a| a.address_family() == rustix::net::AddressFamily::UNIX);
    if ok {
        Ok(UnixListener::from(fd))
    } else {
        Err("the descriptor is not a listening unix stream socket".to_owned())
    }
}
