//! The driver side of a virtio-net device, emulated over guest memory: what a guest's
//! virtio-net driver does to its queues, for the tests, the bench and the fuzz target. Not an
//! API.
//!
//! Each queue's descriptor `i` owns a fixed buffer (`buf_len` bytes at `bufs + i * buf_len`), as
//! drivers with preallocated buffers do; chains are made of free descriptors and freed when
//! the device returns them. [`DriverQueue::raw`] writes any descriptor at all, for hostile
//! chains.

use std::fs::File;
use std::sync::atomic::Ordering;

use kaos_net::switch::PortId;
use vhost_user_backend::{VringRwLock, VringT};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use crate::port::{GuestNic, Mem};
use crate::vnet::{HDR_LEN, NetHdr};

/// `VRING_DESC_F_NEXT`.
pub const F_NEXT: u16 = 1;
/// `VRING_DESC_F_WRITE`.
pub const F_WRITE: u16 = 2;
/// `VRING_DESC_F_INDIRECT`.
pub const F_INDIRECT: u16 = 4;

/// One split virtqueue as its driver sees it.
#[derive(Debug)]
pub struct DriverQueue {
    /// Entries.
    pub size: u16,
    /// Descriptor table.
    pub desc: GuestAddress,
    /// Available ring.
    pub avail: GuestAddress,
    /// Used ring.
    pub used: GuestAddress,
    /// Buffers: descriptor `i`'s at `bufs + i * buf_len`.
    pub bufs: GuestAddress,
    /// Bytes per buffer.
    pub buf_len: u32,
    free: Vec<u16>,
    chains: Vec<Vec<u16>>,
    avail_idx: u16,
    last_used: u16,
}

impl DriverQueue {
    /// Bytes of guest memory a queue of `size` entries with `buf_len`-byte buffers needs.
    pub fn footprint(size: u16, buf_len: u32) -> u64 {
        let n = u64::from(size);
        4096 * 3 + 16 * n + 8 * n + 8 * n + n * u64::from(buf_len)
    }

