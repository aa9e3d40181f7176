//! Encoding tests of protocol 1.4 (configuration groups, VM images, App Module status). The
//! golden bytes pin the wire format: if one fails, the change broke compatibility; append a
//! variant or field instead.

use core::net::Ipv4Addr;

use super::*;
extern crate std;
use std::vec::Vec as StdVec;

fn bytes<T: serde::Serialize>(msg: &T) -> StdVec<u8> {
    let mut buf = [0u8; MAX_MESSAGE];
    let n = encode_message(msg, &mut buf).expect("encodes");
    buf[..n].to_vec()
}

fn fits<T: serde::Serialize>(msg: &T) -> bool {
    let mut buf = [0u8; MAX_MESSAGE];
    encode_message(msg, &mut buf).is_ok()
}

fn reply(response: Response) -> ServerFrame {
    ServerFrame {
        id: u32::MAX,
        last: true,
        response,
    }
}

/// A name of `n` bytes (an [`ObjectName`] holds up to 32).
fn name(n: usize) -> ObjectName {
    truncated(&"n".repeat(n))
}

/// The longest image name, or any bounded string filled to the brim.
fn full<const N: usize>() -> heapless::String<N> {
    truncated(&"x".repeat(N))
}

/// Every entrypoint a VM shows, each with the longest names and exit text: `VmInfo.apps` at
/// its largest. The 1.1 and 1.2 "fits a frame" tests fill the field with it too.
pub(crate) fn fullest_apps() -> heapless::Vec<AppStatus, MAX_APPS> {
    core::iter::repeat_n(
        AppStatus {
            module: name(32),
            entrypoint: name(32),
            running: true,
            starts: u32::MAX,
            last_exit: Some(full()),
        },
        MAX_APPS,
    )
    .collect()
}

#[test]
fn golden_group_create_and_image_deploy() {
    let mut values = heapless::Vec::new();
    values
        .push(GroupValue {
            key: truncated("port"),
            value: truncated("8080"),
        })
        .expect("room");
    let create = Request::GroupCreate(GroupSpec {
        name: truncated("web"),
        module: truncated("httpd"),
        values,
    });
    // id | GroupCreate=30 | "web" | "httpd" | [ "port" "8080" ]
    let mut want = std::vec![
        1u8, 30, 3, b'w', b'e', b'b', 5, b'h', b't', b't', b'p', b'd', 1
    ];
    want.extend_from_slice(&[4, b'p', b'o', b'r', b't', 4, b'8', b'0', b'8', b'0']);
    assert_eq!(
        bytes(&ClientFrame {
            id: 1,
            request: create
        }),
        want
    );
    let deploy = Request::ImageDeploy(ImageDeploy {
        name: truncated("web"),
        count: 300,
    });
    // id | ImageDeploy=39 | "web" | count 300 (varint)
    assert_eq!(
        bytes(&ClientFrame {
            id: 2,
            request: deploy
        }),
        [2, 39, 3, b'w', b'e', b'b', 0xac, 0x02]
    );
    for (request, index) in [
        (Request::GroupList, 31u8),
        (Request::GroupShow(truncated("g")), 32),
        (Request::GroupDelete(truncated("g")), 34),
        (Request::ImageList, 36),
        (Request::ImageShow(truncated("g")), 37),
        (Request::ImageDelete(truncated("g")), 38),
    ] {
        assert_eq!(bytes(&ClientFrame { id: 1, request })[1], index);
    }
}

