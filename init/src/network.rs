//! The host's side of the virtual switch: the `kattach switch` process (the data plane, see
//! `switch_role`), the ports of running VMs' NICs, and the store's VLAN rules programmed into it.
//!
//! **Lifecycle.** The switch starts when the first VM with a NIC starts (a host without VM NICs
//! runs no switch and opens no uplink), with the uplink of `kaos.uplink=` carrying every VLAN
//! the store defines at that moment; VLANs defined or deleted later join or leave the trunk
//! then (a trunk keeps at least one). Each NIC of a starting VM becomes a switch port (`VM/INDEX`, e.g. `web-1/0`) with
//! the MAC, address and published ports IPAM assigned; the VMM gets the other end of the port's
//! vhost-user connection as an inherited descriptor. A VM's ports go when its VMM exits.
//!
//! **If the switch dies** (it never should: it is sandboxed, and a guest can only make it drop
//! frames), the VMs with NICs lose their network: their vhost-user connections are gone. The
//! host records the exit, forgets the ports and restarts those VMs, whose next start brings up
//! a new switch.
//!
//! The switch is PID 1's child; the supervisor's reaper reports its exit here
//! ([`Network::child_exited`]).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kaos_protocol::{ErrorCode, EventKind, NetStats, NetStatsQuery};
use kaos_store::VmRecord;
use kaos_vswitch::control::{Controller, GuestPortSpec};

use crate::cmdline::Uplink;
use crate::config::{Config, Refusal};
use crate::ipam;

/// The running switch.
#[derive(Debug)]
struct Switch {
    controller: Controller,
    pid: u32,
    /// VLANs the uplink trunk carries.
    trunk: BTreeSet<u16>,
}

/// A port the switch has for a VM's NIC.
#[derive(Debug, Clone)]
struct Port {
    id: u32,
    vlan: u16,
}

#[derive(Debug, Default)]
struct State {
    switch: Option<Switch>,
    /// VM name → its NICs' ports, in NIC order.
    ports: BTreeMap<String, Vec<Port>>,
    next_port: u32,
}

