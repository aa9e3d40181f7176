use std::os::unix::fs::{PermissionsExt as _, symlink};

use super::*;
use crate::archive::{Limits, parse};

const TOML: &str = r#"
name = "httpd"
version = "0.1.0"

[[entrypoint]]
name = "httpd"
exec = "bin/httpd"
args = ["--port", "80"]
restart = "always"

[[port]]
name = "http"
protocol = "tcp"
port = 80

[config.greeting]
type = "string"
default = "hello from KaOS"
description = "First line of the page"

[config.listen]
type = "ipv4"
default = "0.0.0.0"

[config.workers]
type = "int"
"#;

/// DIR with the manifest above and files/bin/httpd (executable), files/www/index.html.
fn module_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::write(root.join(MANIFEST_FILE), TOML).expect("write");
    std::fs::write(root.join("README"), "not shipped").expect("write");
    std::fs::create_dir_all(root.join("files/bin")).expect("mkdir");
    std::fs::create_dir_all(root.join("files/www")).expect("mkdir");
    let exe = root.join("files/bin/httpd");
    std::fs::write(&exe, b"\x7fELF").expect("write");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::write(root.join("files/www/index.html"), "<p>hi</p>").expect("write");
    dir
}

fn err(dir: &Path) -> String {
    build_dir(dir).expect_err("refused").to_string()
}

#[test]
fn manifest_text_becomes_the_manifest() {
    let m = parse_manifest(TOML).expect("valid");
    let Kind::App(app) = &m.kind else {
        panic!("an app")
    };
    assert_eq!(app.entrypoints[0].restart, Restart::Always);
    assert_eq!(app.entrypoints[0].args, ["--port", "80"]);
    assert_eq!(app.ports[0].protocol, Protocol::Tcp);
    // Config keys sorted by name.
    let keys: Vec<_> = app.config.iter().map(|k| (k.key.as_str(), k.ty)).collect();
    assert_eq!(
        keys,
        [
            ("greeting", ConfigType::String),
            ("listen", ConfigType::Ipv4),
            ("workers", ConfigType::Int)
        ]
    );
    assert_eq!(app.config[1].default, Some(ConfigValue::Ipv4([0, 0, 0, 0])));
    assert_eq!(app.config[2].default, None);
}

#[test]
fn manifest_text_errors_name_the_field() {
    let e = |text: &str| parse_manifest(text).expect_err("refused").to_string();
    let msg = e("name = \"x\"\nversion = \"1\"\ncolour = 3\n");
    assert!(msg.contains("colour"), "{msg}");
    let msg = e("name = \"X\"\nversion = \"1\"\n");
    assert!(msg.contains("field `name`"), "{msg}");
    let msg = e("name = \"x\"\nversion = \"1\"\n[config.p]\ntype = \"port\"\ndefault = 70000\n");
    assert!(
        msg.contains("config.p.default") && msg.contains("port"),
        "{msg}"
    );
    let msg =
        e("name = \"x\"\nversion = \"1\"\n[config.a]\ntype = \"ipv4\"\ndefault = \"1.2.3\"\n");
    assert!(msg.contains("config.a.default"), "{msg}");
    let msg =
        e("name = \"x\"\nversion = \"1\"\n[[port]]\nname = \"p\"\nprotocol = \"sctp\"\nport = 1\n");
    assert!(msg.contains("sctp"), "{msg}");
    let msg =
        e("name = \"x\"\nversion = \"1\"\n[[entrypoint]]\nname = \"a\"\nexec = \"/bin/sh\"\n");
    assert!(
        msg.contains("entrypoints[0].exec") && msg.contains("absolute"),
        "{msg}"
    );
}

#[test]
fn a_directory_builds_deterministically() {
    let dir = module_dir();
    let bytes = build_dir(dir.path()).expect("builds");
    let m = parse(&bytes, &Limits::APP).expect("parses");
    let names: Vec<_> = m
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.perm))
        .collect();
    assert_eq!(
        names,
        [
            ("bin", 0o755),
            ("bin/httpd", 0o755),
            ("www", 0o755),
            ("www/index.html", 0o644)
        ]
    );
    // Permissions are normalised, mtimes are not recorded: touching and chmod-ing changes nothing.
    let page = dir.path().join("files/www/index.html");
    std::fs::set_permissions(&page, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&page, "<p>hi</p>").expect("rewrite");
    assert_eq!(build_dir(dir.path()).expect("builds"), bytes);
    // A symlink to a file inside is shipped as a copy.
    symlink("index.html", dir.path().join("files/www/default.html")).expect("symlink");
    let with_link = build_dir(dir.path()).expect("builds");
    let m = parse(&with_link, &Limits::APP).expect("parses");
    assert_eq!(m.file("www/default.html"), Some(&b"<p>hi</p>"[..]));
}

#[test]
fn bad_trees_are_refused_naming_the_path() {
    let dir = module_dir();
    let files = dir.path().join("files");
    symlink("../../README", files.join("www/escape")).expect("symlink");
    let e = err(dir.path());
    assert!(
        e.contains("www/escape") && e.contains("outside the module root"),
        "{e}"
    );
    std::fs::remove_file(files.join("www/escape")).expect("rm");

    symlink("/etc/hostname", files.join("abs")).expect("symlink");
    let e = err(dir.path());
    assert!(e.contains("outside the module root"), "{e}");
    std::fs::remove_file(files.join("abs")).expect("rm");

    symlink("nowhere", files.join("dangling")).expect("symlink");
    assert!(err(dir.path()).contains("does not resolve"));
    std::fs::remove_file(files.join("dangling")).expect("rm");

    symlink("www", files.join("dirlink")).expect("symlink");
    assert!(err(dir.path()).contains("other than a regular file"));
    std::fs::remove_file(files.join("dirlink")).expect("rm");

    let fifo = files.join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        assert!(err(dir.path()).contains("fifo or socket"));
        std::fs::remove_file(&fifo).expect("rm");
    }

    let exe = files.join("bin/httpd");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = err(dir.path());
    assert!(e.contains("\"bin/httpd\" is missing"), "{e}");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    build_dir(dir.path()).expect("good again");

    std::fs::remove_file(dir.path().join(MANIFEST_FILE)).expect("rm");
    assert!(err(dir.path()).contains(MANIFEST_FILE));
}
