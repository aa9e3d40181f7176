//! `cargo xtask` command line: a thin dispatcher over the `xtask` library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use xtask::image;
use xtask::kconfig::ProfileKind;
use xtask::run::AccelChoice;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "KaOS-rs build automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the bootable host image: kernel (profile fragment over tinyconfig) with a built-in
    /// initramfs holding only the static kattach as /init (and the keys of --authorize). A
    /// guest profile (vkaos-x86_64) builds the vKaOS platform module instead.
    Image {
        /// Kernel profile: a fragment in kernel/profiles/<PROFILE>.config.
        #[arg(long, default_value = image::DEFAULT_PROFILE)]
        profile: String,
        /// Where to write the image [default: target/kaos/kaos-<PROFILE>.bzImage, with keys
        /// target/kaos/kaos-<PROFILE>-auth-<HASH>.bzImage; for a guest profile
        /// target/kaos/vkaos-<KERNEL RELEASE>.aqi].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Build in a client key: a public key file (`kaosctl key generate` writes
        /// keys/NAME.pub) and the key's role (reader, operator, admin; default admin).
        /// Repeatable. Without it the host refuses every client not authorised on the kernel
        /// command line (kaos.authorize=).
        #[arg(long, value_name = "PATH.pub[:ROLE]")]
        authorize: Vec<String>,
    },
    /// Build an example App Module from modules/NAME (e.g. httpd): its static binary and
    /// modules/NAME/module/kaos-module.toml, packed as `kaosctl module build` packs, into
    /// target/kaos/NAME-<VERSION>.aqi for `kaosctl module push`.
    Module {
        /// The module: a directory under modules/.
        name: String,
        /// Where to write it [default: target/kaos/NAME-<VERSION>.aqi].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build the image and boot it in QEMU: console here, management port on 127.0.0.1:1289.
    Run {
        /// Kernel profile.
        #[arg(long, default_value = image::DEFAULT_PROFILE)]
        profile: String,
        /// Accelerator: KVM only where this machine's KVM boots the image (probed once).
        #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
        accel: AccelChoice,
        /// Extra kernel command-line words, e.g. "kaos.hostname=lab1 kaos.log=debug".
        #[arg(long, default_value = "")]
        append: String,
        /// Raw disk image to attach (repeatable; vda, vdb, ...). Created blank if missing.
        /// Default: target/kaos/run-store.img, a store disk kept from run to run.
        #[arg(long)]
        disk: Vec<PathBuf>,
    },
    /// Everything CI checks: packages, fmt, clippy, unit and hosted tests, both images
    /// (qemu-x86_64, generic-x86_64), qemu-tests.
    Test,
    /// Sizes and start-up times, each beside its anchor (medians).
    Bench {
        /// Only one group of figures: `switch` (the switch datapath), `vmm`, `vms` (as
        /// KAOS_BENCH_ONLY=… does).
        only: Option<String>,
        /// QEMU boots to time.
        #[arg(long, default_value_t = 5)]
        boots: usize,
        /// Hosted start-ups to time.
        #[arg(long, default_value_t = 21)]
        hosted_runs: usize,
    },
    /// Run the fuzz targets (nightly and cargo-fuzz): one target, or every one with --smoke.
    Fuzz {
        /// The target to run (see `cargo +nightly fuzz list`).
        target: Option<String>,
        /// Run every target, one after the other.
        #[arg(long)]
        smoke: bool,
        /// Seconds per target.
        #[arg(long, default_value_t = xtask::fuzz::DEFAULT_SECONDS)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Image {
            profile,
            out,
            authorize,
        } if xtask::kernel::profile_kind(&profile)? == ProfileKind::Guest => {
            if !authorize.is_empty() {
                anyhow::bail!(
                    "--authorize: {profile} is a guest profile; a platform module holds no keys"
                );
            }
            println!("{}", image::build_platform_module(&profile, out)?);
        }
        Cmd::Image {
            profile,
            out,
            authorize,
        } => {
            let keys = authorize
                .iter()
                .map(|arg| image::ImageKey::from_arg(arg))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let info = image::build_authorized_image(&profile, out, &keys)?;
            println!("{info}");
        }
        Cmd::Run {
            profile,
            accel,
            append,
            disk,
        } => xtask::run::run(&profile, accel, &append, &disk)?,
        Cmd::Module { name, out } => println!("{}", xtask::module::build(&name, out)?.display()),
        Cmd::Test => xtask::suite::run()?,
        Cmd::Bench {
            only,
            boots,
            hosted_runs,
        } => {
            if let Some(only) = only {
                // SAFETY: single-threaded at this point; the bench reads the variable later.
                unsafe { std::env::set_var("KAOS_BENCH_ONLY", only) };
            }
            xtask::bench::run(boots, hosted_runs)?
        }
        Cmd::Fuzz {
            target,
            smoke,
            seconds,
        } => xtask::fuzz::command(target.as_deref(), smoke, seconds)?,
    }
    Ok(())
}
