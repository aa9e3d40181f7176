//! Interoperability with GNU cpio (Debian package `cpio`): it lists our archives as we meant
//! them, and we read what it writes. Skipped, with the reason printed, where it is not installed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use kaos_module::cpio::{FileKind, Policy, Reader};

/// `cpio` with `args`, `input` on stdin; `None` (reason printed) if cpio cannot be run.
fn cpio(test: &str, args: &[&str], input: &[u8], dir: Option<&PathBuf>) -> Option<Vec<u8>> {
    let mut cmd = Command::new("cpio");
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            // Uncaptured by the test harness, so the skip shows in every log.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {test}: cannot run cpio ({e}); apt-get install cpio\n").as_bytes(),
            );
            return None;
        }
    };
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(input).expect("write to cpio");
    drop(stdin);
    let out = child.wait_with_output().expect("cpio runs");
    assert!(
        out.status.success(),
        "cpio {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

#[test]
fn gnu_cpio_lists_the_guest_initrd() {
    let init = b"\x7fELF not really, but 33 bytes long";
    let initrd = kaos_module::guest_initrd(init).expect("small");
    let Some(listing) = cpio(
        "gnu_cpio_lists_the_guest_initrd",
        &["-t", "--quiet"],
        &initrd,
        None,
    ) else {
        return;
    };
    let names = String::from_utf8(listing).expect("utf-8");
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [
            "dev",
            "dev/console",
            "dev/null",
            "proc",
            "sys",
            "run",
            "tmp",
            "etc",
            "init"
        ]
    );
    let verbose = cpio(
        "gnu_cpio_lists_the_guest_initrd",
        &["-tv", "--quiet"],
        &initrd,
        None,
    )
    .expect("ran once already");
    let verbose = String::from_utf8(verbose).expect("utf-8");
    // The first words of `cpio -tv`: mode, links, owner, group, then the size or major, minor.
    let words = |name: &str| {
        let line = verbose
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} not in\n{verbose}"));
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words("dev/console")[..6],
        ["crw-------", "1", "root", "root", "5,", "1"]
    );
    assert_eq!(
        words("dev/null")[..6],
        ["crw-rw-rw-", "1", "root", "root", "1,", "3"]
    );
    assert_eq!(words("tmp")[..5], ["drwxrwxrwt", "2", "root", "root", "0"]);
    let size = init.len().to_string();
    assert_eq!(
        words("init")[..5],
        ["-rwxr-xr-x", "1", "root", "root", size.as_str()]
    );
    // mtime 0.
    assert!(
        words("init").iter().any(|w| w == "1970"),
        "{:?}",
        words("init")
    );
}

#[test]
fn we_read_what_gnu_cpio_writes() {
    let test = "we_read_what_gnu_cpio_writes";
    let dir = std::env::temp_dir().join(format!("kaos-module-cpio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("app/bin")).expect("mkdir");
    std::fs::write(dir.join("app/bin/run"), b"#!program").expect("write");
    std::fs::write(dir.join("app/readme"), b"odd length").expect("write");
    let list = b"app\napp/bin\napp/bin/run\napp/readme\n";
    let Some(archive) = cpio(test, &["-o", "-H", "newc", "--quiet"], list, Some(&dir)) else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(archive.len() % 512, 0, "GNU cpio pads to 512-byte blocks");
    let mut reader = Reader::new(&archive, Policy::STRICT);
    let entries: Vec<_> = reader
        .by_ref()
        .map(|e| e.expect("valid"))
        .map(|e| (e.name, e.kind, e.data))
        .collect();
    assert_eq!(
        entries,
        [
            ("app", FileKind::Dir, &b""[..]),
            ("app/bin", FileKind::Dir, b""),
            ("app/bin/run", FileKind::File, b"#!program"),
            ("app/readme", FileKind::File, b"odd length"),
        ]
    );
    let end = reader.end().expect("trailer read");
    assert!(
        archive[end..].iter().all(|&b| b == 0),
        "only padding after the trailer"
    );
}
