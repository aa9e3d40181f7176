//! The fabric: the decision core and the ports' datapath halves, behind one mutex that a
//! batch takes once to decide all its frames (never while copying them).

use std::sync::{Arc, Mutex, MutexGuard};

use kaos_net::switch::{ConfigError, Instant, PortId, PortKind, Switch, SwitchConfig, Vlan};

use crate::port::{GuestNic, UplinkPort};

/// A port's datapath half, as the fabric knows it.
#[derive(Debug, Clone)]
pub enum Attached {
    /// A guest NIC.
    Guest(Arc<GuestNic>),
    /// An uplink.
    Uplink(Arc<UplinkPort>),
}

/// What the mutex guards.
#[derive(Debug)]
pub struct Core {
    /// The decision core.
    pub switch: Switch,
    /// Datapath halves, indexed by port number.
    ports: Vec<Option<Attached>>,
    /// Bytes forwarded per VLAN, whole (the core counts the bytes it decided on, which for a
    /// long frame is its head).
    pub vlan_bytes: VlanBytes,
}

/// Bytes forwarded per VLAN, counted beside the core (a TX batch bumps them while its
/// `Batch` holds the core).
#[derive(Debug)]
pub struct VlanBytes(Vec<u64>);

impl VlanBytes {
    /// Counts a forwarded frame's whole `len` on its VLAN.
    #[inline]
    pub fn count(&mut self, vlan: Vlan, len: usize) {
        if let Some(b) = self.0.get_mut(usize::from(vlan.get())) {
            *b = b.wrapping_add(len as u64);
        }
    }

    /// Bytes forwarded on `vlan`.
    pub fn get(&self, vlan: Vlan) -> u64 {
        self.0.get(usize::from(vlan.get())).copied().unwrap_or(0)
    }
}

impl Core {
    /// The datapath half of `id`, if attached.
    pub fn attached(&self, id: PortId) -> Option<&Attached> {
        self.ports.get(usize::from(id.get()))?.as_ref()
    }
}

/// The switch of a `kattach switch` process (or of a test, a bench, a fuzz run).
#[derive(Debug)]
pub struct Fabric {
    core: Mutex<Core>,
    epoch: std::time::Instant,
}

impl Fabric {
    /// An empty fabric; `seed` keys the core's hash tables.
    pub fn new(config: SwitchConfig, seed: u64) -> Arc<Self> {
        Arc::new(Self {
            core: Mutex::new(Core {
                switch: Switch::new(config, seed),
                ports: Vec::new(),
                vlan_bytes: VlanBytes(vec![0; usize::from(Vlan::MAX) + 1]),
            }),
            epoch: std::time::Instant::now(),
        })
    }

    /// The core, locked. A poisoned lock is taken over: the core's state is consistent after
    /// every call, and nothing in the datapath panics on purpose.
    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The time the core is given.
    pub fn now(&self) -> Instant {
        let us = self.epoch.elapsed().as_micros();
        Instant::from_micros(i64::try_from(us).unwrap_or(i64::MAX))
    }

    /// Adds a port to the core; attach its datapath half with [`attach`](Self::attach).
    ///
    /// # Errors
    /// What the core refused.
    pub fn add_port(&self, kind: PortKind) -> Result<PortId, ConfigError> {
        self.lock().switch.add_port(kind)
    }

    /// Attaches `id`'s datapath half: frames start flowing to it.
    pub fn attach(&self, id: PortId, half: Attached) {
        let mut core = self.lock();
        let i = usize::from(id.get());
        if core.ports.len() <= i {
            core.ports.resize(i + 1, None);
        }
        core.ports[i] = Some(half);
    }

    /// Removes a port from the core and detaches its datapath half.
    ///
    /// # Errors
    /// The port does not exist.
    pub fn remove_port(&self, id: PortId) -> Result<Option<Attached>, ConfigError> {
        let mut core = self.lock();
        core.switch.remove_port(id)?;
        Ok(core
            .ports
            .get_mut(usize::from(id.get()))
            .and_then(Option::take))
    }
}
