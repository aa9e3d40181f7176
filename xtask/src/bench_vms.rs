//! VM control-plane figures for `cargo xtask bench`: a request through the management protocol
//! until the guest is up, hosted on this machine's `/dev/kvm` and (informational) inside the host
//! image under QEMU, where real vKaOS Linux guests run under nested KVM.
//!
//! | figure | anchor |
//! |---|---|
//! | hosted: `vm start` request → guest up (hand-made guest, sandboxed VMM) | `kattach vmm run --guest-init` alone, as PID 1 starts it, spawn → the same guest's first console byte |
//! | QEMU: platform module upload over the protocol | (informational: ChaCha20-Poly1305 under TCG) |
//! | QEMU: `image deploy --count 2` → httpd running in both | one `vm create --start` → up, same run |
//! | QEMU: `vm create --start` → vKaOS guest up | the guest kernel's own start → `/init` exec, from its console timestamps |

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kaos_protocol::{
    Request, Response, RestartPolicy, VmActRequest, VmAction, VmCreate, VmInfo, VmSpec, truncated,
};
use kaos_qemu_tests::hosted::HostedHost;
use kaos_qemu_tests::netns;
use kaos_qemu_tests::qemu::{QemuConfig, QemuHost};
use kaosctl::Client;

use crate::bench::stats;

/// Start cycles on the hosted host.
const HOSTED_RUNS: usize = 20;
/// vKaOS guests started one after another under QEMU.
const QEMU_GUESTS: usize = 3;
/// Deployments of two instances the apps row times.
const DEPLOY_ROUNDS: usize = 3;

/// What the hand-made guest prints: the line PID 1 waits for.
const READY: &[u8] = b"kattach guest: bench up (tiny)\n";

fn spec(name: &str, platform: &str, memory_mib: u32, cmdline: &str) -> VmSpec {
    VmSpec {
        name: truncated(name),
        vcpus: 1,
        memory_mib,
        cmdline: truncated(cmdline),
        platform: truncated(platform),
        restart: RestartPolicy::Never,
        nics: Default::default(),
    }
}

fn inspect(c: &mut Client, name: &str) -> Result<VmInfo> {
    match c.request(Request::VmInspect(truncated(name)))? {
        Response::Vm(info) => Ok(info),
        other => bail!("vm inspect: {other:?}"),
    }
}

fn act(c: &mut Client, name: &str, action: VmAction) -> Result<()> {
    c.request(Request::VmAct(VmActRequest {
        name: truncated(name),
        action,
    }))?;
    Ok(())
}

