//! Tier 3: the real host image booted under QEMU, managed through a forwarded port.
//!
//! The management NIC is a virtio-net on QEMU user networking (its DHCP server gives the host
//! 10.0.2.15); `127.0.0.1:<port>` on this machine is forwarded to the host's port 1289. The
//! serial console is captured for assertions and failure reports.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kaos_protocol::keys::SecretKey;
use kaos_protocol::{Request, Response, Status};
use kaosctl::{Client, ClientError};

/// How QEMU executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation with an EPYC CPU model (emulated SVM, so the host gets `/dev/kvm`).
    Tcg,
    /// Hardware virtualization through this machine's `/dev/kvm`.
    Kvm,
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The host image (bzImage with built-in initramfs).
    pub image: PathBuf,
    /// Extra kernel command-line words (`kaos.*` keys).
    pub append: String,
    /// Guest RAM.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Accelerator.
    pub accel: Accel,
    /// Host port forwarded to the endpoint.
    pub port: u16,
    /// QMP control socket (power button, keys).
    pub qmp: PathBuf,
    /// Raw disk images, attached in order on `disk_bus`.
    pub disks: Vec<PathBuf>,
    /// How disks are attached.
    pub disk_bus: DiskBus,
    /// QEMU device model of the management NIC (`virtio-net-pci`, `e1000e`, `e1000`, ...).
    pub nic_model: String,
    /// A `-netdev` backend (with `id=uplink`) for a second NIC, the host's `eth1`: the virtual
    /// switch's uplink in tests that give it `kaos.uplink=eth1` (see [`crate::vlan_peer`]).
    pub uplink_netdev: Option<String>,
    /// A client key to authorise on the command line (`kaos.authorize=`): by default the
    /// harness's admin key; `None` for tests of keys built into the image.
    pub authorize: Option<String>,
}

/// Disk controllers QEMU can emulate, to exercise a profile's drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk: `vda`, `vdb`, ...
    Virtio,
    /// One NVMe controller per disk: `nvme0n1`, `nvme1n1`, ...
    Nvme,
    /// SATA on an ICH9 AHCI controller: `sda`, `sdb`, ...
    Ahci,
}

impl QemuConfig {
    /// Defaults for tests: TCG, 1 GiB, 2 CPUs, a free forwarded port.
    pub fn new(image: &Path) -> Result<Self> {
        Ok(Self {
            image: image.to_owned(),
            append: String::new(),
            memory_mib: 1024,
            cpus: 2,
            accel: Accel::Tcg,
            port: free_port()?,
            qmp: qmp_path(),
            disks: Vec::new(),
            disk_bus: DiskBus::Virtio,
            nic_model: "virtio-net-pci".into(),
            uplink_netdev: None,
            authorize: Some(crate::keys::authorize_arg(
                &crate::keys::admin().public(),
                kaos_protocol::Role::Admin,
            )),
        })
    }

