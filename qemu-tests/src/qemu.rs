//! QEMU harness (todo)
