//! Tier 2: the network configuration plane through the `kaosctl` binary against
//! `kattach --hosted` with a state file: VLANs and their pools, VM NICs getting MACs and
//! addresses (and giving them back), refusals that name the problem, firewall rules, and the
//! same MAC and address after kattach is killed and started again on the same file.
//!
//! VMs are created without starting them, so no `/dev/kvm` is needed; the namespace (root) is.
//! `kaosctl` is taken from beside `kattach`; build it first with `cargo build -p kaosctl`.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::User;
use kaos_qemu_tests::hosted::HostedHost;
use serde_json::Value;

const KATTACH: &str = env!("CARGO_BIN_EXE_kattach");
const READY: Duration = Duration::from_secs(10);

/// The `kaosctl` binary, or why the test cannot run.
fn kaosctl(test: &str) -> Option<PathBuf> {
    kaos_qemu_tests::kaosctl_beside(Path::new(KATTACH), test, "Virtual networking")
}

fn launch(state: &Path) -> HostedHost {
    let state = state.to_string_lossy();
    let host = HostedHost::launch_with(Path::new(KATTACH), "kaos-net", &["--state-file", &state])
        .expect("launch");
    drop(host.wait_ready(READY).expect("ready"));
    host
}

/// A platform module whose kernel is a hand-made guest (never started here).
fn platform_file(dir: &Path) -> String {
    let elf = kaos_vmm::tiny::tiny_elf_with_code(&[0xf4]);
    let bytes = kaos_module::pack_platform("tiny", "1.0-test", "tiny", &elf).expect("pack");
    let path = dir.join("tiny.aqi");
    std::fs::write(&path, bytes).expect("write module");
    path.to_string_lossy().into_owned()
}

/// (MAC, address) of a VM's first NIC, from `vm create`/`vm inspect` JSON.
fn first_nic(vm: &Value) -> (String, String) {
    let nic = &vm["nics"][0];
    (
        nic["mac"].as_str().expect("mac").to_owned(),
        nic["ipv4"].as_str().expect("ipv4").to_owned(),
    )
}

fn create(user: &User, host: &HostedHost, name: &str, nic: &str) -> Value {
    user.json(
        host,
        &["vm", "create", name, "--platform", "tiny", "--nic", nic],
    )
}

