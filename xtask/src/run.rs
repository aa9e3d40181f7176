//! `cargo xtask run`: build the host image and boot it in QEMU, console on this terminal.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use kaos_protocol::Role;
use kaos_protocol::keys::PublicKey;
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
/// missing, so `kaosctl store init vda` has something to adopt). Without `disks`, a store disk
/// kept at `target/kaos/run-store.img` ([`run_store`]) is attached, so the host key, the pin
/// kaosctl made of it, and the settings survive from one run to the next, as on a server. The
/// user's default kaosctl key ([`user_key`]) is authorised as admin on the kernel command line.
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
    let default_store;
    let disks = if disks.is_empty() {
        default_store = [run_store()?];
        &default_store[..]
    } else {
        disks
    };
    let user_key = user_key()?;
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
    config.authorize = user_key
        .key
        .map(|key| format!("{}:{}", key.to_base64(), Role::Admin));
    if std::net::TcpListener::bind(("127.0.0.1", config.port)).is_err() {
        bail!(
            "127.0.0.1:{} is in use: is another host running?",
            config.port
        );
    }
    println!("\n{}", user_key.note);
    println!(
        "\nbooting under QEMU ({accel:?}); management port forwarded to 127.0.0.1:{port}\n\
         try, from another terminal (first contact pins the host key the console logs):\n    \
         cargo run -q -p kaosctl -- --endpoint 127.0.0.1:{port} --trust-new-host status\n\
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

/// The store disk `cargo xtask run` attaches when given no `--disk`: created and initialised as
/// a KaOS store on first use (256 MiB, sparse). Delete it for a host that has never booted.
pub fn run_store() -> Result<PathBuf> {
    let path = paths::target_dir().join("kaos").join("run-store.img");
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(256 << 20))
            .with_context(|| format!("create {}", path.display()))?;
        let mut host_id = [0u8; 16];
        rustix::rand::getrandom(&mut host_id, rustix::rand::GetRandomFlags::empty())
            .context("getrandom")?;
        kaos_store::init_device(&path, false, host_id)
            .with_context(|| format!("initialise {} as a store", path.display()))?;
        println!("created store disk {} (256 MiB, sparse)", path.display());
    }
    println!(
        "store disk {}: the host key and settings persist across runs (delete it for a fresh \
         host; --disk PATH attaches other disks instead)",
        path.display()
    );
    Ok(path)
}

/// The kaosctl configuration directory: `$KAOS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/kaos`, else
/// `$HOME/.config/kaos` (where `kaosctl` keeps its contexts and `keys/NAME.key` + `.pub`).
pub fn kaosctl_config_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    var("KAOS_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| var("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("kaos")))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config").join("kaos")))
}

/// The user's default kaosctl key, as `cargo xtask run` uses it.
#[derive(Debug, Clone)]
pub struct UserKey {
    /// The public half of `keys/default.pub` in [`kaosctl_config_dir`], if there is one.
    pub key: Option<PublicKey>,
    /// What is done with it, or how to create one, for the user.
    pub note: String,
}

/// Reads the user's default kaosctl key (`keys/default.pub` in [`kaosctl_config_dir`]). A
/// missing file is no error (the note says how to create one); a file that is not a public key
/// is.
pub fn user_key() -> Result<UserKey> {
    let Some(path) = kaosctl_config_dir().map(|d| d.join("keys").join("default.pub")) else {
        return Ok(UserKey {
            key: None,
            note: "WARNING: no kaosctl key (none of KAOS_CONFIG_DIR, XDG_CONFIG_HOME, HOME is \
                   set): the host will refuse every client"
                .into(),
        });
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = image::ImageKey::parse(&path, &text, Role::Admin)?.key;
            Ok(UserKey {
                key: Some(key),
                note: format!(
                    "your kaosctl key {} ({}) is authorised as admin: kaos.authorize= on the \
                     kernel command line",
                    path.display(),
                    key.fingerprint()
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserKey {
            key: None,
            note: format!(
                "WARNING: no kaosctl key at {}: the host will refuse every client.\n\
                 Create one with `kaosctl key generate` (cargo run -p kaosctl -- key generate) \
                 and run again: its public half is then authorised as admin on the kernel \
                 command line.",
                path.display()
            ),
        }),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
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
