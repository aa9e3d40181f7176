//! The command line: `kaosctl [--context NAME|--endpoint HOST:PORT] NOUN VERB`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kaos_protocol::Role;
use kaos_protocol::keys::Fingerprint;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the host refused the request or answered wrongly
  2  usage or local configuration error (bad arguments, malformed config, missing key)
  3  host unreachable, connection lost, or host busy
  4  authentication failed: host key unknown or changed, or our key not authorised

Files (in $KAOS_CONFIG_DIR, else $XDG_CONFIG_HOME/kaos, else ~/.config/kaos):
  config.toml      contexts: endpoint, key, pinned host key; the current context
  known_hosts      pinned host keys of endpoints used without a context
  keys/NAME.key    secret client keys (mode 0600); keys/NAME.pub the public halves

First contact: `kaosctl key generate`, give keys/default.pub to the host's admin, then
`kaosctl context add lab --endpoint HOST:1289 --use` and `kaosctl --trust-new-host status`
(or --host-key FINGERPRINT, as shown on the host's console). The host key is pinned then; a
changed key is refused from then on.";

/// Manage KaOS hosts over their management port.
#[derive(Debug, Parser)]
#[command(
    name = "kaosctl",
    version,
    override_usage = "kaosctl [--context NAME | --endpoint HOST:PORT] [OPTIONS] <NOUN> [VERB]",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which host, how to authenticate, how to print.
#[derive(Debug, Args)]
pub struct Global {
    /// Use this context from config.toml instead of the current one.
    #[arg(long, global = true, env = "KAOS_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// Talk to this endpoint, without a context (its host key is pinned in known_hosts).
    #[arg(
        long,
        short,
        global = true,
        env = "KAOS_ENDPOINT",
        value_name = "HOST:PORT"
    )]
    pub endpoint: Option<String>,
    /// Our key: a name under keys/, or a path [default: the context's key, else `default`].
    #[arg(long, global = true, env = "KAOS_KEY", value_name = "NAME|PATH")]
    pub key: Option<String>,
    /// At first contact, accept and pin whatever host key is presented. Never overrides a pin.
    #[arg(long, global = true, conflicts_with = "host_key")]
    pub trust_new_host: bool,
    /// At first contact, accept and pin the host key only if it has this fingerprint.
    #[arg(long, global = true, value_name = "FINGERPRINT", value_parser = fingerprint)]
    pub host_key: Option<Fingerprint>,
    /// Seconds to wait for the connection and for each reply.
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        default_value_t = kaosctl::connect::DEFAULT_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout: u64,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

fn fingerprint(text: &str) -> Result<Fingerprint, String> {
    Fingerprint::parse(text).ok_or_else(|| "expected SHA256:<43 base64 characters>".into())
}

/// How data is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns, for people.
    Table,
    /// JSON, for programs (`events --follow`: one event per line).
    Json,
}

/// Nouns, and verbs without a noun.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show host status: name, version, host key, uptime, boot timeline, management link.
    Status,
    /// Reboot the host (orderly).
    Reboot,
    /// Power the host off (orderly).
    Shutdown,
    /// The configuration store and the host's disks.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Persisted host settings.
    #[command(subcommand)]
    Host(HostCmd),
    /// The host's event log, oldest first.
    Events {
        /// Only events after this sequence number.
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// At most this many [default: 100; with --follow, no limit].
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Keep printing new events as they are recorded, until interrupted.
        #[arg(long, short)]
        follow: bool,
    },
    /// Who may manage the host: list, authorise and withdraw client keys.
    #[command(subcommand)]
    Access(AccessCmd),
    /// Modules stored on the host: the vKaOS platform that guests boot, and App Modules.
    #[command(subcommand)]
    Module(ModuleCmd),
    /// Virtual machines: define, start, stop, watch their consoles.
    #[command(subcommand)]
    Vm(VmCmd),
    /// Virtual networking: VLANs and their address pools, firewall rules, switch counters.
    #[command(subcommand)]
    Net(crate::net_args::NetCmd),
    /// Configuration groups: values for an App Module's schema, shared by images (1.4).
    #[command(subcommand)]
    Group(crate::apps_args::GroupCmd),
    /// VM images: a platform, App Modules and groups, deployed as N identical instances (1.4).
    #[command(subcommand)]
    Image(crate::apps_args::ImageCmd),
    /// Our client keys (local: never connects).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Named hosts in config.toml (local: never connects).
    #[command(subcommand)]
    Context(ContextCmd),
    /// Print a shell completion script, e.g. `kaosctl completions bash > /etc/bash_completion.d/kaosctl`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `store` verbs.
