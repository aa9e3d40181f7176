//! Unit tests of the switch on synthetic frames (the lab of `fixture`): L2 forwarding and
//! VLANs, anti-spoofing, the firewall and connection tracking, bad input.

mod bad_input;
mod config;
mod dhcp;
mod firewall;
mod flowcache;
mod l2;
mod spoof;

use smoltcp::time::Instant;

use super::fixture::{Lab, lab};
use super::{Decision, DropReason, Egress, PortId, Switch, SwitchConfig, Tag, Vlan};

/// What became of a frame, owned (a `Decision` borrows the switch).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    To {
        vlan: u16,
        ingress_tagged: bool,
        to: Vec<Egress>,
    },
    Dropped(DropReason),
}

impl Fate {
    /// The destination ports, sorted.
    fn ports(&self) -> Vec<PortId> {
        match self {
            Fate::To { to, .. } => {
                let mut ports: Vec<_> = to.iter().map(|e| e.port).collect();
                ports.sort();
                ports
            }
            Fate::Dropped(reason) => panic!("expected a delivery, the frame was dropped: {reason}"),
        }
    }

    fn dropped(&self) -> DropReason {
        match self {
            Fate::Dropped(reason) => *reason,
            Fate::To { to, .. } => panic!("expected a drop, the frame went to {to:?}"),
        }
    }

    fn tag_to(&self, port: PortId) -> Tag {
        match self {
            Fate::To { to, .. } => to
                .iter()
                .find(|e| e.port == port)
                .map(|e| e.tag)
                .unwrap_or_else(|| panic!("nothing to {port}: {to:?}")),
            Fate::Dropped(reason) => panic!("dropped: {reason}"),
        }
    }
}

fn at(secs: i64) -> Instant {
    Instant::from_secs(secs)
}

fn v(id: u16) -> Vlan {
    Vlan::new(id).expect("valid VLAN id in a test")
}

/// Sends `frame` into `switch` on `port` at `now`.
fn send(switch: &mut Switch, port: PortId, frame: &[u8], now: Instant) -> Fate {
    fate(switch.ingress(port, frame, now))
}

fn fate(decision: Decision<'_>) -> Fate {
    match decision {
        Decision::Forward(f) => Fate::To {
            vlan: f.vlan.get(),
            ingress_tagged: f.ingress_tagged,
            to: f.to.to_vec(),
        },
        Decision::Drop(reason) => Fate::Dropped(reason),
    }
}

/// A small deterministic generator (xorshift), so that a generated workload is the same at
/// every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Below `n` (> 0).
    fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        usize::try_from(self.next() % n).unwrap_or(0)
    }
}

fn default_lab() -> Lab {
    lab(SwitchConfig::default())
}

#[test]
fn the_bench_workload_runs() {
    let mut lab = default_lab();
    let frames = super::fixture::bench_frames(&lab, 64);
    let copies = super::fixture::bench_run(&mut lab.switch, &frames, 10);
    // A↔B: 1 each; A→R10 and its reply: 1 each; R10→B:80: 1; C's ARP broadcast: the trunk.
    assert_eq!(copies, 6 * 10);
    assert!(frames.iter().all(|(_, f)| f.len() >= 64));
}