    /// Lays a queue out at `base`.
    pub fn new(base: GuestAddress, size: u16, buf_len: u32) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = GuestAddress(align(desc.0 + 16 * n));
        let used = GuestAddress(align(avail.0 + 6 + 2 * n));
        let bufs = GuestAddress(align(used.0 + 6 + 8 * n));
        Self {
            size,
            desc,
            avail,
            used,
            bufs,
            buf_len,
            free: (0..size).rev().collect(),
            chains: vec![Vec::new(); usize::from(size)],
            avail_idx: 0,
            last_used: 0,
        }
    }

    /// Descriptor `i`'s buffer.
    pub fn buf(&self, i: u16) -> GuestAddress {
        GuestAddress(self.bufs.0 + u64::from(i) * u64::from(self.buf_len))
    }

    /// Free descriptors.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Writes descriptor `i` as given.
    pub fn raw(&self, mem: &GuestMemoryMmap, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(self.desc.0 + 16 * u64::from(i));
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        let _ = mem.write_slice(&d, at);
    }

    /// Makes `head` available (the chain was written by the caller).
    pub fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail.0 + 4 + 2 * u64::from(self.avail_idx % self.size);
        let _ = mem.write_obj(head, GuestAddress(slot));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let _ = mem.store(
            self.avail_idx,
            GuestAddress(self.avail.0 + 2),
            Ordering::Release,
        );
    }

    /// Makes a chain of descriptors whose buffers hold `parts` (each at most `buf_len`), all
    /// device-readable or all device-writable of the given lengths, and publishes it. `None`
    /// without enough free descriptors.
    pub fn push(&mut self, mem: &GuestMemoryMmap, parts: &[Part<'_>]) -> Option<u16> {
        if parts.is_empty() || self.free.len() < parts.len() {
            return None;
        }
        let ids: Vec<u16> = (0..parts.len()).filter_map(|_| self.free.pop()).collect();
        for (k, (part, &i)) in parts.iter().zip(&ids).enumerate() {
            let (len, flags) = match part {
                Part::Read(bytes) => {
                    let _ = mem.write_slice(bytes, self.buf(i));
                    (u32::try_from(bytes.len()).unwrap_or(u32::MAX), 0)
                }
                Part::Write(len) => (*len, F_WRITE),
            };
            let next = ids.get(k + 1).copied();
            let flags = flags | if next.is_some() { F_NEXT } else { 0 };
            self.raw(mem, i, self.buf(i).0, len, flags, next.unwrap_or(0));
        }
        let head = ids[0];
        self.chains[usize::from(head)] = ids;
        self.publish(mem, head);
        Some(head)
    }

    /// The next chain the device returned: its head, used length, and its descriptors (freed
    /// for reuse; their buffers stay readable until the next push).
    pub fn pop_used(&mut self, mem: &GuestMemoryMmap) -> Option<(u16, u32, Vec<u16>)> {
        let idx: u16 = mem
            .load(GuestAddress(self.used.0 + 2), Ordering::Acquire)
            .ok()?;
        if idx == self.last_used {
            return None;
        }
        let slot = self.used.0 + 4 + 8 * u64::from(self.last_used % self.size);
        let id: u32 = mem.read_obj(GuestAddress(slot)).ok()?;
        let len: u32 = mem.read_obj(GuestAddress(slot + 4)).ok()?;
        self.last_used = self.last_used.wrapping_add(1);
        let head = u16::try_from(id).ok()?;
        let chain = std::mem::take(self.chains.get_mut(usize::from(head))?);
        self.free.extend(chain.iter().rev());
        Some((head, len, chain))
    }

    /// Returns descriptors the test wrote by hand to the free list.
    pub fn reclaim(&mut self, ids: &[u16]) {
        self.free.retain(|i| !ids.contains(i));
    }

    /// Takes descriptors out of the free list (for hand-written chains).
    pub fn reserve(&mut self, ids: &[u16], head: u16) {
        self.free.retain(|i| !ids.contains(i));
        self.chains[usize::from(head)] = ids.to_vec();
    }

    /// The vring of a device that uses this queue, set up as the frontend would.
    pub fn device_vring(&self, mem: &Mem, event_idx: bool) -> VringRwLock<Mem> {
        let v = <VringRwLock<Mem> as VringT<Mem>>::new(mem.clone(), self.size)
            .expect("a queue size the driver chose is valid");
        v.set_queue_size(self.size);
        v.set_queue_info(self.desc.0, self.avail.0, self.used.0)
            .expect("the driver's addresses are aligned");
        v.set_queue_event_idx(event_idx);
        v.set_queue_ready(true);
        v.set_enabled(true);
        v
    }
}

/// One descriptor's worth of a chain.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// Device-readable, holding these bytes.
    Read(&'a [u8]),
    /// Device-writable, this long.
    Write(u32),
}

/// A non-blocking eventfd.
pub fn eventfd() -> std::io::Result<File> {
    let flags = rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC;
    Ok(File::from(rustix::event::eventfd(0, flags)?))
}

/// How many times `fd` (an eventfd) was signalled since the last call.
pub fn signalled(fd: &File) -> u64 {
    let mut b = [0u8; 8];
    match rustix::io::read(fd, &mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        _ => 0,
    }
}

fn align(a: u64) -> u64 {
    (a + 4095) & !4095
}

/// Guest memory of `size` bytes at address 0, backed by a memfd (as the VMM's is).
pub fn memfd_memory(size: u64) -> std::io::Result<(GuestMemoryMmap, File)> {
    let fd = rustix::fs::memfd_create("kaos-vswitch-test", rustix::fs::MemfdFlags::CLOEXEC)?;
    let file = File::from(fd);
    file.set_len(size)?;
    let region = (
        GuestAddress(0),
        usize::try_from(size).map_err(std::io::Error::other)?,
        Some(FileOffset::new(file.try_clone()?, 0)),
    );
    let mem = GuestMemoryMmap::from_ranges_with_files([region]).map_err(std::io::Error::other)?;
    Ok((mem, file))
}

/// A guest with one virtio-net NIC: its memory and both queues, driven from this process.
#[derive(Debug)]
pub struct Guest {
    /// Its memory.
    pub mem: GuestMemoryMmap,
    /// The memfd behind it.
    pub memfd: File,
    /// Queue 0.
    pub rx: DriverQueue,
    /// Queue 1.
    pub tx: DriverQueue,
    /// The call eventfds the device signals (RX, TX).
    pub calls: [File; 2],
}

