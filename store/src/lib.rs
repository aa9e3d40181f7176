//! `kaos-store`: the host's configuration store.
//!
//! One [redb] database holds every setting of a KaOS host: host settings, keys, VLANs, IP pools
//! and leases, firewall rules, App Modules, configuration groups, VM images, VMs and a bounded
//! event log. This comment is the design note; `schema.rs` lists every table.
//!
//! # Design principles
//!
//! - **A failed disk never stops the host.** Every operation returns a [`StoreError`]; nothing
//!   here panics on bad bytes, and the redb database is opened with its integrity check, which
//!   reports a damaged file as [`StoreError::Corrupt`] where a plain open may panic. What the host
//!   does then ("degraded": keep running on a [`Location::Memory`] store, record
//!   [`EventKind::StoreDegraded`], show the reason in `kaosctl store status`) is decided by
//!   `kattach`, not by this crate.
//! - **A disk that is not ours is never written.** [`Store::open`] on a device reads its
//!   superblock first ([`probe`] only reads) and refuses anything that is not a KaOS store with
//!   the probe's verdict ([`StoreError::NotOurs`], [`StoreError::Corrupt`], …). Only
//!   [`init_device`] writes a superblock, and on anything but a blank device only when forced.
//! - **Acknowledged means durable.** Every write is its own redb transaction committed with
//!   `Durability::Immediate`: when [`Store::set_setting`] returns `Ok`, the value survives a
//!   crash or power loss.
//!
//! # Backends
//!
//! redb reaches storage through its `StorageBackend` trait (length, read, write, set length,
//! sync). [`Location`] picks one:
//!
//! | location | backend | used for |
//! |---|---|---|
//! | [`Location::Device`] | [`device::DeviceBackend`]: a raw block device, our superblock in front of redb's region, no filesystem | a host with a store disk |
//! | [`Location::File`] | redb's own file backend | hosted mode, tests, benches |
//! | [`Location::Memory`] | redb's `InMemoryBackend` | no disk, or the disk failed (degraded) |
//!
//! [`fault::FaultyBackend`] wraps any backend and fails a chosen call; it is public so that the
//! integration tests (and anyone debugging a failure report) can drive the real store with it.
//!
//! # The device format
//!
//! ```text
//! 0        4 KiB    8 KiB                1 MiB                                   capacity
//! ├ slot A ┼ slot B ┼── zero ────────────┼── redb's region: data_len bytes ──┬─ unused ─┤
//! ```
//!
//! A slot ([`device::Slot`]) holds the magic `KAOSSTOR`, the format version, the host id, the
//! data offset (1 MiB), redb's logical length (`data_len`) and a sequence number, all covered by
//! a CRC-32. The valid slot with the highest sequence number wins. redb needs a storage length
//! the way a file has one; a raw device has only its capacity, so the length lives in the
//! superblock and changes only through `set_len`.
//!
//! # Why a crash loses nothing acknowledged
//!
//! - **Data**: redb never overwrites live pages. A commit writes new pages and then flips the
//!   primary bit of its header between two commit slots, each with a checksum, and syncs; after a
//!   crash the newest commit slot whose checksum holds is used and the allocator is rebuilt from
//!   the trees. An interrupted commit therefore leaves the previous commit intact.
//! - **Length**: `set_len(n)` first zeroes any newly exposed bytes (redb expects new storage to
//!   read as zero), then writes the *other* slot with `seq + 1` and syncs, then the first slot
//!   with `seq + 2` and syncs. A torn write of either slot leaves the other one valid and redb
//!   sees either the old length (the call had not returned, so redb wrote nothing beyond it) or
//!   the new one (already zeroed). After the call both slots carry the same length, so one slot
//!   rotting later is survivable too. redb grows and shrinks its storage rarely (by regions), so
//!   the two extra syncs are not on the commit path.
//! - **Creation**: redb creates a database by sizing the storage, writing its header and only
//!   then its magic number. Storage cut off in between would be refused by redb forever, so the
//!   store empties storage that lacks the magic and holds nothing past the header page, and lets
//!   redb create it again (`creation.rs`; the fault test found this). Anything else that is not
//!   a redb database is reported as [`StoreError::Corrupt`], never overwritten.
//! - **Verified by tests**: `tests/faults.rs` fails every backend call of a workload in turn (once,
//!   and from then on), on memory and on the device backend, and checks that the reopened
//!   database equals a model of what was acknowledged; `tests/crash_consistency.rs` SIGKILLs a
//!   writer hundreds of times, on a file and on a device, and checks every acknowledged write.
//!   Process death keeps the page cache, so power loss itself rests on the argument above and on
//!   `fsync` reaching the medium (`sync_data` on a block device flushes the drive's cache).
//!
//! Opening reads the whole database (redb's integrity check). That is milliseconds for the
//! configuration; when bulk content (App Module chunks) arrives, quick-repair commits are the
//! cheaper way to keep a damaged file from panicking the open.
//!
//! Schema changes go through [`schema::migrate`], which runs on every open: ordered steps, all
//! in one write transaction. A database whose schema is newer than this build is refused, not
//! migrated; a device whose superblock format is newer is not written at all.
#![deny(unsafe_code)]

mod apps;
pub mod bench;
mod creation;
pub mod device;
mod error;
pub mod fault;
mod net;
pub mod schema;
mod store;

#[cfg(test)]
mod migration_tests;

pub use apps::{GroupRecord, ImageRecord};
pub use device::{MIN_DEVICE_BYTES, Probe, init_device, probe};
pub use error::StoreError;
pub use net::Lease;
pub use schema::{
    ClientKey, EVENT_CAPACITY, EventKind, EventRecord, ModuleRecord, NicRecord, VmRecord,
};
pub use store::{Location, Store};
