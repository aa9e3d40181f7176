//! Tier 3: a vKaOS guest as kattach's VMM will start it, under plain QEMU TCG: the kernel from
//! the platform module (`cargo xtask image --profile vkaos-x86_64`), and the initrd
//! `kaos_module::guest_initrd` makes from the static `kattach`, which runs in its guest role
//! (`kaos.role=guest`). This machine's own `/dev/kvm` cannot boot Linux guests, so these tests
//! check the guest side alone: readiness line, name, address from `ip=`, power-off through the
//! exit port (QEMU's `isa-debug-exit` on port 0xf4 stands in for the VMM's) and reboot.
//!
//! Inputs: `$KAOS_PLATFORM_MODULE` (else the newest `target/kaos/vkaos-*.aqi`) and
//! `$KAOS_KATTACH` (else `target/x86_64-unknown-linux-gnu/release/kattach`); a test without
//! them, or without QEMU, prints `SKIPPED` with the reason.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaos_qemu_tests::skip;

/// TCG boots the guest in a few seconds; busy CI machines are slower.
const TIMEOUT: Duration = Duration::from_secs(120);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// The platform module: `$KAOS_PLATFORM_MODULE`, else the newest `target/kaos/vkaos-*.aqi`.
fn module_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KAOS_PLATFORM_MODULE") {
        let p = PathBuf::from(p);
        return p
            .is_file()
            .then_some(p.clone())
            .ok_or_else(|| format!("KAOS_PLATFORM_MODULE={} is not a file", p.display()));
    }
    let dir = workspace_root().join("target").join("kaos");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("vkaos-") && name.ends_with(".aqi")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .ok_or_else(|| {
            format!(
                "no vKaOS platform module: set KAOS_PLATFORM_MODULE or run `cargo xtask image \
                 --profile vkaos-x86_64` (writes {}/vkaos-<release>.aqi)",
                dir.display()
            )
        })
}

/// The kernel (from the module) and the guest initrd (from kattach), written to files for QEMU.
struct Guest {
    kernel: PathBuf,
    initrd: PathBuf,
    release: String,
}

impl Guest {
    fn prepare(test: &str) -> Result<Self, String> {
        if Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err("qemu-system-x86_64 is not installed (Debian qemu-system-x86)".into());
        }
        let module = module_path()?;
        let kattach = std::env::var_os("KAOS_KATTACH").map_or_else(
            || workspace_root().join("target/x86_64-unknown-linux-gnu/release/kattach"),
            PathBuf::from,
        );
        let init = std::fs::read(&kattach).map_err(|e| {
            format!(
                "{}: {e}; build the static kattach with `cargo xtask image` or set KAOS_KATTACH",
                kattach.display()
            )
        })?;
        let bytes = std::fs::read(&module).map_err(|e| format!("{}: {e}", module.display()))?;
        let parsed = kaos_module::parse(&bytes, &kaos_module::Limits::PLATFORM)
            .map_err(|e| format!("{}: {e}", module.display()))?;
        let release = match &parsed.manifest.kind {
            kaos_module::manifest::Kind::Platform(p) => p.kernel_release.clone(),
            kaos_module::manifest::Kind::App(_) => {
                return Err(format!("{} is an app module", module.display()));
            }
        };
        let kernel_bytes = parsed.kernel().ok_or("platform module without a kernel")?;
        let initrd_bytes = kaos_module::guest_initrd(&init).map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("kaos-guest-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd.cpio"));
        std::fs::write(&kernel, kernel_bytes).map_err(|e| e.to_string())?;
        std::fs::write(&initrd, initrd_bytes).map_err(|e| e.to_string())?;
        Ok(Self {
            kernel,
            initrd,
            release,
        })
    }

    /// Boots the guest with `vcpus` until QEMU exits (or [`TIMEOUT`]); returns the exit status
    /// and the console.
    fn boot(
        &self,
        vcpus: u32,
        append: &str,
        extra: &[&str],
    ) -> (Option<ExitStatus>, String, Duration) {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "256"])
            .args(["-smp", &vcpus.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio", "-no-reboot"])
            .args(extra)
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args([
                "-append",
                &format!("console=ttyS0 panic=-1 kaos.role=guest {append}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start qemu-system-x86_64");
        let console = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("piped");
        let sink = Arc::clone(&console);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                sink.lock()
                    .expect("not poisoned")
                    .extend_from_slice(&buf[..n]);
            }
        });
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for qemu") {
                break Some(status);
            }
            if started.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let elapsed = started.elapsed();
        let _ = reader.join();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let mut text = String::from_utf8_lossy(&console.lock().expect("not poisoned")).into_owned();
        if !stderr.is_empty() {
            text.push_str(&format!("\n--- qemu stderr ---\n{stderr}"));
        }
        (status, text, elapsed)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(dir) = self.kernel.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The readiness line's start, up to the memory figure (which depends on the kernel's own use).
fn ready_prefix(name: &str, release: &str, vcpus: u32) -> String {
    format!("kattach guest: {name} up (kernel {release}, {vcpus} vCPUs, ")
}

/// microvm with a virtio-net-device on QEMU user networking (10.0.2.0/24) and `ip=` for it:
/// the devices the VMM gives a guest (virtio-mmio declared on the command line, no ACPI, no
/// PCI). QEMU adds the `virtio_mmio.device=` words itself. The guest powers off through port
/// 0xf4, where `isa-debug-exit` makes QEMU exit with status (0 << 1) | 1 = 1.
#[test]
fn guest_reports_ready_and_address_then_powers_off_through_the_exit_port() {
    let test = "guest_reports_ready_and_address_then_powers_off_through_the_exit_port";
    let guest = match Guest::prepare("poweroff") {
        Ok(g) => g,
        Err(reason) => return skip(test, &reason),
    };
    let (status, console, took) = guest.boot(
        2,
        "kaos.name=t1 kaos.guest.exit=poweroff ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off",
        &[
            "-M",
            "microvm,acpi=off,rtc=on",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x01",
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-device,netdev=n0",
        ],
    );
    let ready = ready_prefix("t1", &guest.release, 2);
    assert!(console.contains(&ready), "no `{ready}` in:\n{console}");
    assert!(
        console.contains("kattach guest: t1 address 10.0.2.15"),
        "no address line in:\n{console}"
    );
    assert!(console.contains("kattach guest: powering off"), "{console}");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "QEMU should exit through isa-debug-exit (status 1) after {took:?}:\n{console}"
    );
    eprintln!("guest booted and powered off in {took:?} under TCG");
}

/// A PC machine (BIOS, MP table from the firmware), one vCPU (SeaBIOS's MP table lists only
/// the boot CPU under TCG) and the default name: the guest resets, which QEMU turns into an exit
/// with `-no-reboot`.
#[test]
fn guest_with_default_name_reboots() {
    let test = "guest_with_default_name_reboots";
    let guest = match Guest::prepare("reboot") {
        Ok(g) => g,
        Err(reason) => return skip(test, &reason),
    };
    let (status, console, took) = guest.boot(1, "kaos.guest.exit=reboot", &["-M", "pc"]);
    let ready = ready_prefix("vkaos", &guest.release, 1);
    assert!(console.contains(&ready), "no `{ready}` in:\n{console}");
    assert!(console.contains("kattach guest: rebooting"), "{console}");
    assert!(
        !console.contains("kattach guest: warning"),
        "a clean boot has no warnings:\n{console}"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "QEMU should exit on the guest's reset (-no-reboot) after {took:?}:\n{console}"
    );
}
