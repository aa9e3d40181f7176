//! `kattach`: the one userspace program of a KaOS host.
//!
//! Design principles:
//! - **One binary, several roles.** As PID 1 it is the host's init; `kattach --hosted` runs the
//!   same services as an ordinary process (tests, development); later roles (`vmm`, `switch`,
//!   `guest`) are re-executions of the same file.
//! - **PID 1 never exits and never panics on purpose.** Every failure becomes a log line, a
//!   retry with back-off, or a state in `status`. A panic reboots after a grace period.
//! - **Raw syscalls through rustix**, no shell, no helpers: the initramfs holds only this file.
//! - **Nothing slow blocks start-up**: the endpoint thread brings up the link and DHCP while the
//!   supervisor is already reaping and handling signals.

mod access;
mod app_report;
mod buttons;
mod cmdline;
mod config;
mod dhcp_cfg;
mod early;
mod guest;
mod guest_apps;
mod guest_diag;
mod host;
mod images;
mod ipam;
mod logger;
mod mgmt;
mod modules;
mod netcfg;
mod network;
mod procs;
mod supervisor;
mod switch_role;
mod sys;
mod vmm_role;
mod vms;

use cmdline::Settings;
use mgmt::LinkSpec;

const USAGE: &str = "\
usage: kattach                       (as PID 1: the KaOS host init)
       kattach --hosted --tap IFACE [--ip CIDR[,GATEWAY]|dhcp] [--hostname NAME] [--log LEVEL]
                [--disk PATH]... [--store auto|memory|DISK] [--state-file PATH]
                [--authorized-keys FILE] [--authorize BASE64[:ROLE]]
                [--runtime-dir DIR] [--no-vm-sandbox] [--uplink IFACE[:access=VLAN]]
                [--vm-cpus LIST]
       kattach vmm run --kernel FILE [--initrd FILE] --vcpus N --memory SIZE [--cmdline TEXT]
       kattach switch --control-fd N [--uplink SPEC]...   (started by the host)
       kattach --version";

fn main() {
    let init_exec_ms = u32::try_from(host::boot_ms()).unwrap_or(u32::MAX);
    if rustix::process::getpid().is_init() && guest::requested() {
        guest::main()
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "vmm") {
        vmm_role::main(&args[1..])
    }
    if args.first().is_some_and(|a| a == "switch") {
        switch_role::main(&args[1..])
    }
    if args.iter().any(|a| a == "--version") {
        println!("kattach {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let pid1 = rustix::process::getpid().is_init();
    supervisor::install_panic_hook(pid1);
    if pid1 {
        pid1_main(init_exec_ms)
    }
    match parse_hosted(&args) {
        Ok((settings, hosted)) => hosted_main(init_exec_ms, settings, hosted),
        Err(e) => {
            eprintln!("kattach: {e}\n{USAGE}");
            std::process::exit(2);
        }
    }
}

fn pid1_main(init_exec_ms: u32) -> ! {
    // Before any thread exists, so every thread inherits the mask.
    let blocked = sys::block(&sys::supervised_signals());
    logger::init(log::LevelFilter::Info);
    let mount_problems = early::mount_all();
    let kmsg = logger::use_kmsg();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (settings, problems) = Settings::from_cmdline(&cmdline);
    log::set_max_level(settings.log);
    log::info!(
        "kattach {} starting as PID 1 ({init_exec_ms} ms after boot)",
        env!("CARGO_PKG_VERSION")
    );
    for p in mount_problems.iter().chain(&problems) {
        log::warn!("{p}");
    }
    if let Err(e) = blocked.and(
        kmsg.map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO)),
    ) {
        log::warn!("early setup: {e}");
    }
    // Ctrl-Alt-Del becomes SIGINT to us instead of an immediate kernel reboot.
    let _ = rustix::system::reboot(rustix::system::RebootCommand::CadOff);
    if let Err(e) = rustix::system::sethostname(settings.hostname.as_bytes()) {
        log::warn!("sethostname: {e}");
    }
    let mut keys = Vec::new();
    match std::fs::read_to_string(access::IMAGE_KEYS) {
        Ok(text) => keys_from(&text, kaos_protocol::KeySource::Image, &mut keys),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("{}: {e}", access::IMAGE_KEYS),
    }
    keys.extend(cmdline_keys(&settings));
    let host = host::Host::new(
        settings.hostname.clone(),
        false,
        init_exec_ms,
        config::DiskSource::Sysfs,
        keys,
        host::Guests {
            runtime_dir: std::path::PathBuf::from("/run/kaos/platform"),
            sandbox: true,
            uplink: settings.uplink.clone(),
            vm_cpus: settings.vm_cpus.clone(),
        },
    );
    host.mark(|t| &mut t.mounts_ms);
    spawn_store(&host, settings.store.clone());
    if let Err(e) = mgmt::spawn(
        host.clone(),
        LinkSpec::Nic(settings.mgmt.clone()),
        settings.ip,
    ) {
        log::error!("cannot start the management endpoint: {e}");
    }
    if buttons::spawn(&host) == 0 {
        log::info!("no power button found");
    }
    supervisor::run(&host)
}