#[test]
fn golden_image_response() {
    let one = |s: &str| -> heapless::Vec<ObjectName, MAX_IMAGE_PARTS> {
        core::iter::once(truncated(s)).collect()
    };
    let info = ImageInfo {
        spec: ImageSpec {
            name: truncated("web"),
            platform: truncated("vkaos"),
            modules: one("httpd"),
            groups: one("web"),
            vcpus: 1,
            memory_mib: 128,
            vlan: Some(10),
            cmdline: truncated("q"),
        },
        instances: core::iter::once(truncated("web-1")).collect(),
    };
    let frame = ServerFrame {
        id: 2,
        last: true,
        response: Response::Image(info),
    };
    // id | last | Image=22 | "web" | "vkaos" | ["httpd"] | ["web"] | vcpus | 128 (varint) |
    // Some 10 | "q" | ["web-1"]
    let mut want = std::vec![
        2u8, 1, 22, 3, b'w', b'e', b'b', 5, b'v', b'k', b'a', b'o', b's'
    ];
    want.extend_from_slice(&[1, 5, b'h', b't', b't', b'p', b'd', 1, 3, b'w', b'e', b'b']);
    want.extend_from_slice(&[1, 0x80, 0x01, 1, 10, 1, b'q']);
    want.extend_from_slice(&[1, 5, b'w', b'e', b'b', b'-', b'1']);
    assert_eq!(bytes(&frame), want);
    let none = Response::Groups(GroupList {
        entries: heapless::Vec::new(),
    });
    assert_eq!(bytes(&reply(none))[6..], [21, 0], "Groups=21, empty");
    let none = Response::Images(ImageList {
        entries: heapless::Vec::new(),
    });
    assert_eq!(bytes(&reply(none))[6..], [23, 0], "Images=23, empty");
    assert_eq!(bytes(&EventKind::ImageChanged), [11]);
    assert_eq!(bytes(&EventKind::AppExited), [12]);
}

#[test]
fn lists_and_shows_are_for_readers_the_rest_for_operators() {
    let g = || truncated("g");
    let spec = GroupSpec {
        name: g(),
        module: g(),
        values: heapless::Vec::new(),
    };
    let image = ImageSpec {
        name: g(),
        platform: g(),
        modules: heapless::Vec::new(),
        groups: heapless::Vec::new(),
        vcpus: 1,
        memory_mib: 128,
        vlan: None,
        cmdline: heapless::String::new(),
    };
    for request in [
        Request::GroupList,
        Request::GroupShow(g()),
        Request::ImageList,
        Request::ImageShow(g()),
    ] {
        assert_eq!(request.required_role(), Role::Reader, "{}", request.name());
    }
    for request in [
        Request::GroupCreate(spec),
        Request::GroupEdit(GroupEdit {
            name: g(),
            set: heapless::Vec::new(),
            unset: heapless::Vec::new(),
        }),
        Request::GroupDelete(g()),
        Request::ImageCreate(image),
        Request::ImageDelete(g()),
        Request::ImageDeploy(ImageDeploy {
            name: g(),
            count: 1,
        }),
    ] {
        assert_eq!(
            request.required_role(),
            Role::Operator,
            "{}",
            request.name()
        );
    }
}

fn fullest_values() -> heapless::Vec<GroupValue, MAX_GROUP_VALUES> {
    core::iter::repeat_n(
        GroupValue {
            key: full(),
            value: full(),
        },
        MAX_GROUP_VALUES,
    )
    .collect()
}

#[test]
fn the_fullest_group_messages_fit_a_frame() {
    let spec = GroupSpec {
        name: name(32),
        module: name(32),
        values: fullest_values(),
    };
    assert!(fits(&reply(Response::Group(spec.clone()))), "a full group");
    let create = ClientFrame {
        id: u32::MAX,
        request: Request::GroupCreate(spec),
    };
    assert!(fits(&create), "a full group create");
    let edit = ClientFrame {
        id: u32::MAX,
        request: Request::GroupEdit(GroupEdit {
            name: name(32),
            set: fullest_values(),
            unset: core::iter::repeat_n(full(), MAX_GROUP_VALUES).collect(),
        }),
    };
    assert!(fits(&edit), "a full group edit");
    let summary = GroupSummary {
        name: name(32),
        module: name(32),
        values: u8::MAX,
        images: u8::MAX,
    };
    let list = GroupList {
        entries: core::iter::repeat_n(summary, MAX_GROUPS).collect(),
    };
    assert!(fits(&reply(Response::Groups(list))), "a full group list");
}

