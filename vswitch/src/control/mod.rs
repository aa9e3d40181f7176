//! The control channel between the host's `kattach` and the switch process: postcard messages
//! ([`wire`]) over a `SOCK_SEQPACKET` unix socketpair (one message per packet, so no framing),
//! descriptors passed with `SCM_RIGHTS`. The host sends [`wire::Request`]s, the switch answers
//! each with one [`wire::Reply`], in order. The switch serves the channel until the host's end
//! closes, then exits.
//!
//! **How a guest port's vhost-user connection is made.** The switch runs in an empty root and
//! its own network namespace, so it can neither bind a path nor be reached at an abstract
//! address from the host. The host therefore makes the listening socket itself, bound to an
//! abstract address with 128 random bits in its name (only this host's processes, which are
//! all `kattach`, share that namespace), connects to it at once, and sends the listener to
//! the switch with the `AddGuest` request. The switch accepts the connection that is already
//! waiting (`VhostUserDaemon::start` on `Listener::from(listener)`), closes the listener, and
//! answers. [`Controller::add_guest`] returns the connected end: the VMM's vhost-user socket,
//! for it to inherit as a descriptor.
//!
//! Host side: [`Controller`]. Switch side: [`server::Server`].

pub mod server;
pub mod wire;

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

use kaos_net::switch::{DhcpConfig, Published, Rule};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};

use wire::{MAX_MESSAGE, Reply, Request, VERSION, WireDhcp, WireGuest, WirePublished, WireRule};

/// The descriptor number the switch process finds its end of the channel at when started by
/// [`Controller::spawn`].
pub const CHILD_FD: i32 = 3;

/// A guest NIC as the host asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPortSpec {
    /// The host's number for the port (its handle in later requests and in statistics).
    pub port: u32,
    /// A name for logs and statistics, e.g. `web-1/0` (at most 64 bytes).
    pub name: String,
    /// The VLAN (1–4094).
    pub vlan: u16,
    /// The assigned MAC.
    pub mac: [u8; 6],
    /// The assigned address.
    pub ipv4: Ipv4Addr,
    /// Ports reachable from uplinks.
    pub published: Vec<Published>,
    /// The guest's own firewall rules.
    pub rules: Vec<Rule>,
}

/// Counters of one port: the datapath's frames and bytes, the core's copies withheld by the
/// firewall, and drops by reason (the core's and the datapath's names, see
/// `kaos_net::switch::DropReason::name` and [`crate::port::DatapathDrop::name`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// The host's number for a guest port; `None` for an uplink.
    pub port: Option<u32>,
    /// The port's name (`uplink:IFNAME` for uplinks).
    pub name: String,
    /// Frames taken from the port.
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames delivered to the port.
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Copies for this port the firewall withheld.
    pub tx_denied: u64,
    /// Drops by reason, non-zero only.
    pub drops: Vec<(String, u64)>,
}

/// Counters of one VLAN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanStats {
    /// The VLAN.
    pub vlan: u16,
    /// Frames forwarded.
    pub frames: u64,
    /// Their bytes (as received, whole).
    pub bytes: u64,
    /// Of those, floods.
    pub floods: u64,
    /// Drops by reason, non-zero only.
    pub drops: Vec<(String, u64)>,
}

/// Everything [`Controller::stats`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every port.
    pub ports: Vec<PortStats>,
    /// Every VLAN with a domain.
    pub vlans: Vec<VlanStats>,
}

/// Sends one message with optional descriptors.
fn send(sock: BorrowedFd<'_>, msg: &impl Serialize, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let bytes = postcard::to_allocvec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message too long",
        ));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors"));
    }
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// Receives one message: `None` when the peer closed. The bytes and at most one descriptor.
fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    // Descriptors first, so that every one received is owned (and closed) whatever follows.
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if got.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if got.flags.contains(rustix::net::ReturnFlags::TRUNC)
        || got.flags.contains(rustix::net::ReturnFlags::CTRUNC)
        || fds.len() > 1
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message truncated",
        ));
    }
    Ok(Some((got.bytes, fds.pop())))
}

/// A `SOCK_SEQPACKET` socketpair (close-on-exec).
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// The host's end of the channel.
#[derive(Debug)]
pub struct Controller {
    sock: OwnedFd,
    buf: Vec<u8>,
}