/// Adds the keys of an `authorized_keys` text, logging refused lines.
fn keys_from(
    text: &str,
    source: kaos_protocol::KeySource,
    keys: &mut Vec<kaos_protocol::AccessEntry>,
) {
    let (entries, problems) = access::parse_authorized_keys(text, source);
    for p in problems {
        log::warn!("authorized keys ({source:?}): {p}");
    }
    keys.extend(entries);
}

/// The `kaos.authorize=` keys, named `cmdline-N`.
fn cmdline_keys(settings: &Settings) -> Vec<kaos_protocol::AccessEntry> {
    settings
        .authorize
        .iter()
        .enumerate()
        .map(|(i, (key, role))| kaos_protocol::AccessEntry {
            name: kaos_protocol::truncated(&format!("cmdline-{}", i + 1)),
            role: *role,
            key: *key,
            source: kaos_protocol::KeySource::CommandLine,
        })
        .collect()
}

/// Disk probing and opening the store never hold up the endpoint.
fn spawn_store(host: &std::sync::Arc<host::Host>, choice: config::StoreChoice) {
    let host = std::sync::Arc::clone(host);
    let spawned = std::thread::Builder::new()
        .name("store".into())
        .spawn(move || host.start_store(&choice));
    if let Err(e) = spawned {
        log::error!("cannot start the store thread: {e}; running from memory");
    }
}

fn hosted_main(init_exec_ms: u32, settings: Settings, hosted: Hosted) -> ! {
    let tap = hosted.tap;
    if let Err(e) = sys::block(&sys::supervised_signals()) {
        eprintln!("kattach: cannot block signals: {e}");
        std::process::exit(1);
    }
    logger::init(settings.log);
    log::info!(
        "kattach {} starting hosted on TAP {tap}",
        env!("CARGO_PKG_VERSION")
    );
    let mut keys = Vec::new();
    if let Some(path) = &hosted.authorized_keys {
        match std::fs::read_to_string(path) {
            Ok(text) => keys_from(&text, kaos_protocol::KeySource::File, &mut keys),
            Err(e) => {
                log::error!("{}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
    keys.extend(cmdline_keys(&settings));
    let host = host::Host::new(
        settings.hostname.clone(),
        true,
        init_exec_ms,
        config::DiskSource::Paths(hosted.disks),
        keys,
        host::Guests {
            runtime_dir: hosted.runtime_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("kaos-hosted-{}", std::process::id()))
            }),
            sandbox: hosted.vm_sandbox,
            uplink: settings.uplink.clone(),
            vm_cpus: settings.vm_cpus.clone(),
        },
    );
    let choice = match hosted.state_file {
        Some(path) => config::StoreChoice::File(path),
        None => settings.store.clone(),
    };
    spawn_store(&host, choice);
    if let Err(e) = mgmt::spawn(host.clone(), LinkSpec::Tap(tap), settings.ip) {
        log::error!("cannot start the management endpoint: {e}");
        std::process::exit(1);
    }
    supervisor::run(&host)
}

/// Hosted-only options.
#[derive(Debug)]
struct Hosted {
    tap: String,
    disks: Vec<std::path::PathBuf>,
    state_file: Option<std::path::PathBuf>,
    authorized_keys: Option<std::path::PathBuf>,
    runtime_dir: Option<std::path::PathBuf>,
    vm_sandbox: bool,
}

/// Hosted-mode flags, mapped onto the same settings as the kernel command line. Hosted hosts
/// default to a memory store: they see no disks unless given `--disk`.
fn parse_hosted(args: &[String]) -> Result<(Settings, Hosted), String> {
    let mut settings = Settings {
        store: config::StoreChoice::Memory,
        ..Settings::default()
    };
    let mut hosted = false;
    let mut tap = None;
    let mut disks = Vec::new();
    let mut state_file = None;
    let mut authorized_keys = None;
    let mut runtime_dir = None;
    let mut vm_sandbox = true;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--hosted" => hosted = true,
            "--tap" => tap = Some(value()?.clone()),
            "--ip" => settings.set("ip", value()?)?,
            "--hostname" => settings.set("hostname", value()?)?,
            "--log" => settings.set("log", value()?)?,
            "--uplink" => settings.set("uplink", value()?)?,
            "--vm-cpus" => settings.set("vm_cpus", value()?)?,
            "--store" => settings.set("store", value()?)?,
            "--disk" => disks.push(value()?.into()),
            "--state-file" => state_file = Some(value()?.into()),
            "--authorized-keys" => authorized_keys = Some(value()?.into()),
            "--authorize" => settings.set("authorize", value()?)?,
            "--runtime-dir" => runtime_dir = Some(value()?.into()),
            "--no-vm-sandbox" => vm_sandbox = false,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !hosted {
        return Err("not PID 1: pass --hosted to run as an ordinary process".into());
    }
    let tap = tap.ok_or("--hosted needs --tap IFACE")?;
    Ok((
        settings,
        Hosted {
            tap,
            disks,
            state_file,
            authorized_keys,
            runtime_dir,
            vm_sandbox,
        },
    ))
}
