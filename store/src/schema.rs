//! Every table of the store, its value types, and the migrations between schema versions.
//!
//! Structured values are postcard-encoded `&[u8]`. postcard encodes enum variants by index, so
//! the enums here only ever grow at the end; `tests::event_record_bytes_are_pinned` holds the
//! encoding still.

use redb::{
    Database, ReadableDatabase, ReadableTable, TableDefinition, TableError, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// The schema this build writes. Databases with a newer one are refused, older ones migrated.
pub const SCHEMA_VERSION: u32 = 3;

/// How many events the log keeps; recording one more drops the oldest in the same transaction.
pub const EVENT_CAPACITY: u64 = 1000;

/// Store bookkeeping: `schema_version`, `next_event_seq`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Key of the schema version in [`META`].
pub const META_SCHEMA_VERSION: &str = "schema_version";
/// Key of the next event sequence number in [`META`] (so numbers never repeat, even if the log
/// is emptied).
pub const META_NEXT_EVENT_SEQ: &str = "next_event_seq";
/// (v2) Key of the next firewall rule id in [`META`] (ids are never reused).
pub const META_NEXT_RULE_ID: &str = "next_rule_id";

/// Host settings (hostname, management address, …): key → value, both text.
pub const HOST_SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("host_settings");

/// Management keys, id → bytes: [`KEY_HOST`] → the host's 32-byte static secret;
/// `client:<name>` ([`CLIENT_KEY_PREFIX`]) → a postcard [`ClientKey`] (role and public key).
pub const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");

/// Id of the host's static secret key in [`KEYS`].
pub const KEY_HOST: &str = "host";

/// Prefix of an authorised client key's id in [`KEYS`].
pub const CLIENT_KEY_PREFIX: &str = "client:";

/// An authorised client key, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientKey {
    /// What it may do.
    pub role: kaos_protocol::Role,
    /// The key.
    pub key: kaos_protocol::keys::PublicKey,
}

/// (v2) VLANs, VLAN id → postcard [`VlanRecord`].
pub const VLANS: TableDefinition<u16, &[u8]> = TableDefinition::new("vlans");

/// A VLAN, as kept in [`VLANS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanRecord {
    /// The definition as created (id, subnet, gateway, pool, DNS).
    pub spec: kaos_protocol::VlanSpec,
}

/// (v2) Addresses held by VM NICs, (VLAN id, IPv4 address as a big-endian `u32`) → postcard
/// [`LeaseRecord`]. Written and deleted in the same transaction as the VM record that holds
/// them, so a VM never exists without its leases nor a lease without its VM.
pub const NIC_LEASES: TableDefinition<(u16, u32), &[u8]> = TableDefinition::new("nic_leases");

/// Who holds an address, as kept in [`NIC_LEASES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The VM.
    pub vm: String,
    /// Which of its NICs.
    pub nic: u8,
    /// That NIC's MAC (unique on the VLAN).
    pub mac: [u8; 6],
}

/// v1's placeholder for address pools (never written: pools live in [`VlanRecord`] since v2,
/// which deletes the table).
pub const IP_POOLS_V1: TableDefinition<&str, &[u8]> = TableDefinition::new("ip_pools");

/// v1's placeholder for DHCP leases by MAC (never written; v2 deletes it for [`NIC_LEASES`]).
pub const LEASES_V1: TableDefinition<[u8; 6], &[u8]> = TableDefinition::new("leases");

/// Firewall rules, rule id → postcard [`RuleRecord`] (v2), evaluated in id order within a
/// scope.
pub const FIREWALL_RULES: TableDefinition<u64, &[u8]> = TableDefinition::new("firewall_rules");

/// A firewall rule, as kept in [`FIREWALL_RULES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// The rule.
    pub spec: kaos_protocol::RuleSpec,
}

/// App Module metadata, module name → postcard record (version, chunk list, signature). Filled
/// by the App Modules issue.
pub const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");

