//! The virtual switch's DHCP settings for a VLAN, from its definition in the store.
//!
//! Every VLAN is served: a guest's address is its NIC's IPAM lease, fixed at `vm create`, and
//! anti-spoofing lets a guest use no other, so an outside DHCP server on the uplink could only
//! hand out addresses the switch would refuse. The switch therefore answers its guests' DHCP
//! itself, with their own addresses, and keeps the requests off the uplink
//! (`kaos_net::switch::dhcp`). vKaOS guests, told their address on the kernel command line,
//! never ask.

use kaos_net::switch::DhcpConfig;
use kaos_protocol::VlanSpec;

/// Lease time: a day. A lease never changes while its NIC exists, so this only bounds how
/// long a guest keeps an address after its settings change (a client renews at half of it,
/// and gets the new router and DNS servers then).
pub const LEASE_SECS: u32 = 86_400;

/// The switch's DHCP settings for `spec` (a validated VLAN): its subnet's mask, its gateway
/// as router and server identifier, its DNS servers, a day's lease.
pub fn dhcp_config(spec: &VlanSpec) -> DhcpConfig {
    DhcpConfig {
        prefix: spec.subnet.prefix,
        gateway: spec.gateway,
        dns: spec.dns.iter().copied().collect(),
        lease_secs: LEASE_SECS,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use kaos_net::switch::{Switch, SwitchConfig, Vlan};
    use kaos_protocol::Ipv4Cidr;

    use super::*;

    fn spec(prefix: u8, gateway: Option<Ipv4Addr>, dns: &[Ipv4Addr]) -> VlanSpec {
        VlanSpec {
            id: 10,
            subnet: Ipv4Cidr {
                addr: [10, 0, 0, 0],
                prefix,
            },
            gateway,
            pool: None,
            dns: dns.iter().copied().collect(),
        }
    }

    #[test]
    fn a_vlans_definition_becomes_settings_the_switch_accepts() {
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let dns = [Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(1, 1, 1, 1)];
        let cases = [
            spec(24, Some(gw), &dns),
            spec(8, None, &[]),
            spec(30, Some(gw), &dns[..1]),
        ];
        let mut switch = Switch::new(SwitchConfig::default(), 1);
        let vlan = Vlan::new(10).expect("valid id");
        for s in cases {
            s.validate().expect("a valid VLAN");
            let c = dhcp_config(&s);
            assert_eq!(c.prefix, s.subnet.prefix);
            assert_eq!(c.netmask(), s.subnet.netmask());
            assert_eq!(c.gateway, s.gateway);
            assert_eq!(c.dns, s.dns.as_slice());
            assert_eq!(c.lease_secs, LEASE_SECS);
            switch
                .set_vlan_dhcp(vlan, Some(c.clone()))
                .expect("the switch takes every valid VLAN's settings");
            assert_eq!(switch.vlan_dhcp(vlan), Some(&c));
        }
    }
}
