//! Tier 2: the store in hosted mode, with image files standing in for disks (`--disk`).

use std::path::Path;
use std::time::Duration;

use kaos_protocol::{
    DiskState, ErrorCode, HostSet, Request, Response, StoreInit, StoreMode, StoreReport, truncated,
};
use kaos_qemu_tests::disk::DiskImage;
use kaos_qemu_tests::hosted::HostedHost;
use kaos_qemu_tests::{netns, skip};

const KATTACH: &str = env!("CARGO_BIN_EXE_kattach");
const READY: Duration = Duration::from_secs(10);

fn launch(test: &str, hostname: &str, extra: &[&str]) -> Option<HostedHost> {
    if let Some(reason) = netns::unavailable() {
        skip(test, &reason);
        return None;
    }
    Some(HostedHost::launch_with(Path::new(KATTACH), hostname, extra).expect("launch"))
}

fn report(client: &mut kaosctl::Client) -> StoreReport {
    for _ in 0..100 {
        match client.request(Request::StoreStatus).expect("store status") {
            Response::StoreStatus(r) if r.ready_ms.is_some() => return r,
            Response::StoreStatus(_) => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("store never ready")
}

/// The disk's name as `store status` lists it (the file name in hosted mode).
fn disk_name(disk: &DiskImage) -> String {
    disk.path()
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// The host name in effect once the store is up (the endpoint answers before the store is
/// read, so the hello may still carry the command-line name).
fn hostname_after_store(client: &mut kaosctl::Client) -> String {
    report(client);
    match client.request(Request::HostGet).expect("host get") {
        Response::Host(h) => h.hostname.to_string(),
        other => panic!("unexpected {other:?}"),
    }
}

fn set_hostname(
    client: &mut kaosctl::Client,
    name: &str,
) -> Result<Response, kaosctl::ClientError> {
    client.request(Request::HostSet(HostSet {
        key: truncated("hostname"),
        value: truncated(name),
    }))
}

fn reboot_and_reconnect(host: &HostedHost, client: &mut kaosctl::Client) -> kaosctl::Client {
    let before = host.log().matches("management endpoint ready").count();
    assert_eq!(
        client.request(Request::Reboot).expect("reboot"),
        Response::Accepted
    );
    let deadline = std::time::Instant::now() + READY;
    while host.log().matches("management endpoint ready").count() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no restart:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    host.wait_ready(READY).expect("back")
}

#[test]
fn blank_disk_is_listed_then_initialised_adopted_and_kept_across_reboots() {
    let disk = DiskImage::blank("hosted-store", 32).expect("disk");
    let path = disk.path().to_string_lossy().into_owned();
    let Some(host) = launch(
        "blank_disk_lifecycle",
        "hs-1",
        &["--store", "auto", "--disk", &path],
    ) else {
        return;
    };
    let mut client = host.wait_ready(READY).expect("ready");
    let r = report(&mut client);
    assert_eq!(r.mode, StoreMode::Memory);
    assert_eq!(r.disks[0].state, DiskState::Blank);
    let before = disk.fingerprint().expect("hash");
    assert_eq!(
        before,
        DiskImage::blank("zeros", 32)
            .expect("disk")
            .fingerprint()
            .expect("hash")
    );

    let init = Request::StoreInit(StoreInit {
        device: truncated(&disk_name(&disk)),
        force: false,
    });
    let Response::StoreStatus(r) = client.request(init).expect("init") else {
        panic!("init")
    };
    assert_eq!(r.mode, StoreMode::Disk);
    assert!(matches!(
        set_hostname(&mut client, "kept-1"),
        Ok(Response::Host(_))
    ));

    let mut client = reboot_and_reconnect(&host, &mut client);
    let r = report(&mut client);
    assert_eq!(
        r.mode,
        StoreMode::Disk,
        "adopted at boot because it carries our superblock"
    );
    assert_eq!(r.disks[0].state, DiskState::InUse);
    assert_eq!(hostname_after_store(&mut client), "kept-1");

    // Initialising the disk in use is refused even with --force.
    let again = Request::StoreInit(StoreInit {
        device: truncated(&disk_name(&disk)),
        force: true,
    });
    match client.request(again) {
        Err(kaosctl::ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::Conflict),
        other => panic!("re-init of the store in use: {other:?}"),
    }
}

#[test]
fn settings_in_a_state_file_survive_a_restart_and_bad_values_are_refused() {
    let dir = std::env::temp_dir().join(format!("kaos-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("state.redb");
    let file_arg = file.to_string_lossy().into_owned();
    let Some(host) = launch("state_file", "hs-2", &["--state-file", &file_arg]) else {
        return;
    };
    let mut client = host.wait_ready(READY).expect("ready");
    assert_eq!(report(&mut client).mode, StoreMode::File);
    match set_hostname(&mut client, "-not valid-") {
        Err(kaosctl::ClientError::Refused { code, .. }) => {
            assert_eq!(code, ErrorCode::InvalidArgument)
        }
        other => panic!("bad hostname accepted: {other:?}"),
    }
    let unknown = client.request(Request::HostSet(HostSet {
        key: truncated("colour"),
        value: truncated("blue"),
    }));
    assert!(matches!(
        unknown,
        Err(kaosctl::ClientError::Refused {
            code: ErrorCode::InvalidArgument,
            ..
        })
    ));
    assert!(matches!(
        set_hostname(&mut client, "kept-2"),
        Ok(Response::Host(_))
    ));
    let mut client = reboot_and_reconnect(&host, &mut client);
    assert_eq!(hostname_after_store(&mut client), "kept-2");
    let Response::Host(h) = client.request(Request::HostGet).expect("get") else {
        panic!("get")
    };
    assert_eq!(
        h.entries.len(),
        1,
        "only the valid setting was stored: {h:?}"
    );
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wanted_disk_that_is_not_ours_degrades_to_memory_and_is_not_written() {
    let disk = DiskImage::blank("hosted-foreign", 32).expect("disk");
    disk.overwrite(510, &[0x55, 0xaa]).expect("MBR signature");
    let before = disk.fingerprint().expect("hash");
    let path = disk.path().to_string_lossy().into_owned();
    let Some(host) = launch("foreign_disk", "hs-3", &["--store", &path, "--disk", &path]) else {
        return;
    };
    let mut client = host.wait_ready(READY).expect("ready");
    let r = report(&mut client);
    assert_eq!(r.mode, StoreMode::Memory);
    let why = r.degraded.map(|s| s.to_string()).unwrap_or_default();
    assert!(why.contains("MBR"), "status says why: {why:?}");
    let init = Request::StoreInit(StoreInit {
        device: truncated(&disk_name(&disk)),
        force: false,
    });
    match client.request(init) {
        Err(kaosctl::ClientError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::Conflict);
            assert!(message.contains("MBR"), "{message}");
        }
        other => panic!("init of a foreign disk without --force: {other:?}"),
    }
    assert!(matches!(
        set_hostname(&mut client, "mem"),
        Ok(Response::Host(_))
    ));
    drop(client);
    drop(host);
    assert_eq!(
        disk.fingerprint().expect("hash"),
        before,
        "the foreign disk was written"
    );
}

/// Writes both superblock slots of a store image with `format`.
fn stamp_format(disk: &DiskImage, format: u32) {
    let mut slot = kaos_store::device::Slot::new([5; 16]);
    slot.format = format;
    slot.seq = 10;
    for offset in kaos_store::device::SLOT_OFFSETS {
        disk.overwrite(offset, &slot.emit()).expect("write slot");
    }
}

#[test]
fn store_disks_from_a_newer_kattach_or_with_a_broken_superblock_are_left_alone() {
    // vda: a store written by a newer format; vdb: our magic with a garbage checksum.
    let newer = DiskImage::blank("hosted-newer", 32).expect("disk");
    kaos_store::init_device(newer.path(), false, [5; 16]).expect("init");
    stamp_format(&newer, kaos_store::device::FORMAT + 1);
    let broken = DiskImage::blank("hosted-broken", 32).expect("disk");
    let mut slot = kaos_store::device::Slot::new([6; 16]).emit();
    slot[kaos_store::device::field::CRC.start] ^= 0xff;
    broken.overwrite(0, &slot).expect("write slot");
    let before = (
        newer.fingerprint().expect("hash"),
        broken.fingerprint().expect("hash"),
    );

    let (a, b) = (
        newer.path().to_string_lossy().into_owned(),
        broken.path().to_string_lossy().into_owned(),
    );
    let Some(host) = launch(
        "newer_and_broken",
        "hs-5",
        &["--store", "auto", "--disk", &a, "--disk", &b],
    ) else {
        return;
    };
    let mut client = host.wait_ready(READY).expect("ready");
    let r = report(&mut client);
    assert_eq!(r.mode, StoreMode::Memory);
    let why = r.degraded.map(|s| s.to_string()).unwrap_or_default();
    assert!(why.contains("newer format"), "status says why: {why:?}");
    let states: Vec<DiskState> = r.disks.iter().map(|d| d.state).collect();
    assert!(
        states.contains(&DiskState::NewerFormat) && states.contains(&DiskState::Corrupt),
        "{states:?}"
    );
    assert!(matches!(
        set_hostname(&mut client, "still-serving"),
        Ok(Response::Host(_))
    ));
    drop(client);
    drop(host);
    let after = (
        newer.fingerprint().expect("hash"),
        broken.fingerprint().expect("hash"),
    );
    assert_eq!(before, after, "neither disk was written");
}
