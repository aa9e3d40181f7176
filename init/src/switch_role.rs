//! The `switch` role: `kattach switch --control-fd N [--uplink SPEC]…` is the host's data
//! plane, started by PID 1 through `kaos_vswitch::control::Controller::spawn` (which passes
//! the control channel as descriptor 3). It opens its uplinks, confines itself, then serves
//! the control channel until the host's end closes, and exits.
//!
//! Sandboxed as the VMM is (`kaos_vmm::sandbox`): new namespaces and a fork (the uplinks'
//! `AF_PACKET` sockets, opened before, stay bound to the host's NICs), an empty root, no
//! capabilities, then `kaos_vswitch::seccomp`'s filter on every thread. Two differences: ports
//! come and go while it runs, so it keeps room for new descriptors (`RLIMIT_NOFILE` at
//! [`MAX_FDS`] rather than at the descriptors open) and its filter lets it start threads.
//! `--no-sandbox` skips all of it, for debugging.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use kaos_net::switch::{SwitchConfig, UplinkMode, Vlan, VlanSet};
use kaos_net::uplink::Uplink;
use kaos_vmm::sandbox::{self, ChildEnd, Side};
use kaos_vswitch::control::server::Server;
use kaos_vswitch::fabric::Fabric;

const USAGE: &str = "\
usage: kattach switch --control-fd N [--uplink IFNAME:trunk=VLAN[,VLAN]...|IFNAME:access=VLAN]...
                      [--no-sandbox]";

/// Descriptors the confined switch may hold: about ten per guest port (connection, memory,
/// kicks, calls, epoll, events) for a thousand ports.
const MAX_FDS: u64 = 16384;
/// Exit status for bad arguments or a failed start.
const EXIT_USAGE: i32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
struct UplinkSpec {
    ifname: String,
    mode: UplinkMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    control_fd: i32,
    uplinks: Vec<UplinkSpec>,
    sandbox: bool,
}

/// Entry point of the role; `args` follow the word `switch`.
pub fn main(args: &[String]) -> ! {
    let args = parse(args).unwrap_or_else(|e| fail(&format!("{e}\n{USAGE}")));
    let control = control_fd(args.control_fd).unwrap_or_else(|e| fail(&e));
    raise_fd_limit();
    let mut uplinks = Vec::new();
    for u in &args.uplinks {
        match Uplink::open(&u.ifname) {
            Ok(up) => uplinks.push((u.clone(), up)),
            Err(e) => fail(&format!("uplink {}: {e}", u.ifname)),
        }
    }
    if args.sandbox {
        match sandbox::isolate() {
            Ok(Side::Child) => {}
            Ok(Side::Parent(end)) => std::process::exit(match end {
                ChildEnd::Exited(code) => code,
                ChildEnd::Killed(sig) => {
                    eprintln!("kattach switch: killed by signal {sig}");
                    1
                }
                ChildEnd::Stopped(sig) => 128 + sig,
            }),
            Err(e) => fail(&e.to_string()),
        }
        confine().unwrap_or_else(|e| fail(&e));
    }
    let fabric = Fabric::new(SwitchConfig::default(), seed());
    let mut server = Server::new(control, fabric.clone());
    for (spec, up) in uplinks {
        start_uplink(&fabric, &mut server, spec, up).unwrap_or_else(|e| fail(&e));
    }
    match server.serve() {
        Ok(()) => std::process::exit(0),
        Err(e) => fail(&format!("control channel: {e}")),
    }
}

fn start_uplink(
    fabric: &Arc<Fabric>,
    server: &mut Server,
    spec: UplinkSpec,
    up: Uplink,
) -> Result<(), String> {
    let pollfd = kaos_vswitch::uplink::poll_fd(&up).map_err(|e| e.to_string())?;
    let port = kaos_vswitch::uplink::attach(fabric, spec.mode, Box::new(up))
        .map_err(|e| format!("uplink {}: {e}", spec.ifname))?;
    server.name_uplink(&spec.ifname, port.id());
    let fabric = fabric.clone();
    std::thread::Builder::new()
        .name(format!("uplink-{}", spec.ifname))
        .spawn(move || kaos_vswitch::uplink::rx_loop(fabric, port, pollfd))
        .map_err(|e| format!("uplink thread: {e}"))?;
    Ok(())
}

/// The empty root, rlimits and no capabilities of the VMM's sandbox, with room for
/// descriptors, then the seccomp filters.
fn confine() -> Result<(), String> {
    // `sandbox::confine` fixes RLIMIT_NOFILE at one more than the highest descriptor open:
    // a placeholder at MAX_FDS - 1 makes that MAX_FDS.
    let highest = i32::try_from(MAX_FDS - 1).unwrap_or(i32::MAX);
    let placeholder = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stderr(), highest)
        .map_err(|e| format!("cannot reserve descriptors: {e}"))?;
    sandbox::confine().map_err(|e| e.to_string())?;
    drop(placeholder);
    // glibc installs its own signal handlers (thread cancellation, set*id) at a process's first
    // pthread_create, with rt_sigaction, which the filter does not allow: start that first
    // thread before it.
    std::thread::spawn(|| {})
        .join()
        .map_err(|_| "the first thread failed".to_owned())?;
    kaos_vswitch::seccomp::install().map_err(|e| e.to_string())
}

fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let limit = Rlimit {
        current: Some(MAX_FDS),
        maximum: Some(MAX_FDS),
    };
    if let Err(e) = setrlimit(Resource::Nofile, limit) {
        log::warn!("cannot raise RLIMIT_NOFILE to {MAX_FDS}: {e}");
    }
}

/// Takes descriptor `n`, which must be an open socket (the control channel).
fn control_fd(n: i32) -> Result<OwnedFd, String> {
    if n < 3 {
        return Err(format!("--control-fd {n} is a standard stream"));
    }
    // SAFETY: `n` came from our parent for this purpose; only its type is checked here, no
    // object in this process owns it yet.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(n) };
    match rustix::net::sockopt::socket_type(borrowed) {
        Ok(rustix::net::SocketType::SEQPACKET) => {}
        _ => return Err(format!("--control-fd {n} is not a SOCK_SEQPACKET socket")),
    }
    // SAFETY: `n` is open (it answered getsockopt) and nothing else in this process owns it;
    // from here the OwnedFd does.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    u64::from_ne_bytes(b)
}

fn fail(message: &str) -> ! {
    eprintln!("kattach switch: {message}");
    std::process::exit(EXIT_USAGE)
}

fn parse(args: &[String]) -> Result<Args, String> {
    let (mut control_fd, mut uplinks, mut sandbox) = (None, Vec::new(), true);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--control-fd" => {
                let v = value()?;
                control_fd = Some(v.parse().map_err(|_| format!("--control-fd {v:?}"))?);
            }
            "--uplink" => uplinks.push(parse_uplink(&value()?)?),
            "--no-sandbox" => sandbox = false,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(Args {
        control_fd: control_fd.ok_or("--control-fd is required")?,
        uplinks,
        sandbox,
    })
}

fn parse_uplink(spec: &str) -> Result<UplinkSpec, String> {
    let bad = || format!("--uplink {spec:?}: expected IFNAME:trunk=10,20 or IFNAME:access=10");
    let (ifname, mode) = spec.split_once(':').ok_or_else(bad)?;
    if ifname.is_empty() || ifname.len() > 15 {
        return Err(bad());
    }
    let vlan = |s: &str| s.parse().ok().and_then(Vlan::new).ok_or_else(bad);
    let mode = match mode.split_once('=').ok_or_else(bad)? {
        ("trunk", list) => {
            let allowed: VlanSet = list.split(',').map(vlan).collect::<Result<_, _>>()?;
            if allowed.is_empty() {
                return Err(bad());
            }
            UplinkMode::Trunk { allowed }
        }
        ("access", v) => UplinkMode::Access { vlan: vlan(v)? },
        _ => return Err(bad()),
    };
    Ok(UplinkSpec {
        ifname: ifname.to_owned(),
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_parse() {
        let a = parse(&strings(&[
            "--control-fd",
            "3",
            "--uplink",
            "eth0:trunk=10,20",
            "--uplink",
            "eth1:access=30",
        ]))
        .expect("valid");
        assert_eq!(a.control_fd, 3);
        assert!(a.sandbox);
        let v = |n| Vlan::new(n).expect("valid");
        assert_eq!(
            a.uplinks[0].mode,
            UplinkMode::Trunk {
                allowed: [v(10), v(20)].into_iter().collect()
            }
        );
        assert_eq!(a.uplinks[1].mode, UplinkMode::Access { vlan: v(30) });
        let nosb = parse(&strings(&["--control-fd", "4", "--no-sandbox"])).expect("valid");
        assert!(!nosb.sandbox && nosb.uplinks.is_empty());
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            &[][..],
            &["--control-fd"],
            &["--control-fd", "x"],
            &["--control-fd", "3", "--uplink", "eth0"],
            &["--control-fd", "3", "--uplink", "eth0:trunk="],
            &["--control-fd", "3", "--uplink", "eth0:trunk=4095"],
            &["--control-fd", "3", "--uplink", "eth0:access=0"],
            &["--control-fd", "3", "--uplink", ":access=10"],
            &["--control-fd", "3", "--bogus"],
        ] {
            assert!(parse(&strings(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_control_fd_must_be_a_seqpacket_socket() {
        assert!(control_fd(1).is_err());
        let file = std::fs::File::open("/proc/self/exe").expect("open");
        let n = std::os::fd::AsRawFd::as_raw_fd(&file);
        assert!(control_fd(n).is_err());
    }
}
