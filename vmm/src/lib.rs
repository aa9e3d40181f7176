//! `kaos-vmm`: the KVM virtual machine monitor that runs vKaOS guests.
//!
//! One sandboxed `kattach vmm` process per VM: memfd-backed guest memory, Linux boot protocol,
//! vCPU threads, a 16550 serial console, virtio-mmio devices whose network queues are served by the
//! switch process over vhost-user. Nothing is implemented yet.
