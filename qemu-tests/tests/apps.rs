//! Tier 3: the KaOS workflow end to end, as an operator runs it on a host with a store disk and
//! an uplink trunk: push the vKaOS platform and the example App Module (`modules/httpd`), give
//! the module a configuration group, compose an image, deploy two instances, and fetch both
//! instances' pages over HTTP from a real Linux host on VLAN 10 of the uplink (a network
//! namespace). Then reboot the host: the instances come back by themselves, with the same
//! addresses, and serve again. Finally scale down to one.
//!
//! Bad input on the way: a group that breaks the module's schema and an image whose module
//! needs a group it lacks are refused with the reason, and nothing is stored; the module
//! cannot be removed while the image uses it.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use kaos_protocol::{
    ErrorCode, GroupSpec, GroupValue, ImageDeploy, ImageInfo, ImageSpec, ModuleKind, Request,
    Response, VmInfo, truncated,
};
use kaos_qemu_tests::disk::DiskImage;
use kaos_qemu_tests::netns::{self, NetNs};
use kaos_qemu_tests::qemu::{self, QemuConfig, QemuHost};
use kaos_qemu_tests::vkaos::{
    Reboots, ask, inspect, push_platform, refusal, tolerating_tcg_trouble, unavailable, vlan,
    wait_log_line, wait_vm,
};
use kaos_qemu_tests::vlan_peer::VlanPeer;
use kaos_qemu_tests::{keys, skip};
use kaosctl::Client;

const BOOT: Duration = Duration::from_secs(120);
/// The uplink peer's address on VLAN 10 (outside the pool).
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 10, 200);
const GREETING: &str = "hello from the deployment test";

fn boot(peer: &VlanPeer, disk: &DiskImage) -> QemuHost {
    let image = qemu::image_from_env().expect("checked by unavailable()");
    let mut config = QemuConfig::new(&image).expect("config");
    // Its two guests start on one vCPU, one after the other: TCG's nested SVM resets the
    // host when guests start on both at once (see net.rs).
    config.append = "kaos.hostname=kaos-apps kaos.uplink=eth1 kaos.vm_cpus=0".into();
    config.uplink_netdev = Some(peer.qemu_netdev("uplink"));
    config.disks = vec![disk.path().to_owned()];
    // Two guests of 128 MiB beside the host.
    config.memory_mib = 1024;
    QemuHost::launch(&config).expect("launch QEMU")
}

#[test]
fn an_image_deployed_twice_serves_the_uplink_and_comes_back_after_a_reboot() {
    const TEST: &str = "an_image_deployed_twice_serves_the_uplink_and_comes_back_after_a_reboot";
    if let Some(reason) = unavailable()
        .or_else(netns::unavailable)
        .or_else(|| qemu::app_module_from_env().err())
    {
        return skip(TEST, &reason);
    }
    let ns = NetNs::new("apps").expect("namespace");
    let peer = VlanPeer::start(&ns, "kpeer1", 10, &format!("{PEER}/24")).expect("peer");
    // Each attempt gets a fresh store disk with its host. The scenario reboots the host once
    // itself, through `reboots`.
    let fresh = || {
        let disk = DiskImage::blank("apps-store", 64).expect("disk");
        kaos_store::init_device(disk.path(), false, [7; 16]).expect("init the store disk");
        let host = boot(&peer, &disk);
        (host, disk)
    };
    tolerating_tcg_trouble(
        TEST,
        fresh,
        |(host, _)| host,
        |(host, _), reboots| scenario(host, &ns, reboots),
    );
}