#[test]
fn the_fullest_image_messages_fit_a_frame() {
    let parts = || core::iter::repeat_n(name(32), MAX_IMAGE_PARTS).collect();
    let spec = ImageSpec {
        name: name(IMAGE_NAME_MAX),
        platform: name(32),
        modules: parts(),
        groups: parts(),
        vcpus: u8::MAX,
        memory_mib: u32::MAX,
        vlan: Some(u16::MAX),
        cmdline: full(),
    };
    let create = ClientFrame {
        id: u32::MAX,
        request: Request::ImageCreate(spec.clone()),
    };
    assert!(fits(&create), "a full image create");
    let info = ImageInfo {
        spec,
        instances: core::iter::repeat_n(name(32), usize::from(MAX_INSTANCES)).collect(),
    };
    assert!(fits(&reply(Response::Image(info))), "a full image");
    let summary = ImageSummary {
        name: name(32),
        platform: name(32),
        modules: u8::MAX,
        vcpus: u8::MAX,
        memory_mib: u32::MAX,
        vlan: Some(u16::MAX),
        instances: u16::MAX,
    };
    let list = ImageList {
        entries: core::iter::repeat_n(summary, MAX_IMAGES).collect(),
    };
    assert!(fits(&reply(Response::Images(list))), "a full image list");
}

#[test]
fn image_names_leave_room_for_every_instance_number() {
    let instance = std::format!("{}-{MAX_INSTANCES}", "i".repeat(IMAGE_NAME_MAX));
    assert!(valid_object_name(&instance), "{instance}");
}

/// The largest `VmSummary` and `VmInfo` of 1.4: an image name, every entrypoint, and (for
/// `VmInfo`) every NIC with every published port.
#[test]
fn the_fullest_vm_list_and_vm_fit_a_frame() {
    let summary = VmSummary {
        name: name(32),
        state: VmState::Starting,
        vcpus: u8::MAX,
        memory_mib: u32::MAX,
        restarts: u32::MAX,
        guest_up: true,
        ipv4: Some(Ipv4Addr::BROADCAST),
        image: Some(name(32)),
    };
    let list = VmList {
        entries: core::iter::repeat_n(summary, MAX_VMS).collect(),
    };
    assert!(fits(&reply(Response::Vms(list))), "a full VM list");
    let publish = core::iter::repeat_n(
        PublishSpec {
            protocol: Transport::Udp,
            port: u16::MAX,
        },
        MAX_PUBLISH,
    )
    .collect::<heapless::Vec<_, MAX_PUBLISH>>();
    let mut spec = crate::tests::sample_spec();
    spec.nics = core::iter::repeat_n(
        NicSpec {
            vlan: u16::MAX,
            ipv4: Some(Ipv4Addr::BROADCAST),
            publish,
        },
        MAX_NICS,
    )
    .collect();
    let nic = NicInfo {
        vlan: u16::MAX,
        mac: [0xff; 6],
        ipv4: Ipv4Addr::BROADCAST,
        prefix: u8::MAX,
        gateway: Some(Ipv4Addr::BROADCAST),
    };
    let info = VmInfo {
        spec,
        state: VmState::Starting,
        desired_running: true,
        pid: Some(u32::MAX),
        restarts: u32::MAX,
        since_ms: u64::MAX,
        guest_up: true,
        last_exit: Some(VmExit {
            kind: VmExitKind::StartFailed,
            message: full(),
            at_ms: u64::MAX,
        }),
        platform_sha256: Some([0xff; 32]),
        nics: core::iter::repeat_n(nic, MAX_NICS).collect(),
        image: Some(name(32)),
        apps: fullest_apps(),
    };
    assert!(fits(&reply(Response::Vm(info))), "the fullest VM");
}
