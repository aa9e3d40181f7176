//! One virtqueue's transport registers as the driver wrote them, and the check that turns them
//! into a [`Queue`] a device may use.
//!
//! Guest addresses are allegations until checked: the registers keep whatever the driver wrote
//! (`QueueNum`, the three ring addresses), and only [`QueueRegs::check`] (called when the driver
//! sets `QueueReady`) hands out a `virtio_queue::Queue`, after the size is a power of two within
//! the device's maximum, each ring is aligned as the spec requires (VIRTIO 1.2, 2.7: descriptor
//! table 16, driver area 2, device area 4) and lies wholly in guest RAM.

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory};

/// Bytes of one descriptor in the table.
const DESC_LEN: u64 = 16;
/// Driver area: flags, idx, `used_event`, then 2 bytes per entry.
const fn driver_len(size: u64) -> u64 {
    6 + 2 * size
}
/// Device area: flags, idx, `avail_event`, then 8 bytes per entry.
const fn device_len(size: u64) -> u64 {
    6 + 8 * size
}

/// Why the driver's queue setup is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// `QueueNum` is zero, not a power of two, or above `QueueNumMax`.
    #[error("queue size {size} is not a power of two from 1 to {max}")]
    Size {
        /// What the driver wrote.
        size: u32,
        /// The device's maximum.
        max: u16,
    },
    /// A ring address breaks its alignment.
    #[error("{ring} at {addr:#x} is not aligned to {align} bytes")]
    Align {
        /// Which ring.
        ring: &'static str,
        /// Its address.
        addr: u64,
        /// The alignment required.
        align: u64,
    },
    /// A ring does not lie wholly in guest RAM.
    #[error("{ring} at {addr:#x}, {len} bytes, is not in guest memory")]
    OutOfMemory {
        /// Which ring.
        ring: &'static str,
        /// Its address.
        addr: u64,
        /// Its length for the queue's size.
        len: u64,
    },
}

/// The registers of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRegs {
    /// `QueueNumMax`: what the device supports (a power of two up to 32768).
    pub max_size: u16,
    /// `QueueNum` as written.
    pub size: u32,
    /// `QueueReady`: set only once the queue passed [`QueueRegs::check`].
    pub ready: bool,
    /// `QueueDescLow/High`.
    pub desc: u64,
    /// `QueueDriverLow/High` (the available ring).
    pub driver: u64,
    /// `QueueDeviceLow/High` (the used ring).
    pub device: u64,
}

impl QueueRegs {
    /// A queue as after reset: size at the maximum, not ready, rings at 0.
    pub fn new(max_size: u16) -> Self {
        QueueRegs {
            max_size,
            size: u32::from(max_size),
            ready: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }

    /// Back to the state of [`QueueRegs::new`].
    pub fn reset(&mut self) {
        *self = QueueRegs::new(self.max_size);
    }

    /// Whether `max` is a maximum size `virtio_queue` accepts.
    pub fn valid_max(max: u16) -> bool {
        Queue::new(max).is_ok()
    }

    /// Checks size, alignment and placement against `mem`; the queue a device may use.
    ///
    /// # Errors
    /// [`QueueError`] naming the first problem.
    pub fn check<M: GuestMemory>(&self, mem: &M) -> Result<Queue, QueueError> {
        let size = u16::try_from(self.size)
            .ok()
            .filter(|s| s.is_power_of_two() && *s <= self.max_size)
            .ok_or(QueueError::Size {
                size: self.size,
                max: self.max_size,
            })?;
        let n = u64::from(size);
        let rings = [
            ("descriptor table", self.desc, 16, DESC_LEN * n),
            ("driver area", self.driver, 2, driver_len(n)),
            ("device area", self.device, 4, device_len(n)),
        ];
        for (ring, addr, align, len) in rings {
            if !addr.is_multiple_of(align) {
                return Err(QueueError::Align { ring, addr, align });
            }
            let fits = usize::try_from(len).is_ok_and(|l| {
                addr.checked_add(len).is_some() && mem.check_range(GuestAddress(addr), l)
            });
            if !fits {
                return Err(QueueError::OutOfMemory { ring, addr, len });
            }
        }
        let max = self.max_size;
        let bad_max = |_| QueueError::Size { size: 0, max };
        let mut queue = Queue::new(max).map_err(bad_max)?;
        queue.try_set_size(size).map_err(bad_max)?;
        let align = |ring, addr, align| move |_| QueueError::Align { ring, addr, align };
        queue
            .try_set_desc_table_address(GuestAddress(self.desc))
            .map_err(align("descriptor table", self.desc, 16))?;
        queue
            .try_set_avail_ring_address(GuestAddress(self.driver))
            .map_err(align("driver area", self.driver, 2))?;
        queue
            .try_set_used_ring_address(GuestAddress(self.device))
            .map_err(align("device area", self.device, 4))?;
        queue.set_ready(true);
        Ok(queue)
    }
}

/// Replaces the low or high half of `field` with `value`.
pub fn set_half(field: &mut u64, high: bool, value: u32) {
    let value = u64::from(value);
    *field = if high {
        (*field & 0xffff_ffff) | (value << 32)
    } else {
        (*field & !0xffff_ffff) | value
    };
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("1 MiB of memory")
    }