/// Content-addressed module chunks, SHA-256 of the chunk → chunk bytes; shared between module
/// versions. Filled by the App Modules issue.
pub const MODULE_CHUNKS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("module_chunks");

/// (v3) Configuration groups, group name → postcard [`crate::GroupRecord`].
pub const CONFIG_GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("config_groups");

/// (v3) VM images, image name → postcard [`crate::ImageRecord`].
pub const VM_IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("vm_images");

/// VM definitions, VM name → postcard record (CPUs, memory, disks, NICs). Filled by the VMM
/// issue.
pub const VMS: TableDefinition<&str, &[u8]> = TableDefinition::new("vms");

/// A stored module, as kept in [`MODULES`]: what clients see, and the chunks of its `.aqi`
/// file in order (each a key of [`MODULE_CHUNKS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// Name, version, kind, SHA-256 and size of the whole file.
    pub info: kaos_protocol::ModuleInfo,
    /// SHA-256 of each chunk, in file order.
    pub chunks: Vec<[u8; 32]>,
}

/// Bytes per chunk of a module in [`MODULE_CHUNKS`].
pub const MODULE_CHUNK_BYTES: usize = 64 * 1024;

/// A VM, as kept in [`VMS`]: its definition, whether it is meant to run, and (v2) what its
/// NICs were given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// The definition.
    pub spec: kaos_protocol::VmSpec,
    /// Started (and to be started after every host boot) until stopped.
    pub running: bool,
    /// (v2) The NICs as assigned, in the order of `spec.nics`; each holds a [`NIC_LEASES`] entry.
    pub nics: Vec<NicRecord>,
    /// (v3) The image it is an instance of (a [`VM_IMAGES`] key), if any.
    pub image: Option<String>,
}

/// A NIC's assignment, as kept in a [`VmRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicRecord {
    /// The VLAN.
    pub vlan: u16,
    /// The MAC.
    pub mac: [u8; 6],
    /// The address.
    pub ipv4: std::net::Ipv4Addr,
}

/// The v1 layouts of [`VmRecord`] and its spec (before NICs), kept to migrate v1 databases.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    /// A v1 VM record.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct VmRecord {
        /// The definition.
        pub spec: VmSpec,
        /// Meant to run.
        pub running: bool,
    }

    /// Protocol 1.1's `VmSpec`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct VmSpec {
        /// Name.
        pub name: kaos_protocol::ObjectName,
        /// vCPUs.
        pub vcpus: u8,
        /// RAM in MiB.
        pub memory_mib: u32,
        /// Extra kernel command line.
        pub cmdline: heapless::String<{ kaos_protocol::VM_CMDLINE_MAX }>,
        /// Platform module.
        pub platform: kaos_protocol::ObjectName,
        /// Restart policy.
        pub restart: kaos_protocol::RestartPolicy,
    }

    impl From<VmRecord> for super::v2::VmRecord {
        fn from(old: VmRecord) -> Self {
            let s = old.spec;
            Self {
                spec: kaos_protocol::VmSpec {
                    name: s.name,
                    vcpus: s.vcpus,
                    memory_mib: s.memory_mib,
                    cmdline: s.cmdline,
                    platform: s.platform,
                    restart: s.restart,
                    nics: heapless::Vec::new(),
                },
                running: old.running,
                nics: Vec::new(),
            }
        }
    }

    impl From<VmRecord> for super::VmRecord {
        fn from(old: VmRecord) -> Self {
            super::v2::VmRecord::from(old).into()
        }
    }
}

/// The v2 layout of [`VmRecord`] (before images), kept to migrate v2 databases.
pub mod v2 {
    use serde::{Deserialize, Serialize};

    /// A v2 VM record.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct VmRecord {
        /// The definition.
        pub spec: kaos_protocol::VmSpec,
        /// Meant to run.
        pub running: bool,
        /// The NICs as assigned.
        pub nics: Vec<super::NicRecord>,
    }

    impl From<VmRecord> for super::VmRecord {
        fn from(old: VmRecord) -> Self {
            Self {
                spec: old.spec,
                running: old.running,
                nics: old.nics,
                image: None,
            }
        }
    }
}

