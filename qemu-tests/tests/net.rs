//! Tier 3: the virtual switch with real vKaOS guests under the host image's own KVM (nested in
//! QEMU TCG), as an operator sets it up: VLANs with address pools, VMs with NICs on them, guests
//! that reach each other on their VLAN and nothing else, a guest that forges its addresses and
//! gets nothing through, and an uplink (QEMU's second NIC, a TAP moved into a network namespace)
//! where a real Linux host on a VLAN 10 sub-interface reaches a guest's published port and
//! nothing else.
//!
//! The guests have no tools; they run the guest `kattach`'s diagnostics (`kaos.guest.echo=`,
//! `.probe=`, `.forge=`) and print the results on their consoles, which the test reads with
//! `vm logs`.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use kaos_protocol::{
    NetStats, NetStatsQuery, NicInfo, NicSpec, PublishSpec, Request, Response, RestartPolicy,
    RuleAction, RuleDirection, RuleProtocol, RuleScope, RuleSpec, Transport, VmAction, VmInfo,
    VmSpec, truncated,
};
use kaos_qemu_tests::netns::{self, NetNs};
use kaos_qemu_tests::qemu::{self, QemuConfig, QemuHost};
use kaos_qemu_tests::vkaos::{
    act, ask, complete_lines, create, inspect, logs, push_platform, spec, tolerating_tcg_trouble,
    unavailable, vlan, wait_log_line, wait_vm,
};
use kaos_qemu_tests::vlan_peer::VlanPeer;
use kaos_qemu_tests::{say, skip};
use kaosctl::Client;

const BOOT: Duration = Duration::from_secs(120);
/// The uplink peer's address on VLAN 10 (outside the pool).
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 10, 200);

fn with_nic(mut s: VmSpec, vlan: u16, publish: &[u16]) -> VmSpec {
    let mut nic = NicSpec {
        vlan,
        ipv4: None,
        publish: heapless::Vec::new(),
    };
    for &port in publish {
        nic.publish
            .push(PublishSpec {
                protocol: Transport::Tcp,
                port,
            })
            .expect("room");
    }
    s.nics.push(nic).expect("room");
    s
}

fn nic(info: &VmInfo) -> &NicInfo {
    info.nics.first().expect("the VM has a NIC")
}

fn stats(c: &mut Client) -> NetStats {
    // Four guests and an uplink fit in one page.
    let first_page = NetStatsQuery {
        ports_from: 0,
        vlans_from: 0,
    };
    match ask(c, Request::NetStats(first_page)) {
        Response::NetStats(s) => s,
        other => panic!("net stats: {other:?}"),
    }
}

/// Drops counted on `port` for the reason named `reason`.
fn drops(stats: &NetStats, port: &str, reason: &str) -> u64 {
    let Some(p) = stats.ports.iter().find(|p| p.name.as_str() == port) else {
        panic!("no port {port} in {stats:?}")
    };
    p.drops
        .iter()
        .filter(|d| kaos_protocol::drop_reason_name(d.reason) == Some(reason))
        .map(|d| d.count)
        .sum()
}

/// An echo exchange from the peer's namespace; `Err` says why it failed.
fn peer_echo(ns: &NetNs, to: SocketAddrV4) -> Result<(), String> {
    ns.enter(|| {
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"from the uplink\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut back = [0u8; 16];
        s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
        if &back == b"from the uplink\n" {
            Ok(())
        } else {
            Err(format!("echo differs: {back:?}"))
        }
    })
    .map_err(|e| e.to_string())?
}

fn boot(peer: &VlanPeer) -> QemuHost {
    let image = qemu::image_from_env().expect("checked by unavailable()");
    let mut config = QemuConfig::new(&image).expect("config");
    // Warnings only on the serial console: under TCG the emulated UART sometimes stops
    // draining, and then every console line blocks whoever logs it (the endpoint included)
    // for seconds; the test reads what it checks over the protocol, not from the console.
    // Every VMM on one CPU of the emulated host: four nested guests starting at once on
    // both of its vCPUs set off QEMU TCG's emulated-SVM resets in most runs (see
    // `vkaos::tolerating_tcg_trouble`); on one they boot one after another.
    config.append = "kaos.hostname=kaos-net kaos.uplink=eth1 kaos.vm_cpus=0".into();
    config.uplink_netdev = Some(peer.qemu_netdev("uplink"));
    // Four guests of 96 MiB beside the host.
    config.memory_mib = 1536;
    QemuHost::launch(&config).expect("launch QEMU")
}

