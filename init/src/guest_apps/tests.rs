//! The guest side on this machine: a real module archive and plan in a temporary root, a real
//! program (a `/bin/sh` script) started, reaped and planned for restart.

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt as _;

use kaos_module::manifest::{
    App, ConfigKey, ConfigType, ConfigValue, Entrypoint, FORMAT, Kind, Manifest, Restart,
};
use kaos_module::plan::{GuestPlan, PLAN_FORMAT, PlanGroup, PlanModule};
use kaos_module::{AppFile, pack_app};

use super::*;

fn module(name: &str, script: &str, restart: Restart) -> Vec<u8> {
    let manifest = Manifest {
        format: FORMAT,
        name: name.into(),
        version: "1".into(),
        kind: Kind::App(App {
            entrypoints: vec![Entrypoint {
                name: "main".into(),
                exec: "bin/run".into(),
                args: vec!["--flag".into()],
                restart,
            }],
            ports: Vec::new(),
            config: vec![
                ConfigKey {
                    key: "greeting".into(),
                    ty: ConfigType::String,
                    default: Some(ConfigValue::String("hello".into())),
                    description: String::new(),
                },
                ConfigKey {
                    key: "port".into(),
                    ty: ConfigType::Port,
                    default: None,
                    description: String::new(),
                },
            ],
        }),
    };
    let files = [
        AppFile::file("bin/run", 0o755, script.as_bytes()),
        AppFile::file("share/data.txt", 0o644, &b"data"[..]),
    ];
    pack_app(&manifest, &files).expect("packs")
}

/// A root with the plan and archives the host would put in the initrd.
fn root_with(modules: &[(&str, Vec<u8>, [u8; 32])], groups: Vec<PlanGroup>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = GuestPlan {
        format: PLAN_FORMAT,
        image: "web".into(),
        modules: modules
            .iter()
            .map(|(name, _, sha)| PlanModule {
                name: (*name).into(),
                sha256: *sha,
            })
            .collect(),
        groups,
    };
    std::fs::create_dir_all(dir.path().join(plan::AQI_DIR)).expect("mkdir");
    std::fs::write(dir.path().join(plan::PLAN_PATH), plan::encode(&plan)).expect("plan");
    for (name, bytes, _) in modules {
        std::fs::write(dir.path().join(plan::aqi_path(name)), bytes).expect("aqi");
    }
    dir
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn wait_for(pid: u32) -> i32 {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("nonzero");
    let (_, status) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .expect("waitpid")
        .expect("a status");
    status.as_raw()
}

#[test]
fn modules_are_unpacked_groups_rendered_and_entrypoints_supervised() {
    let out = tempfile::tempdir().expect("tempdir");
    let marker = out.path().join("ran");
    let script = format!(
        "#!/bin/sh\necho \"$KAOS_INSTANCE $KAOS_MODULE $1 $(pwd)\" > {}\nexit 3\n",
        marker.display()
    );
    let app = module("httpd", &script, Restart::OnFailure);
    let root = root_with(
        &[("httpd", app.clone(), sha(&app))],
        vec![PlanGroup {
            module: "httpd".into(),
            name: "site".into(),
            values: vec![("port".into(), "8080".into())],
        }],
    );
    let lines = RefCell::new(Vec::new());
    let say = |error: bool, text: &str| lines.borrow_mut().push((error, text.to_owned()));
    let root = Root(root.path().to_owned());
    let mut apps = Apps::start(&root, "web-1", &say);

    let dir = root.join("kaos/modules/httpd");
    let mode = |p: &str| {
        std::fs::metadata(dir.join(p))
            .expect("unpacked")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("bin/run"), 0o755);
    assert_eq!(mode("share/data.txt"), 0o644);
    assert!(
        !root.join(&plan::aqi_path("httpd")).exists(),
        "the archive is removed once unpacked"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kaos/httpd/site.toml")).expect("rendered"),
        "# configuration group \"site\" of module \"httpd\"\ngreeting = \"hello\"\nport = 8080\n"
    );

    let pid = apps.programs[0].pid.expect("started");
    let status = wait_for(pid);
    assert_eq!(
        std::fs::read_to_string(&marker).expect("the program ran"),
        format!("web-1 httpd --flag {}\n", dir.display())
    );
    assert!(apps.reaped(pid, status, &say));
    assert!(!apps.reaped(pid, status, &say), "only once");
    assert_eq!(
        *lines.borrow(),
        [
            (false, "app httpd/main started".to_owned()),
            (
                false,
                "app httpd/main exited: exit status 3; restarting in 1 s".to_owned()
            ),
        ]
    );
    let due = apps.next_due().expect("a restart is planned");
    assert!(due <= Duration::from_secs(1));
    // What the guest said is what the host reads.
    for (_, line) in lines.borrow().iter() {
        let text = format!("{}{line}", kaos_module::report::PREFIX);
        assert!(app_report::parse(text.as_bytes()).is_some(), "{text}");
    }
}

#[test]
fn a_module_that_fails_its_checks_is_skipped_and_the_others_run() {
    let good = module("good", "#!/bin/sh\nexit 0\n", Restart::Never);
    let bad = module("bad", "#!/bin/sh\nexit 0\n", Restart::Never);
    let root = root_with(
        &[("bad", bad, [0; 32]), ("good", good.clone(), sha(&good))],
        vec![PlanGroup {
            module: "good".into(),
            name: "broken".into(),
            values: vec![("port".into(), "eighty".into())],
        }],
    );
    let lines = RefCell::new(Vec::new());
    let say = |error: bool, text: &str| lines.borrow_mut().push((error, text.to_owned()));
    let root = Root(root.path().to_owned());
    let mut apps = Apps::start(&root, "web-1", &say);
    assert_eq!(apps.programs.len(), 1, "only the good module runs");
    let pid = apps.programs[0].pid.expect("started");
    let status = wait_for(pid);
    apps.reaped(pid, status, &say);
    let lines = lines.borrow();
    assert!(
        lines[0].0 && lines[0].1.contains("module bad") && lines[0].1.contains("SHA-256"),
        "{lines:?}"
    );
    assert!(
        lines[1].0 && lines[1].1.contains("group broken: port"),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(|l| l.1.as_str()),
        Some("app good/main exited: exit status 0; not restarted")
    );
    assert_eq!(apps.next_due(), None);
}

#[test]
fn no_plan_means_no_apps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let say = |_: bool, text: &str| panic!("nothing to say, but: {text}");
    let apps = Apps::start(&Root(dir.path().to_owned()), "vm", &say);
    assert!(apps.programs.is_empty());
}
