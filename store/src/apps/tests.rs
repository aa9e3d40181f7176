//! Groups, images and deployments keep their references, each check in the transaction that
//! would break it.

use std::net::Ipv4Addr;

use crate::{NicRecord, Store, StoreError, VmRecord};
use kaos_protocol::{
    GroupSpec, ImageSpec, ModuleInfo, ModuleKind, RestartPolicy, VlanSpec, VmSpec, truncated,
};

fn module(store: &Store, name: &str, kind: ModuleKind) -> Result<(), StoreError> {
    let bytes = name.as_bytes();
    let info = ModuleInfo {
        name: truncated(name),
        version: truncated("1"),
        kind,
        sha256: sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            bytes,
        ))
        .into(),
        size: bytes.len() as u64,
    };
    store.put_module(&info, bytes)
}

fn group(name: &str, module: &str) -> GroupSpec {
    GroupSpec {
        name: truncated(name),
        module: truncated(module),
        values: heapless::Vec::new(),
    }
}

fn image(name: &str, modules: &[&str], groups: &[&str]) -> ImageSpec {
    ImageSpec {
        name: truncated(name),
        platform: truncated("vkaos"),
        modules: modules.iter().map(|m| truncated(m)).collect(),
        groups: groups.iter().map(|g| truncated(g)).collect(),
        vcpus: 1,
        memory_mib: 128,
        vlan: Some(10),
        cmdline: truncated(""),
    }
}

fn instance(image: &str, n: u8) -> VmRecord {
    let name = format!("{image}-{n}");
    VmRecord {
        spec: VmSpec {
            name: truncated(&name),
            vcpus: 1,
            memory_mib: 128,
            cmdline: truncated(""),
            platform: truncated("vkaos"),
            restart: RestartPolicy::OnFailure,
            nics: heapless::Vec::new(),
        },
        running: true,
        nics: vec![NicRecord {
            vlan: 10,
            mac: [2, 0, 0, 0, 0, n],
            ipv4: Ipv4Addr::new(10, 0, 10, n),
        }],
        image: Some(image.to_owned()),
    }
}

fn setup() -> Result<Store, StoreError> {
    let store = Store::memory();
    module(&store, "vkaos", ModuleKind::Platform)?;
    module(&store, "httpd", ModuleKind::App)?;
    store.create_vlan(&VlanSpec {
        id: 10,
        subnet: kaos_protocol::Ipv4Cidr {
            addr: [10, 0, 10, 0],
            prefix: 24,
        },
        gateway: None,
        pool: None,
        dns: heapless::Vec::new(),
    })?;
    Ok(store)
}

#[test]
fn groups_are_unique_and_need_their_module() -> Result<(), StoreError> {
    let store = setup()?;
    assert!(store.put_group(&group("site", "httpd"), true)?);
    let taken = store
        .put_group(&group("site", "httpd"), true)
        .expect_err("taken");
    assert!(taken.to_string().contains("exists"), "{taken}");
    let orphan = store
        .put_group(&group("db", "postgres"), true)
        .expect_err("no module");
    assert!(orphan.to_string().contains("postgres"), "{orphan}");
    assert!(
        !store.put_group(&group("nope", "httpd"), false)?,
        "edit of a missing group"
    );
    let mut edited = group("site", "httpd");
    edited
        .values
        .push(kaos_protocol::GroupValue {
            key: truncated("greeting"),
            value: truncated("hi"),
        })
        .map_err(|_| StoreError::Database("room".into()))?;
    assert!(store.put_group(&edited, false)?);
    assert_eq!(store.groups()?, vec![edited]);
    Ok(())
}

#[test]
fn references_hold_until_their_users_are_gone() -> Result<(), StoreError> {
    let store = setup()?;
    store.put_group(&group("site", "httpd"), true)?;
    let missing = store
        .create_image(&image("web", &["httpd"], &["other"]))
        .expect_err("no such group");
    assert!(missing.to_string().contains("other"), "{missing}");
    let missing = store
        .create_image(&image("web", &["sshd"], &[]))
        .expect_err("no such module");
    assert!(missing.to_string().contains("sshd"), "{missing}");
    assert!(store.images()?.is_empty(), "refusals wrote nothing");
    store.create_image(&image("web", &["httpd"], &["site"]))?;
    assert!(store.create_image(&image("web", &[], &[])).is_err());

    let used = store.remove_module("httpd").expect_err("the image uses it");
    assert!(used.to_string().contains("image web"), "{used}");
    let used = store
        .remove_module("vkaos")
        .expect_err("the image boots it");
    assert!(used.to_string().contains("image web"), "{used}");
    let used = store.remove_group("site").expect_err("the image uses it");
    assert!(used.to_string().contains("image web"), "{used}");

    store.deploy(&[instance("web", 1), instance("web", 2)], &[])?;
    assert_eq!(store.leases()?.len(), 2);
    let busy = store.remove_image("web").expect_err("instances exist");
    assert!(busy.to_string().contains("--count 0"), "{busy}");

    // A clash in the second record writes neither.
    let mut clash = instance("web", 4);
    clash.nics[0].ipv4 = Ipv4Addr::new(10, 0, 10, 1);
    let error = store
        .deploy(&[instance("web", 3), clash], &[])
        .expect_err("address held");
    assert!(error.to_string().contains("held by VM web-1"), "{error}");
    assert_eq!(store.vms()?.len(), 2, "nothing half-deployed");

    // Scaling down releases the leases in the same step.
    store.deploy(&[instance("web", 3)], &["web-1".into(), "web-2".into()])?;
    let names: Vec<String> = store.vms()?.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["web-3"]);
    assert_eq!(store.leases()?.len(), 1);
    store.deploy(&[], &["web-3".into()])?;
    assert!(store.remove_image("web")?);
    let still = store
        .remove_module("httpd")
        .expect_err("the group still names it");
    assert!(still.to_string().contains("group site"), "{still}");
    assert!(store.remove_group("site")?);
    assert!(store.remove_module("httpd")?);
    Ok(())
}
