//! qemu tests
