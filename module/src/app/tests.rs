use super::*;
use crate::archive::parse;
use crate::cpio::{FileKind, HEADER_LEN, TRAILER};
use crate::manifest::{
    App, ConfigKey, ConfigType, ConfigValue, Entrypoint, Port, Protocol, Restart,
};

fn manifest() -> Manifest {
    Manifest {
        format: crate::manifest::FORMAT,
        name: "httpd".into(),
        version: "0.1.0".into(),
        kind: Kind::App(App {
            entrypoints: vec![Entrypoint {
                name: "httpd".into(),
                exec: "bin/httpd".into(),
                args: vec![],
                restart: Restart::Always,
            }],
            ports: vec![Port {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
            config: vec![ConfigKey {
                key: "greeting".into(),
                ty: ConfigType::String,
                default: Some(ConfigValue::String("hello".into())),
                description: "first line".into(),
            }],
        }),
    }
}

fn files() -> Vec<AppFile> {
    vec![
        AppFile::file("share/www/index.html", 0o644, b"<p>hi</p>".to_vec()),
        AppFile::file("bin/httpd", 0o755, b"\x7fELF".to_vec()),
    ]
}

fn refused(files: &[AppFile]) -> String {
    pack_app(&manifest(), files)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn packs_sorted_with_parents_and_parses_back() {
    let bytes = pack_app(&manifest(), &files()).expect("valid");
    let m = parse(&bytes, &Limits::APP).expect("parses");
    assert_eq!(m.manifest, manifest());
    let listed: Vec<_> = m
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.kind, m.perm))
        .collect();
    assert_eq!(
        listed,
        [
            ("bin", FileKind::Dir, 0o755),
            ("bin/httpd", FileKind::File, 0o755),
            ("share", FileKind::Dir, 0o755),
            ("share/www", FileKind::Dir, 0o755),
            ("share/www/index.html", FileKind::File, 0o644),
        ]
    );
    assert_eq!(m.file("bin/httpd"), Some(&b"\x7fELF"[..]));
    // Deterministic: the order the files come in does not matter.
    let mut reversed = files();
    reversed.reverse();
    reversed.push(AppFile::dir("share", 0o755));
    assert_eq!(pack_app(&manifest(), &reversed).expect("valid"), bytes);
}

#[test]
fn refuses_what_a_host_would_refuse_naming_the_file() {
    let with = |f: AppFile| {
        let mut v = files();
        v.push(f);
        refused(&v)
    };
    let e = with(AppFile::file("/etc/passwd", 0o644, vec![]));
    assert!(e.contains("\"/etc/passwd\": absolute path"), "{e}");
    let e = with(AppFile::file("bin/../../x", 0o644, vec![]));
    assert!(e.contains("path traversal"), "{e}");
    let e = with(AppFile::file("bin/httpd", 0o644, vec![]));
    assert!(e.contains("\"bin/httpd\": given twice"), "{e}");
    let e = with(AppFile::file("bin/su", 0o4755, vec![]));
    assert!(e.contains("setuid"), "{e}");
    let e = with(AppFile::file(MANIFEST_ENTRY, 0o644, vec![]));
    assert!(e.contains("manifest entry"), "{e}");
    let e = with(AppFile::file("bin/httpd/x", 0o644, vec![]));
    assert!(
        e.contains("\"bin/httpd\": a file, but \"bin/httpd/x\""),
        "{e}"
    );
    let big = vec![0; Limits::APP.max_file_size as usize + 1];
    let e = with(AppFile::file("big", 0o644, big));
    assert!(
        e.contains("\"big\"") && e.contains("more than the limit"),
        "{e}"
    );
    // What the parser checks comes through with its words.
    let e = refused(&[AppFile::file("bin/httpd", 0o644, b"".to_vec())]);
    assert!(
        e.contains("\"bin/httpd\" is missing") && e.contains("executable"),
        "{e}"
    );
    let mut platform = manifest();
    platform.kind = Kind::Platform(crate::manifest::Platform {
        kernel_release: "6.1".into(),
    });
    assert_eq!(pack_app(&platform, &files()), Err(ModuleError::NotApp));
    let mut bad = manifest();
    bad.name = "Httpd".into();
    assert!(matches!(
        pack_app(&bad, &files()),
        Err(ModuleError::Invalid(_))
    ));
}

#[test]
fn app_manifest_golden_bytes() {
    let bytes = postcard::to_allocvec(&manifest()).expect("encodes");
    let expected: &[u8] = b"\x01\x05httpd\x050.1.0\x01\
        \x01\x05httpd\x09bin/httpd\x00\x02\
        \x01\x04http\x00\x50\
        \x01\x08greeting\x00\x01\x00\x05hello\x0afirst line";
    assert_eq!(bytes, expected);
}

/// One raw newc entry, whatever its name and mode (the writer refuses bad ones).
fn raw_entry(out: &mut Vec<u8>, mode: u32, name: &str, data: &[u8]) {
    let fields = [
        1,
        mode,
        0,
        0,
        1,
        0,
        u32::try_from(data.len()).expect("small"),
        0,
        0,
        0,
        0,
        u32::try_from(name.len() + 1).expect("small"),
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// A valid app module with `extra` (mode, name, data) appended before the trailer.
fn with_entry(mode: u32, name: &str, data: &[u8]) -> Vec<u8> {
    let good = pack_app(&manifest(), &files()).expect("valid");
    // Cut the trailer (header, name, padding) and append the raw entry, then a trailer.
    let trailer_at = good
        .windows(TRAILER.len())
        .rposition(|w| w == TRAILER.as_bytes())
        .expect("trailer")
        - HEADER_LEN;
    let mut bytes = good[..trailer_at].to_vec();
    raw_entry(&mut bytes, mode, name, data);
    raw_entry(&mut bytes, 0, TRAILER, b"");
    bytes
}

#[test]
fn the_parser_refuses_the_bad_input_list_of_issue_7() {
    let err = |bytes: &[u8]| parse(bytes, &Limits::APP).expect_err("refused").to_string();
    // The splice itself is sound.
    parse(&with_entry(0o100_644, "bin/extra", b"x"), &Limits::APP).expect("valid");

    let e = err(&with_entry(0o100_644, "../evil", b"x"));
    assert!(
        e.contains("\"../evil\"") && e.contains("path traversal"),
        "{e}"
    );
    let e = err(&with_entry(0o100_644, "/etc/shadow", b"x"));
    assert!(e.contains("absolute path"), "{e}");
    let e = err(&with_entry(0o120_777, "bin/sh", b"../../bin/sh"));
    assert!(e.contains("symbolic link"), "{e}");
    let e = err(&with_entry(0o020_600, "bin/console", b""));
    assert!(e.contains("device node"), "{e}");
    let e = err(&with_entry(0o060_600, "bin/sda", b""));
    assert!(e.contains("device node"), "{e}");
    let e = err(&with_entry(0o104_755, "bin/su", b""));
    assert!(e.contains("setuid"), "{e}");
    let e = err(&with_entry(0o100_644, "nodir/f", b""));
    assert!(e.contains("parent directory"), "{e}");

    let small = Limits {
        max_file_size: 100,
        ..Limits::APP
    };
    let big = with_entry(0o100_644, "bin/big", &[7; 101]);
    let e = parse(&big, &small).expect_err("oversize").to_string();
    assert!(
        e.contains("\"bin/big\"") && e.contains("exceed the limit of 100"),
        "{e}"
    );

    // Malformed archive: cut anywhere before the trailer.
    let good = pack_app(&manifest(), &files()).expect("valid");
    for cut in [0, 5, HEADER_LEN + 3, good.len() / 2, good.len() - 20] {
        assert!(parse(&good[..cut], &Limits::APP).is_err(), "cut at {cut}");
    }
    // Malformed manifest: a byte of the encoded manifest changed (the name's length).
    let mut bad = good.clone();
    let at = bad
        .windows(6)
        .position(|w| w == b"\x05httpd")
        .expect("manifest name");
    bad[at] = 0x7f;
    let e = err(&bad);
    assert!(e.contains("manifest"), "{e}");
}
