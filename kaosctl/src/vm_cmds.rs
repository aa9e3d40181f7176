//! `kaosctl module …` and `kaosctl vm …`.

use std::io::ErrorKind;
use std::time::Duration;

use kaos_protocol::{
    ModuleInfo, Request, Response, VmActRequest, VmAction, VmCreate, VmInfo, VmLogsQuery, VmSpec,
    VmSummary, valid_object_name,
};
use kaosctl::config::ConfigError;
use kaosctl::connect::Error;
use kaosctl::{Client, ClientError};
use serde_json::json;

use crate::args::{ModuleCmd, Output, VmCmd};
use crate::remote::bounded;
use crate::show;

/// Console bytes to stdout as they are (a UTF-8 character may span two chunks).
fn raw(data: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(data).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(source) => Err(ConfigError::Io {
            path: "standard output".into(),
            source,
        }
        .into()),
    }
}

/// While following a console, a host silent this long is pinged.
const FOLLOW_IDLE: Duration = Duration::from_secs(30);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn refused(e: &kaos_protocol::ErrorReply) -> Error {
    ClientError::Refused {
        code: e.code,
        message: e.message.to_string(),
    }
    .into()
}

pub(crate) fn object_name(
    kind: &str,
    name: &str,
) -> Result<kaos_protocol::ObjectName, ConfigError> {
    if !valid_object_name(name) {
        return Err(ConfigError::Usage(format!(
            "bad {kind} name {name:?}: 1-32 of a-z 0-9 -, not starting with -"
        )));
    }
    bounded(name)
}

/// Module and VM requests arrived in protocol 1.1: an older host would drop the connection.
fn needs_1_1(c: &Client) -> Result<(), Error> {
    let v = c.server().version;
    if v.minor < 1 {
        return Err(ClientError::Refused {
            code: kaos_protocol::ErrorCode::Unsupported,
            message: format!(
                "{} speaks management protocol {v}; modules and VMs need 1.1 (update its image)",
                c.server().hostname
            ),
        }
        .into());
    }
    Ok(())
}

/// `module …`.
pub fn module(c: &mut Client, cmd: &ModuleCmd, output: Output) -> Result<(), Error> {
    needs_1_1(c)?;
    let request = match cmd {
        ModuleCmd::Push { file } => return push(c, file, output),
        ModuleCmd::List => Request::ModuleList,
        ModuleCmd::Remove { name } => Request::ModuleRemove(object_name("module", name)?),
        ModuleCmd::Inspect { name } => return crate::module_cmds::inspect(c, name, output),
        ModuleCmd::Build { .. } => {
            return Err(
                ConfigError::Usage("module build is local: it never connects".into()).into(),
            );
        }
    };
    match c.request(request)? {
        Response::Modules(list) => {
            let views: Vec<serde_json::Value> = list.entries.iter().map(module_view).collect();
            show(output, &views, |_| modules_table(&list.entries))
        }
        Response::Error(e) => Err(refused(&e)),
        other => Err(c.unexpected(&other).into()),
    }
}

fn module_view(m: &ModuleInfo) -> serde_json::Value {
    json!({
        "name": m.name.as_str(),
        "kind": m.kind.as_str(),
        "version": m.version.as_str(),
        "size": m.size,
        "sha256": hex(&m.sha256),
    })
}

fn modules_table(modules: &[ModuleInfo]) -> String {
    let mut out = format!(
        "{:<20} {:<9} {:<28} {:>10}  {}\n",
        "NAME", "KIND", "VERSION", "SIZE", "SHA256"
    );
    for m in modules {
        out.push_str(&format!(
            "{:<20} {:<9} {:<28} {:>10}  {}\n",
            m.name,
            m.kind.as_str(),
            m.version,
            m.size,
            hex(&m.sha256[..8])
        ));
    }
    out
}

/// Uploads `file` with a progress bar (see [`kaosctl::upload::push`]).
fn push(c: &mut Client, file: &std::path::Path, output: Output) -> Result<(), Error> {
    let bytes = std::fs::read(file).map_err(|source| ConfigError::Io {
        path: file.to_owned(),
        source,
    })?;
    let bar = progress_bar(bytes.len() as u64, output);
    let mut first = true;
    let pushed = kaosctl::upload::push(c, &bytes, |received| {
        if first && received > 0 && received < bytes.len() as u64 {
            bar.println(format!("resuming at {received} of {} bytes", bytes.len()));
        }
        first = false;
        bar.set_position(received);
    });
    let m = match pushed {
        Ok(m) => m,
        Err(e) => {
            bar.abandon();
            return Err(e.into());
        }
    };
    bar.finish_and_clear();
    show(output, &module_view(&m), |_| {
        format!(
            "stored {} module {} {} ({} bytes, sha256 {})\n",
            m.kind.as_str(),
            m.name,
            m.version,
            m.size,
            hex(&m.sha256)
        )
    })
}

