//! [`Store`]: the typed face of the database.

use std::fs::OpenOptions;
use std::path::PathBuf;

use redb::backends::{FileBackend, InMemoryBackend};
use redb::{
    Builder, Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageBackend,
};

use crate::creation::FinishCreation;
use crate::device::DeviceBackend;
use crate::schema::{
    self, CLIENT_KEY_PREFIX, ClientKey, EVENT_CAPACITY, EVENTS, HOST_SETTINGS, KEY_HOST, KEYS,
    META, META_NEXT_EVENT_SEQ, MODULE_CHUNK_BYTES, MODULE_CHUNKS, MODULES, ModuleRecord, VMS,
    VmRecord,
};
use crate::{EventRecord, StoreError};
use kaos_protocol::ModuleInfo;
use sha2::{Digest as _, Sha256};

/// Removes those of `chunks` that no module other than `except` still lists.
fn drop_unreferenced(
    txn: &redb::WriteTransaction,
    chunks: &[[u8; 32]],
    except: &str,
) -> Result<(), StoreError> {
    let mut keep = std::collections::HashSet::new();
    {
        let modules = txn.open_table(MODULES)?;
        for entry in modules.iter()? {
            let (name, bytes) = entry?;
            if name.value() == except {
                // Still listed when replaced: its new record is what counts.
                if let Ok(record) = postcard::from_bytes::<ModuleRecord>(bytes.value()) {
                    keep.extend(record.chunks);
                }
                continue;
            }
            let record: ModuleRecord = postcard::from_bytes(bytes.value()).map_err(|error| {
                StoreError::Corrupt(format!("module {}: {error}", name.value()))
            })?;
            keep.extend(record.chunks);
        }
    }
    let mut table = txn.open_table(MODULE_CHUNKS)?;
    for hash in chunks {
        if !keep.contains(hash) {
            table.remove(hash)?;
        }
    }
    Ok(())
}

/// redb's page cache. The whole configuration is a few MiB; PID 1 should not hold 1 GiB (redb's
/// default ceiling).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A regular file (hosted mode, tests), created if absent.
    File(PathBuf),
    /// A raw block device initialised with [`crate::init_device`].
    Device(PathBuf),
    /// Memory only: gone at power-off (degraded mode, tests).
    Memory,
}

/// The host's configuration database.
#[derive(Debug)]
pub struct Store {
    db: Database,
    location: Location,
    host_id: Option<[u8; 16]>,
}