impl Guest {
    /// A guest with queues of `size` entries, RX buffers of `rx_buf` bytes and TX buffers of
    /// `tx_buf` bytes.
    pub fn new(size: u16, rx_buf: u32, tx_buf: u32) -> std::io::Result<Self> {
        let rx_len = DriverQueue::footprint(size, rx_buf);
        let tx_len = DriverQueue::footprint(size, tx_buf);
        let total = align(rx_len + tx_len + 4096);
        let (mem, memfd) = memfd_memory(total)?;
        let rx = DriverQueue::new(GuestAddress(0), size, rx_buf);
        let tx = DriverQueue::new(GuestAddress(align(rx_len)), size, tx_buf);
        Ok(Self {
            mem,
            memfd,
            rx,
            tx,
            calls: [eventfd()?, eventfd()?],
        })
    }

    /// The NIC of port `id`, with vrings over this guest's queues (no vhost-user in between:
    /// the in-process twin of a connected port).
    pub fn nic(&self, id: PortId, event_idx: bool) -> std::io::Result<GuestNic> {
        let mem: Mem = GuestMemoryAtomic::new(self.mem.clone());
        let nic = GuestNic::new(id, mem.clone());
        let rx = self.rx.device_vring(&mem, event_idx);
        let tx = self.tx.device_vring(&mem, event_idx);
        for (v, call) in [&rx, &tx].into_iter().zip(&self.calls) {
            v.set_call(Some(call.try_clone()?));
        }
        nic.set_vrings([rx, tx])?;
        Ok(nic)
    }

    /// Queues a frame for sending: the header in one descriptor, the frame in as many as
    /// it takes.
    pub fn send(&mut self, hdr: NetHdr, frame: &[u8]) -> Option<u16> {
        let h = hdr.emit(0);
        let mut parts = vec![Part::Read(&h)];
        parts.extend(frame.chunks(self.tx.buf_len as usize).map(Part::Read));
        self.tx.push(&self.mem, &parts)
    }

    /// Queues a frame for sending as Linux does with `VERSION_1`: the header and the frame in
    /// one descriptor. `None` if it does not fit a TX buffer.
    pub fn send_whole(&mut self, hdr: NetHdr, frame: &[u8]) -> Option<u16> {
        let mut bytes = hdr.emit(0).to_vec();
        bytes.extend_from_slice(frame);
        if bytes.len() > self.tx.buf_len as usize {
            return None;
        }
        self.tx.push(&self.mem, &[Part::Read(&bytes)])
    }

    /// Posts `n` RX buffers (one descriptor each).
    pub fn post_rx(&mut self, n: usize) -> usize {
        let len = self.rx.buf_len;
        (0..n)
            .take_while(|_| self.rx.push(&self.mem, &[Part::Write(len)]).is_some())
            .count()
    }

    /// TX chains the device returned.
    pub fn reap_tx(&mut self) -> usize {
        let mut n = 0;
        while self.tx.pop_used(&self.mem).is_some() {
            n += 1;
        }
        n
    }

    /// The next frame received: its header (`num_buffers` in the last field) and bytes,
    /// gathered from as many RX chains as the header says.
    pub fn recv(&mut self) -> Option<(NetHdr, u16, Vec<u8>)> {
        let (_, len, ids) = self.rx.pop_used(&self.mem)?;
        let mut bytes = self.read_buf(ids[0], len);
        if bytes.len() < HDR_LEN {
            return None;
        }
        let mut h = [0u8; HDR_LEN];
        h.copy_from_slice(&bytes[..HDR_LEN]);
        let num = u16::from_le_bytes([h[10], h[11]]);
        for _ in 1..num {
            let (_, len, ids) = self.rx.pop_used(&self.mem)?;
            bytes.extend(self.read_buf(ids[0], len));
        }
        Some((NetHdr::parse(&h), num, bytes.split_off(HDR_LEN)))
    }

    fn read_buf(&self, id: u16, len: u32) -> Vec<u8> {
        let mut b = vec![0u8; len.min(self.rx.buf_len) as usize];
        let _ = self.mem.read_slice(&mut b, self.rx.buf(id));
        b
    }
}
