//! `cargo xtask`: build automation for KaOS-rs (kernel, image, QEMU runs, tests, benches).
//!
//! The steps live here as library functions so that every subcommand (and test harnesses)
//! can reuse them; `main.rs` only parses the command line and dispatches.

pub mod bench;
pub mod bench_dpdk;
pub mod bench_mgmt;
pub mod bench_store;
pub mod bench_switch;
pub mod bench_vmm;
pub mod bench_vms;
pub mod cmd;
pub mod deps;
pub mod elf;
pub mod fuzz;
pub mod image;
pub mod initramfs;
pub mod kattach;
pub mod kconfig;
pub mod kernel;
pub mod module;
pub mod paths;
pub mod run;
pub mod sha256;
pub mod suite;

pub use deps::ensure_packages;
pub use image::{ImageInfo, build_image};
