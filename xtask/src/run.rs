//! `cargo xtask run`: build the host image and boot it in QEMU, console on this terminal.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use kaos_qemu_tests::qemu::{Accel, QemuConfig, QemuHost};

use crate::{deps, image, paths};

/// Debian packages `run` needs besides the image's.
pub const RUN_PACKAGES: &[&str] = &["qemu-system-x86"];

/// Which accelerator the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM if this machine's KVM boots the image, else TCG.
    Auto,
    /// Software emulation (`-cpu EPYC`, so the host image gets a working `/dev/kvm`).
    Tcg,
    /// This machine's `/dev/kvm`.
    Kvm,
}

/// Builds the image for `profile` and boots it until QEMU exits (power-off or Ctrl-C), with
/// `disks` attached as virtio disks `vda`, `vdb`, ... (raw images; created sparse at 256 MiB if
/// missing, so `kaosctl store init vda` has something to adopt).
pub fn run(
    profile: &str,
    accel: AccelChoice,
    append: &str,
    disks: &[std::path::PathBuf],
) -> Result<()> {
    for disk in disks {
        if !disk.exists() {
            std::fs::File::create(disk)
                .and_then(|f| f.set_len(256 << 20))
                .with_context(|| format!("create disk image {}", disk.display()))?;
            println!(
                "created blank disk image {} (256 MiB, sparse)",
                disk.display()
            );
        }
    }
    deps::ensure_packages(RUN_PACKAGES)?;
    let info = image::build_image(profile, None)?;
    println!("{info}");
    let accel = match accel {
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Auto => detect_accel(&info.image)?,
    };
    let mut config = QemuConfig::new(&info.image)?;
    config.port = kaos_protocol::PORT;
    config.accel = accel;
    config.append = append.to_owned();
    config.disks = disks.to_vec();
    if std::net::TcpListener::bind(("127.0.0.1", config.port)).is_err() {
        bail!(
            "127.0.0.1:{} is in use: is another host running?",
            config.port
        );
    }
    println!(
        "\nbooting under QEMU ({accel:?}); management port forwarded to 127.0.0.1:{port}\n\
         try, from another terminal:\n    \
         cargo run -p kaosctl -- --endpoint 127.0.0.1:{port} status\n\
         Ctrl-C ends QEMU.\n",
        port = config.port
    );
    ignore_sigint();
    let status = config
        .command()
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .context("run qemu-system-x86_64")?;
    println!("\nQEMU exited ({status})");
    Ok(())
}

/// Ctrl-C reaches QEMU (same process group) and ends it; xtask stays to report the exit. A
/// handler, not SIG_IGN, so that QEMU does not inherit an ignored SIGINT across exec.
fn ignore_sigint() {
    extern "C" fn nothing(_: libc::c_int) {}
    // SAFETY: installs an async-signal-safe handler that does nothing.
    unsafe {
        libc::signal(libc::SIGINT, nothing as *const () as libc::sighandler_t);
    }
}

/// KVM only if this machine's KVM actually boots the image (nested KVM here does not boot
/// Linux). The answer is cached per host kernel, since it depends on the machine, not the image.
pub fn detect_accel(image: &Path) -> Result<Accel> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        println!("accel: TCG (no usable /dev/kvm)");
        return Ok(Accel::Tcg);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cache = paths::cache_dir()?.join(format!("kvm-boots-linux-{}", release.trim()));
    if let Ok(answer) = std::fs::read_to_string(&cache) {
        let accel = if answer.trim() == "yes" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        println!("accel: {accel:?} (cached probe: {})", cache.display());
        return Ok(accel);
    }
    println!("accel: probing whether this machine's KVM boots the image (up to 20 s, once)...");
    let mut config = QemuConfig::new(image)?;
    config.accel = Accel::Kvm;
    let boots = QemuHost::launch(&config)
        .and_then(|host| host.wait_ready(Duration::from_secs(20)).map(drop))
        .is_ok();
    std::fs::write(&cache, if boots { "yes\n" } else { "no\n" })?;
    let accel = if boots { Accel::Kvm } else { Accel::Tcg };
    println!(
        "accel: {accel:?} (KVM {} the image)",
        if boots { "boots" } else { "does not boot" }
    );
    Ok(accel)
}
