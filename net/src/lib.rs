//! `kaos-net`: the networking of a KaOS host.
//!
//! The management endpoint: a smoltcp TCP/IP stack owns the management NIC through an
//! `AF_PACKET` socket (or a TAP device in hosted mode), so the kernel's own IP stack never gets an
//! address there; the endpoint serves the `kaos-protocol` on TCP port 1289.
//!
//! - [`link`]: the Ethernet links (packet socket, TAP), as smoltcp devices.
//! - [`endpoint`]: interface, addressing (DHCPv4 or static), the listening-socket pool.
//! - [`session`]: one connection's protocol state (Noise handshake, roles, streams), no I/O.
//! - [`client`]: the same session seen from the client, for `kaosctl`, tests and fuzzing.
//! - [`guard`]: per-source handshake rate limit and failed-authentication back-off.
//! - [`run`]: the blocking loop that ties them to a real fd and a clock.
//! - [`switch`]: the virtual switch's decision core (VLANs, MAC learning, anti-spoofing,
//!   stateful firewall) as pure logic on frames; its datapath comes with issue 6's next slices.
#![deny(unsafe_code)]

pub mod client;
pub mod endpoint;
pub mod guard;
pub mod link;
pub mod run;
pub mod session;
pub mod switch;
mod sys;
pub mod uplink;

pub use endpoint::{AddressEvent, Endpoint, EndpointConfig, IpConfig};
pub use link::{Link, LinkError};
pub use session::{Admission, Answer, Handler, Session, Stream, StreamPoll};
