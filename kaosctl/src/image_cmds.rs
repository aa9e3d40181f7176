//! `kaosctl image …` (protocol 1.4): VM images and their deployment as identical instances.

use kaos_protocol::{
    AppStatus, IMAGE_NAME_MAX, ImageDeploy, ImageInfo, ImageSpec, ImageSummary, MAX_IMAGE_PARTS,
    ObjectName, Request, Response, VmSummary,
};
use kaosctl::Client;
use kaosctl::config::ConfigError;
use kaosctl::connect::Error;
use serde_json::{Value, json};

use crate::apps_args::ImageCmd;
use crate::args::Output;
use crate::group_cmds::needs_1_4;
use crate::module_cmds::columns;
use crate::remote::bounded;
use crate::show;
use crate::vm_cmds::{object_name, refused};

/// `image …`.
pub fn image(c: &mut Client, cmd: &ImageCmd, output: Output) -> Result<(), Error> {
    needs_1_4(c, "image")?;
    match c.request(request(cmd)?)? {
        Response::Image(info) => {
            let shows_instances = matches!(cmd, ImageCmd::Show { .. } | ImageCmd::Deploy { .. });
            let instances = if shows_instances {
                instances(c, &info.spec.name)?
            } else {
                Vec::new()
            };
            let view = image_view(&info.spec, &instances);
            if matches!(cmd, ImageCmd::Deploy { .. }) {
                show(output, &view, |_| instances_table(&info.spec, &instances))
            } else {
                show(output, &view, |_| image_table(&info, &instances))
            }
        }
        Response::Images(list) => {
            let views: Vec<Value> = list.entries.iter().map(summary_view).collect();
            show(output, &views, |_| images_table(&list.entries))
        }
        Response::Error(e) => Err(refused(&e)),
        other => Err(c.unexpected(&other).into()),
    }
}

/// The VMs that are instances of `image`, as `vm list` shows them.
fn instances(c: &mut Client, image: &ObjectName) -> Result<Vec<VmSummary>, Error> {
    match c.request(Request::VmList)? {
        Response::Vms(list) => Ok(list
            .entries
            .into_iter()
            .filter(|vm| vm.image.as_ref() == Some(image))
            .collect()),
        Response::Error(e) => Err(refused(&e)),
        other => Err(c.unexpected(&other).into()),
    }
}

/// An image name: an object name short enough that `NAME-32` is one too.
fn image_name(name: &str) -> Result<ObjectName, ConfigError> {
    let checked = object_name("image", name)?;
    if checked.len() > IMAGE_NAME_MAX {
        return Err(ConfigError::Usage(format!(
            "image name {name:?} is longer than {IMAGE_NAME_MAX} bytes (its instances are named \
             {name}-1, {name}-2, …)"
        )));
    }
    Ok(checked)
}

/// `--module` or `--group` names: each valid, each once, at most [`MAX_IMAGE_PARTS`].
fn parts(
    flag: &str,
    kind: &str,
    names: &[String],
) -> Result<heapless::Vec<ObjectName, MAX_IMAGE_PARTS>, ConfigError> {
    let mut out = heapless::Vec::new();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(ConfigError::Usage(format!(
                "{flag}: {kind} {name:?} is given twice"
            )));
        }
        out.push(object_name(kind, name)?).map_err(|_| {
            ConfigError::Usage(format!(
                "{} {flag} flags: an image has at most {MAX_IMAGE_PARTS}",
                names.len()
            ))
        })?;
    }
    Ok(out)
}

/// What `cmd` asks of the host, after every check that needs no host.
fn request(cmd: &ImageCmd) -> Result<Request, ConfigError> {
    Ok(match cmd {
        ImageCmd::Create {
            name,
            modules,
            groups,
            vcpus,
            memory,
            vlan,
            platform,
            cmdline,
        } => Request::ImageCreate(ImageSpec {
            name: image_name(name)?,
            platform: object_name("module", platform)?,
            modules: parts("--module", "module", modules)?,
            groups: parts("--group", "group", groups)?,
            vcpus: *vcpus,
            memory_mib: *memory,
            vlan: *vlan,
            cmdline: bounded(cmdline)?,
        }),
        ImageCmd::List => Request::ImageList,
        ImageCmd::Show { name } => Request::ImageShow(image_name(name)?),
        ImageCmd::Delete { name } => Request::ImageDelete(image_name(name)?),
        ImageCmd::Deploy { name, count } => Request::ImageDeploy(ImageDeploy {
            name: image_name(name)?,
            count: *count,
        }),
    })
}