fn progress_bar(size: u64, output: Output) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if output == Output::Json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// `vm …`.
pub fn vm(c: &mut Client, cmd: &VmCmd, output: Output) -> Result<(), Error> {
    needs_1_1(c)?;
    if matches!(cmd, VmCmd::Create { .. }) {
        // 1.2 appended NICs to VmSpec: a 1.1 host cannot decode the grown definition.
        crate::net_cmds::needs_1_2(c, "vm create")?;
    }
    let request = match cmd {
        VmCmd::Create {
            name,
            vcpus,
            memory,
            cmdline,
            platform,
            restart,
            start,
            nics,
        } => Request::VmCreate(VmCreate {
            spec: VmSpec {
                name: object_name("VM", name)?,
                vcpus: *vcpus,
                memory_mib: *memory,
                cmdline: bounded(cmdline)?,
                platform: object_name("module", platform)?,
                restart: (*restart).into(),
                nics: heapless::Vec::from_slice(nics).map_err(|_| {
                    ConfigError::Usage(format!(
                        "{} --nic flags: a VM has at most {}",
                        nics.len(),
                        kaos_protocol::MAX_NICS
                    ))
                })?,
            },
            start: *start,
        }),
        VmCmd::List => Request::VmList,
        VmCmd::Inspect { name } => Request::VmInspect(object_name("VM", name)?),
        VmCmd::Start { name } => act(name, VmAction::Start)?,
        VmCmd::Stop { name } => act(name, VmAction::Stop)?,
        VmCmd::Restart { name } => act(name, VmAction::Restart)?,
        VmCmd::Destroy { name } => act(name, VmAction::Destroy)?,
        VmCmd::Logs { name, follow } => return logs(c, name, *follow),
    };
    match c.request(request)? {
        Response::Vm(info) => show(output, &vm_view(&info), |_| vm_table(&info)),
        Response::Vms(list) => {
            let views: Vec<serde_json::Value> = list.entries.iter().map(summary_view).collect();
            show(output, &views, |_| vms_table(&list.entries))
        }
        Response::Accepted => {
            let view = json!({ "accepted": true });
            show(output, &view, |_| "destroyed\n".to_owned())
        }
        Response::Error(e) => Err(refused(&e)),
        other => Err(c.unexpected(&other).into()),
    }
}

fn summary_view(v: &VmSummary) -> serde_json::Value {
    json!({
        "name": v.name.as_str(),
        "state": v.state.as_str(),
        "vcpus": v.vcpus,
        "memory_mib": v.memory_mib,
        "restarts": v.restarts,
        "guest_up": v.guest_up,
        "ipv4": v.ipv4.map(|ip| ip.to_string()),
        "image": v.image.as_ref().map(|i| i.as_str()),
    })
}

fn vms_table(vms: &[VmSummary]) -> String {
    let mut out = format!(
        "{:<24} {:<12} {:>5} {:>8} {:>8}  {:<5}  {:<15}  {}\n",
        "NAME", "STATE", "VCPUS", "MEMORY", "RESTARTS", "GUEST", "ADDRESS", "IMAGE"
    );
    for v in vms {
        out.push_str(&format!(
            "{:<24} {:<12} {:>5} {:>7}M {:>8}  {:<5}  {:<15}  {}\n",
            v.name,
            v.state.as_str(),
            v.vcpus,
            v.memory_mib,
            v.restarts,
            if v.guest_up { "up" } else { "-" },
            v.ipv4.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            v.image.as_ref().map_or("-", |i| i.as_str())
        ));
    }
    out
}

fn act(name: &str, action: VmAction) -> Result<Request, ConfigError> {
    Ok(Request::VmAct(VmActRequest {
        name: object_name("VM", name)?,
        action,
    }))
}