#[test]
fn vlans_pools_nics_and_rules_through_kaosctl_and_across_a_restart() {
    let Some(kaosctl) = kaosctl("hosted_net") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("kaos-net-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("state.redb");
    let host = launch(&state);
    let user = User::new(kaosctl, "a");
    user.ok(&host, &["--trust-new-host", "status"]);
    user.ok(&host, &["module", "push", &platform_file(&dir)]);

    // VLANs: one with the default pool, one with two addresses.
    let v10 = user.json(
        &host,
        &[
            "net",
            "vlan",
            "create",
            "10",
            "--subnet",
            "10.0.10.0/24",
            "--gateway",
            "10.0.10.1",
            "--dns",
            "10.0.10.53",
        ],
    );
    assert_eq!(
        (v10["pool_size"].as_u64(), v10["leases_used"].as_u64()),
        (Some(253), Some(0))
    );
    user.ok(
        &host,
        &[
            "net",
            "vlan",
            "create",
            "20",
            "--subnet",
            "192.168.20.0/24",
            "--pool",
            "192.168.20.100-192.168.20.101",
        ],
    );
    user.fails(
        &host,
        &["net", "vlan", "create", "10", "--subnet", "10.0.11.0/24"],
        1,
        "exists",
    );
    user.fails(
        &host,
        &["net", "vlan", "create", "30", "--subnet", "10.0.30.5/24"],
        2,
        "host bits",
    );
    user.fails(
        &host,
        &["net", "vlan", "create", "30", "--subnet", "10.0.30.0"],
        2,
        "A.B.C.D/N",
    );
    let list = user.ok(&host, &["net", "vlan", "list"]);
    assert!(
        list.contains("10.0.10.0/24") && list.contains("192.168.20.100-192.168.20.101"),
        "{list}"
    );

    // NICs: a MAC and the pool's lowest free address; the next VM gets the next one.
    let web1 = create(&user, &host, "web-1", "vlan=10");
    let (mac1, ip1) = first_nic(&web1);
    assert_eq!(ip1, "10.0.10.2", "10.0.10.1 is the gateway");
    assert!(mac1.starts_with("02:"), "{mac1}");
    assert_eq!(web1["nics"][0]["gateway"].as_str(), Some("10.0.10.1"));
    assert_eq!(web1["nics"][0]["prefix"].as_u64(), Some(24));
    let web2 = create(&user, &host, "web-2", "vlan=10,publish=tcp:80");
    let (mac2, ip2) = first_nic(&web2);
    assert_eq!(ip2, "10.0.10.3");
    assert_ne!(mac1, mac2);
    assert_eq!(web2["nics"][0]["publish"][0].as_str(), Some("tcp:80"));
    let fixed = create(&user, &host, "db-1", "vlan=10,ip=10.0.10.50");
    assert_eq!(first_nic(&fixed).1, "10.0.10.50");

    // Refusals name the problem and leave nothing behind.
    user.fails(
        &host,
        &[
            "vm",
            "create",
            "x",
            "--platform",
            "tiny",
            "--nic",
            "vlan=99",
        ],
        1,
        "VLAN 99 does not exist",
    );
    user.fails(
        &host,
        &[
            "vm",
            "create",
            "x",
            "--platform",
            "tiny",
            "--nic",
            "vlan=10,ip=10.0.10.2",
        ],
        1,
        "held by VM web-1",
    );
    user.fails(
        &host,
        &[
            "vm",
            "create",
            "x",
            "--platform",
            "tiny",
            "--nic",
            "vlan=10,ip=10.0.10.1",
        ],
        1,
        "gateway",
    );
    user.fails(
        &host,
        &[
            "vm",
            "create",
            "x",
            "--platform",
            "tiny",
            "--nic",
            "vlan=10,ip=10.0.99.1",
        ],
        1,
        "outside the VLAN's subnet",
    );
    user.fails(
        &host,
        &[
            "vm",
            "create",
            "x",
            "--platform",
            "tiny",
            "--nic",
            "vlan=10,mtu=1",
        ],
        2,
        "unknown NIC key",
    );
    create(&user, &host, "p-1", "vlan=20");
    create(&user, &host, "p-2", "vlan=20");
    user.fails(
        &host,
        &[
            "vm",
            "create",
            "p-3",
            "--platform",
            "tiny",
            "--nic",
            "vlan=20",
        ],
        1,
        "exhausted",
    );
    let list = user.ok(&host, &["vm", "list"]);
    assert!(!list.contains("x ") && !list.contains("p-3"), "{list}");
    assert!(
        list.contains("ADDRESS") && list.contains("10.0.10.3"),
        "{list}"
    );
    let inspect = user.ok(&host, &["vm", "inspect", "web-2"]);
    assert!(
        inspect.contains(&format!(
            "eth0  vlan 10  {mac2}  10.0.10.3/24  gw 10.0.10.1"
        )),
        "{inspect}"
    );

    // A VLAN in use stays.
    user.fails(&host, &["net", "vlan", "delete", "10"], 1, "in use by VM");

    // Rules.
    let r1 = user.json(
        &host,
        &[
            "net",
            "rule",
            "add",
            "--vlan",
            "10",
            "--direction",
            "in",
            "--protocol",
            "tcp",
            "--ports",
            "22",
            "--action",
            "deny",
        ],
    );
    assert_eq!(r1["id"].as_u64(), Some(1));
    let r2 = user.json(
        &host,
        &[
            "net",
            "rule",
            "add",
            "--vm",
            "web-1",
            "--direction",
            "out",
            "--peer",
            "10.0.0.0/8",
            "--action",
            "allow",
        ],
    );
    assert_eq!(r2["id"].as_u64(), Some(2));
    user.fails(
        &host,
        &[
            "net",
            "rule",
            "add",
            "--vm",
            "nope",
            "--direction",
            "in",
            "--action",
            "deny",
        ],
        1,
        "no VM named",
    );
    user.fails(
        &host,
        &[
            "net",
            "rule",
            "add",
            "--vlan",
            "10",
            "--direction",
            "in",
            "--ports",
            "5",
            "--action",
            "deny",
        ],
        2,
        "tcp or udp",
    );
    user.fails(
        &host,
        &[
            "net",
            "rule",
            "add",
            "--direction",
            "in",
            "--action",
            "deny",
        ],
        2,
        "--vlan",
    );
    let rules = user.ok(&host, &["net", "rule", "list"]);
    assert!(
        rules.contains("vlan 10") && rules.contains("vm web-1") && rules.contains("10.0.0.0/8"),
        "{rules}"
    );
    user.fails(&host, &["net", "vlan", "delete", "20"], 1, "");
    // No VM with a NIC has started: no switch runs, so it has no ports yet.
    let stats = user.json(&host, &["net", "stats"]);
    assert_eq!(stats["ports"].as_array().map(Vec::len), Some(0), "{stats}");

    // Destroy releases the address: the next VM gets it back.
    user.ok(&host, &["vm", "destroy", "web-2"]);
    let vlans = user.json(&host, &["net", "vlan", "list"]);
    assert_eq!(vlans[0]["leases_used"].as_u64(), Some(2), "web-1 and db-1");
    assert_eq!(
        first_nic(&create(&user, &host, "web-3", "vlan=10")).1,
        "10.0.10.3"
    );

    // Kill kattach and start it again on the same file: same MAC, same address, same rules.
    drop(host);
    let host = launch(&state);
    let again = user.json(&host, &["vm", "inspect", "web-1"]);
    assert_eq!(first_nic(&again), (mac1, ip1));
    let rules = user.json(&host, &["net", "rule", "list"]);
    assert_eq!(rules.as_array().map(Vec::len), Some(2));

    // Cleaning up in order: the VM's rule goes with the VM; the VLAN rule must be deleted.
    for vm in ["web-1", "web-3", "db-1", "p-1", "p-2"] {
        user.ok(&host, &["vm", "destroy", vm]);
    }
    let rules = user.json(&host, &["net", "rule", "list"]);
    assert_eq!(rules.as_array().map(Vec::len), Some(1), "{rules}");
    user.fails(
        &host,
        &["net", "vlan", "delete", "10"],
        1,
        "named by rule 1",
    );
    user.ok(&host, &["net", "rule", "delete", "1"]);
    user.ok(&host, &["net", "vlan", "delete", "10"]);
    user.fails(&host, &["net", "vlan", "delete", "10"], 1, "no VLAN 10");
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}
