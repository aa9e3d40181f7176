//! `kaosctl`: the remote management client of KaOS hosts, as a library (used by the CLI and by
//! the qemu-tests, so tests speak to a host exactly as an operator does) and a binary.
//!
//! - [`client`]: the protocol client (handshake, host key check, requests, streams).
//! - [`config`], [`known_hosts`], [`keyfile`]: the configuration directory (contexts, pins of
//!   bare endpoints, client keys).
//! - [`connect`]: from the global flags to a connection, pinning the host key at first contact.
//! - [`upload`]: module uploads (resumable, pipelined).
//! - [`view`]: how responses are shown (tables and JSON).
//!
//! The binary (`main.rs`) adds the command line: `args.rs` (the flags and commands),
//! `remote.rs` (commands sent to a host), `local.rs` (keys, contexts, completions).

pub mod client;
pub mod config;
pub mod connect;
pub mod keyfile;
pub mod known_hosts;
pub mod upload;
pub mod view;

pub use client::{Client, ClientError, ConnectOptions, HostKeyCheck};
