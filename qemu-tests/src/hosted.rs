//! A hosted `kattach` (tier 2): the same services as the host image, run as an ordinary process
//! on a TAP device inside a network namespace of its own.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kaosctl::{Client, ConnectOptions};

use crate::netns::NetNs;

/// Address of the namespace's side of the TAP.
pub const PEER_IP: &str = "10.77.0.1";
/// The endpoint's address.
pub const HOST_IP: &str = "10.77.0.2";

/// A running hosted `kattach` and its namespace.
#[derive(Debug)]
pub struct HostedHost {
    ns: NetNs,
    child: Option<Child>,
    log: PathBuf,
    spawned: Instant,
    /// `HOST_IP:1289`.
    pub endpoint: String,
}

impl HostedHost {
    /// Starts `kattach --hosted` with `hostname` on a fresh namespace and TAP, authorising the
    /// harness's admin key ([`crate::keys::admin`]).
    pub fn launch(kattach: &Path, hostname: &str) -> Result<Self> {
        Self::launch_with(kattach, hostname, &[])
    }

    /// As [`HostedHost::launch`], with extra kattach arguments (`--disk`, `--store`, ...).
    pub fn launch_with(kattach: &Path, hostname: &str, extra: &[&str]) -> Result<Self> {
        let ns = NetNs::new("hosted")?;
        ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"])?;
        ns.ip(&["addr", "add", &format!("{PEER_IP}/24"), "dev", "tap0"])?;
        ns.ip(&["link", "set", "tap0", "up"])?;
        let log = std::env::temp_dir().join(format!("{}.log", ns.name()));
        let spawned = Instant::now();
        let child = ns
            .command(&kattach.to_string_lossy())
            .args([
                "--hosted",
                "--tap",
                "tap0",
                "--ip",
                &format!("{HOST_IP}/24"),
                "--hostname",
                hostname,
                "--authorize",
                &crate::keys::authorize_arg(
                    &crate::keys::admin().public(),
                    kaos_protocol::Role::Admin,
                ),
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn kattach")?;
        Ok(Self {
            ns,
            child: Some(child),
            log,
            spawned,
            endpoint: format!("{HOST_IP}:{}", kaos_protocol::PORT),
        })
    }

    /// Waits until the endpoint says it is ready, then connects, retrying until `timeout`.
    /// Connecting earlier would send the namespace's ARP request before kattach reads the TAP,
    /// and the kernel retries ARP only after a second.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Client> {
        let deadline = Instant::now() + timeout;
        let _ = self.wait_log("management endpoint ready", timeout);
        loop {
            match self.client() {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => {
                    bail!(
                        "endpoint not ready after {timeout:?}: {e}\nlog:\n{}",
                        self.log()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// A new client with the harness's admin key.
    pub fn client(&self) -> Result<Client> {
        self.client_with(&crate::keys::options(crate::keys::admin()))
    }

    /// A new client with other options (another key, a pinned host key).
    pub fn client_with(&self, options: &ConnectOptions) -> Result<Client> {
        let endpoint = self.endpoint.clone();
        let options = options.clone();
        Ok(self
            .ns
            .enter(move || Client::connect(&endpoint, &options))??)
    }

    /// A plain TCP connection to the endpoint, for sending arbitrary bytes.
    pub fn raw(&self) -> Result<TcpStream> {
        let endpoint = self.endpoint.clone();
        let stream = self.ns.enter(move || TcpStream::connect(&endpoint))??;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(stream)
    }

    /// The hosted `kattach`'s process id (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// When `kattach` was spawned (after the namespace and TAP were made).
    pub fn spawned(&self) -> Instant {
        self.spawned
    }

    /// The namespace, for running peers in it.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("already reaped")?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }

    /// Waits until kattach's log contains `needle`, polling every 0.2 ms; returns the time
    /// since spawn at which it was seen.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<Duration> {
        loop {
            let since = self.spawned.elapsed();
            if self.log().contains(needle) {
                return Ok(since);
            }
            if since > timeout {
                bail!(
                    "{needle:?} not logged after {timeout:?}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// What kattach logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HostedHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A read from a connection to the host that a signal does not end: with a timeout set, a
/// socket read fails with `Interrupted` after a stop and continue even without a handler
/// (signal(7)), which says nothing about the host.
///
/// # Errors
/// The read's, other than `Interrupted`.
pub fn read(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match std::io::Read::read(stream, buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}