/// Polls until the guest is up; the time from `since`.
fn until_up(c: &mut Client, name: &str, since: Instant, timeout: Duration) -> Result<Duration> {
    loop {
        if inspect(c, name)?.guest_up {
            return Ok(since.elapsed());
        }
        if since.elapsed() > timeout {
            bail!("VM {name} not up after {timeout:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Appends the control-plane rows.
pub fn rows(
    rows: &mut Vec<[String; 3]>,
    kattach: &Path,
    image: &Path,
    platform: &Path,
) -> Result<()> {
    match (netns::unavailable(), std::fs::File::open("/dev/kvm")) {
        (Some(reason), _) => rows.push(["vms: hosted start".into(), "skipped".into(), reason]),
        (None, Err(e)) => rows.push([
            "vms: hosted start".into(),
            "skipped".into(),
            format!("cannot open /dev/kvm: {e}"),
        ]),
        (None, Ok(_)) => rows.push(hosted(kattach)?),
    }
    qemu(rows, image, platform)
}

fn hosted(kattach: &Path) -> Result<[String; 3]> {
    eprintln!("[bench] VMs: {HOSTED_RUNS} starts through the protocol on a hosted kattach...");
    let code = kaos_vmm::tiny::idle_code(READY);
    let elf = kaos_vmm::tiny::tiny_elf_with_code(&code);
    let module = kaos_module::pack_platform("bench", "1", "tiny", &elf)?;
    let host = HostedHost::launch(kattach, "bench-vms")?;
    let mut c = host.wait_ready(Duration::from_secs(10))?;
    kaosctl::upload::push(&mut c, &module, |_| {})?;
    c.request(Request::VmCreate(VmCreate {
        spec: spec("bench", "bench", 64, ""),
        start: false,
    }))?;
    let mut through_protocol = Vec::new();
    for _ in 0..HOSTED_RUNS {
        let t = Instant::now();
        act(&mut c, "bench", VmAction::Start)?;
        let up = until_up(&mut c, "bench", t, Duration::from_secs(10))?;
        through_protocol.push(up.as_secs_f64() * 1000.0);
        act(&mut c, "bench", VmAction::Stop)?;
    }
    // The anchor: the same guest in `kattach vmm run`, spawn → its first console byte.
    let dir = crate::paths::target_dir().join("kaos").join("bench-vmm");
    std::fs::create_dir_all(&dir)?;
    let guest = dir.join("idle.elf");
    std::fs::write(&guest, &elf)?;
    let mut direct = Vec::new();
    for _ in 0..HOSTED_RUNS {
        let t = Instant::now();
        let mut child = Command::new(kattach)
            .args(["vmm", "run", "--kernel"])
            .arg(&guest)
            .args(["--memory", "64M", "--vcpus", "1", "--guest-init"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut byte = [0u8; 1];
        child
            .stdout
            .as_mut()
            .context("stdout")?
            .read_exact(&mut byte)?;
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
        child.kill()?;
        child.wait()?;
    }
    Ok([
        "vms: `vm start` request → guest up (hosted, tiny guest, sandboxed)".into(),
        stats(&mut through_protocol, "ms"),
        format!(
            "`kattach vmm run --guest-init` spawn → first console byte, same guest: {}",
            stats(&mut direct, "ms")
        ),
    ])
}

/// The guest kernel's own `Run /init` timestamp from its console, in ms.
fn guest_kernel_to_init(console: &str) -> Option<f64> {
    let line = console
        .lines()
        .find(|l| l.contains("Run /init as init process"))?;
    let stamp = line.split(']').next()?.trim_start_matches('[').trim();
    stamp.parse::<f64>().ok().map(|s| s * 1000.0)
}

fn qemu(rows: &mut Vec<[String; 3]>, image: &Path, platform: &Path) -> Result<()> {
    eprintln!("[bench] VMs: {QEMU_GUESTS} vKaOS guests under nested KVM in QEMU (TCG)...");
    let host = QemuHost::launch(&QemuConfig::new(image)?)?;
    let mut c = host.wait_ready(Duration::from_secs(120))?;
    let bytes = std::fs::read(platform)?;
    let t = Instant::now();
    kaosctl::upload::push(&mut c, &bytes, |_| {})?;
    let upload = t.elapsed().as_secs_f64();
    rows.push([
        "vms: platform module upload (QEMU TCG)".into(),
        format!(
            "{:.0} ms for {:.2} MiB ({:.1} MiB/s)",
            upload * 1000.0,
            bytes.len() as f64 / 1048576.0,
            bytes.len() as f64 / 1048576.0 / upload
        ),
        "informational: Noise (ChaCha20-Poly1305) and smoltcp run emulated".into(),
    ]);
    let mut up = Vec::new();
    let mut kernel = Vec::new();
    for i in 0..QEMU_GUESTS {
        let name = format!("bench-{i}");
        let t = Instant::now();
        c.request(Request::VmCreate(VmCreate {
            spec: spec(&name, "vkaos", 96, ""),
            start: true,
        }))?;
        up.push(until_up(&mut c, &name, t, Duration::from_secs(120))?.as_secs_f64() * 1000.0);
        if let Some(ms) = guest_kernel_to_init(&String::from_utf8_lossy(&c.console(&name)?)) {
            kernel.push(ms);
        }
        act(&mut c, &name, VmAction::Destroy)?;
    }
    let anchor = if kernel.is_empty() {
        "guest kernel timestamps not found".to_owned()
    } else {
        format!(
            "of which the guest kernel, start → /init (its clock): {}",
            stats(&mut kernel, "ms")
        )
    };
    let one_up = {
        let mut sorted = up.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    rows.push([
        "vms: `vm create --start` → vKaOS guest up (nested KVM in QEMU TCG)".into(),
        stats(&mut up, "ms"),
        anchor,
    ]);
    rows.push(guest_to_guest(&mut c)?);
    rows.push(deploy(&mut c, one_up)?);
    Ok(())
}

/// `image deploy --count 2` of an image holding the example App Module (httpd, built here),
/// until both guests report httpd running; beside one `vm create --start` → up of the same run.
fn deploy(c: &mut Client, one_up_ms: f64) -> Result<[String; 3]> {
    eprintln!("[bench] apps: image deploy --count 2 (httpd) under nested KVM in QEMU...");
    let module = crate::module::build("httpd", None)?;
    kaosctl::upload::push(c, &std::fs::read(&module)?, |_| {})?;
    let image = kaos_protocol::ImageSpec {
        name: truncated("web"),
        platform: truncated("vkaos"),
        modules: [truncated("httpd")].into_iter().collect(),
        groups: Default::default(),
        vcpus: 1,
        memory_mib: 96,
        vlan: Some(10),
        cmdline: truncated("quiet"),
    };
    match c.request(Request::ImageCreate(image))? {
        Response::Image(_) => {}
        other => bail!("image create: {other:?}"),
    }
    let count = |c: &mut Client, count| {
        c.request(Request::ImageDeploy(kaos_protocol::ImageDeploy {
            name: truncated("web"),
            count,
        }))
    };
    let mut both = Vec::new();
    for _ in 0..DEPLOY_ROUNDS {
        let t = Instant::now();
        match count(c, 2)? {
            Response::Image(_) => {}
            other => bail!("image deploy: {other:?}"),
        }
        for name in ["web-1", "web-2"] {
            loop {
                if inspect(c, name)?
                    .apps
                    .iter()
                    .any(|a| a.entrypoint == "httpd" && a.running)
                {
                    break;
                }
                if t.elapsed() > Duration::from_secs(240) {
                    bail!("{name}: httpd not running after 240 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        both.push(t.elapsed().as_secs_f64() * 1000.0);
        // Scaled back to none: the instances are stopped and destroyed before it answers.
        count(c, 0)?;
    }
    Ok([
        "apps: `image deploy --count 2` → httpd running in both (nested KVM in QEMU TCG)".into(),
        stats(&mut both, "ms"),
        format!(
            "one `vm create --start` → guest up, same run: {one_up_ms:.0} ms (two guests share two emulated CPUs)"
        ),
    ])
}

/// Seconds each throughput stream runs.
const STREAM_SECS: u32 = 3;

/// Two vKaOS guests on one VLAN: TCP from one to the other through the switch, beside the
/// sender's own loopback (the same TCP stack and emulated CPU, no NIC or switch).
fn guest_to_guest(c: &mut Client) -> Result<[String; 3]> {
    eprintln!("[bench] net: guest → guest TCP through the switch (nested KVM in QEMU)...");
    c.request(Request::VlanCreate(kaos_qemu_tests::vkaos::vlan(
        10,
        (10, 50),
    )))?;
    let on_vlan = |name: &str, cmdline: &str| {
        let mut s = spec(name, "vkaos", 96, cmdline);
        let nic = kaos_protocol::NicSpec {
            vlan: 10,
            ipv4: None,
            publish: Default::default(),
        };
        s.nics
            .push(nic)
            .map(|()| s)
            .map_err(|_| anyhow::anyhow!("NIC"))
    };
    let sink = match c.request(Request::VmCreate(VmCreate {
        spec: on_vlan("sink", "quiet kaos.guest.sink=9")?,
        start: true,
    }))? {
        Response::Vm(info) => info,
        other => bail!("vm create: {other:?}"),
    };
    let to = sink.nics.first().context("the sink's NIC")?.ipv4;
    let streams = format!(
        "quiet kaos.guest.sink=9 kaos.guest.stream=127.0.0.1:9:{STREAM_SECS},{to}:9:{STREAM_SECS}"
    );
    c.request(Request::VmCreate(VmCreate {
        spec: on_vlan("source", &streams)?,
        start: true,
    }))?;
    let line = |c: &mut Client, needle: &str| -> Result<f64> {
        let t = Instant::now();
        loop {
            let console = String::from_utf8_lossy(&c.console("source")?).into_owned();
            if let Some(l) = console.lines().find(|l| l.contains(needle)) {
                return mbits(l).with_context(|| format!("no rate in {l:?}"));
            }
            if t.elapsed() > Duration::from_secs(240) {
                bail!("no {needle:?} from the source guest:\n{console}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let loopback = line(c, "stream 127.0.0.1:9 ")?;
    let through = line(c, &format!("stream {to}:9 "))?;
    Ok([
        "net: guest → guest TCP on a VLAN, through the switch (nested KVM in QEMU TCG)".into(),
        format!("{through:.0} Mbit/s ({STREAM_SECS} s)"),
        format!("informational; the sender's own loopback, same run: {loopback:.0} Mbit/s"),
    ])
}

/// The rate in a guest's `stream … (N Mbit/s)` line.
fn mbits(line: &str) -> Option<f64> {
    let inner = line.rsplit_once('(')?.1;
    inner.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_kernel_init_stamp_is_read_from_its_console() {
        let console =
            "[    0.000000] Linux version 6.1\n[    1.264037] Run /init as init process\n";
        assert_eq!(guest_kernel_to_init(console), Some(1264.037));
        assert_eq!(guest_kernel_to_init("no such line"), None);
    }

    #[test]
    fn the_stream_rate_is_read_from_the_guests_line() {
        let line = "kattach guest: stream 10.0.10.3:9 812000000 bytes in 3001 ms (2164 Mbit/s)";
        assert_eq!(mbits(line), Some(2164.0));
        assert_eq!(
            mbits("kattach guest: stream 10.0.10.3:9 failed: refused"),
            None
        );
    }
}