/// The bounded event log, sequence number → postcard [`EventRecord`].
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Which boot recorded it (random per boot).
    pub boot_id: [u8; 16],
    /// Milliseconds since that boot (`CLOCK_BOOTTIME`; there is no trustworthy wall clock).
    pub uptime_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// Human text.
    pub message: String,
}

/// What an [`EventRecord`] reports: the protocol's own enum, so the log and the wire share one
/// append-only list of kinds (postcard encodes the index in both).
pub use kaos_protocol::EventKind;

/// One step from schema version `to - 1` to `to`, run inside the migration's write transaction.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version this step produces.
    pub to: u32,
    /// What it does.
    pub apply: fn(&WriteTransaction) -> Result<(), StoreError>,
}

/// Every migration, in order; the last one's `to` is [`SCHEMA_VERSION`].
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        to: 1,
        apply: create_tables_v1,
    },
    Migration {
        to: 2,
        apply: networking_v2,
    },
    Migration {
        to: 3,
        apply: images_v3,
    },
];

/// v0 → v1: create every table (an empty database is version 0).
fn create_tables_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?;
    txn.open_table(HOST_SETTINGS)?;
    txn.open_table(KEYS)?;
    txn.open_table(VLANS)?;
    txn.open_table(IP_POOLS_V1)?;
    txn.open_table(LEASES_V1)?;
    txn.open_table(FIREWALL_RULES)?;
    txn.open_table(MODULES)?;
    txn.open_table(MODULE_CHUNKS)?;
    txn.open_table(CONFIG_GROUPS)?;
    txn.open_table(VM_IMAGES)?;
    txn.open_table(VMS)?;
    txn.open_table(EVENTS)?;
    Ok(())
}

/// v1 → v2 (networking): pools move into the VLAN records and leases are keyed by address, so
/// v1's two empty placeholders go and [`NIC_LEASES`] comes; every VM record gains its (empty)
/// NIC lists.
fn networking_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.delete_table(IP_POOLS_V1)?;
    txn.delete_table(LEASES_V1)?;
    txn.open_table(NIC_LEASES)?;
    let mut vms = txn.open_table(VMS)?;
    let mut rewritten = Vec::new();
    for entry in vms.iter()? {
        let (name, bytes) = entry?;
        let old: v1::VmRecord = postcard::from_bytes(bytes.value())
            .map_err(|error| StoreError::Corrupt(format!("v1 VM {}: {error}", name.value())))?;
        let new = v2::VmRecord::from(old);
        let encoded = postcard::to_allocvec(&new)
            .map_err(|error| StoreError::Database(format!("encoding a VM: {error}")))?;
        rewritten.push((name.value().to_owned(), encoded));
    }
    for (name, encoded) in rewritten {
        vms.insert(name.as_str(), encoded.as_slice())?;
    }
    Ok(())
}

/// v2 → v3 (App Modules): groups and images fill their tables (created empty in v1), and every
/// VM record gains its image (none).
fn images_v3(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut vms = txn.open_table(VMS)?;
    let mut rewritten = Vec::new();
    for entry in vms.iter()? {
        let (name, bytes) = entry?;
        let old: v2::VmRecord = postcard::from_bytes(bytes.value())
            .map_err(|error| StoreError::Corrupt(format!("v2 VM {}: {error}", name.value())))?;
        let encoded = postcard::to_allocvec(&VmRecord::from(old))
            .map_err(|error| StoreError::Database(format!("encoding a VM: {error}")))?;
        rewritten.push((name.value().to_owned(), encoded));
    }
    for (name, encoded) in rewritten {
        vms.insert(name.as_str(), encoded.as_slice())?;
    }
    Ok(())
}

/// The schema version recorded in `db`; 0 for a database without one (new).
pub fn stored_version(db: &Database) -> Result<u32, StoreError> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let version = meta.get(META_SCHEMA_VERSION)?.map_or(0, |v| v.value());
    u32::try_from(version).map_err(|_| StoreError::Corrupt(format!("schema version {version}")))
}

