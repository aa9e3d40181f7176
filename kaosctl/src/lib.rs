//! `kaosctl`: the remote management client of KaOS hosts, as a library (used by the CLI and by
//! the qemu-tests, so tests speak to a host exactly as an operator does) and a binary.

pub mod client;
pub mod view;

pub use client::{Client, ClientError, ConnectOptions, HostKeyCheck};