fn scenario(host: &QemuHost, ns: &NetNs, reboots: &Reboots) {
    let mut c = host.wait_ready(BOOT).expect("endpoint");
    push_platform(&mut c, host);
    let path = qemu::app_module_from_env().expect("checked");
    let bytes = std::fs::read(&path).expect("read the httpd module");
    let httpd = kaosctl::upload::push(&mut c, &bytes, |_| {}).expect("push httpd");
    assert_eq!(
        (httpd.name.as_str(), httpd.kind),
        ("httpd", ModuleKind::App)
    );
    match ask(&mut c, Request::VlanCreate(vlan(10, (10, 50)))) {
        Response::Vlan(_) => {}
        other => panic!("vlan create: {other:?}"),
    }

    // A value for a key the schema lacks is refused, naming it; nothing is stored.
    let (code, why) = refusal(
        &mut c,
        Request::GroupCreate(group("site", &[("greting", GREETING)])),
    );
    assert_eq!(code, ErrorCode::InvalidArgument, "{why}");
    assert!(why.contains("greting") && why.contains("greeting"), "{why}");
    match ask(&mut c, Request::GroupList) {
        Response::Groups(list) => assert!(list.entries.is_empty(), "{list:?}"),
        other => panic!("group list: {other:?}"),
    }
    match ask(
        &mut c,
        Request::GroupCreate(group("site", &[("greeting", GREETING)])),
    ) {
        Response::Group(g) => assert_eq!(g.values.len(), 1),
        other => panic!("group create: {other:?}"),
    }
    let web = image();
    let info = match ask(&mut c, Request::ImageCreate(web)) {
        Response::Image(info) => info,
        other => panic!("image create: {other:?}"),
    };
    assert!(info.instances.is_empty());

    let deployed = deploy(&mut c, 2);
    let names: Vec<&str> = deployed.instances.iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["web-1", "web-2"]);
    let (code, why) = refusal(&mut c, Request::ModuleRemove(truncated("httpd")));
    assert_eq!(code, ErrorCode::Conflict, "{why}");
    assert!(why.contains("image web"), "{why}");

    let first = serving(&mut c, host, ns);
    assert_eq!(
        first,
        [
            ("web-1".to_owned(), Ipv4Addr::new(10, 0, 10, 10)),
            ("web-2".to_owned(), Ipv4Addr::new(10, 0, 10, 11)),
        ],
        "addresses from the VLAN's pool, in order"
    );

    // Reboot: the store disk keeps modules, group, image and instances; they start again by
    // themselves with the addresses they had.
    let before = match ask(&mut c, Request::Status) {
        Response::Status(s) => s.boot_id,
        other => panic!("status: {other:?}"),
    };
    reboots.ask(&mut c);
    drop(c);
    host.wait_next_boot(keys::admin(), before, BOOT)
        .expect("the host boots again");
    let mut c = host.wait_ready(BOOT).expect("endpoint after the reboot");
    let again = serving(&mut c, host, ns);
    assert_eq!(again, first, "the same instances at the same addresses");

    // Scale down: web-2 goes, with its lease.
    let one = deploy(&mut c, 1);
    let names: Vec<&str> = one.instances.iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["web-1"]);
    let (code, _) = refusal(&mut c, Request::VmInspect(truncated("web-2")));
    assert_eq!(code, ErrorCode::NotFound);
}

fn group(name: &str, values: &[(&str, &str)]) -> GroupSpec {
    GroupSpec {
        name: truncated(name),
        module: truncated("httpd"),
        values: values
            .iter()
            .map(|(k, v)| GroupValue {
                key: truncated(k),
                value: truncated(v),
            })
            .collect(),
    }
}

fn image() -> ImageSpec {
    ImageSpec {
        name: truncated("web"),
        platform: truncated("vkaos"),
        modules: [truncated("httpd")].into_iter().collect(),
        groups: [truncated("site")].into_iter().collect(),
        vcpus: 1,
        memory_mib: 128,
        vlan: Some(10),
        cmdline: truncated("quiet"),
    }
}

fn deploy(c: &mut Client, count: u16) -> ImageInfo {
    match ask(
        c,
        Request::ImageDeploy(ImageDeploy {
            name: truncated("web"),
            count,
        }),
    ) {
        Response::Image(info) => info,
        other => panic!("image deploy --count {count}: {other:?}"),
    }
}

/// Waits until both instances are up with httpd running, then fetches each one's page from the
/// uplink peer; returns each instance's name and address.
fn serving(c: &mut Client, host: &QemuHost, ns: &NetNs) -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    for name in ["web-1", "web-2"] {
        wait_vm(c, host, name, "serving", |i| {
            i.guest_up && i.apps.iter().any(|a| a.entrypoint == "httpd" && a.running)
        });
        wait_log_line(c, host, name, &format!("httpd: {name} listening"));
        let info: VmInfo = inspect(c, name);
        assert_eq!(info.image.as_deref(), Some("web"));
        let ip = info.nics.first().expect("one NIC").ipv4;
        let page = http_get(ns, ip).unwrap_or_else(|e| {
            panic!(
                "GET http://{ip}/ from the uplink: {e}\nhost:\n{}",
                host.tail()
            )
        });
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(
            page.contains(name) && page.contains(GREETING),
            "the page names its instance and the group's greeting: {page}"
        );
        out.push((name.to_owned(), ip));
    }
    out
}

/// `GET /` from the peer's namespace, retried for a while (the first frames wait for ARP).
fn http_get(ns: &NetNs, ip: Ipv4Addr) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = ns
            .enter(|| -> Result<String, String> {
                let to = SocketAddrV4::new(ip, 80);
                let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))
                    .map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
                    .map_err(|e| format!("write: {e}"))?;
                let mut page = String::new();
                s.read_to_string(&mut page)
                    .map_err(|e| format!("read: {e}"))?;
                Ok(page)
            })
            .map_err(|e| e.to_string())?;
        match got {
            Ok(page) => return Ok(page),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}