#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Mode (disk, memory, degraded and why), location, and every disk with what is on it.
    Status,
    /// Initialise DEVICE (e.g. vdb) as the store and adopt it. A disk holding any data is
    /// refused unless --force.
    Init {
        /// Disk name from `store status`, or a /dev path.
        device: String,
        /// Overwrite whatever the disk holds.
        #[arg(long)]
        force: bool,
    },
}

/// `host` verbs.
#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Show the host name and every persisted setting.
    Get,
    /// Persist a setting and put it in effect, e.g. `host set hostname rack4-node2`.
    Set {
        /// Setting name (hostname). Not `key`: that id is the global --key's, and clap would
        /// take this value for it.
        #[arg(id = "setting", value_name = "KEY")]
        setting: String,
        /// Value.
        value: String,
    },
}

/// `access` verbs.
#[derive(Debug, Subcommand)]
pub enum AccessCmd {
    /// Every authorised key: name, role, where it comes from, fingerprint (admin).
    List,
    /// Authorise a client key, kept in the host's store (admin).
    Add {
        /// A name for the key on the host: 1-32 of A-Z a-z 0-9 . _ -
        name: String,
        /// What the key may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The key.
        #[command(flatten)]
        key: NewKey,
    },
    /// Withdraw a key added with `access add`; its sessions end at their next request (admin).
    Remove {
        /// The key's name.
        name: String,
    },
    /// Our own key's name, role and fingerprint, as the host sees them.
    Whoami,
}

/// The public key `access add` authorises: one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct NewKey {
    /// A public key file, as written by `kaosctl key generate` (keys/NAME.pub).
    #[arg(long, value_name = "PATH.pub")]
    pub key_file: Option<PathBuf>,
    /// The public key line itself.
    #[arg(long, value_name = "'kaos-x25519 BASE64'")]
    pub public_key: Option<String>,
}

/// A role, as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Read-only: status, settings, events, the store report.
    Reader,
    /// Reader, plus reboot, shutdown and host settings.
    Operator,
    /// Everything, including access control and store initialisation.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Reader => Role::Reader,
            RoleArg::Operator => Role::Operator,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// `key` verbs.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create keys/NAME.key (secret, mode 0600) and keys/NAME.pub; print the public line to
    /// give an admin. Refuses to replace a key unless --force.
    Generate {
        /// The key's name.
        #[arg(default_value = kaosctl::config::DEFAULT_KEY)]
        name: String,
        /// Replace an existing key (the old one is lost, and hosts must authorise the new one).
        #[arg(long)]
        force: bool,
    },
    /// Print a key's public line and fingerprint [default: the key commands would use].
    Show {
        /// A key name under keys/, or a path.
        name: Option<String>,
    },
}

/// `context` verbs. `context add` takes the global --endpoint and --key.
#[derive(Debug, Subcommand)]
pub enum ContextCmd {
    /// Add a context: `context add NAME --endpoint HOST:PORT [--key NAME] [--use]`.
    Add {
        /// Its name: 1-32 of A-Z a-z 0-9 . _ -
        name: String,
        /// Make it the current context.
        #[arg(long = "use")]
        use_it: bool,
    },
    /// Every context, the current one marked `*`, with its pinned host key.
    List,
    /// Make NAME the current context.
    Use {
        /// The context.
        name: String,
    },
    /// Remove a context (and its pin).
    Remove {
        /// The context.
        name: String,
    },
    /// Forget a pinned host key, so the next contact pins the key presented then: NAME's, else
    /// the one commands would use now (with --endpoint: that endpoint's known_hosts line).
    Unpin {
        /// The context.
        name: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn verb_arguments_never_land_in_global_flags() {
        let cli = Cli::try_parse_from(["kaosctl", "host", "set", "hostname", "h1"]).expect("parse");
        assert_eq!(cli.global.key, None);
        assert!(matches!(
            cli.command,
            Command::Host(HostCmd::Set { setting, value }) if setting == "hostname" && value == "h1"
        ));
    }
}

/// `module` verbs.
#[derive(Debug, Subcommand)]
pub enum ModuleCmd {
    /// Upload a module file (e.g. vkaos-6.1.192.aqi) with a progress bar. An interrupted upload
    /// resumes where it stopped when run again; the host checks the SHA-256 and the archive and
    /// stores it whole or not at all (operator).
    Push {
        /// The .aqi file.
        file: PathBuf,
    },
    /// Every stored module: name, kind, version, size, SHA-256.
    List,
    /// One stored module: name, version, SHA-256 and its manifest (entrypoints, ports,
    /// configuration schema; for a platform, the kernel release). Needs protocol 1.3.
    Inspect {
        /// Its name.
        name: String,
    },
    /// Pack an App Module from a directory (local: never connects). DIR holds
    /// `kaos-module.toml` (name, version, [[entrypoint]], [[port]], [config.KEY]; see
    /// README.md) and `files/`, the tree the module ships (DIR/files/bin/httpd becomes
    /// bin/httpd). The archive is deterministic: the same directory gives the same SHA-256.
    /// Refused, naming the problem: anything a host would refuse (names, paths, sizes, a missing
    /// or non-executable entrypoint), device nodes, fifos, setuid files, symlinks that escape
    /// files/ or point to directories.
    Build {
        /// The module directory.
        dir: PathBuf,
        /// Where to write the .aqi file.
        #[arg(long, short = 'O', value_name = "FILE")]
        out: PathBuf,
    },
    /// Delete a module that no VM uses (operator).
    Remove {
        /// Its name.
        name: String,
    },
}

/// What to do when a guest stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartArg {
    /// Leave it stopped.
    Never,
    /// Start it again unless it powered off cleanly (a crash, a panic, a reset).
    OnFailure,
    /// Always start it again.
    Always,
}

