//! Messages. postcard encodes enum variants by index: append variants and fields, never reorder.

use heapless::String;
use serde::{Deserialize, Serialize};

/// A host name or client name (RFC 1123 labels fit in 63 bytes).
pub type Name = String<64>;

/// Protocol version: `major` must match exactly, `minor` may differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A client message: a request and the id its response will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Chosen by the client; echoed in the response.
    pub id: u32,
    /// What the client asks for.
    pub request: Request,
}

/// A server message: the response to the request with the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// The id of the request this answers.
    pub id: u32,
    /// The answer.
    pub response: Response,
}

/// Requests, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Must be the first request of every connection.
    Hello(Hello),
    /// Host status: [`Response::Status`].
    Status,
    /// Orderly reboot: [`Response::Accepted`], then the connection closes.
    Reboot,
    /// Orderly power-off: [`Response::Accepted`], then the connection closes.
    Shutdown,
}

/// Responses, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Hello(ServerHello),
    /// Answer to [`Request::Status`].
    Status(Status),
    /// The request was accepted and is being carried out.
    Accepted,
    /// The request failed.
    Error(ErrorReply),
}

/// The client's opening message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`crate::MAGIC`].
    pub magic: [u8; 4],
    /// The client's protocol version.
    pub version: Version,
    /// Free-form client name for the host's log, e.g. `kaosctl 0.1.0`.
    pub client: Name,
}

impl Hello {
    /// The hello this build sends.
    pub fn new(client: &str) -> Self {
        Self {
            magic: crate::MAGIC,
            version: crate::VERSION,
            client: truncated(client),
        }
    }
}

/// The host's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// The host's protocol version.
    pub version: Version,
    /// The host's name.
    pub hostname: Name,
}

/// A snapshot of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Host name (`kaos.hostname=`, or the default).
    pub hostname: Name,
    /// `kattach` version.
    pub version: String<32>,
    /// Random per boot: a reboot is visible as a new id.
    pub boot_id: [u8; 16],
    /// Milliseconds since the kernel started (`CLOCK_BOOTTIME`).
    pub uptime_ms: u64,
    /// True when `kattach` runs as an ordinary process (`--hosted`), not as PID 1.
    pub hosted: bool,
    /// When each start-up milestone was reached.
    pub timeline: BootTimeline,
    /// Userspace processes (those with a command line); kernel threads are not counted.
    pub processes: u32,
    /// Where the configuration lives.
    pub store: StoreMode,
    /// The management link this endpoint serves.
    pub mgmt: MgmtLink,
}

/// Milestones in milliseconds since the kernel started. `None`: not reached (yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTimeline {
    /// The kernel executed `/init` (or, hosted, the process started).
    pub init_exec_ms: u32,
    /// proc, sys, dev and run are mounted.
    pub mounts_ms: Option<u32>,
    /// The management NIC is up and its frames reach the endpoint.
    pub link_up_ms: Option<u32>,
    /// The endpoint has an IPv4 address (static, or DHCP bound).
    pub address_ms: Option<u32>,
    /// Port 1289 accepts connections.
    pub endpoint_ready_ms: Option<u32>,
}

/// Where the configuration store lives. Placeholder until the store arrives; variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreMode {
    /// No configuration store in this build.
    Absent,
}

/// An IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Cidr {
    /// Address octets.
    pub addr: [u8; 4],
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl core::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d] = self.addr;
        write!(f, "{a}.{b}.{c}.{d}/{}", self.prefix)
    }
}

/// The management link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MgmtLink {
    /// Interface name, e.g. `eth0`.
    pub interface: String<16>,
    /// The endpoint's MAC address.
    pub mac: [u8; 6],
    /// The endpoint's address, once configured.
    pub address: Option<Ipv4Cidr>,
    /// Default gateway, if any.
    pub gateway: Option<[u8; 4]>,
    /// Address from DHCP (true) or static (false).
    pub dhcp: bool,
}

/// A failed request: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Stable, machine-readable.
    pub code: ErrorCode,
    /// For people; may change between versions.
    pub message: String<128>,
}

impl ErrorReply {
    /// An error with `message` cut to fit.
    pub fn new(code: ErrorCode, message: &str) -> Self {
        Self {
            code,
            message: truncated(message),
        }
    }
}

/// Stable error codes. The numeric code is the wire index plus one; append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 1: the peers' major versions differ.
    VersionMismatch,
    /// 2: the first request was not a hello, or a second hello was sent.
    HelloRequired,
    /// 3: the hello did not carry the KaOS magic.
    BadMagic,
    /// 4: the host could not carry out the request.
    Internal,
    /// 5: the request is known but not available on this host.
    Unsupported,
}

impl ErrorCode {
    /// The stable numeric code shown to users.
    pub fn code(self) -> u16 {
        match self {
            Self::VersionMismatch => 1,
            Self::HelloRequired => 2,
            Self::BadMagic => 3,
            Self::Internal => 4,
            Self::Unsupported => 5,
        }
    }
}

/// Copies as much of `s` as fits into a bounded string, cutting at a character boundary.
pub fn truncated<const N: usize>(s: &str) -> String<N> {
    let mut out = String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}
