//! Schema v1 → v2 on a real v1 database file: made by the v1 migration step with v1's record
//! layout, closed, and opened again by this build.

use std::net::Ipv4Addr;

use redb::{Database, ReadableDatabase, TableHandle};

use crate::schema::{self, v1};
use crate::{Location, NicRecord, Store, StoreError, VmRecord};
use kaos_protocol::{RestartPolicy, RuleAction, RuleDirection, RuleProtocol, RuleScope, RuleSpec};
use kaos_protocol::{VlanSpec, truncated};

fn v1_vm(name: &str, running: bool) -> v1::VmRecord {
    v1::VmRecord {
        spec: v1::VmSpec {
            name: truncated(name),
            vcpus: 2,
            memory_mib: 128,
            cmdline: truncated("quiet"),
            platform: truncated("vkaos"),
            restart: RestartPolicy::Always,
        },
        running,
    }
}

/// Writes a v1 database file the way a v1 build did: the v1 tables, version 1, two VM records
/// in v1's layout.
fn write_v1(path: &std::path::Path) -> Result<(), StoreError> {
    let db = Database::create(path)?;
    assert_eq!(schema::migrate_to(&db, 1)?, 0);
    let txn = db.begin_write()?;
    {
        let mut vms = txn.open_table(schema::VMS)?;
        for (name, running) in [("db-1", false), ("web-1", true)] {
            let bytes = postcard::to_allocvec(&v1_vm(name, running)).expect("encodes");
            vms.insert(name, bytes.as_slice())?;
        }
        txn.open_table(schema::HOST_SETTINGS)?
            .insert("hostname", "old-host")?;
    }
    txn.commit()?;
    Ok(())
}

#[test]
fn a_v1_file_is_migrated_with_its_vms() -> Result<(), StoreError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v1.redb");
    write_v1(&path)?;
    {
        let db = Database::open(&path)?;
        assert_eq!(schema::stored_version(&db)?, 1);
        let names: Vec<String> = db
            .begin_read()?
            .list_tables()?
            .map(|t| t.name().to_owned())
            .collect();
        assert!(names.iter().any(|n| n == "leases"), "{names:?}");
    }
    let store = Store::open(&Location::File(path.clone()))?;
    assert_eq!(store.schema_version()?, schema::SCHEMA_VERSION);
    let vms = store.vms()?;
    assert_eq!(vms.len(), 2);
    assert_eq!(vms[1].1, VmRecord::from(v1_vm("web-1", true)));
    assert!(vms[1].1.running && vms[1].1.nics.is_empty() && vms[1].1.spec.nics.is_empty());
    assert_eq!(store.setting("hostname")?.as_deref(), Some("old-host"));
    assert!(store.vlans()?.is_empty() && store.leases()?.is_empty());
    drop(store);
    // The placeholders are gone, the lease table is there, and a second open is a no-op.
    let db = Database::open(&path)?;
    let names: Vec<String> = db
        .begin_read()?
        .list_tables()?
        .map(|t| t.name().to_owned())
        .collect();
    assert!(!names.iter().any(|n| n == "leases" || n == "ip_pools"));
    assert!(names.iter().any(|n| n == "nic_leases"));
    assert_eq!(schema::migrate(&db)?, schema::SCHEMA_VERSION);
    Ok(())
}

#[test]
fn a_v1_record_that_does_not_decode_fails_the_migration_and_leaves_v1() -> Result<(), StoreError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.redb");
    write_v1(&path)?;
    {
        let db = Database::open(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(schema::VMS)?
            .insert("broken", [0xffu8; 3].as_slice())?;
        txn.commit()?;
    }
    let error = Store::open(&Location::File(path.clone())).expect_err("must refuse");
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    let db = Database::open(&path)?;
    assert_eq!(schema::stored_version(&db)?, 1, "the migration rolled back");
    Ok(())
}