fn names(list: &[ObjectName]) -> Vec<&str> {
    list.iter().map(ObjectName::as_str).collect()
}

fn address(vm: &VmSummary) -> String {
    vm.ipv4.map_or_else(|| "-".into(), |ip| ip.to_string())
}

fn image_view(spec: &ImageSpec, instances: &[VmSummary]) -> Value {
    json!({
        "name": spec.name.as_str(),
        "platform": spec.platform.as_str(),
        "modules": names(&spec.modules),
        "groups": names(&spec.groups),
        "vcpus": spec.vcpus,
        "memory_mib": spec.memory_mib,
        "vlan": spec.vlan,
        "cmdline": spec.cmdline.as_str(),
        "instances": instances.iter().map(|vm| json!({
            "name": vm.name.as_str(),
            "state": vm.state.as_str(),
            "guest_up": vm.guest_up,
            "ipv4": vm.ipv4.map(|ip| ip.to_string()),
        })).collect::<Vec<_>>(),
    })
}

fn list_text(list: &[ObjectName]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        names(list).join(", ")
    }
}

fn image_table(info: &ImageInfo, instances: &[VmSummary]) -> String {
    let s = &info.spec;
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<9} {v}\n"));
    row("name", s.name.to_string());
    row("platform", s.platform.to_string());
    row("modules", list_text(&s.modules));
    row("groups", list_text(&s.groups));
    row("vcpus", s.vcpus.to_string());
    row("memory", format!("{} MiB", s.memory_mib));
    row("vlan", s.vlan.map_or_else(|| "-".into(), |v| v.to_string()));
    row("cmdline", s.cmdline.to_string());
    if instances.is_empty() && !info.instances.is_empty() {
        // Instances the VM list did not show (they changed in between): name them.
        row("instances", list_text(&info.instances));
        return out;
    }
    out.push('\n');
    out + &instances_table(s, instances)
}

/// `image deploy`'s answer, and the end of `image show`: one row per instance.
fn instances_table(spec: &ImageSpec, instances: &[VmSummary]) -> String {
    if instances.is_empty() {
        return format!("{}: no instances\n", spec.name);
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|vm| vec![vm.name.to_string(), vm.state.as_str().into(), address(vm)])
        .collect();
    columns(&["INSTANCE", "STATE", "ADDRESS"], &rows)
}

/// One `vm inspect` line per entrypoint: `httpd/httpd running, starts 1, last exit: -`.
pub(crate) fn app_lines(apps: &[AppStatus]) -> Vec<String> {
    apps.iter()
        .map(|a| {
            format!(
                "{}/{} {}, starts {}, last exit: {}",
                a.module,
                a.entrypoint,
                if a.running { "running" } else { "stopped" },
                a.starts,
                a.last_exit.as_ref().map_or("-", |e| e.as_str())
            )
        })
        .collect()
}

/// A VM's entrypoints for `vm inspect --output json`.
pub(crate) fn apps_view(apps: &[AppStatus]) -> Value {
    apps.iter()
        .map(|a| {
            json!({
                "module": a.module.as_str(),
                "entrypoint": a.entrypoint.as_str(),
                "running": a.running,
                "starts": a.starts,
                "last_exit": a.last_exit.as_ref().map(|e| e.as_str()),
            })
        })
        .collect()
}

fn summary_view(i: &ImageSummary) -> Value {
    json!({
        "name": i.name.as_str(),
        "platform": i.platform.as_str(),
        "modules": i.modules,
        "vcpus": i.vcpus,
        "memory_mib": i.memory_mib,
        "vlan": i.vlan,
        "instances": i.instances,
    })
}