/// Brings `db` to [`SCHEMA_VERSION`]; returns the version it found.
///
/// A current database is only read. A newer one is refused with [`StoreError::NewerFormat`] and
/// not written. Otherwise every missing step runs, with the new version, in one write transaction
/// committed durably: a crash leaves the old version or the new one, never a half-migrated store.
pub fn migrate(db: &Database) -> Result<u32, StoreError> {
    migrate_to(db, SCHEMA_VERSION)
}

/// Brings `db` to schema `target` (at most [`SCHEMA_VERSION`]); returns the version it found.
/// For tests that need a database of an older version, made the way that version made it.
#[doc(hidden)]
pub fn migrate_to(db: &Database, target: u32) -> Result<u32, StoreError> {
    let found = stored_version(db)?;
    check_not_newer(found)?;
    if found >= target {
        return Ok(found);
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    for step in MIGRATIONS
        .iter()
        .filter(|step| step.to > found && step.to <= target)
    {
        (step.apply)(&txn)?;
    }
    txn.open_table(META)?
        .insert(META_SCHEMA_VERSION, u64::from(target))?;
    txn.commit()?;
    Ok(found)
}

fn check_not_newer(found: u32) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerFormat {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_db() -> Database {
        Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("a memory database always opens")
    }

    #[test]
    fn migrations_are_contiguous_and_end_at_the_schema_version() {
        for (index, step) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(step.to).ok(), Some(index + 1));
        }
        assert_eq!(MIGRATIONS.last().map(|s| s.to), Some(SCHEMA_VERSION));
    }

    #[test]
    fn migrate_creates_every_table_once() -> Result<(), StoreError> {
        let db = memory_db();
        assert_eq!(migrate(&db)?, 0);
        assert_eq!(stored_version(&db)?, SCHEMA_VERSION);
        let txn = db.begin_read()?;
        assert_eq!(
            txn.list_tables()?.count(),
            12,
            "v2: two placeholders gone, leases added"
        );
        assert_eq!(migrate(&db)?, SCHEMA_VERSION, "second run finds it current");
        Ok(())
    }

    #[test]
    fn newer_schema_is_refused_and_not_written() -> Result<(), StoreError> {
        let db = memory_db();
        let txn = db.begin_write()?;
        txn.open_table(META)?.insert(META_SCHEMA_VERSION, 7)?;
        txn.commit()?;
        let error = migrate(&db).expect_err("a newer schema must be refused");
        assert!(
            matches!(
                error,
                StoreError::NewerFormat {
                    found: 7,
                    supported: SCHEMA_VERSION
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            db.begin_read()?.list_tables()?.count(),
            1,
            "only meta exists"
        );
        Ok(())
    }

    /// postcard is the on-disk format of the event log: these bytes must never change.
    #[test]
    fn event_record_bytes_are_pinned() -> Result<(), postcard::Error> {
        let record = EventRecord {
            boot_id: [0xAB; 16],
            uptime_ms: 300,
            kind: EventKind::PowerRequested,
            message: "off".into(),
        };
        let mut expected = vec![0xAB; 16];
        expected.extend_from_slice(&[0xAC, 0x02, 0x04, 0x03, b'o', b'f', b'f']);
        assert_eq!(postcard::to_allocvec(&record)?, expected);
        assert_eq!(postcard::from_bytes::<EventRecord>(&expected)?, record);
        let kinds = [
            EventKind::Boot,
            EventKind::StoreDegraded,
            EventKind::StoreInitialized,
            EventKind::SettingChanged,
            EventKind::PowerRequested,
            EventKind::AccessDenied,
        ];
        for (index, kind) in kinds.iter().enumerate() {
            assert_eq!(
                postcard::to_allocvec(kind)?,
                [u8::try_from(index).unwrap_or(0xFF)]
            );
        }
        Ok(())
    }
}