impl Store {
    /// The redb database, for the benches and the network tables in this crate.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// Opens the store at `location`, bringing its schema up to date.
    ///
    /// A file is created if absent. A device is opened only if [`crate::probe`] finds our
    /// superblock; otherwise the error says what was found and nothing was written.
    pub fn open(location: &Location) -> Result<Store, StoreError> {
        let (db, host_id) = match location {
            Location::File(path) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)?;
                (open_db(FileBackend::new(file)?)?, None)
            }
            Location::Device(path) => {
                let (backend, slot) = DeviceBackend::open(path)?;
                (open_db(backend)?, Some(slot.host_id))
            }
            Location::Memory => (open_db(InMemoryBackend::new())?, None),
        };
        Self::finish_open(db, location.clone(), host_id)
    }

    /// A fresh, empty store in memory.
    pub fn memory() -> Store {
        Self::open(&Location::Memory).expect("an in-memory store always opens")
    }

    /// Opens a store on any redb backend, e.g. a [`crate::fault::FaultyBackend`]. For tests and
    /// tools; [`Store::location`] reports [`Location::Memory`] for it.
    pub fn open_backend(backend: impl StorageBackend) -> Result<Store, StoreError> {
        Self::finish_open(open_db(backend)?, Location::Memory, None)
    }

    fn finish_open(
        db: Database,
        location: Location,
        host_id: Option<[u8; 16]>,
    ) -> Result<Store, StoreError> {
        schema::migrate(&db)?;
        Ok(Store {
            db,
            location,
            host_id,
        })
    }

    /// Where this store lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The host id from the device superblock; `None` for files and memory.
    pub fn host_id(&self) -> Option<[u8; 16]> {
        self.host_id
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::stored_version(&self.db)
    }

    /// The value of setting `key`, if set.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HOST_SETTINGS)?;
        Ok(table.get(key)?.map(|value| value.value().to_owned()))
    }

    /// Sets `key` to `value`; durable when it returns `Ok`.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let txn = self.begin_durable_write()?;
        txn.open_table(HOST_SETTINGS)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    /// Every setting, sorted by key.
    pub fn settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HOST_SETTINGS)?;
        let mut settings = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            settings.push((key.value().to_owned(), value.value().to_owned()));
        }
        Ok(settings)
    }

    /// Appends `event` to the log and returns its sequence number (from 1, never reused).
    ///
    /// The log keeps the newest [`EVENT_CAPACITY`] events; older ones are dropped in the same
    /// transaction. Durable when it returns `Ok`.
    pub fn record_event(&self, event: &EventRecord) -> Result<u64, StoreError> {
        let bytes = postcard::to_allocvec(event)
            .map_err(|error| StoreError::Database(format!("encoding an event: {error}")))?;
        let txn = self.begin_durable_write()?;
        let seq = {
            let mut meta = txn.open_table(META)?;
            let seq = meta.get(META_NEXT_EVENT_SEQ)?.map_or(1, |v| v.value());
            meta.insert(META_NEXT_EVENT_SEQ, seq + 1)?;
            seq
        };
        {
            let mut events = txn.open_table(EVENTS)?;
            events.insert(seq, bytes.as_slice())?;
            for _ in EVENT_CAPACITY..events.len()? {
                events.pop_first()?;
            }
        }
        txn.commit()?;
        Ok(seq)
    }

    /// Up to `limit` events with a sequence number greater than `after`, oldest first.
    pub fn events(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, EventRecord)>, StoreError> {
        let first = match after {
            None => 0,
            Some(after) => match after.checked_add(1) {
                Some(first) => first,
                None => return Ok(Vec::new()),
            },
        };
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut events = Vec::new();
        for entry in table.range(first..)?.take(limit) {
            let (seq, bytes) = entry?;
            let seq = seq.value();
            let record = postcard::from_bytes(bytes.value())
                .map_err(|error| StoreError::Corrupt(format!("event {seq}: {error}")))?;
            events.push((seq, record));
        }
        Ok(events)
    }

    /// The host's static secret key, if one was stored.
    pub fn host_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KEYS)?;
        let Some(value) = table.get(KEY_HOST)? else {
            return Ok(None);
        };
        <[u8; 32]>::try_from(value.value())
            .map(Some)
            .map_err(|_| StoreError::Corrupt("host key is not 32 bytes".into()))
    }

    /// Stores the host's static secret key; durable when it returns `Ok`.
    pub fn set_host_key(&self, secret: &[u8; 32]) -> Result<(), StoreError> {
        let txn = self.begin_durable_write()?;
        txn.open_table(KEYS)?.insert(KEY_HOST, secret.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Every authorised client key, sorted by name.
    pub fn client_keys(&self) -> Result<Vec<(String, ClientKey)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KEYS)?;
        let mut keys = Vec::new();
        for entry in table.range(CLIENT_KEY_PREFIX..)? {
            let (id, bytes) = entry?;
            let Some(name) = id.value().strip_prefix(CLIENT_KEY_PREFIX) else {
                break;
            };
            let record = postcard::from_bytes(bytes.value())
                .map_err(|error| StoreError::Corrupt(format!("client key {name}: {error}")))?;
            keys.push((name.to_owned(), record));
        }
        Ok(keys)
    }

    /// Authorises (or replaces) client key `name`; durable when it returns `Ok`.
    pub fn put_client_key(&self, name: &str, record: &ClientKey) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(record)
            .map_err(|error| StoreError::Database(format!("encoding a key: {error}")))?;
        let txn = self.begin_durable_write()?;
        txn.open_table(KEYS)?.insert(
            format!("{CLIENT_KEY_PREFIX}{name}").as_str(),
            bytes.as_slice(),
        )?;
        txn.commit()?;
        Ok(())
    }

    /// Withdraws client key `name`; returns whether it existed. Durable when it returns `Ok`.
    pub fn remove_client_key(&self, name: &str) -> Result<bool, StoreError> {
        let txn = self.begin_durable_write()?;
        let existed = txn
            .open_table(KEYS)?
            .remove(format!("{CLIENT_KEY_PREFIX}{name}").as_str())?
            .is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Every stored module, sorted by name.
    pub fn modules(&self) -> Result<Vec<(String, ModuleRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MODULES)?;
        let mut modules = Vec::new();
        for entry in table.iter()? {
            let (name, bytes) = entry?;
            let name = name.value().to_owned();
            let record = postcard::from_bytes(bytes.value())
                .map_err(|error| StoreError::Corrupt(format!("module {name}: {error}")))?;
            modules.push((name, record));
        }
        Ok(modules)
    }

    /// Stores module `record.info.name` with the file `bytes` (replacing a module of that name),
    /// all in one durable transaction. Chunks are content-addressed, so versions share them.
    pub fn put_module(&self, record: &ModuleInfo, bytes: &[u8]) -> Result<(), StoreError> {
        let name = record.name.as_str();
        let previous = self.module_record(name)?;
        let txn = self.begin_durable_write()?;
        let mut chunks = Vec::new();
        {
            let mut table = txn.open_table(MODULE_CHUNKS)?;
            for chunk in bytes.chunks(MODULE_CHUNK_BYTES) {
                let hash: [u8; 32] = Sha256::digest(chunk).into();
                if table.get(hash)?.is_none() {
                    table.insert(hash, chunk)?;
                }
                chunks.push(hash);
            }
        }
        let stored = ModuleRecord {
            info: record.clone(),
            chunks,
        };
        let encoded = postcard::to_allocvec(&stored)
            .map_err(|error| StoreError::Database(format!("encoding module {name}: {error}")))?;
        txn.open_table(MODULES)?.insert(name, encoded.as_slice())?;
        if let Some(old) = previous {
            drop_unreferenced(&txn, &old.chunks, name)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn module_record(&self, name: &str) -> Result<Option<ModuleRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MODULES)?;
        let Some(bytes) = table.get(name)? else {
            return Ok(None);
        };
        postcard::from_bytes(bytes.value())
            .map(Some)
            .map_err(|error| StoreError::Corrupt(format!("module {name}: {error}")))
    }

    /// The `.aqi` file of module `name`, reassembled and checked chunk by chunk and whole.
    pub fn module_bytes(&self, name: &str) -> Result<Option<(ModuleInfo, Vec<u8>)>, StoreError> {
        let Some(record) = self.module_record(name)? else {
            return Ok(None);
        };
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MODULE_CHUNKS)?;
        let mut bytes = Vec::with_capacity(usize::try_from(record.info.size).unwrap_or(0));
        for hash in &record.chunks {
            let chunk = table
                .get(hash)?
                .ok_or_else(|| StoreError::Corrupt(format!("module {name}: a chunk is missing")))?;
            if <[u8; 32]>::from(Sha256::digest(chunk.value())) != *hash {
                return Err(StoreError::Corrupt(format!(
                    "module {name}: a chunk is damaged"
                )));
            }
            bytes.extend_from_slice(chunk.value());
        }
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != record.info.sha256 {
            return Err(StoreError::Corrupt(format!(
                "module {name}: its SHA-256 does not match"
            )));
        }
        Ok(Some((record.info, bytes)))
    }

    /// Deletes module `name` and the chunks no other module uses; returns whether it existed.
    /// [`StoreError::Conflict`] while a group or an image names it.
    pub fn remove_module(&self, name: &str) -> Result<bool, StoreError> {
        let Some(old) = self.module_record(name)? else {
            return Ok(false);
        };
        let txn = self.begin_durable_write()?;
        if let Some(user) = crate::apps::module_users(&txn, name)? {
            return Err(StoreError::Conflict(format!(
                "{user} uses module {name}; delete it first"
            )));
        }
        txn.open_table(MODULES)?.remove(name)?;
        drop_unreferenced(&txn, &old.chunks, name)?;
        txn.commit()?;
        Ok(true)
    }

    /// Every VM, sorted by name.
    pub fn vms(&self) -> Result<Vec<(String, VmRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(VMS)?;
        let mut vms = Vec::new();
        for entry in table.iter()? {
            let (name, bytes) = entry?;
            let name = name.value().to_owned();
            let record = postcard::from_bytes(bytes.value())
                .map_err(|error| StoreError::Corrupt(format!("VM {name}: {error}")))?;
            vms.push((name, record));
        }
        Ok(vms)
    }

    /// Creates or replaces VM `record.spec.name`; durable when it returns `Ok`.
    pub fn put_vm(&self, record: &VmRecord) -> Result<(), StoreError> {
        let name = record.spec.name.as_str();
        let bytes = postcard::to_allocvec(record)
            .map_err(|error| StoreError::Database(format!("encoding VM {name}: {error}")))?;
        let txn = self.begin_durable_write()?;
        txn.open_table(VMS)?.insert(name, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Deletes VM `name` with its leases and the rules that name it, in one transaction;
    /// returns whether it existed. Durable when it returns `Ok`.
    pub fn remove_vm(&self, name: &str) -> Result<bool, StoreError> {
        let txn = self.begin_durable_write()?;
        let existed = txn.open_table(VMS)?.remove(name)?.is_some();
        crate::net::release_vm(&txn, name)?;
        txn.commit()?;
        Ok(existed)
    }

    pub(crate) fn begin_durable_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        Ok(txn)
    }
}

/// Every open goes through here: a small cache; the integrity check, so that a damaged database
/// is reported as `Corrupt` instead of trusted (a plain redb open may panic on one, and a panic in
/// PID 1 reboots the host); and [`FinishCreation`], so that an interrupted creation is redone.
fn open_db(backend: impl StorageBackend) -> Result<Database, StoreError> {
    let db = Builder::new()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true)
        .create_with_backend(FinishCreation::new(backend))?;
    Ok(db)
}

#[cfg(test)]
mod tests;
