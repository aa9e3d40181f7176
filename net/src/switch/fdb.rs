//! The learned MAC table of one VLAN: which uplink a remote MAC was last seen on.
//!
//! Guests' MACs are static (their port's assignment) and never here; the switch learns only
//! from uplinks. An entry ages out `ageing` after the last frame from its MAC (a lookup ignores
//! it from then, the periodic sweep removes it). The table holds at most `max` entries; a new
//! MAC that finds it full first clears expired entries, then evicts the oldest sixteenth at
//! once, so a flood of invented MACs costs constant work per frame and can only displace
//! entries, never grow the table.

use smoltcp::time::Duration;

use super::PortId;
use super::table::{Map, Seeded, Stamp, evict_oldest, older_than};

#[derive(Debug, Clone, Copy)]
struct Entry {
    port: PortId,
    seen: Stamp,
}

/// One VLAN's learned MACs.
#[derive(Debug)]
pub(crate) struct Fdb {
    map: Map<u64, Entry>,
}

/// A MAC as a table key.
pub(crate) fn mac_key(mac: [u8; 6]) -> u64 {
    let mut word = [0u8; 8];
    word[2..].copy_from_slice(&mac);
    u64::from_be_bytes(word)
}

impl Fdb {
    pub fn new(seeded: &Seeded) -> Self {
        Self { map: seeded.map() }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Records that `mac` was seen on `port` at `now`. Returns whether that changes what a
    /// lookup finds (a new MAC, one that moved or had aged, or an eviction), rather than only
    /// refreshing an entry.
    pub fn learn(
        &mut self,
        mac: [u8; 6],
        port: PortId,
        now: Stamp,
        (ageing, max): (Duration, usize),
        scratch: &mut Vec<Stamp>,
    ) -> bool {
        let key = mac_key(mac);
        if let Some(entry) = self.map.get_mut(&key) {
            let changed = entry.port != port || older_than(entry.seen, now, ageing);
            *entry = Entry { port, seen: now };
            return changed;
        }
        if max == 0 {
            return false;
        }
        if self.map.len() >= max {
            self.map.retain(|_, e| !older_than(e.seen, now, ageing));
        }
        if self.map.len() >= max {
            evict_oldest(&mut self.map, max.div_ceil(16), |e| e.seen, scratch);
        }
        self.map.insert(key, Entry { port, seen: now });
        true
    }

    /// The port `mac` was last seen on, unless that is `ageing` ago or more.
    pub fn lookup(&self, mac: [u8; 6], now: Stamp, ageing: Duration) -> Option<PortId> {
        self.map
            .get(&mac_key(mac))
            .filter(|e| !older_than(e.seen, now, ageing))
            .map(|e| e.port)
    }

    /// Removes entries `ageing` old or more.
    pub fn sweep(&mut self, now: Stamp, ageing: Duration) {
        self.map.retain(|_, e| !older_than(e.seen, now, ageing));
    }

    /// Removes the entries on `port` (the port is gone).
    pub fn forget_port(&mut self, port: PortId) {
        self.map.retain(|_, e| e.port != port);
    }

    /// Removes `mac` (it became a guest's).
    pub fn forget_mac(&mut self, mac: [u8; 6]) {
        self.map.remove(&mac_key(mac));
    }
}
