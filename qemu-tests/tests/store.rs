//! Tier 3: the configuration store on real (virtio-blk) disks under QEMU.

use std::process::Command;
use std::time::Duration;

use kaos_protocol::{
    AccessAdd, DiskState, ErrorCode, EventKind, EventsQuery, HostSet, KeySource, Request, Response,
    Role, Status, StoreInit, StoreMode, truncated,
};
use kaos_qemu_tests::disk::DiskImage;
use kaos_qemu_tests::qemu::{self, QemuConfig, QemuHost};
use kaos_qemu_tests::{keys, skip};

const BOOT: Duration = Duration::from_secs(120);

fn boot(hostname: &str, disks: &[&DiskImage]) -> QemuHost {
    let image = qemu::image_from_env().expect("checked by unavailable()");
    let mut config = QemuConfig::new(&image).expect("config");
    config.append = format!("kaos.hostname={hostname}");
    config.disks = disks.iter().map(|d| d.path().to_owned()).collect();
    QemuHost::launch(&config).expect("launch QEMU")
}

/// Boots on a fresh disk initialised as a store, and checks the host adopted it.
fn boot_on_store(disk_name: &str, hostname: &str) -> (DiskImage, QemuHost) {
    let disk = DiskImage::blank(disk_name, 32).expect("disk");
    kaos_store::init_device(disk.path(), false, [5; 16]).expect("init store image");
    let host = boot(hostname, &[&disk]);
    assert_eq!(
        host.store_report(BOOT).expect("store report").mode,
        StoreMode::Disk,
        "{}",
        host.tail()
    );
    (disk, host)
}

fn ask(client: &mut kaosctl::Client, request: Request) -> Response {
    client
        .request(request)
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

fn status(client: &mut kaosctl::Client) -> Status {
    match ask(client, Request::Status) {
        Response::Status(s) => s,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn hostname_set_on_an_initialised_disk_survives_a_hard_power_off() {
    if let Some(reason) = qemu::unavailable() {
        return skip("hostname_survives_power_off", &reason);
    }
    let disk = DiskImage::blank("store", 64).expect("disk");
    let host = boot("kaos-first", &[&disk]);
    let report = host.store_report(BOOT).expect("store report");
    assert_eq!(
        report.mode,
        StoreMode::Memory,
        "a blank disk is not adopted by itself"
    );
    assert!(
        report.degraded.is_none(),
        "auto with no store disk is not degraded"
    );
    assert_eq!(report.disks.len(), 1, "{report:?}");
    assert_eq!(report.disks[0].name.as_str(), "vda");
    assert_eq!(report.disks[0].state, DiskState::Blank);

    let mut client = host.client().expect("connect");
    let host_key = client.host_key();
    assert!(!status(&mut client).host_key_persistent, "memory store");
    let init = Request::StoreInit(StoreInit {
        device: truncated("vda"),
        force: false,
    });
    let Response::StoreStatus(r) = ask(&mut client, init) else {
        panic!("init failed")
    };
    assert_eq!(r.mode, StoreMode::Disk);
    assert_eq!(r.location.as_str(), "/dev/vda");
    assert!(r.host_id.is_some());
    let s = status(&mut client);
    assert!(s.host_key_persistent, "the host key moved to the disk");
    assert_eq!(s.host_key, host_key, "store init keeps the host key");
    let set = Request::HostSet(HostSet {
        key: truncated("hostname"),
        value: truncated("persisted-1"),
    });
    let Response::Host(h) = ask(&mut client, set) else {
        panic!("set failed")
    };
    assert_eq!(h.hostname.as_str(), "persisted-1");
    // Pull the plug right after the answer: the commit was durable before it was answered.
    host.kill();

    let host = boot("kaos-second", &[&disk]);
    let report = host.store_report(BOOT).expect("store report");
    assert_eq!(report.mode, StoreMode::Disk, "{report:?}\n{}", host.tail());
    assert_eq!(report.disks[0].state, DiskState::InUse);
    let mut client = host.client().expect("connect");
    assert_eq!(
        client.host_key(),
        host_key,
        "the host key generated before store init is on the disk"
    );
    let s = status(&mut client);
    assert_eq!(
        s.hostname.as_str(),
        "persisted-1",
        "the stored name wins over the command line"
    );
    let Response::Events(page) = ask(
        &mut client,
        Request::Events(EventsQuery {
            after: None,
            limit: 32,
            follow: false,
        }),
    ) else {
        panic!("events")
    };
    let kinds: Vec<EventKind> = page.events.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::StoreInitialized), "{kinds:?}");
    assert!(kinds.contains(&EventKind::SettingChanged), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| **k == EventKind::Boot).count() >= 1,
        "{kinds:?}"
    );
}

