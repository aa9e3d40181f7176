//! Module archives and cpio from anyone (`kaosctl module push`, a store disk): the bounded cpio
//! reader and `kaos_module::parse` never panic, and what they accept is consistent.
//!
//! Each input is used twice: as a whole archive (the cpio reader under the strict and the
//! initramfs policy, then `parse` with the platform and app limits), and as the manifest entry of
//! an otherwise valid platform module, so the postcard decoding and validation behind the cpio
//! layer are reached directly. Seeds (`seeds/module_archive/`) are archives written by
//! `kaos_module` itself: a platform module, an app module, a guest initrd, and a bare manifest.
#![no_main]

use kaos_module::cpio::{self, FileKind, Policy, Reader};
use kaos_module::manifest::Kind;
use kaos_module::{KERNEL_PATH, Limits, MANIFEST_ENTRY, parse};
use libfuzzer_sys::fuzz_target;

/// Reads `data` under `policy`; every accepted entry lies inside the input, in order, with a
/// normal relative name, and writing it again gives an archive that reads back the same.
fn read_raw(data: &[u8], policy: Policy) {
    let mut reader = Reader::new(data, policy);
    let mut last = None;
    let mut rewritten = cpio::Writer::new();
    let mut kept = Vec::new();
    for entry in reader.by_ref() {
        let Ok(e) = entry else { break };
        assert!(last.is_none_or(|l| e.offset > l), "entries go backwards");
        last = Some(e.offset);
        assert_eq!(
            cpio::check_path(e.name),
            Ok(()),
            "accepted name {:?}",
            e.name
        );
        let end = e.data_offset + e.data.len();
        assert_eq!(
            &data[e.data_offset..end],
            e.data,
            "data is not where it says"
        );
        let perm = e.mode & 0o7777;
        let written = match e.kind {
            FileKind::File => rewritten.file(e.name, perm, e.data),
            FileKind::Dir => rewritten.dir(e.name, perm),
            FileKind::CharDevice => rewritten.char_device(e.name, perm, e.rdev.0, e.rdev.1),
            _ => continue,
        };
        written.expect("an accepted entry can be written");
        kept.push((e.name, e.kind, perm, e.data));
    }
    if let Some(end) = reader.end() {
        assert!(end <= data.len());
    }
    let again = rewritten.finish();
    let reread: Vec<_> = Reader::new(&again, Policy::INITRAMFS)
        .map(|e| e.expect("our own archive reads back"))
        .map(|e| (e.name, e.kind, e.mode & 0o7777, e.data))
        .collect();
    assert_eq!(reread, kept);
}

/// Parses `data` as a module; what is accepted is bounded, valid and consistent.
fn parse_module(data: &[u8], limits: &Limits) {
    let Ok(m) = parse(data, limits) else { return };
    assert!(data.len() <= limits.max_size);
    assert_eq!(m.manifest.validate(), Ok(()));
    for member in &m.members {
        assert!(member.range.end <= data.len(), "member beyond the input");
        assert_ne!(member.name, MANIFEST_ENTRY);
    }
    match &m.manifest.kind {
        Kind::Platform(p) => {
            let kernel = m.kernel().expect("a platform module has a kernel");
            assert!(kaos_module::archive::is_bzimage(kernel));
            // Re-packing what was read gives a module that reads back the same.
            let packed = kaos_module::pack_platform(
                &m.manifest.name,
                &m.manifest.version,
                &p.kernel_release,
                kernel,
            )
            .expect("valid fields pack");
            let again = parse(&packed, &Limits::PLATFORM).expect("re-packed module parses");
            assert_eq!(again.manifest, m.manifest);
            assert_eq!(again.kernel(), Some(kernel));
        }
        Kind::App(_) => assert_eq!(m.kernel(), None),
    }
}

/// A bzImage as far as `is_bzimage` looks.
fn fake_kernel() -> Vec<u8> {
    let mut k = vec![0u8; 0x210];
    k[0x1FE] = 0x55;
    k[0x1FF] = 0xAA;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k
}

fuzz_target!(|data: &[u8]| {
    read_raw(data, Policy::STRICT);
    read_raw(
        data,
        Policy {
            allow_symlinks: true,
            ..Policy::INITRAMFS
        },
    );
    parse_module(data, &Limits::PLATFORM);
    parse_module(data, &Limits::APP);

    // The input as the manifest of an otherwise well-formed platform module.
    let mut w = cpio::Writer::new();
    if w.file(MANIFEST_ENTRY, 0o444, data).is_ok()
        && w.file(KERNEL_PATH, 0o444, &fake_kernel()).is_ok()
    {
        let archive = w.finish();
        parse_module(&archive, &Limits::PLATFORM);
        parse_module(&archive, &Limits::APP);
    }
});
