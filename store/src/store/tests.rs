//! The typed API over the memory backend.

use super::*;
use crate::EventKind;

fn event(n: u64) -> EventRecord {
    EventRecord {
        boot_id: [7; 16],
        uptime_ms: n,
        kind: EventKind::SettingChanged,
        message: format!("event {n}"),
    }
}

#[test]
fn new_store_is_at_the_schema_version_and_empty() -> Result<(), StoreError> {
    let store = Store::memory();
    assert_eq!(store.schema_version()?, schema::SCHEMA_VERSION);
    assert_eq!(store.location(), &Location::Memory);
    assert_eq!(store.host_id(), None);
    assert!(store.settings()?.is_empty());
    assert!(store.events(None, 10)?.is_empty());
    assert_eq!(store.setting("hostname")?, None);
    Ok(())
}

#[test]
fn settings_round_trip_sorted_by_key() -> Result<(), StoreError> {
    let store = Store::memory();
    store.set_setting("mgmt.ip", "dhcp")?;
    store.set_setting("hostname", "kaos-1")?;
    store.set_setting("", "empty key is a key")?;
    assert_eq!(store.setting("hostname")?.as_deref(), Some("kaos-1"));
    assert_eq!(
        store.settings()?,
        [
            ("".to_owned(), "empty key is a key".to_owned()),
            ("hostname".to_owned(), "kaos-1".to_owned()),
            ("mgmt.ip".to_owned(), "dhcp".to_owned()),
        ]
    );
    Ok(())
}

#[test]
fn set_setting_overwrites() -> Result<(), StoreError> {
    let store = Store::memory();
    store.set_setting("hostname", "a")?;
    store.set_setting("hostname", "b")?;
    assert_eq!(store.setting("hostname")?.as_deref(), Some("b"));
    assert_eq!(store.settings()?.len(), 1);
    Ok(())
}

#[test]
fn events_are_bounded_and_sequence_numbers_keep_rising() -> Result<(), StoreError> {
    let store = Store::memory();
    for n in 1..=1005 {
        assert_eq!(store.record_event(&event(n))?, n);
    }
    let all = store.events(None, usize::MAX)?;
    assert_eq!(all.len(), 1000);
    assert_eq!(
        all.first().map(|(seq, _)| *seq),
        Some(6),
        "oldest 5 dropped"
    );
    assert_eq!(all.last(), Some(&(1005, event(1005))));
    assert!(all.windows(2).all(|w| w[0].0 + 1 == w[1].0));
    assert_eq!(store.record_event(&event(1006))?, 1006);
    assert_eq!(store.events(None, 1)?[0].0, 7);
    Ok(())
}

#[test]
fn events_after_and_limit() -> Result<(), StoreError> {
    let store = Store::memory();
    for n in 1..=10 {
        store.record_event(&event(n))?;
    }
    let page = store.events(Some(3), 4)?;
    assert_eq!(
        page.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    assert_eq!(page[0].1, event(4));
    assert_eq!(store.events(Some(0), 2)?.len(), 2);
    assert!(store.events(Some(10), 5)?.is_empty());
    assert!(store.events(Some(u64::MAX), 5)?.is_empty());
    assert!(store.events(None, 0)?.is_empty());
    Ok(())
}

#[test]
fn file_store_survives_reopen() -> Result<(), StoreError> {
    let dir = tempfile::tempdir()?;
    let location = Location::File(dir.path().join("store.redb"));
    {
        let store = Store::open(&location)?;
        store.set_setting("hostname", "kaos-1")?;
        store.record_event(&event(1))?;
    }
    let store = Store::open(&location)?;
    assert_eq!(store.location(), &location);
    assert_eq!(store.setting("hostname")?.as_deref(), Some("kaos-1"));
    assert_eq!(
        store.record_event(&event(2))?,
        2,
        "sequence continues after reopen"
    );
    Ok(())
}

#[test]
fn a_file_open_elsewhere_is_refused() -> Result<(), StoreError> {
    let dir = tempfile::tempdir()?;
    let location = Location::File(dir.path().join("store.redb"));
    let _first = Store::open(&location)?;
    let error = Store::open(&location).expect_err("second open must fail");
    assert!(matches!(error, StoreError::Database(_)), "{error:?}");
    Ok(())
}

/// kattach shares one store between its threads.
#[test]
fn store_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Store>();
}