#[test]
fn corrupt_store_and_foreign_disk_are_never_written() {
    if let Some(reason) = qemu::unavailable() {
        return skip("corrupt_and_foreign_disks", &reason);
    }
    // vda: our store with its database clobbered; vdb: an ext4 filesystem.
    let corrupt = DiskImage::blank("corrupt", 32).expect("disk");
    kaos_store::init_device(corrupt.path(), false, [7; 16]).expect("init store image");
    corrupt
        .overwrite(1024 * 1024, &[0xa5; 64 * 1024])
        .expect("clobber the database");
    let ext4 = DiskImage::blank("ext4", 32).expect("disk");
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(ext4.path())
        .status();
    assert!(
        mkfs.is_ok_and(|s| s.success()),
        "mkfs.ext4 (e2fsprogs) is needed"
    );
    let before = (
        corrupt.fingerprint().expect("hash"),
        ext4.fingerprint().expect("hash"),
    );

    let host = boot("kaos-degraded", &[&corrupt, &ext4]);
    let report = host.store_report(BOOT).expect("store report");
    assert_eq!(report.mode, StoreMode::Memory, "{report:?}");
    let why = report
        .degraded
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert!(
        why.contains("/dev/vda"),
        "status says which disk and why: {why:?}\n{}",
        host.tail()
    );
    assert_eq!(report.disks[1].state, DiskState::Foreign);
    assert!(report.disks[1].detail.contains("ext2/3/4"), "{report:?}");

    let mut client = host.client().expect("the endpoint answers while degraded");
    let init = Request::StoreInit(StoreInit {
        device: truncated("vdb"),
        force: false,
    });
    match client.request(init) {
        Err(kaosctl::ClientError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::Conflict);
            assert!(message.contains("ext2/3/4"), "{message}");
        }
        other => panic!("store init on ext4 without --force: {other:?}"),
    }
    let set = Request::HostSet(HostSet {
        key: truncated("hostname"),
        value: truncated("mem-only"),
    });
    assert!(
        matches!(ask(&mut client, set), Response::Host(_)),
        "memory mode keeps serving"
    );
    host.kill();
    let after = (
        corrupt.fingerprint().expect("hash"),
        ext4.fingerprint().expect("hash"),
    );
    assert_eq!(
        before, after,
        "a corrupt store and a foreign disk are never written"
    );
}

#[test]
fn disk_dying_after_boot_degrades_to_memory_and_keeps_serving() {
    if let Some(reason) = qemu::unavailable() {
        return skip("disk_dying_after_boot", &reason);
    }
    let (_disk, host) = boot_on_store("dying", "kaos-dying");
    let mut client = host.client().expect("connect");
    let set = |name: &str| {
        Request::HostSet(HostSet {
            key: truncated("hostname"),
            value: truncated(name),
        })
    };
    assert!(matches!(ask(&mut client, set("alive")), Response::Host(_)));

    host.fail_disk(0).expect("drive_del");
    match client.request(set("after-death")) {
        Err(kaosctl::ClientError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::StoreFailed, "{message}");
        }
        other => panic!(
            "a commit to a dead disk was acknowledged: {other:?}\n{}",
            host.tail()
        ),
    }
    let report = host.store_report(BOOT).expect("store report");
    assert_eq!(report.mode, StoreMode::Memory);
    let why = report.degraded.map(|s| s.to_string()).unwrap_or_default();
    assert!(why.contains("commit failed on /dev/vda"), "{why}");
    // Still serving; the setting that failed on disk is kept in memory and in effect.
    let mut client = host.client().expect("still serving");
    let Response::Status(s) = ask(&mut client, Request::Status) else {
        panic!("status")
    };
    assert_eq!(s.hostname.as_str(), "after-death");
    assert_eq!(s.store, StoreMode::Memory);
    let Response::Events(page) = ask(
        &mut client,
        Request::Events(EventsQuery {
            after: None,
            limit: 32,
            follow: false,
        }),
    ) else {
        panic!("events")
    };
    assert!(
        page.events
            .iter()
            .any(|e| e.kind == EventKind::StoreDegraded),
        "{page:?}"
    );
}

/// On a host with a store disk, the host key and the client keys added at run time survive an
/// orderly reboot: clients that pinned the key see the same one, and the added key gets in.
#[test]
fn host_key_and_added_client_keys_survive_a_reboot() {
    if let Some(reason) = qemu::unavailable() {
        return skip("host_key_and_added_client_keys_survive_a_reboot", &reason);
    }
    let (_disk, host) = boot_on_store("keys", "kaos-keys");
    let mut client = host.client().expect("connect");
    let first = status(&mut client);
    let host_key = client.host_key();
    assert_eq!(first.host_key, host_key);
    assert!(first.host_key_persistent, "a store disk keeps the host key");

    let operator = keys::generate();
    let add = Request::AccessAdd(AccessAdd {
        name: truncated("ops-1"),
        role: Role::Operator,
        key: operator.public(),
    });
    let Response::Access(list) = ask(&mut client, add) else {
        panic!("access add failed")
    };
    assert!(
        list.entries
            .iter()
            .any(|e| e.name.as_str() == "ops-1" && e.source == KeySource::Store),
        "{list:?}"
    );
    assert_eq!(ask(&mut client, Request::Reboot), Response::Accepted);

    let second = host
        .wait_next_boot(&operator, first.boot_id, BOOT)
        .expect("the added key gets into the rebooted host");
    assert_eq!(
        second.host_key, host_key,
        "the host key survives the reboot"
    );
    assert!(second.host_key_persistent);
    let mut client = host.client_as(&operator).expect("connect as ops-1");
    assert_eq!(
        client.host_key(),
        host_key,
        "the handshake proves the same key"
    );
    let me = client.identity();
    assert_eq!(
        (me.name.as_str(), me.role, me.source),
        ("ops-1", Role::Operator, KeySource::Store)
    );
    match client.request(Request::AccessList) {
        Err(kaosctl::ClientError::Refused { code, .. }) => {
            assert_eq!(code, ErrorCode::PermissionDenied);
        }
        other => panic!("an operator listed the keys: {other:?}"),
    }
}