fn vm_view(v: &VmInfo) -> serde_json::Value {
    json!({
        "name": v.spec.name.as_str(),
        "state": v.state.as_str(),
        "desired": if v.desired_running { "running" } else { "stopped" },
        "vcpus": v.spec.vcpus,
        "memory_mib": v.spec.memory_mib,
        "cmdline": v.spec.cmdline.as_str(),
        "platform": v.spec.platform.as_str(),
        "restart": v.spec.restart.as_str(),
        "pid": v.pid,
        "restarts": v.restarts,
        "since_ms": v.since_ms,
        "guest_up": v.guest_up,
        "last_exit": v.last_exit.as_ref().map(|e| json!({
            "kind": e.kind.as_str(),
            "message": e.message.as_str(),
            "at_ms": e.at_ms,
        })),
        "platform_sha256": v.platform_sha256.map(|s| hex(&s)),
        "nics": crate::net_cmds::nics_view(&v.nics, &v.spec.nics),
        "image": v.image.as_ref().map(|i| i.as_str()),
        "apps": crate::image_cmds::apps_view(&v.apps),
    })
}

fn vm_table(v: &VmInfo) -> String {
    let mut out = String::new();
    let mut row = |k: &str, val: String| out.push_str(&format!("{k:<12} {val}\n"));
    row("name", v.spec.name.to_string());
    row(
        "state",
        format!(
            "{} (desired: {}) since {:.1} s after boot",
            v.state.as_str(),
            if v.desired_running {
                "running"
            } else {
                "stopped"
            },
            v.since_ms as f64 / 1000.0
        ),
    );
    row(
        "guest",
        if v.guest_up { "up" } else { "not up (yet)" }.into(),
    );
    row(
        "image",
        v.image
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string),
    );
    row("vcpus", v.spec.vcpus.to_string());
    row("memory", format!("{} MiB", v.spec.memory_mib));
    row("platform", v.spec.platform.to_string());
    row("cmdline", v.spec.cmdline.to_string());
    row("restart", v.spec.restart.as_str().into());
    row("restarts", v.restarts.to_string());
    row(
        "pid",
        v.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
    );
    row(
        "last exit",
        v.last_exit.as_ref().map_or_else(
            || "-".to_owned(),
            |e| {
                format!(
                    "{}: {} (at {:.1} s)",
                    e.kind.as_str(),
                    e.message,
                    e.at_ms as f64 / 1000.0
                )
            },
        ),
    );
    for (i, line) in crate::net_cmds::nic_lines(&v.nics, &v.spec.nics)
        .into_iter()
        .enumerate()
    {
        out.push_str(&format!(
            "{:<12} {line}\n",
            if i == 0 { "nics" } else { "" }
        ));
    }
    for (i, line) in crate::image_cmds::app_lines(&v.apps).iter().enumerate() {
        out.push_str(&format!(
            "{:<12} {line}\n",
            if i == 0 { "apps" } else { "" }
        ));
    }
    out
}

/// `vm logs [-f]`: console bytes as they come, verbatim.
fn logs(c: &mut Client, name: &str, follow: bool) -> Result<(), Error> {
    let query = VmLogsQuery {
        name: object_name("VM", name)?,
        follow,
    };
    let stream = c.send(Request::VmLogs(query))?;
    c.set_read_timeout(Some(FOLLOW_IDLE))?;
    let mut ping = None;
    loop {
        let frame = c.next_keepalive(&mut ping)?;
        match frame.response {
            Response::Console(chunk) if frame.id == stream => {
                if chunk.dropped > 0 {
                    eprintln!("kaosctl: [{} console bytes lost]", chunk.dropped);
                }
                raw(&chunk.data)?;
                if frame.last {
                    return Ok(());
                }
            }
            Response::Error(e) => return Err(refused(&e)),
            other => return Err(c.unexpected(&other).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use kaos_protocol::{VmState, truncated};

    use super::*;

    #[test]
    fn the_vm_list_names_each_vms_image() {
        let mut vm = VmSummary {
            name: truncated("web-1"),
            state: VmState::Running,
            vcpus: 1,
            memory_mib: 128,
            restarts: 0,
            guest_up: true,
            ipv4: None,
            image: Some(truncated("web")),
        };
        let table = vms_table(std::slice::from_ref(&vm));
        assert!(
            table
                .lines()
                .next()
                .is_some_and(|h| h.ends_with("ADDRESS          IMAGE"))
        );
        assert!(table.ends_with("  -                web\n"), "{table}");
        assert_eq!(summary_view(&vm)["image"], "web");
        vm.image = None;
        assert!(vms_table(&[vm.clone()]).ends_with("  -                -\n"));
        assert_eq!(summary_view(&vm)["image"], serde_json::Value::Null);
    }
}