    /// The QEMU command line. The console is on QEMU's stdio.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        match self.accel {
            Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "EPYC"]),
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        };
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .args([
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            &self.cpus.to_string(),
        ])
        .arg("-kernel")
        .arg(&self.image)
        .args([
            "-append",
            &format!(
                "console=ttyS0 panic=10 {}{}",
                self.append,
                self.authorize
                    .as_deref()
                    .map(|k| format!(" kaos.authorize={k}"))
                    .unwrap_or_default()
            ),
        ])
        .args([
            "-netdev",
            &format!(
                "user,id=mgmt,hostfwd=tcp:127.0.0.1:{}-:{}",
                self.port,
                kaos_protocol::PORT
            ),
            "-device",
            &format!("{},netdev=mgmt", self.nic_model),
        ])
        .args(self.uplink_netdev.iter().flat_map(|netdev| {
            [
                "-netdev".to_owned(),
                netdev.clone(),
                "-device".to_owned(),
                "virtio-net-pci,netdev=uplink,mac=52:54:00:4b:00:01".to_owned(),
            ]
        }))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", self.qmp.display()));
        if self.disk_bus == DiskBus::Ahci && !self.disks.is_empty() {
            cmd.args(["-device", "ich9-ahci,id=ahci"]);
        }
        for (i, disk) in self.disks.iter().enumerate() {
            let file = disk.display();
            match self.disk_bus {
                DiskBus::Virtio => {
                    cmd.arg("-drive")
                        .arg(format!("if=virtio,id=d{i},format=raw,file={file}"));
                }
                DiskBus::Nvme => {
                    cmd.arg("-drive")
                        .arg(format!("if=none,id=d{i},format=raw,file={file}"));
                    cmd.arg("-device")
                        .arg(format!("nvme,drive=d{i},serial=kaos{i}"));
                }
                DiskBus::Ahci => {
                    cmd.arg("-drive")
                        .arg(format!("if=none,id=d{i},format=raw,file={file}"));
                    cmd.arg("-device")
                        .arg(format!("ide-hd,drive=d{i},bus=ahci.{i}"));
                }
            }
        }
        cmd
    }
}

fn qmp_path() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("kaos-qmp-{}-{n}.sock", std::process::id()))
}

/// A free TCP port on loopback (free when asked; QEMU binds it a moment later).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The image the qemu-tests boot: `$KAOS_IMAGE`, set by `cargo xtask test`.
pub fn image_from_env() -> Result<PathBuf, String> {
    let path = std::env::var_os("KAOS_IMAGE")
        .ok_or("KAOS_IMAGE is not set: run the qemu-tests through `cargo xtask test`")?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!("KAOS_IMAGE={} is not a file", path.display()));
    }
    Ok(path)
}

/// The secret key built into `$KAOS_IMAGE` (`cargo xtask image --authorize`): the key file
/// named by `$KAOS_IMAGE_KEY`, which `cargo xtask test` sets.
pub fn image_key_from_env() -> Result<SecretKey, String> {
    let path = std::env::var_os("KAOS_IMAGE_KEY").ok_or(
        "KAOS_IMAGE_KEY is not set: run the qemu-tests through `cargo xtask test`, which \
         builds $KAOS_IMAGE with a key and passes its secret half",
    )?;
    let path = PathBuf::from(path);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("KAOS_IMAGE_KEY={}: {e}", path.display()))?;
    SecretKey::parse(&text).map_err(|e| format!("KAOS_IMAGE_KEY={}: {e}", path.display()))
}

/// The vKaOS platform module the VM tests push: `$KAOS_PLATFORM_MODULE`, set by
/// `cargo xtask test` (built by `cargo xtask image --profile vkaos-x86_64`).
pub fn platform_module_from_env() -> Result<PathBuf, String> {
    let path = std::env::var_os("KAOS_PLATFORM_MODULE").ok_or(
        "KAOS_PLATFORM_MODULE is not set: run the qemu-tests through `cargo xtask test`, which \
         builds the vkaos platform module",
    )?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!(
            "KAOS_PLATFORM_MODULE={} is not a file",
            path.display()
        ));
    }
    Ok(path)
}

/// The example App Module (`modules/httpd`) the deployment test pushes: `$KAOS_APP_MODULE`,
/// set by `cargo xtask test` (built by `cargo xtask module httpd`).
pub fn app_module_from_env() -> Result<PathBuf, String> {
    let path = std::env::var_os("KAOS_APP_MODULE").ok_or(
        "KAOS_APP_MODULE is not set: run the qemu-tests through `cargo xtask test`, which \
         builds the httpd App Module",
    )?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!("KAOS_APP_MODULE={} is not a file", path.display()));
    }
    Ok(path)
}

/// Why qemu-tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if let Err(e) = image_from_env() {
        return Some(e);
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)".into());
    }
    None
}

