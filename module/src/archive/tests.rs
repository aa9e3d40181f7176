use super::*;
use crate::manifest::{
    App, ConfigKey, ConfigType, ConfigValue, Entrypoint, Port, Protocol, Restart,
};

/// The smallest thing `is_bzimage` accepts, plus some payload.
fn fake_kernel() -> Vec<u8> {
    let mut k = vec![0u8; 0x300];
    k[0x1FE] = 0x55;
    k[0x1FF] = 0xAA;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k.extend_from_slice(b"compressed kernel");
    k
}

fn platform() -> Vec<u8> {
    pack_platform("vkaos", "6.1.192+abcd1234", "6.1.192", &fake_kernel()).expect("valid")
}

/// An archive: the manifest entry (if given), then `members`.
fn archive(manifest: Option<&Manifest>, members: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut w = Writer::new();
    if let Some(m) = manifest {
        let bytes = postcard::to_allocvec(m).expect("encodes");
        w.file(MANIFEST_ENTRY, 0o444, &bytes).expect("valid");
    }
    for (name, mode, data) in members {
        if mode & 0o040_000 != 0 {
            w.dir(name, *mode).expect("valid");
        } else {
            w.file(name, *mode, data).expect("valid");
        }
    }
    w.finish()
}

fn app_manifest(app: App) -> Manifest {
    Manifest {
        format: manifest::FORMAT,
        name: "httpd".into(),
        version: "1.0.0".into(),
        kind: Kind::App(app),
    }
}

fn parse_err(bytes: &[u8]) -> ModuleError {
    parse(bytes, &Limits::APP).expect_err("must be refused")
}

#[test]
fn platform_round_trip() {
    let bytes = platform();
    let m = parse(&bytes, &Limits::PLATFORM).expect("valid");
    assert_eq!(m.manifest.name, "vkaos");
    assert_eq!(m.manifest.version, "6.1.192+abcd1234");
    assert_eq!(
        m.manifest.kind,
        Kind::Platform(Platform {
            kernel_release: "6.1.192".into()
        })
    );
    assert_eq!(m.kernel(), Some(&fake_kernel()[..]));
    assert_eq!(m.sha256_hex(), crate::sha256_hex(&bytes));
    assert_eq!(m.bytes().len(), bytes.len());
    let names: Vec<_> = m.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["boot", KERNEL_PATH]);
    // Deterministic: the same inputs give the same bytes, hence the same identity.
    assert_eq!(platform(), bytes);
}

#[test]
fn manifest_golden_bytes() {
    // postcard: format 1 (varint), name, version, Kind::Platform (variant 0), release.
    let bytes = postcard::to_allocvec(&Manifest {
        format: 1,
        name: "vk".into(),
        version: "1".into(),
        kind: Kind::Platform(Platform {
            kernel_release: "6.1".into(),
        }),
    })
    .expect("encodes");
    assert_eq!(bytes, b"\x01\x02vk\x011\x00\x036.1");
}

#[test]
fn pack_refuses_bad_names() {
    let k = fake_kernel();
    let e = pack_platform("VKaOS", "1", "6.1", &k).expect_err("uppercase");
    assert!(e.to_string().contains("manifest field `name`"), "{e}");
    assert!(pack_platform("-x", "1", "6.1", &k).is_err());
    assert!(pack_platform(&"a".repeat(33), "1", "6.1", &k).is_err());
    assert!(pack_platform("vkaos", "1 2", "6.1", &k).is_err());
    assert!(pack_platform("vkaos", "1", "", &k).is_err());
}

#[test]
fn platform_rejections() {
    let good = platform();
    let too_small = Limits {
        max_size: good.len() - 1,
        ..Limits::PLATFORM
    };
    assert!(matches!(
        parse(&good, &too_small),
        Err(ModuleError::TooLarge { .. })
    ));

    let m = parse(&good, &Limits::PLATFORM).expect("valid").manifest;
    let no_kernel = archive(Some(&m), &[("boot", 0o040_755, b"")]);
    assert!(matches!(parse_err(&no_kernel), ModuleError::Missing { .. }));
    let not_bz = archive(Some(&m), &[(KERNEL_PATH, 0o444, b"MZ not a kernel")]);
    assert!(matches!(parse_err(&not_bz), ModuleError::NotBzImage { .. }));
    let extra = archive(
        Some(&m),
        &[
            (KERNEL_PATH, 0o444, &fake_kernel()),
            ("etc", 0o040_755, b""),
        ],
    );
    let e = parse_err(&extra);
    assert!(
        e.to_string().contains("entry \"etc\" at byte")
            && e.to_string().contains("platform module"),
        "{e}"
    );
    let twice = archive(
        Some(&m),
        &[
            (KERNEL_PATH, 0o444, &fake_kernel()),
            (KERNEL_PATH, 0o444, &fake_kernel()),
        ],
    );
    assert!(matches!(parse_err(&twice), ModuleError::Duplicate { .. }));
}