fn images_table(images: &[ImageSummary]) -> String {
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            vec![
                i.name.to_string(),
                i.platform.to_string(),
                i.modules.to_string(),
                i.vcpus.to_string(),
                format!("{}M", i.memory_mib),
                i.vlan.map_or_else(|| "-".into(), |v| v.to_string()),
                i.instances.to_string(),
            ]
        })
        .collect();
    columns(
        &[
            "NAME",
            "PLATFORM",
            "MODULES",
            "VCPUS",
            "MEMORY",
            "VLAN",
            "INSTANCES",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use kaos_protocol::{VmState, truncated};

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Request, ConfigError> {
        let cli = Cli::try_parse_from(args).expect("parses");
        let Command::Image(cmd) = cli.command else {
            panic!("not an image command")
        };
        request(&cmd)
    }

    fn create(extra: &[&str]) -> Result<Request, ConfigError> {
        let mut args = vec!["kaosctl", "image", "create"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--vcpus", "2", "--memory", "128M"]);
        parse(&args)
    }

    #[test]
    fn create_keeps_the_module_order_and_defaults_to_vkaos() {
        let r = create(&[
            "web", "--module", "redis", "--module", "httpd", "--group", "web",
        ])
        .expect("valid");
        let Request::ImageCreate(spec) = r else {
            panic!("{r:?}")
        };
        assert_eq!(names(&spec.modules), ["redis", "httpd"]);
        assert_eq!(names(&spec.groups), ["web"]);
        assert_eq!(spec.platform.as_str(), "vkaos");
        assert_eq!((spec.vcpus, spec.memory_mib, spec.vlan), (2, 128, None));
    }

    #[test]
    fn names_parts_and_counts_are_checked_before_sending() {
        let long = "i".repeat(IMAGE_NAME_MAX + 1);
        let e = create(&[&long, "--module", "httpd"]).expect_err("too long");
        assert!(e.to_string().contains("longer than 29"), "{e}");
        assert!(create(&[&long[1..], "--module", "httpd"]).is_ok());
        let e = create(&["web", "--module", "httpd", "--module", "httpd"]).expect_err("twice");
        assert!(e.to_string().contains("\"httpd\" is given twice"), "{e}");
        assert!(create(&["web", "--module", "Httpd"]).is_err());
        let many: Vec<String> = (0..=MAX_IMAGE_PARTS).map(|i| format!("m{i}")).collect();
        let mut args = vec!["web"];
        for m in &many {
            args.extend_from_slice(&["--module", m]);
        }
        assert!(create(&args).is_err_and(|e| e.to_string().contains("at most 8")));
        let deploy =
            |n: &str| Cli::try_parse_from(["kaosctl", "image", "deploy", "web", "--count", n]);
        assert!(deploy("32").is_ok() && deploy("0").is_ok());
        assert!(deploy("33").is_err(), "more than MAX_INSTANCES");
        let no_module = Cli::try_parse_from([
            "kaosctl", "image", "create", "web", "--vcpus", "1", "--memory", "128M",
        ]);
        assert!(no_module.is_err(), "--module is required");
    }

    fn vm(name: &str, ip: Option<[u8; 4]>) -> VmSummary {
        VmSummary {
            name: truncated(name),
            state: VmState::Running,
            vcpus: 1,
            memory_mib: 128,
            restarts: 0,
            guest_up: true,
            ipv4: ip.map(std::net::Ipv4Addr::from),
            image: Some(truncated("web")),
        }
    }

    #[test]
    fn instances_show_state_and_address() {
        let spec = match create(&["web", "--module", "httpd", "--vlan", "10"]) {
            Ok(Request::ImageCreate(spec)) => spec,
            other => panic!("{other:?}"),
        };
        let vms = [vm("web-1", Some([10, 0, 10, 2])), vm("web-2", None)];
        let table = instances_table(&spec, &vms);
        assert_eq!(
            table,
            "INSTANCE  STATE    ADDRESS\nweb-1     running  10.0.10.2\nweb-2     running  -\n"
        );
        assert_eq!(instances_table(&spec, &[]), "web: no instances\n");
        let view = image_view(&spec, &vms);
        assert_eq!(view["instances"][0]["ipv4"], "10.0.10.2");
        assert_eq!(view["vlan"], 10);
        let info = ImageInfo {
            spec,
            instances: heapless::Vec::new(),
        };
        let shown = image_table(&info, &vms);
        assert!(
            shown.contains("modules   httpd\n") && shown.contains("web-2"),
            "{shown}"
        );
    }

    #[test]
    fn each_entrypoint_is_one_line() {
        let mut app = AppStatus {
            module: truncated("httpd"),
            entrypoint: truncated("serve"),
            running: true,
            starts: 1,
            last_exit: None,
        };
        assert_eq!(
            app_lines(std::slice::from_ref(&app)),
            ["httpd/serve running, starts 1, last exit: -"]
        );
        app.running = false;
        app.starts = 3;
        app.last_exit = Some(truncated("exit status 1"));
        assert_eq!(
            app_lines(std::slice::from_ref(&app)),
            ["httpd/serve stopped, starts 3, last exit: exit status 1"]
        );
        assert_eq!(apps_view(&[app])[0]["last_exit"], "exit status 1");
    }
}