    fn regs(size: u32) -> QueueRegs {
        QueueRegs {
            size,
            desc: 0x1000,
            driver: 0x2000,
            device: 0x3000,
            ..QueueRegs::new(256)
        }
    }

    #[test]
    fn a_good_queue_becomes_a_ready_queue() {
        let q = regs(128).check(&mem()).expect("valid queue");
        assert!(q.ready());
        assert_eq!(q.size(), 128);
        assert_eq!(
            (q.desc_table(), q.avail_ring(), q.used_ring()),
            (0x1000, 0x2000, 0x3000)
        );
        assert!(q.is_valid(&mem()), "virtio-queue agrees");
    }

    #[test]
    fn sizes_must_be_powers_of_two_within_the_maximum() {
        for bad in [0, 3, 100, 512, 0x1_0000, u32::MAX] {
            assert!(
                matches!(regs(bad).check(&mem()), Err(QueueError::Size { .. })),
                "{bad}"
            );
        }
        for good in [1, 2, 256] {
            assert!(regs(good).check(&mem()).is_ok(), "{good}");
        }
    }

    #[test]
    fn rings_must_be_aligned_and_in_memory() {
        let m = mem();
        let misaligned = [
            QueueRegs {
                desc: 0x1008,
                ..regs(4)
            },
            QueueRegs {
                driver: 0x2001,
                ..regs(4)
            },
            QueueRegs {
                device: 0x3002,
                ..regs(4)
            },
        ];
        for r in misaligned {
            assert!(
                matches!(r.check(&m), Err(QueueError::Align { .. })),
                "{r:?}"
            );
        }
        let outside = [
            QueueRegs {
                desc: 0x10_0000,
                ..regs(4)
            },
            QueueRegs {
                desc: 0xf_fff0,
                ..regs(4)
            },
            QueueRegs {
                driver: 0xf_fffe,
                ..regs(4)
            },
            QueueRegs {
                device: u64::MAX - 3,
                ..regs(4)
            },
            QueueRegs {
                device: 0xd000_0000,
                ..regs(4)
            },
        ];
        for r in outside {
            assert!(
                matches!(r.check(&m), Err(QueueError::OutOfMemory { .. })),
                "{r:?}"
            );
        }
        let at_the_end = QueueRegs {
            desc: 0x10_0000 - 64,
            ..regs(4)
        };
        assert!(
            at_the_end.check(&m).is_ok(),
            "a ring may end at the end of RAM"
        );
    }

    #[test]
    fn halves_combine() {
        let mut a = 0;
        set_half(&mut a, true, 0x1234_5678);
        set_half(&mut a, false, 0x9abc_def0);
        assert_eq!(a, 0x1234_5678_9abc_def0);
        set_half(&mut a, true, 0);
        assert_eq!(a, 0x9abc_def0);
        assert!(QueueRegs::valid_max(256) && QueueRegs::valid_max(32768));
        assert!(!QueueRegs::valid_max(0) && !QueueRegs::valid_max(100));
    }
}
