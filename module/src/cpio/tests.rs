use super::*;

/// A header: magic + the 13 fields given as 8-hex-digit values.
fn header(fields: [u32; 13]) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    for f in fields {
        h.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    h
}

/// One raw entry (header, name, padding, data, padding) appended to `out`.
fn raw_entry(out: &mut Vec<u8>, mode: u32, nlink: u32, name: &[u8], data: &[u8]) {
    let size = u32::try_from(data.len()).expect("small");
    let namesize = u32::try_from(name.len() + 1).expect("small");
    out.extend(header([
        1, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0,
    ]));
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn archive_of(members: &[(u32, &[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (mode, name, data) in members {
        raw_entry(&mut out, *mode, 1, name, data);
    }
    raw_entry(&mut out, 0, 1, TRAILER.as_bytes(), b"");
    out
}

fn read_all(bytes: &[u8], policy: Policy) -> Result<Vec<Entry<'_>>, CpioError> {
    Reader::new(bytes, policy).collect()
}

fn err(bytes: &[u8]) -> CpioError {
    read_all(bytes, Policy::STRICT).expect_err("must be refused")
}

#[test]
fn golden_bytes_of_a_tiny_archive() {
    let mut w = Writer::new();
    w.dir("d", 0o755).expect("valid");
    w.file("d/f", 0o644, b"hi").expect("valid");
    let bytes = w.finish();
    // Fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
    // namesize check.
    let z = "00000000";
    let expected = [
        // dir "d": 110 + 2 = 112, aligned.
        &[
            "070701", "00000001", "000041ED", z, z, "00000002", z, z, z, z, z, z, "00000002", z,
        ][..],
        &["d\0"],
        // file "d/f": the name ends at 226, padded to 228; "hi" ends at 230, padded to 232.
        &[
            "070701", "00000002", "000081A4", z, z, "00000001", z, "00000002", z, z, z, z,
        ][..],
        &["00000004", z, "d/f\0", "\0\0", "hi", "\0\0"],
        // trailer: ends at 353, padded to 356.
        &[
            "070701", z, z, z, z, "00000001", z, z, z, z, z, z, "0000000B", z,
        ],
        &["TRAILER!!!\0", "\0\0\0"],
    ]
    .concat()
    .concat();
    assert_eq!(String::from_utf8_lossy(&bytes), expected);
    assert_eq!(bytes.len(), 356);
}

#[test]
fn round_trip_files_dirs_and_devices() {
    let mut w = Writer::new();
    w.dir("etc", 0o755).expect("valid");
    w.file("etc/motd", 0o640, b"hello\n").expect("valid");
    w.file("empty", 0o600, b"").expect("valid");
    w.char_device("console", 0o600, 5, 1).expect("valid");
    let odd = vec![7u8; 4097];
    w.file("odd", 0o755, &odd).expect("valid");
    let bytes = w.finish();
    assert_eq!(bytes.len() % 4, 0);

    let mut reader = Reader::new(&bytes, Policy::INITRAMFS);
    let entries: Vec<_> = reader.by_ref().map(|e| e.expect("valid")).collect();
    assert_eq!(reader.end(), Some(bytes.len()));
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.name, e.kind, e.mode & 0o7777, e.rdev, e.data.len()))
        .collect();
    assert_eq!(
        summary,
        [
            ("etc", FileKind::Dir, 0o755, (0, 0), 0),
            ("etc/motd", FileKind::File, 0o640, (0, 0), 6),
            ("empty", FileKind::File, 0o600, (0, 0), 0),
            ("console", FileKind::CharDevice, 0o600, (5, 1), 0),
            ("odd", FileKind::File, 0o755, (0, 0), 4097),
        ]
    );
    assert_eq!(entries[1].data, b"hello\n");
    assert_eq!(entries[4].data, &odd[..]);
    let motd = &entries[1];
    assert_eq!(&bytes[motd.data_offset..motd.data_offset + 6], b"hello\n");
    assert!(
        entries
            .iter()
            .all(|e| e.uid == 0 && e.gid == 0 && e.mtime == 0)
    );
}

#[test]
fn writer_refuses_what_the_reader_would() {
    let mut w = Writer::new();
    for bad in [
        "", "/abs", "a/../b", "..", "a//b", "a/", "./a", "a/./b", "nul\0",
    ] {
        assert!(
            matches!(w.dir(bad, 0o755), Err(WriteError::BadPath { .. })),
            "{bad:?}"
        );
    }
    let long = "a".repeat(MAX_NAME + 1);
    assert!(w.file(&long, 0o644, b"").is_err());
    w.file(&"a".repeat(MAX_NAME), 0o644, b"")
        .expect("MAX_NAME is allowed");
    let bytes = w.finish();
    assert_eq!(read_all(&bytes, Policy::STRICT).expect("valid").len(), 1);
}

#[test]
fn rejects_bad_magic_and_fields() {
    let good = archive_of(&[(S_IFREG | 0o644, b"f", b"x")]);
    let mut crc = good.clone();
    crc[..6].copy_from_slice(b"070702");
    assert_eq!(err(&crc), CpioError::BadMagic { offset: 0 });
    assert_eq!(
        err(b"garbage"),
        CpioError::Truncated {
            offset: 0,
            what: "header"
        }
    );
    assert!(matches!(err(b""), CpioError::Truncated { what, .. } if what.contains("TRAILER")));

    // Field 6 (filesize) starts at 6 + 6 * 8.
    for bad in [*b"0000000G", *b"+0000001", *b" 0000001", *b"-0000001"] {
        let mut b = good.clone();
        b[54..62].copy_from_slice(&bad);
        assert_eq!(
            err(&b),
            CpioError::BadField {
                offset: 0,
                field: "filesize"
            }
        );
    }
    let mut lower = good.clone();
    lower[14..22].copy_from_slice(b"000081a4");
    read_all(&lower, Policy::STRICT).expect("lowercase hex is hex");
}

#[test]
fn rejects_bad_names() {
    let e = |name: &[u8]| err(&archive_of(&[(S_IFREG | 0o644, name, b"")]));
    assert!(matches!(
        e(b"/etc/passwd"),
        CpioError::BadPath {
            problem: PathProblem::Absolute,
            ..
        }
    ));
    assert!(matches!(
        e(b"../x"),
        CpioError::BadPath {
            problem: PathProblem::Traversal,
            ..
        }
    ));
    assert!(matches!(
        e(b"a/../../x"),
        CpioError::BadPath {
            problem: PathProblem::Traversal,
            ..
        }
    ));
    assert!(matches!(
        e(b"./x"),
        CpioError::BadPath {
            problem: PathProblem::NotNormal,
            ..
        }
    ));
    assert!(matches!(
        e(b"a\0b"),
        CpioError::NameNotTerminated { offset: 0 }
    ));
    assert!(matches!(e(b"\xff"), CpioError::NameNotUtf8 { offset: 0 }));

    // A name whose last byte is not NUL.
    let mut b = archive_of(&[(S_IFREG | 0o644, b"abc", b"")]);
    b[110 + 3] = b'!';
    assert_eq!(err(&b), CpioError::NameNotTerminated { offset: 0 });
    // namesize 0, and namesize past the limit.
    let mut b = archive_of(&[(S_IFREG | 0o644, b"abc", b"")]);
    b[94..102].copy_from_slice(b"00000000");
    assert!(matches!(err(&b), CpioError::NameSize { size: 0, .. }));
    let policy = Policy {
        max_name: 2,
        ..Policy::STRICT
    };
    let b = archive_of(&[(S_IFREG | 0o644, b"abc", b"")]);
    assert!(matches!(
        read_all(&b, policy),
        Err(CpioError::NameSize {
            size: 4,
            max: 3,
            ..
        })
    ));
    // The error names the entry and where it is.
    let b = archive_of(&[(S_IFREG | 0o644, b"ok", b"1"), (S_IFREG, b"../evil", b"")]);
    assert_eq!(
        err(&b).to_string(),
        "cpio entry \"../evil\" at byte 120: path traversal (`..` component)"
    );
}

#[test]
fn rejects_sizes_beyond_input_or_limit() {
    let b = archive_of(&[(S_IFREG | 0o644, b"f", b"12345678")]);
    // Cut inside the data.
    assert!(matches!(
        err(&b[..b.len() - 124 - 4]),
        CpioError::BeyondEnd {
            size: 8,
            remaining: 4,
            ..
        }
    ));
    // filesize says 4 GiB - 1.
    let mut huge = b.clone();
    huge[54..62].copy_from_slice(b"FFFFFFFF");
    assert!(matches!(
        err(&huge),
        CpioError::BeyondEnd { size: u32::MAX, .. }
    ));
    let policy = Policy {
        max_file_size: 7,
        ..Policy::STRICT
    };
    assert!(matches!(
        read_all(&b, policy),
        Err(CpioError::TooLarge {
            size: 8,
            max: 7,
            ..
        })
    ));
    // No trailer.
    let mut no_trailer = Vec::new();
    raw_entry(&mut no_trailer, S_IFREG | 0o644, 1, b"f", b"x");
    assert!(
        matches!(err(&no_trailer), CpioError::Truncated { what, .. } if what.contains("TRAILER"))
    );
    // Too many entries.
    let b = archive_of(&[(S_IFDIR | 0o755, b"a", b""), (S_IFDIR | 0o755, b"b", b"")]);
    let policy = Policy {
        max_entries: 1,
        ..Policy::STRICT
    };
    assert!(matches!(
        read_all(&b, policy),
        Err(CpioError::TooManyEntries { max: 1, .. })
    ));
}

#[test]
fn rejects_symlinks_devices_and_odd_entries_unless_allowed() {
    let link = archive_of(&[(S_IFLNK | 0o777, b"l", b"/etc/shadow")]);
    assert!(matches!(
        err(&link),
        CpioError::Refused {
            what: "symbolic link",
            ..
        }
    ));
    let allow = Policy {
        allow_symlinks: true,
        ..Policy::STRICT
    };
    let entries = read_all(&link, allow).expect("allowed");
    assert_eq!(
        (entries[0].kind, entries[0].data),
        (FileKind::Symlink, &b"/etc/shadow"[..])
    );

    for mode in [
        S_IFCHR | 0o600,
        S_IFBLK | 0o600,
        S_IFIFO | 0o600,
        S_IFSOCK | 0o600,
    ] {
        let b = archive_of(&[(mode, b"n", b"")]);
        assert!(matches!(err(&b), CpioError::Refused { .. }), "{mode:o}");
        read_all(&b, Policy::INITRAMFS).expect("special files allowed");
    }
    let unknown = archive_of(&[(0o170_644, b"u", b"")]);
    assert!(matches!(
        err(&unknown),
        CpioError::Refused {
            what: "unknown file type",
            ..
        }
    ));
    let dir_data = archive_of(&[(S_IFDIR | 0o755, b"d", b"x")]);
    assert!(matches!(err(&dir_data), CpioError::Malformed { .. }));
    let mut hard = Vec::new();
    raw_entry(&mut hard, S_IFREG | 0o644, 2, b"h", b"x");
    raw_entry(&mut hard, 0, 1, TRAILER.as_bytes(), b"");
    assert!(matches!(err(&hard), CpioError::Malformed { what, .. } if what.contains("hard link")));
}

#[test]
fn stops_after_the_first_error() {
    let b = archive_of(&[(S_IFREG, b"/a", b""), (S_IFREG, b"b", b"")]);
    let mut r = Reader::new(&b, Policy::STRICT);
    assert!(r.next().is_some_and(|e| e.is_err()));
    assert!(r.next().is_none());
    assert_eq!(r.end(), None);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let mut w = Writer::new();
    w.dir("d", 0o755).expect("valid");
    w.file("d/f", 0o644, b"some data").expect("valid");
    let bytes = w.finish();
    for cut in 0..bytes.len() - 3 {
        assert!(
            read_all(&bytes[..cut], Policy::STRICT).is_err(),
            "cut at {cut}"
        );
    }
    // The trailer's own padding may be missing (it is not followed by anything).
    read_all(&bytes[..bytes.len() - 3], Policy::STRICT).expect("valid");
}
