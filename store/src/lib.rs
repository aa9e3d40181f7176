//! `kaos-store`: the host's configuration store.
//!
//! One redb database holds every setting of a KaOS host: host settings, keys, VLANs, IP pools and
//! leases, firewall rules, App Modules, configuration groups, VM images and VMs. Backends are a raw
//! block device (our own superblock in front of redb's region, no filesystem), a file (hosted mode)
//! and memory (degraded mode). A disk that is not ours is never written without a forced command.
//!
//! Nothing is implemented yet: the walking skeleton reports the store mode as `absent`.
#![deny(unsafe_code)]