#[test]
fn manifest_rejections() {
    let k = fake_kernel();
    let no_manifest = archive(None, &[(KERNEL_PATH, 0o444, &k)]);
    let e = parse_err(&no_manifest);
    assert!(
        e.to_string().contains("found \"boot/vmlinuz\" at byte 0"),
        "{e}"
    );
    assert!(matches!(
        parse_err(&archive(None, &[])),
        ModuleError::NoManifest { .. }
    ));

    let raw = |manifest: &[u8]| {
        let mut w = Writer::new();
        w.file(MANIFEST_ENTRY, 0o444, manifest).expect("valid");
        w.file(KERNEL_PATH, 0o444, &k).expect("valid");
        w.finish()
    };
    assert_eq!(
        parse_err(&raw(b"\x02rest")),
        ModuleError::UnsupportedFormat(2)
    );
    assert!(matches!(
        parse_err(&raw(b"")),
        ModuleError::ManifestDecode(_)
    ));
    assert!(matches!(
        parse_err(&raw(b"\x01\x05vk")),
        ModuleError::ManifestDecode(_)
    ));
    let mut trailing = b"\x01\x02vk\x011\x00\x036.1".to_vec();
    trailing.push(0);
    assert!(
        matches!(parse_err(&raw(&trailing)), ModuleError::ManifestDecode(e) if e.contains("1 bytes after"))
    );
    // Decodes, but the name breaks the rules.
    let e = parse_err(&raw(b"\x01\x02V!\x011\x00\x036.1"));
    assert!(
        matches!(e, ModuleError::Invalid(ref i) if i.field == "name"),
        "{e}"
    );
    let big = Limits {
        max_manifest: 3,
        ..Limits::APP
    };
    assert!(matches!(
        parse(&platform(), &big),
        Err(ModuleError::ManifestTooLarge { .. })
    ));
}

#[test]
fn bytes_after_the_trailer_must_be_padding() {
    let mut padded = platform();
    padded.resize(padded.len().next_multiple_of(512), 0);
    parse(&padded, &Limits::PLATFORM).expect("zero padding is fine");
    padded.push(1);
    let at = padded.len() - 1;
    assert_eq!(parse_err(&padded), ModuleError::TrailingData { offset: at });
}

#[test]
fn cpio_errors_come_through_with_their_offset() {
    let m = parse(&platform(), &Limits::PLATFORM)
        .expect("valid")
        .manifest;
    let mut bytes = archive(Some(&m), &[(KERNEL_PATH, 0o444, &fake_kernel())]);
    let second = bytes
        .windows(12)
        .position(|w| w == b"boot/vmlinuz")
        .expect("present")
        - 110;
    bytes[second..second + 6].copy_from_slice(b"123456");
    let e = parse_err(&bytes);
    assert_eq!(
        e.to_string(),
        format!("module archive: not a cpio newc header at byte {second} (expected magic 070701)")
    );
}

fn full_app() -> App {
    App {
        entrypoints: vec![Entrypoint {
            name: "httpd".into(),
            exec: "bin/httpd".into(),
            args: vec!["--port".into(), "80".into()],
            restart: Restart::OnFailure,
        }],
        ports: vec![Port {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
        }],
        config: vec![
            ConfigKey {
                key: "greeting".into(),
                ty: ConfigType::String,
                default: Some(ConfigValue::String("hello".into())),
                description: "the greeting".into(),
            },
            ConfigKey {
                key: "port".into(),
                ty: ConfigType::Port,
                default: Some(ConfigValue::Port(80)),
                description: String::new(),
            },
            ConfigKey {
                key: "debug".into(),
                ty: ConfigType::Bool,
                default: None,
                description: String::new(),
            },
        ],
    }
}

#[test]
fn app_round_trip_and_rules() {
    let m = app_manifest(full_app());
    let files: &[(&str, u32, &[u8])] = &[
        ("bin", 0o040_755, b""),
        ("bin/httpd", 0o755, b"\x7fELF"),
        ("share", 0o040_755, b""),
        ("share/index.html", 0o644, b"<p>hi</p>"),
    ];
    let bytes = archive(Some(&m), files);
    let parsed = parse(&bytes, &Limits::APP).expect("valid");
    assert_eq!(parsed.manifest, m);
    assert_eq!(parsed.kernel(), None);
    assert_eq!(parsed.file("share/index.html"), Some(&b"<p>hi</p>"[..]));

    // The entrypoint must be an executable file of the archive.
    let not_exec = archive(
        Some(&m),
        &[("bin", 0o040_755, b""), ("bin/httpd", 0o644, b"\x7fELF")],
    );
    assert!(matches!(parse_err(&not_exec), ModuleError::Missing { .. }));
    // A second manifest is not a payload file.
    let again = archive(
        Some(&m),
        &[
            ("bin", 0o040_755, b""),
            ("bin/httpd", 0o755, b""),
            (MANIFEST_ENTRY, 0o444, b""),
        ],
    );
    assert!(matches!(parse_err(&again), ModuleError::Unexpected { .. }));

    let field = |app: App| app_manifest(app).validate().expect_err("invalid").field;
    let mut a = full_app();
    a.ports[0].port = 0;
    assert_eq!(field(a), "app.ports[0].port");
    let mut a = full_app();
    a.config[1].default = Some(ConfigValue::Int(80));
    assert_eq!(field(a), "app.config[1].default");
    let mut a = full_app();
    a.config[2].key = "greeting".into();
    assert_eq!(field(a), "app.config[2].key");
    let mut a = full_app();
    a.entrypoints[0].exec = "../../bin/sh".into();
    assert_eq!(field(a), "app.entrypoints[0].exec");
    let mut a = full_app();
    a.entrypoints[0].args.push("a\0b".into());
    assert_eq!(field(a), "app.entrypoints[0].args");
}
