//! The management endpoint thread: open the link, run the endpoint, and start over on failure.

use std::sync::Arc;
use std::time::Duration;

use kaos_net::{Endpoint, EndpointConfig, IpConfig, Link};

use crate::host::{Host, Service};

/// Where the endpoint's frames come from.
#[derive(Debug, Clone)]
pub enum LinkSpec {
    /// A NIC through a packet socket; `None`: the first non-loopback interface.
    Nic(Option<String>),
    /// A TAP device (hosted mode).
    Tap(String),
}

/// Starts the endpoint thread. It never returns: errors are logged and the link reopened.
pub fn spawn(host: Arc<Host>, spec: LinkSpec, ip: IpConfig) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("endpoint".into())
        .spawn(move || run(&host, &spec, ip))
        .map(drop)
}

fn run(host: &Arc<Host>, spec: &LinkSpec, ip: IpConfig) {
    let mut delay = Duration::from_millis(100);
    loop {
        match open(spec, &host.hostname()) {
            Ok(mut link) => {
                delay = Duration::from_millis(100);
                host.set_link(link.name(), link.mac(), ip == IpConfig::Dhcp);
                host.mark(|t| &mut t.link_up_ms);
                log::info!(
                    "management link {} up, mac {}",
                    link.name(),
                    mac_text(link.mac())
                );
                let config = EndpointConfig::new(link.mac(), ip, random_u64());
                let mut endpoint = Endpoint::new(config, &mut link, kaos_net::run::now());
                let mut service = Service(Arc::clone(host));
                let wake = host.config.wake_fd();
                let err = kaos_net::run::serve(&mut endpoint, &mut link, &mut service, wake);
                log::error!("management endpoint on {} stopped: {err}", link.name());
            }
            Err(e) => log::warn!("management link: {e}"),
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn open(spec: &LinkSpec, hostname: &str) -> Result<Link, String> {
    match spec {
        LinkSpec::Nic(Some(name)) => Link::packet(name).map_err(|e| e.to_string()),
        LinkSpec::Nic(None) => {
            let name = first_nic().ok_or("no network interface found")?;
            Link::packet(&name).map_err(|e| e.to_string())
        }
        LinkSpec::Tap(name) => Link::tap(name, tap_mac(hostname, name)).map_err(|e| e.to_string()),
    }
}

/// The first interface in name order that is not loopback.
fn first_nic() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names.into_iter().next()
}

/// A locally administered unicast MAC derived from host and TAP names (FNV-1a), so that a
/// hosted host keeps its MAC across a re-exec, as a NIC does across a reboot.
fn tap_mac(hostname: &str, tap: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in hostname.bytes().chain([0]).chain(tap.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_le_bytes();
    [(b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::INSECURE);
    u64::from_le_bytes(b)
}

fn mac_text(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn tap_mac_is_stable_local_unicast_and_distinct() {
        let a = super::tap_mac("h1", "tap0");
        assert_eq!(a, super::tap_mac("h1", "tap0"));
        assert_eq!(a[0] & 0x03, 0x02);
        assert_ne!(a, super::tap_mac("h2", "tap0"));
        assert_ne!(a, super::tap_mac("h1", "tap1"));
    }
}
