//! Tier 2: App Modules, configuration groups and VM images through the `kaosctl` binary against
//! `kattach --hosted` with a state file, as an operator types them: `module build` and
//! `module push`, groups held against the module's schema, an image that needs a group, a
//! deployment, the references that refuse a removal, all of it again after kattach is killed
//! and started on the same file, and a scale to zero that frees everything.
//!
//! The instances boot a hand-made platform (not Linux: no App Module runs here; the QEMU test
//! `qemu-tests/tests/apps.rs` runs them for real). `kaosctl` is taken from beside `kattach`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::User;
use kaos_qemu_tests::hosted::HostedHost;

const KATTACH: &str = env!("CARGO_BIN_EXE_kattach");
const READY: Duration = Duration::from_secs(10);

fn launch(state: &Path) -> HostedHost {
    let state = state.to_string_lossy();
    let host = HostedHost::launch_with(Path::new(KATTACH), "kaos-apps", &["--state-file", &state])
        .expect("launch");
    drop(host.wait_ready(READY).expect("ready"));
    host
}

/// An App Module source directory: a schema with a defaulted string and a required port.
fn module_dir(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("shop");
    std::fs::create_dir_all(src.join("files/bin")).expect("mkdir");
    std::fs::write(
        src.join("kaos-module.toml"),
        r#"name = "shop"
version = "2.1"

[[entrypoint]]
name = "serve"
exec = "bin/serve"

[[port]]
name = "http"
protocol = "tcp"
port = 8080

[config.greeting]
type = "string"
default = "welcome"

[config.port]
type = "port"
description = "where to listen"
"#,
    )
    .expect("manifest");
    let script = src.join("files/bin/serve");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    src
}

#[test]
fn groups_images_and_deployments_through_kaosctl_and_across_a_restart() {
    let Some(kaosctl) = kaos_qemu_tests::kaosctl_beside(Path::new(KATTACH), "hosted_apps", "image")
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("kaos-apps-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("state.redb");
    let host = launch(&state);
    let user = User::new(kaosctl, "apps");
    user.ok(&host, &["--trust-new-host", "status"]);

    // The platform instances boot, and the App Module built from its directory.
    let elf = kaos_vmm::tiny::tiny_elf_with_code(&[0xf4]);
    let platform = kaos_module::pack_platform("vkaos", "1.0-test", "tiny", &elf).expect("pack");
    let platform_file = dir.join("vkaos.aqi");
    std::fs::write(&platform_file, platform).expect("write");
    user.ok(&host, &["module", "push", &platform_file.to_string_lossy()]);
    let aqi = dir.join("shop.aqi");
    user.ok(
        &host,
        &[
            "module",
            "build",
            &module_dir(&dir).to_string_lossy(),
            "--out",
            &aqi.to_string_lossy(),
        ],
    );
    user.ok(&host, &["module", "push", &aqi.to_string_lossy()]);

    // Groups: every value is held against the schema, and a refusal stores nothing.
    user.fails(
        &host,
        &[
            "group",
            "create",
            "main",
            "--module",
            "shop",
            "--set",
            "port=http",
        ],
        1,
        "port",
    );
    user.fails(
        &host,
        &[
            "group",
            "create",
            "main",
            "--module",
            "shop",
            "--set",
            "colour=red",
        ],
        1,
        "colour",
    );
    user.fails(
        &host,
        &["group", "create", "main", "--module", "shop"],
        1,
        "no default",
    );
    user.fails(
        &host,
        &[
            "group", "create", "main", "--module", "nothing", "--set", "port=1",
        ],
        1,
        "nothing",
    );
    let groups = user.json(&host, &["group", "list"]);
    assert_eq!(groups.as_array().map(Vec::len), Some(0), "{groups}");
    user.ok(
        &host,
        &[
            "group",
            "create",
            "main",
            "--module",
            "shop",
            "--set",
            "port=8080",
        ],
    );
    user.fails(
        &host,
        &[
            "group", "create", "main", "--module", "shop", "--set", "port=1",
        ],
        1,
        "exists",
    );
    let edited = user.ok(
        &host,
        &[
            "group",
            "edit",
            "main",
            "--set",
            "greeting=hi there",
            "--set",
            "port=9090",
        ],
    );
    assert!(
        edited.contains("hi there") && edited.contains("9090"),
        "{edited}"
    );
    user.fails(
        &host,
        &["group", "edit", "main", "--unset", "port"],
        1,
        "no default",
    );
    user.ok(&host, &["group", "edit", "main", "--unset", "greeting"]);
    let shown = user.ok(&host, &["group", "show", "main"]);
    assert!(
        shown.contains("9090") && !shown.contains("hi there"),
        "{shown}"
    );

    // Images: a module with a required key needs one of its groups.
    let image = [
        "image", "create", "shop", "--module", "shop", "--vcpus", "1", "--memory", "64M",
    ];
    user.fails(&host, &image, 1, "needs a group");
    let mut with_group = image.to_vec();
    with_group.extend(["--group", "main"]);
    user.ok(&host, &with_group);
    user.fails(&host, &with_group, 1, "exists");

    // Two instances; then nothing they depend on can go.
    let deployed = user.ok(&host, &["image", "deploy", "shop", "--count", "2"]);
    assert!(
        deployed.contains("shop-1") && deployed.contains("shop-2"),
        "{deployed}"
    );
    user.fails(&host, &["module", "remove", "shop"], 1, "image shop");
    user.fails(&host, &["group", "delete", "main"], 1, "image shop");
    user.fails(&host, &["image", "delete", "shop"], 1, "--count 0");
    user.fails(
        &host,
        &["image", "deploy", "shop", "--count", "33"],
        2,
        "32",
    );

    // The same after a restart on the same state file.
    drop(host);
    let host = launch(&state);
    let vms = user.json(&host, &["vm", "list"]);
    let images: Vec<(&str, &str)> = vms
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or(""),
                v["image"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(images, [("shop-1", "shop"), ("shop-2", "shop")], "{vms}");
    let shown = user.json(&host, &["image", "show", "shop"]);
    assert_eq!(
        shown["instances"].as_array().map(Vec::len),
        Some(2),
        "{shown}"
    );

    // Down to one, then none; then everything can go, in order.
    let one = user.ok(&host, &["image", "deploy", "shop", "--count", "1"]);
    assert!(one.contains("shop-1") && !one.contains("shop-2"), "{one}");
    user.ok(&host, &["image", "deploy", "shop", "--count", "0"]);
    user.ok(&host, &["image", "delete", "shop"]);
    user.ok(&host, &["group", "delete", "main"]);
    user.ok(&host, &["module", "remove", "shop"]);
    let vms = user.json(&host, &["vm", "list"]);
    assert_eq!(vms.as_array().map(Vec::len), Some(0), "{vms}");
    let _ = std::fs::remove_dir_all(&dir);
}