/// A booted (or booting) host under QEMU.
#[derive(Debug)]
pub struct QemuHost {
    child: Arc<Mutex<Child>>,
    console: Arc<Mutex<String>>,
    qmp: PathBuf,
    /// `127.0.0.1:<port>`.
    pub endpoint: String,
}

impl QemuHost {
    /// Starts QEMU. The process is killed when this value drops or when the test process dies.
    pub fn launch(config: &QemuConfig) -> Result<Self> {
        let mut cmd = config.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // PR_SET_PDEATHSIG fires when the spawning *thread* exits, so spawn from a thread that
        // lives as long as the test process.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: the closure only makes one async-signal-safe system call (prctl).
            unsafe {
                cmd.pre_exec(|| {
                    rustix::process::set_parent_process_death_signal(Some(
                        rustix::process::Signal::KILL,
                    ))
                    .map_err(std::io::Error::from)
                });
            }
            let _ = tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        });
        let mut child = rx
            .recv()
            .context("spawner thread")?
            .context("spawn qemu-system-x86_64")?;
        let console = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let console = Arc::clone(&console);
            std::thread::spawn(move || capture(stream, &console));
        }
        Ok(Self {
            child: Arc::new(Mutex::new(child)),
            console,
            qmp: config.qmp.clone(),
            endpoint: format!("127.0.0.1:{}", config.port),
        })
    }

    /// Connects with the harness's admin key, retrying until `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Client> {
        self.wait_ready_as(crate::keys::admin(), timeout)
    }

    /// Connects with `key`, retrying until `timeout`. A host that answers but does not know the
    /// key fails at once: it will not learn it by waiting.
    pub fn wait_ready_as(&self, key: &SecretKey, timeout: Duration) -> Result<Client> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.client_as(key) {
                Ok(c) => return Ok(c),
                Err(e @ ClientError::Unauthorized(_)) => bail!("{e}\n{}", self.tail()),
                Err(e) => {
                    if let Some(status) = self.try_exit()? {
                        bail!(
                            "QEMU exited ({status}) before the endpoint was ready\n{}",
                            self.tail()
                        );
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "endpoint not ready after {timeout:?}: {e}{}\n{}",
                            self.entropy_hint(),
                            self.tail()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
    }

    /// A new client with the harness's admin key.
    pub fn client(&self) -> Result<Client> {
        Ok(self.client_as(crate::keys::admin())?)
    }

    /// A new client with `key`, trusting the host key presented.
    pub fn client_as(&self, key: &SecretKey) -> Result<Client, ClientError> {
        Client::connect(&self.endpoint, &crate::keys::options(key))
    }

    /// Waits until the host answers, as `key`, with a status from another boot than `old` (a
    /// boot id), and returns that status.
    pub fn wait_next_boot(
        &self,
        key: &SecretKey,
        old: [u8; 16],
        timeout: Duration,
    ) -> Result<Status> {
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() > deadline {
                bail!(
                    "no new boot after {timeout:?}{}\n{}",
                    self.entropy_hint(),
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
            let Ok(mut c) = self.client_as(key) else {
                continue;
            };
            if let Ok(Response::Status(s)) = c.request(Request::Status)
                && s.boot_id != old
            {
                return Ok(s);
            }
        }
    }

    /// The store report once the host's store thread has chosen (waits for the endpoint too).
    pub fn store_report(&self, timeout: Duration) -> Result<kaos_protocol::StoreReport> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut client = self.wait_ready(timeout)?;
            if let kaos_protocol::Response::StoreStatus(r) =
                client.request(kaos_protocol::Request::StoreStatus)?
                && r.ready_ms.is_some()
            {
                return Ok(r);
            }
            if Instant::now() > deadline {
                bail!("store never ready\n{}", self.tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A plain TCP connection to the forwarded port.
    pub fn raw(&self) -> Result<TcpStream> {
        let stream = TcpStream::connect(&self.endpoint)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(stream)
    }

    /// A hint for failure messages when the kernel's CRNG has not finished seeding in the
    /// current boot: every handshake needs random bytes, and a host that waits for them
    /// answers nothing.
    pub fn entropy_hint(&self) -> &'static str {
        let console = self.console();
        let this_boot = console
            .rfind("Linux version")
            .map_or(console.as_str(), |i| &console[i..]);
        if this_boot.contains("crng init done") {
            ""
        } else {
            "\nnote: the console has no `random: crng init done`: the host may be waiting for \
             entropy to answer a handshake"
        }
    }

    /// Everything the console printed so far.
    pub fn console(&self) -> String {
        self.console
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` for the console to satisfy `pred`. Serial output under TCG can
    /// trail what the host already answers over the network by a second or more, so tests wait
    /// for console lines instead of checking a snapshot.
    pub fn wait_console(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.console()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the console, for failure messages.
    pub fn tail(&self) -> String {
        let console = self.console();
        let lines: Vec<&str> = console.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "--- console (last {} lines) ---\n{}",
            lines.len() - start,
            lines[start..].join("\n")
        )
    }

    /// The exit status, if QEMU has exited.
    pub fn try_exit(&self) -> Result<Option<ExitStatus>> {
        Ok(self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_wait()?)
    }

    /// Waits up to `timeout` for QEMU to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    /// Presses the ACPI power button, as IPMI soft-off does.
    pub fn press_power_button(&self) -> Result<()> {
        self.qmp(r#"{"execute":"system_powerdown"}"#).map(drop)
    }

    /// Presses Ctrl-Alt-Del on the emulated keyboard.
    pub fn ctrl_alt_del(&self) -> Result<()> {
        self.qmp(
            r#"{"execute":"send-key","arguments":{"keys":[{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},{"type":"qcode","data":"delete"}]}}"#,
        )
        .map(drop)
    }

    /// Detaches disk `index` from its image on the QEMU side (`drive_del`): the guest keeps the
    /// device and gets an I/O error for every request from now on, like a disk that died.
    pub fn fail_disk(&self, index: usize) -> Result<()> {
        let answer = self.qmp(&format!(
            r#"{{"execute":"human-monitor-command","arguments":{{"command-line":"drive_del d{index}"}}}}"#
        ))?;
        // HMP reports its failures inside a successful QMP answer: `{"return": "<error>"}`.
        if answer.replace(' ', "") != r#"{"return":""}"# {
            bail!("drive_del d{index}: {answer}");
        }
        Ok(())
    }

    /// Runs one QMP command, checks that QEMU answered `return`, not `error`, and returns the
    /// answer line.
    fn qmp(&self, command: &str) -> Result<String> {
        use std::io::{BufRead as _, BufReader, Write as _};
        let stream = std::os::unix::net::UnixStream::connect(&self.qmp)
            .with_context(|| format!("connect QMP {}", self.qmp.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut lines = BufReader::new(stream.try_clone()?).lines();
        let mut reply = || -> Result<String> {
            // Skip the greeting and asynchronous events; stop at a command's answer.
            loop {
                let line = lines.next().context("QMP closed")??;
                if line.contains("\"return\"") || line.contains("\"error\"") {
                    return Ok(line);
                }
            }
        };
        let mut writer = stream;
        writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        reply()?;
        writer.write_all(command.as_bytes())?;
        writer.write_all(b"\n")?;
        let answer = reply()?;
        if answer.contains("\"error\"") {
            bail!("QMP {command}: {answer}");
        }
        Ok(answer)
    }

    /// Pulls the plug.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for QemuHost {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.qmp);
    }
}

fn capture(mut stream: Box<dyn Read + Send>, console: &Mutex<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
        if std::env::var_os("KAOS_QEMU_ECHO").is_some() {
            eprint!("{text}");
        }
        console
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_str(&text);
    }
}