impl Controller {
    /// Starts `exe switch --control-fd 3 ARGS…` (the switch role of this very binary, for
    /// `kattach`), with the other end of a new channel as its descriptor 3, and says hello.
    /// The child is the caller's to wait for; dropping the controller closes the channel,
    /// which ends the switch.
    ///
    /// # Errors
    /// The spawn failed, or the switch did not answer the hello with this version.
    pub fn spawn(exe: &Path, args: &[&str]) -> io::Result<(Controller, Child)> {
        let (ours, theirs) = socketpair()?;
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.arg("switch")
            .arg("--control-fd")
            .arg(CHILD_FD.to_string())
            .args(args);
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe calls (dup2, fcntl) on a descriptor both processes hold.
        unsafe {
            cmd.pre_exec(move || {
                if fd == CHILD_FD {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, CHILD_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        let controller = Controller::from_fd(ours)?;
        Ok((controller, child))
    }

    /// Wraps an end of a channel (a `SOCK_SEQPACKET` socket) and says hello.
    ///
    /// # Errors
    /// The switch did not answer the hello with this version.
    pub fn from_fd(sock: OwnedFd) -> io::Result<Controller> {
        let mut c = Controller {
            sock,
            buf: vec![0; MAX_MESSAGE],
        };
        match c.call(&Request::Hello { version: VERSION }, None)? {
            Reply::Hello { version } if version == VERSION => Ok(c),
            Reply::Hello { version } => Err(io::Error::other(format!(
                "the switch speaks version {version}, not {VERSION}"
            ))),
            other => Err(unexpected(&other)),
        }
    }

    fn call(&mut self, req: &Request, fd: Option<BorrowedFd<'_>>) -> io::Result<Reply> {
        send(self.sock.as_fd(), req, fd.as_slice())?;
        let (n, extra) = recv(self.sock.as_fd(), &mut self.buf)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the switch is gone"))?;
        drop(extra);
        postcard::from_bytes(&self.buf[..n]).map_err(io::Error::other)
    }

    fn done(&mut self, req: &Request, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        match self.call(req, fd)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Adds a guest port; returns the VMM's end of its vhost-user connection.
    ///
    /// # Errors
    /// The switch refused the port (`InvalidInput`, with its reason) or is gone.
    pub fn add_guest(&mut self, spec: &GuestPortSpec) -> io::Result<UnixStream> {
        let listener = listener()?;
        let vmm_end = UnixStream::connect_addr(&listener.local_addr()?)?;
        let req = Request::AddGuest(WireGuest {
            port: spec.port,
            name: spec.name.clone(),
            vlan: spec.vlan,
            mac: spec.mac,
            ipv4: spec.ipv4.octets(),
            published: spec.published.iter().map(WirePublished::from).collect(),
            rules: spec.rules.iter().map(WireRule::from).collect(),
        });
        self.done(&req, Some(listener.as_fd()))?;
        Ok(vmm_end)
    }

    /// Removes a guest port (call it once its VMM is gone).
    ///
    /// # Errors
    /// No such port, or the switch is gone.
    pub fn remove_port(&mut self, port: u32) -> io::Result<()> {
        self.done(&Request::RemovePort { port }, None)
    }

    /// Replaces a VLAN's rules.
    ///
    /// # Errors
    /// The rules were refused, or the switch is gone.
    pub fn set_vlan_rules(&mut self, vlan: u16, rules: &[Rule]) -> io::Result<()> {
        let rules = rules.iter().map(WireRule::from).collect();
        self.done(&Request::SetVlanRules { vlan, rules }, None)
    }

    /// Replaces a guest's rules.
    ///
    /// # Errors
    /// No such port, the rules were refused, or the switch is gone.
    pub fn set_port_rules(&mut self, port: u32, rules: &[Rule]) -> io::Result<()> {
        let rules = rules.iter().map(WireRule::from).collect();
        self.done(&Request::SetPortRules { port, rules }, None)
    }

    /// Replaces a guest's published ports.
    ///
    /// # Errors
    /// No such port, too many, or the switch is gone.
    pub fn set_published(&mut self, port: u32, published: &[Published]) -> io::Result<()> {
        let published = published.iter().map(WirePublished::from).collect();
        self.done(&Request::SetPublished { port, published }, None)
    }

    /// Forgets every tracked flow.
    ///
    /// # Errors
    /// The switch is gone.
    pub fn flush_flows(&mut self) -> io::Result<()> {
        self.done(&Request::FlushFlows, None)
    }

    /// Replaces the VLANs the trunk uplink on interface `uplink` carries.
    ///
    /// # Errors
    /// The channel failed, or the switch refused (no such trunk, a VLAN out of range, none).
    pub fn set_trunk_vlans(&mut self, uplink: &str, vlans: &[u16]) -> io::Result<()> {
        let req = Request::SetTrunkVlans {
            uplink: uplink.to_owned(),
            vlans: vlans.to_vec(),
        };
        self.done(&req, None)
    }

    /// Sets (or with `None` clears) VLAN `vlan`'s DHCP settings: with them the switch answers
    /// its guests' DHCP itself (`kaos_net::switch::dhcp`).
    ///
    /// # Errors
    /// The settings were refused (`InvalidInput`, with the reason), or the switch is gone.
    pub fn set_vlan_dhcp(&mut self, vlan: u16, config: Option<&DhcpConfig>) -> io::Result<()> {
        let req = Request::SetVlanDhcp {
            vlan,
            config: config.map(WireDhcp::from),
        };
        self.done(&req, None)
    }

    /// The counters of every port and VLAN.
    ///
    /// # Errors
    /// The switch is gone.
    pub fn stats(&mut self) -> io::Result<Stats> {
        match self.call(&Request::Stats, None)? {
            Reply::Stats(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(reply: &Reply) -> io::Error {
    match reply {
        Reply::Refused { message } => io::Error::new(io::ErrorKind::InvalidInput, message.clone()),
        other => io::Error::other(format!("unexpected reply from the switch: {other:?}")),
    }
}

/// A listening socket at a fresh abstract address with 128 random bits in its name.
fn listener() -> io::Result<UnixListener> {
    let mut bits = [0u8; 16];
    let mut filled = 0;
    while filled < bits.len() {
        filled +=
            rustix::rand::getrandom(&mut bits[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    let name: String = bits.iter().map(|b| format!("{b:02x}")).collect();
    let addr = SocketAddr::from_abstract_name(format!("kaos-vswitch/{name}"))?;
    UnixListener::bind_addr(&addr)
}