impl From<RestartArg> for kaos_protocol::RestartPolicy {
    fn from(r: RestartArg) -> Self {
        match r {
            RestartArg::Never => Self::Never,
            RestartArg::OnFailure => Self::OnFailure,
            RestartArg::Always => Self::Always,
        }
    }
}

/// `vm` verbs. Changing verbs need the operator role.
#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Define a VM (stored on the host; it survives host reboots).
    Create {
        /// Name: 1-32 of a-z 0-9 -.
        name: String,
        /// Virtual CPUs (1-8).
        #[arg(long, default_value_t = 1)]
        vcpus: u8,
        /// Guest RAM: MiB, or a number with M or G (e.g. 256M, 1G).
        #[arg(long, default_value = "128M", value_parser = memory_mib)]
        memory: u32,
        /// Added to the guest kernel command line (e.g. "quiet").
        #[arg(long, default_value = "")]
        cmdline: String,
        /// The platform module to boot.
        #[arg(long, default_value = "vkaos")]
        platform: String,
        /// What to do when the guest stops by itself. Restarts back off from 1 s to 30 s.
        #[arg(long, value_enum, default_value_t = RestartArg::OnFailure)]
        restart: RestartArg,
        /// Start it right away (it then also starts after every host boot).
        #[arg(long)]
        start: bool,
        /// A NIC (repeatable, up to 4; the first is eth0): its VLAN, optionally a fixed
        /// address (else the lowest free one of the VLAN's pool) and published ports.
        #[arg(
            long = "nic",
            value_name = "vlan=ID[,ip=A.B.C.D][,publish=tcp:PORT]",
            value_parser = crate::net_args::nic
        )]
        nics: Vec<kaos_protocol::NicSpec>,
    },
    /// Every VM: state, size, restarts.
    List,
    /// Everything about one VM: definition, state, process, last exit.
    Inspect {
        /// The VM.
        name: String,
    },
    /// Start a VM; it also starts after every host boot until stopped.
    Start {
        /// The VM.
        name: String,
    },
    /// Stop a VM (its VMM is ended; the guest gets no shutdown); it stays stopped across boots.
    Stop {
        /// The VM.
        name: String,
    },
    /// Stop, then start.
    Restart {
        /// The VM.
        name: String,
    },
    /// Stop and delete a VM.
    Destroy {
        /// The VM.
        name: String,
    },
    /// The VM's serial console: what the host holds (the last 64 KiB), then with --follow new
    /// output as it comes, until interrupted.
    Logs {
        /// The VM.
        name: String,
        /// Keep printing new output.
        #[arg(long, short)]
        follow: bool,
    },
}

/// `--memory`: MiB as a number, or with an M or G suffix.
pub(crate) fn memory_mib(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let (digits, scale) = match t.char_indices().last() {
        Some((i, 'M' | 'm')) => (&t[..i], 1),
        Some((i, 'G' | 'g')) => (&t[..i], 1024),
        _ => (t, 1),
    };
    digits
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?}: expected MiB, e.g. 128, 256M or 1G"))
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(memory_mib("128"), Ok(128));
        assert_eq!(memory_mib("256M"), Ok(256));
        assert_eq!(memory_mib("2G"), Ok(2048));
        for bad in ["", "0", "1T", "-5", "12.5M", "99999999G"] {
            assert!(memory_mib(bad).is_err(), "{bad:?} accepted");
        }
    }
}