/// The virtual switch, as the host manages it.
#[derive(Debug)]
pub struct Network {
    exe: PathBuf,
    uplink: Option<Uplink>,
    sandbox: bool,
    state: Mutex<State>,
    /// The host is going down: the switch's end is expected, nothing is restarted.
    shutting_down: std::sync::atomic::AtomicBool,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

impl Network {
    /// A network whose switch is `exe switch …` (this very binary), attached to `uplink`;
    /// `sandbox` false passes `--no-sandbox` (hosted tests without privileges).
    pub fn new(uplink: Option<Uplink>, sandbox: bool) -> Self {
        Network {
            exe: PathBuf::from("/proc/self/exe"),
            uplink,
            sandbox,
            state: Mutex::new(State::default()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The host powers off or reboots: the switch will be stopped with every other process,
    /// and its end then is no failure.
    pub fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Switch ports for `record`'s NICs (starting the switch if needed); returns the VMM's
    /// ends of their vhost-user connections with the MACs, in NIC order.
    ///
    /// # Errors
    /// Why the switch could not start or take a port; nothing is left attached.
    pub fn attach(
        &self,
        config: &Config,
        record: &VmRecord,
    ) -> Result<Vec<(UnixStream, [u8; 6])>, String> {
        if record.nics.is_empty() {
            return Ok(Vec::new());
        }
        let name = record.spec.name.to_string();
        let rules = config.rules();
        let (ports, errors) = ipam::guest_ports(record, &rules);
        if let Some(e) = errors.first() {
            return Err(format!("NIC configuration: {e}"));
        }
        let mut state = self.lock();
        self.ensure_switch(&mut state, config)?;
        let mut attached = Vec::new();
        let mut ends = Vec::new();
        let mut failure = None;
        for (index, port) in ports.iter().enumerate() {
            let id = state.next_port;
            state.next_port = state.next_port.wrapping_add(1);
            let spec = GuestPortSpec {
                port: id,
                name: format!("{name}/{index}"),
                vlan: port.vlan.get(),
                mac: port.mac,
                ipv4: port.ipv4,
                published: port.published.clone(),
                rules: port.rules.clone(),
            };
            let Some(switch) = state.switch.as_mut() else {
                failure = Some("the switch is gone".to_owned());
                break;
            };
            match switch.controller.add_guest(&spec) {
                Ok(end) => {
                    attached.push(Port {
                        id,
                        vlan: spec.vlan,
                    });
                    ends.push((end, port.mac));
                }
                Err(e) => {
                    failure = Some(format!("switch port for NIC {index}: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = failure {
            if let Some(switch) = state.switch.as_mut() {
                for p in &attached {
                    let _ = switch.controller.remove_port(p.id);
                }
            }
            return Err(why);
        }
        state.ports.insert(name, attached);
        Ok(ends)
    }

    /// Removes `vm`'s ports (its VMM exited).
    pub fn detach(&self, vm: &str) {
        let mut state = self.lock();
        let Some(ports) = state.ports.remove(vm) else {
            return;
        };
        if let Some(switch) = state.switch.as_mut() {
            for p in ports {
                if let Err(e) = switch.controller.remove_port(p.id) {
                    log::warn!("switch: removing port {} of VM {vm}: {e}", p.id);
                }
            }
        }
    }

    /// Brings the running switch in line with the store after a VLAN or rule change: every
    /// VLAN's rules, every VM's own rules on its ports, and new VLANs on the trunk.
    pub fn config_changed(&self, config: &Config) {
        let mut state = self.lock();
        let State { switch, ports, .. } = &mut *state;
        let Some(switch) = switch.as_mut() else {
            return; // Programmed from the store when it starts.
        };
        let rules = config.rules();
        if let Err(e) = program_vlans(switch, config, &rules) {
            log::warn!("switch: {e}");
        }
        let vlans: BTreeSet<u16> = config.vlans().iter().map(|v| v.id).collect();
        if let Some(up) = self.uplink.as_ref().filter(|u| u.access.is_none())
            && vlans != switch.trunk
            && !vlans.is_empty()
        {
            let list: Vec<u16> = vlans.iter().copied().collect();
            match switch.controller.set_trunk_vlans(&up.ifname, &list) {
                Ok(()) => switch.trunk = vlans,
                Err(e) => log::warn!("switch: VLANs of the trunk on {}: {e}", up.ifname),
            }
        }
        for (vm, vm_ports) in ports.iter() {
            let own = ipam::vm_rules(&rules, vm);
            for p in vm_ports {
                if let Err(e) = switch.controller.set_port_rules(p.id, &own) {
                    log::warn!("switch: rules of {vm}'s port {}: {e}", p.id);
                }
            }
        }
        if let Err(e) = switch.controller.flush_flows() {
            log::warn!("switch: flushing tracked flows: {e}");
        }
    }

    /// The switch's counters, a page as `query` asks; no ports and no VLANs while no switch
    /// runs (no VM with a NIC has started).
    ///
    /// # Errors
    /// The switch did not answer.
    pub fn stats(&self, query: &NetStatsQuery) -> Result<NetStats, Refusal> {
        let mut state = self.lock();
        let State { switch, ports, .. } = &mut *state;
        let Some(switch) = switch.as_mut() else {
            return Ok(crate::netcfg::net_stats(query, &[], &[]));
        };
        let stats = switch.controller.stats().map_err(|e| {
            refuse(
                ErrorCode::Internal,
                format!("the virtual switch did not answer: {e}"),
            )
        })?;
        let vlan_of: BTreeMap<u32, u16> =
            ports.values().flatten().map(|p| (p.id, p.vlan)).collect();
        let trunk: Vec<u16> = match self.uplink.as_ref().and_then(|u| u.access) {
            Some(v) => vec![v],
            None => switch.trunk.iter().copied().collect(),
        };
        let port_stats: Vec<kaos_protocol::PortStats> = stats
            .ports
            .iter()
            .map(|p| {
                let vlans = match p.port {
                    Some(id) => vlan_of.get(&id).copied().into_iter().collect(),
                    None => trunk.clone(),
                };
                kaos_protocol::PortStats {
                    name: kaos_protocol::truncated(&p.name),
                    vlans: vlans
                        .into_iter()
                        .take(kaos_protocol::MAX_PORT_VLANS)
                        .collect(),
                    rx_frames: p.rx_frames,
                    rx_bytes: p.rx_bytes,
                    tx_frames: p.tx_frames,
                    tx_bytes: p.tx_bytes,
                    tx_denied: p.tx_denied,
                    drops: drop_counts(&p.drops),
                }
            })
            .collect();
        let vlan_stats: Vec<kaos_protocol::VlanStats> = stats
            .vlans
            .iter()
            .map(|v| kaos_protocol::VlanStats {
                vlan: v.vlan,
                frames: v.frames,
                bytes: v.bytes,
                floods: v.floods,
                drops: drop_counts(&v.drops),
            })
            .collect();
        Ok(crate::netcfg::net_stats(query, &port_stats, &vlan_stats))
    }

    /// Called by the supervisor for every child it reaps; returns whether it was the switch.
    /// The VMs whose ports it had are returned through `orphaned` for a restart.
    pub fn child_exited(&self, pid: u32, status: i32, orphaned: &mut Vec<String>) -> bool {
        let mut state = self.lock();
        if state.switch.as_ref().is_none_or(|s| s.pid != pid) {
            return false;
        }
        state.switch = None;
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            state.ports.clear();
            log::info!("the virtual switch (pid {pid}) stopped");
            return true;
        }
        orphaned.extend(std::mem::take(&mut state.ports).into_keys());
        log::error!(
            "the virtual switch (pid {pid}) exited with status {status:#x}; VMs with NICs restart: {orphaned:?}"
        );
        true
    }

    /// Starts the switch if it is not running, programmed from the store.
    fn ensure_switch(&self, state: &mut State, config: &Config) -> Result<(), String> {
        if state.switch.is_some() {
            return Ok(());
        }
        let vlans: BTreeSet<u16> = config.vlans().iter().map(|v| v.id).collect();
        let mut args: Vec<String> = Vec::new();
        if let Some(up) = &self.uplink {
            let spec = match up.access {
                Some(v) => format!("{}:access={v}", up.ifname),
                None if vlans.is_empty() => String::new(),
                None => format!(
                    "{}:trunk={}",
                    up.ifname,
                    vlans
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            if !spec.is_empty() {
                args.push("--uplink".into());
                args.push(spec);
            }
        }
        if !self.sandbox {
            args.push("--no-sandbox".into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (controller, child) = Controller::spawn(&self.exe, &argv)
            .map_err(|e| format!("cannot start the virtual switch: {e}"))?;
        let pid = child.id();
        // The supervisor reaps it (it is PID 1's child); the handle is not waited on here.
        drop(child);
        let mut switch = Switch {
            controller,
            pid,
            trunk: vlans,
        };
        let rules = config.rules();
        program_vlans(&mut switch, config, &rules)?;
        log::info!(
            "virtual switch started (pid {pid}, uplink {})",
            argv.get(1).copied().unwrap_or("none")
        );
        config.record(
            EventKind::NetChanged,
            &format!("virtual switch started (pid {pid})"),
        );
        state.switch = Some(switch);
        Ok(())
    }
}

/// Every VLAN's rules into the switch.
fn program_vlans(
    switch: &mut Switch,
    config: &Config,
    rules: &[(u32, kaos_protocol::RuleSpec)],
) -> Result<(), String> {
    for vlan in config.vlans() {
        let list = ipam::switch_rules(rules, vlan.id);
        switch
            .controller
            .set_vlan_rules(vlan.id, &list)
            .map_err(|e| format!("rules of VLAN {}: {e}", vlan.id))?;
        // Every VLAN is served: IPAM fixed the addresses, anti-spoofing enforces them.
        switch
            .controller
            .set_vlan_dhcp(vlan.id, Some(&crate::dhcp_cfg::dhcp_config(&vlan)))
            .map_err(|e| format!("DHCP of VLAN {}: {e}", vlan.id))?;
    }
    Ok(())
}

/// Drop counters by reason name in the protocol's form (codes of `kaos_protocol::DROP_REASONS`;
/// a reason the protocol does not name is counted under the last code).
fn drop_counts(
    drops: &[(String, u64)],
) -> heapless::Vec<kaos_protocol::DropCount, { kaos_protocol::MAX_DROP_REASONS }> {
    drops
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, count)| kaos_protocol::DropCount {
            reason: kaos_protocol::DROP_REASONS
                .iter()
                .position(|r| r == name)
                .and_then(|i| u8::try_from(i).ok())
                .unwrap_or(u8::MAX),
            count: *count,
        })
        .take(kaos_protocol::MAX_DROP_REASONS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaos_vswitch::port::DatapathDrop;

    #[test]
    fn datapath_drop_reasons_follow_the_cores_in_the_protocol() {
        let core = kaos_net::switch::DropReason::ALL.len();
        for (i, reason) in DatapathDrop::ALL.iter().enumerate() {
            assert_eq!(kaos_protocol::DROP_REASONS[core + i], reason.name());
        }
        assert_eq!(
            kaos_protocol::DROP_REASONS.len(),
            core + DatapathDrop::ALL.len()
        );
    }

    #[test]
    fn drop_counts_name_known_reasons_and_keep_unknown_ones() {
        let counts = drop_counts(&[
            ("spoofed-mac".into(), 5),
            ("no-rx-buffers".into(), 2),
            ("from-the-future".into(), 1),
            ("firewall".into(), 0),
        ]);
        let named: Vec<_> = counts
            .iter()
            .map(|d| (kaos_protocol::drop_reason_name(d.reason), d.count))
            .collect();
        assert_eq!(
            named,
            [
                (Some("spoofed-mac"), 5),
                (Some("no-rx-buffers"), 2),
                (None, 1)
            ]
        );
    }
}