#[test]
fn guests_on_vlans_reach_their_peers_and_nothing_else() {
    const TEST: &str = "guests_on_vlans_reach_their_peers_and_nothing_else";
    if let Some(reason) = unavailable().or_else(netns::unavailable) {
        return skip(TEST, &reason);
    }
    // The uplink peer: a Linux host in its own namespace on VLAN 10 of the host's trunk.
    let ns = NetNs::new("uplink").expect("namespace");
    let peer = VlanPeer::start(&ns, "kpeer0", 10, &format!("{PEER}/24")).expect("peer");
    // The known troubles of nested KVM under TCG are told apart from the switch's failures.
    tolerating_tcg_trouble(
        TEST,
        || boot(&peer),
        |host| host,
        |host, _| scenario(host, &ns, &peer),
    );
}

fn scenario(host: &QemuHost, ns: &NetNs, peer: &VlanPeer) {
    let mut c = host.wait_ready(BOOT).expect("endpoint");
    // The peer outlives a host lost to TCG trouble: only this host's frames count.
    let to_peer_before = peer
        .counters
        .to_peer
        .load(std::sync::atomic::Ordering::Relaxed);

    push_platform(&mut c, host);
    for v in [vlan(10, (10, 50)), vlan(20, (100, 150))] {
        match ask(&mut c, Request::VlanCreate(v)) {
            Response::Vlan(info) => assert_eq!(info.leases_used, 0),
            other => panic!("vlan create: {other:?}"),
        }
    }

    // a serves echo on 7 (published) and 8 (not); its address comes from VLAN 10's pool.
    let a = create(
        &mut c,
        with_nic(
            spec(
                "a",
                96,
                "quiet kaos.guest.echo=7,8",
                RestartPolicy::OnFailure,
            ),
            10,
            &[7],
        ),
        true,
    );
    let a_ip = nic(&a).ipv4;
    assert_eq!(
        a_ip,
        Ipv4Addr::new(10, 0, 10, 10),
        "the pool's first address"
    );
    assert_eq!(nic(&a).mac[0] & 3, 2, "a locally administered unicast MAC");
    // The others probe a as soon as they boot, for a limited time: a comes up first.
    wait_vm(&mut c, host, "a", "up", |i| i.guest_up);
    wait_log_line(&mut c, host, "a", "echo on tcp port 7");
    let probes = format!("quiet kaos.guest.probe=ping:{a_ip},tcp:{a_ip}:7");
    // b on the same VLAN pings a and talks TCP to it; it serves echo too, but publishes nothing.
    let b = create(
        &mut c,
        with_nic(
            spec(
                "b",
                96,
                &format!("{probes} kaos.guest.echo=7"),
                RestartPolicy::OnFailure,
            ),
            10,
            &[],
        ),
        true,
    );
    assert_eq!(nic(&b).ipv4, Ipv4Addr::new(10, 0, 10, 11), "the next one");
    // c on VLAN 20, same subnet: it cannot even resolve a.
    let c20 = create(
        &mut c,
        with_nic(spec("c", 96, &probes, RestartPolicy::OnFailure), 20, &[]),
        true,
    );
    assert_eq!(nic(&c20).ipv4, Ipv4Addr::new(10, 0, 10, 100));
    // d on VLAN 10 forges its MAC, another's IPv4 address and an ARP claim for a's address.
    let forger =
        format!("quiet kaos.guest.forge=mac,ip:{a_ip},arp:{a_ip} kaos.guest.probe=tcp:{a_ip}:7");
    create(
        &mut c,
        with_nic(spec("d", 96, &forger, RestartPolicy::OnFailure), 10, &[]),
        true,
    );

    for name in ["a", "b", "c", "d"] {
        wait_vm(&mut c, host, name, "up", |i| i.guest_up);
    }
    // Nested SVM under TCG on a loaded machine now and then ends a guest early in its boot
    // (a triple fault before its first console line, NICs or not); on-failure starts it again,
    // and the test says so rather than hiding it.
    for name in ["a", "b", "c", "d"] {
        let info = inspect(&mut c, name);
        if info.restarts > 0 {
            eprintln!(
                "{name} was restarted {} times: {:?}",
                info.restarts, info.last_exit
            );
        }
    }
    assert!(logs(&mut c, "a").contains("echo on tcp port 7"));
    // The guest kernel configured eth0 from the host's ip= argument.
    assert!(
        logs(&mut c, "a").contains(&format!("a address {a_ip}")),
        "{}",
        logs(&mut c, "a")
    );

    let line = wait_log_line(&mut c, host, "b", &format!("probe ping {a_ip}"));
    assert!(line.contains(" ok in "), "b → a ping: {line}");
    let line = wait_log_line(&mut c, host, "b", &format!("probe tcp {a_ip}:7"));
    assert!(line.contains(" ok in "), "b → a TCP: {line}");
    let line = wait_log_line(&mut c, host, "c", &format!("probe ping {a_ip}"));
    assert!(line.contains("failed"), "VLAN 20 reached VLAN 10: {line}");
    let line = wait_log_line(&mut c, host, "c", &format!("probe tcp {a_ip}:7"));
    assert!(line.contains("failed"), "VLAN 20 reached VLAN 10: {line}");

    // The forger: its forged frames are dropped and counted, its honest TCP still works.
    for what in ["(mac)", &format!("(ip {a_ip})"), &format!("(arp {a_ip})")] {
        let line = wait_log_line(&mut c, host, "d", &format!("forged 5 frames {what}"));
        eprintln!("d: {line}");
    }
    let line = wait_log_line(&mut c, host, "d", &format!("probe tcp {a_ip}:7"));
    assert!(line.contains(" ok in "), "d's own traffic: {line}");
    let s = stats(&mut c);
    eprintln!("net stats: {s:#?}");
    assert!(drops(&s, "d/0", "spoofed-mac") >= 5, "{s:?}");
    assert!(drops(&s, "d/0", "spoofed-ipv4") >= 5, "{s:?}");
    assert!(drops(&s, "d/0", "spoofed-arp") >= 5, "{s:?}");
    assert_eq!(drops(&s, "b/0", "spoofed-mac"), 0, "honest b: {s:?}");
    let a_port = s.ports.iter().find(|p| p.name.as_str() == "a/0");
    assert!(
        a_port.is_some_and(|p| p.rx_frames > 0 && p.tx_frames > 0),
        "a's port counted its traffic: {s:?}"
    );

    // A guest that asks by DHCP (the kernel's own client, as a stock OS would) gets the lease
    // IPAM gave its NIC, from the switch; it takes the forger's place.
    act(&mut c, "d", VmAction::Destroy);
    let e = create(
        &mut c,
        with_nic(
            spec("e", 96, "quiet ip=dhcp", RestartPolicy::OnFailure),
            10,
            &[],
        ),
        true,
    );
    let lease = nic(&e).ipv4;
    let line = wait_log_line(&mut c, host, "e", "e address ");
    assert!(line.ends_with(&format!("e address {lease}")), "{line}");
    let s = stats(&mut c);
    let answered = s.ports.iter().find(|p| p.name.as_str() == "e/0");
    eprintln!("e's port: {answered:?}");

    // The uplink peer reaches a's published port, and nothing else. Its first connection
    // resolves a's address by ARP through the trunk, and under TCG the emulated host now and
    // then stalls longer than the peer's ARP retries (in one CI run the host's console
    // stopped at 12 s while the test went on to 80 s, and the peer got "No route to host"):
    // the first exchange is tried up to three times, each failure said.
    let mut reached = Err(String::new());
    for attempt in 1..=3 {
        reached = peer_echo(ns, SocketAddrV4::new(a_ip, 7));
        match &reached {
            Ok(()) => break,
            Err(e) => {
                // The evidence: did the peer's frames reach the trunk, and a's answers leave?
                let s = stats(&mut c);
                let port = |name: &str| s.ports.iter().find(|p| p.name.as_str() == name).cloned();
                say(&format!(
                    "net: peer → a:7, attempt {attempt} of 3: {e}; uplink {:?}; a {:?}",
                    port("uplink:eth1"),
                    port("a/0")
                ));
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    reached.unwrap_or_else(|e| {
        panic!(
            "peer → a:7 (published): {e}\nnet stats: {:?}\n{}",
            stats(&mut c),
            host.tail()
        )
    });
    let refused = peer_echo(ns, SocketAddrV4::new(a_ip, 8));
    assert!(
        refused.is_err(),
        "peer reached a:8, which a does not publish"
    );
    let b_ip = nic(&b).ipv4;
    let refused = peer_echo(ns, SocketAddrV4::new(b_ip, 7));
    assert!(
        refused.is_err(),
        "peer reached b:7, which b does not publish"
    );
    let s = stats(&mut c);
    assert!(drops(&s, "uplink:eth1", "firewall") > 0, "{s:?}");
    let to_peer = peer
        .counters
        .to_peer
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        to_peer > to_peer_before,
        "the trunk carried VLAN 10 to the peer"
    );

    // The VMs keep their addresses in their definitions; `vm list` shows them.
    let Response::Vms(list) = ask(&mut c, Request::VmList) else {
        panic!("vm list")
    };
    let listed = list.entries.iter().find(|v| v.name.as_str() == "a");
    assert_eq!(listed.and_then(|v| v.ipv4), Some(a_ip));
    assert_eq!(inspect(&mut c, "a").nics, a.nics, "stable across inspects");

    // A rule of a's own closes its port 7 to guests too; the running switch takes it at once.
    // b, started again, still pings a but no longer reaches a:7.
    let rule = RuleSpec {
        scope: RuleScope::Vm(truncated("a")),
        direction: RuleDirection::In,
        protocol: RuleProtocol::Tcp,
        ports: Some((7, 7)),
        peer: None,
        action: RuleAction::Deny,
    };
    assert!(matches!(
        ask(&mut c, Request::RuleAdd(rule)),
        Response::Rule(_)
    ));
    let tcp = format!("probe tcp {a_ip}:7");
    let ping = format!("probe ping {a_ip}");
    let runs = complete_lines(&logs(&mut c, "b"))
        .filter(|l| l.contains(&tcp))
        .count();
    act(&mut c, "b", VmAction::Restart);
    let after = wait_nth_line(&mut c, host, "b", &tcp, runs + 1);
    assert!(after.contains("failed"), "a's rule let b in: {after}");
    let after = wait_nth_line(&mut c, host, "b", &ping, runs + 1);
    assert!(
        after.contains(" ok in "),
        "the rule is for TCP 7 only: {after}"
    );
    let s = stats(&mut c);
    let withheld = s
        .ports
        .iter()
        .find(|p| p.name.as_str() == "a/0")
        .map_or(0, |p| p.tx_denied);
    assert!(
        drops(&s, "b/0", "firewall") + withheld > 0,
        "the rule's refusals are counted: {s:?}"
    );
}

/// The `n`th line (from 1) of `name`'s console containing `needle`, waiting for it.
fn wait_nth_line(c: &mut Client, host: &QemuHost, name: &str, needle: &str, n: usize) -> String {
    let deadline = std::time::Instant::now() + kaos_qemu_tests::vkaos::GUEST_UP;
    loop {
        let console = logs(c, name);
        if let Some(line) = complete_lines(&console)
            .filter(|l| l.contains(needle))
            .nth(n - 1)
        {
            return line.trim().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "VM {name}: no line {n} with {needle:?}\n{console}\n{}",
            host.tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