fn vlan(id: u16) -> VlanSpec {
    VlanSpec {
        id,
        subnet: kaos_protocol::Ipv4Cidr {
            addr: [10, 0, u8::try_from(id).unwrap_or(0), 0],
            prefix: 24,
        },
        gateway: None,
        pool: None,
        dns: heapless::Vec::new(),
    }
}

fn vm(name: &str, nics: &[(u16, [u8; 6], [u8; 4])]) -> VmRecord {
    let mut record = VmRecord::from(v1_vm(name, false));
    record.nics = nics
        .iter()
        .map(|&(vlan, mac, ip)| NicRecord {
            vlan,
            mac,
            ipv4: Ipv4Addr::from(ip),
        })
        .collect();
    record
}

#[test]
fn vms_leases_vlans_and_rules_keep_each_other_consistent() -> Result<(), StoreError> {
    let store = Store::memory();
    store.create_vlan(&vlan(10))?;
    assert!(matches!(
        store.create_vlan(&vlan(10)),
        Err(StoreError::Conflict(_))
    ));
    let mac = [2, 0, 0, 0, 0, 1];
    store.create_vm(&vm("a", &[(10, mac, [10, 0, 10, 1])]))?;
    for (record, why) in [
        (vm("a", &[]), "exists"),
        (
            vm("b", &[(11, [2, 0, 0, 0, 0, 2], [10, 0, 11, 1])]),
            "VLAN 11",
        ),
        (
            vm("b", &[(10, [2, 0, 0, 0, 0, 2], [10, 0, 10, 1])]),
            "held by VM a",
        ),
        (vm("b", &[(10, mac, [10, 0, 10, 2])]), "MAC"),
    ] {
        let error = store.create_vm(&record).expect_err(why);
        assert!(error.to_string().contains(why), "{why}: {error}");
    }
    assert_eq!(store.vms()?.len(), 1, "refused creates wrote nothing");
    assert_eq!(store.leases()?.len(), 1);
    let rule = |scope| RuleSpec {
        scope,
        direction: RuleDirection::In,
        protocol: RuleProtocol::Any,
        ports: None,
        peer: None,
        action: RuleAction::Deny,
    };
    assert_eq!(store.add_rule(&rule(RuleScope::Vm(truncated("a"))))?, 1);
    assert_eq!(store.add_rule(&rule(RuleScope::Vlan(10)))?, 2);
    let error = store.remove_vlan(10).expect_err("in use");
    assert!(error.to_string().contains("in use by VM a"), "{error}");
    assert!(store.remove_vm("a")?);
    assert!(store.leases()?.is_empty(), "destroy released the lease");
    assert_eq!(store.rules()?.len(), 1, "the VM's rule went with it");
    let error = store.remove_vlan(10).expect_err("named by a rule");
    assert!(error.to_string().contains("rule 2"), "{error}");
    assert!(store.remove_rule(2)?);
    assert!(!store.remove_rule(2)?);
    assert!(store.remove_vlan(10)?);
    assert_eq!(
        store.add_rule(&rule(RuleScope::Vlan(10)))?,
        3,
        "ids not reused"
    );
    Ok(())
}

#[test]
fn a_v2_file_is_migrated_and_its_vms_are_no_instances() -> Result<(), StoreError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v2.redb");
    {
        let db = Database::create(&path)?;
        assert_eq!(schema::migrate_to(&db, 2)?, 0);
        let txn = db.begin_write()?;
        {
            let old = schema::v2::VmRecord::from(v1_vm("web-1", true));
            let bytes = postcard::to_allocvec(&old).expect("encodes");
            txn.open_table(schema::VMS)?
                .insert("web-1", bytes.as_slice())?;
        }
        txn.commit()?;
    }
    let store = Store::open(&Location::File(path.clone()))?;
    assert_eq!(store.schema_version()?, schema::SCHEMA_VERSION);
    let vms = store.vms()?;
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].1.image, None);
    assert!(vms[0].1.running);
    assert!(store.groups()?.is_empty() && store.images()?.is_empty());
    Ok(())
}