#[test]
fn keys_round_trip_and_survive_a_reopen() -> Result<(), StoreError> {
    use kaos_protocol::Role;
    use kaos_protocol::keys::PublicKey;
    let dir = tempfile::tempdir().map_err(|e| StoreError::Database(e.to_string()))?;
    let location = Location::File(dir.path().join("store.redb"));
    let store = Store::open(&location)?;
    assert_eq!(store.host_key()?, None);
    assert!(store.client_keys()?.is_empty());
    store.set_host_key(&[9; 32])?;
    let ci = ClientKey {
        role: Role::Operator,
        key: PublicKey([1; 32]),
    };
    let alice = ClientKey {
        role: Role::Admin,
        key: PublicKey([2; 32]),
    };
    store.put_client_key("ci", &ci)?;
    store.put_client_key("alice", &alice)?;
    // Settings share no ids with keys.
    store.set_setting("hostname", "h")?;
    drop(store);
    let store = Store::open(&location)?;
    assert_eq!(store.host_key()?, Some([9; 32]));
    assert_eq!(
        store.client_keys()?,
        [("alice".to_owned(), alice), ("ci".to_owned(), ci)]
    );
    assert!(store.remove_client_key("ci")?);
    assert!(!store.remove_client_key("ci")?, "already gone");
    assert_eq!(store.client_keys()?, [("alice".to_owned(), alice)]);
    Ok(())
}

fn module_info(name: &str, bytes: &[u8]) -> kaos_protocol::ModuleInfo {
    use sha2::Digest as _;
    kaos_protocol::ModuleInfo {
        name: kaos_protocol::truncated(name),
        version: kaos_protocol::truncated("1"),
        kind: kaos_protocol::ModuleKind::Platform,
        sha256: sha2::Sha256::digest(bytes).into(),
        size: bytes.len() as u64,
    }
}

#[test]
fn modules_roundtrip_share_chunks_and_free_them() -> Result<(), StoreError> {
    let store = Store::memory();
    // Three chunks; the second module shares the first two.
    let a: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let mut b = a[..2 * 65536].to_vec();
    b.extend_from_slice(b"other tail");
    store.put_module(&module_info("alpha", &a), &a)?;
    store.put_module(&module_info("beta", &b), &b)?;
    let listed: Vec<String> = store.modules()?.into_iter().map(|(n, _)| n).collect();
    assert_eq!(listed, ["alpha", "beta"]);
    assert_eq!(
        store.module_bytes("alpha")?.map(|(_, bytes)| bytes),
        Some(a)
    );
    assert!(store.remove_module("alpha")?);
    assert!(!store.remove_module("alpha")?);
    assert_eq!(store.module_bytes("alpha")?, None);
    // The shared chunks survived the removal of alpha.
    assert_eq!(
        store.module_bytes("beta")?.map(|(_, bytes)| bytes),
        Some(b.clone())
    );
    // Replacing beta with other contents frees its old chunks.
    let c = b"small".to_vec();
    store.put_module(&module_info("beta", &c), &c)?;
    assert_eq!(store.module_bytes("beta")?.map(|(_, bytes)| bytes), Some(c));
    let txn = store.database().begin_read()?;
    let chunks = txn.open_table(schema::MODULE_CHUNKS)?;
    assert_eq!(chunks.len()?, 1, "only the new chunk is left");
    Ok(())
}

#[test]
fn a_damaged_module_is_reported_not_returned() -> Result<(), StoreError> {
    let store = Store::memory();
    let a = vec![7u8; 1000];
    store.put_module(&module_info("alpha", &a), &a)?;
    let hash: [u8; 32] = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&a).into()
    };
    let txn = store.database().begin_write()?;
    txn.open_table(schema::MODULE_CHUNKS)?
        .insert(hash, b"tampered".as_slice())?;
    txn.commit()?;
    assert!(matches!(
        store.module_bytes("alpha"),
        Err(StoreError::Corrupt(_))
    ));
    Ok(())
}

#[test]
fn vms_roundtrip() -> Result<(), StoreError> {
    let store = Store::memory();
    let record = VmRecord {
        spec: kaos_protocol::VmSpec {
            name: kaos_protocol::truncated("web-1"),
            vcpus: 2,
            memory_mib: 128,
            cmdline: kaos_protocol::truncated("quiet"),
            platform: kaos_protocol::truncated("vkaos"),
            restart: kaos_protocol::RestartPolicy::OnFailure,
            nics: heapless::Vec::new(),
        },
        running: true,
        nics: Vec::new(),
        image: Some("web".into()),
    };
    store.put_vm(&record)?;
    assert_eq!(store.vms()?, vec![("web-1".to_owned(), record)]);
    assert!(store.remove_vm("web-1")?);
    assert!(store.vms()?.is_empty());
    Ok(())
}
