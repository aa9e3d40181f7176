//! Encoding tests of protocol 1.3 (`module inspect`). The golden bytes pin the wire format: if
//! one fails, the change broke compatibility; append a variant or field instead.

use super::*;
extern crate std;
use std::vec::Vec as StdVec;

fn bytes<T: serde::Serialize>(msg: &T) -> StdVec<u8> {
    let mut buf = [0u8; MAX_MESSAGE];
    let n = encode_message(msg, &mut buf).expect("encodes");
    buf[..n].to_vec()
}

fn info() -> ModuleInfo {
    ModuleInfo {
        name: truncated("h"),
        version: truncated("1"),
        kind: ModuleKind::App,
        sha256: [0xab; 32],
        size: 10,
    }
}

#[test]
fn golden_module_inspect() {
    let request = Request::ModuleInspect(ModuleInspectQuery {
        name: truncated("httpd"),
        offset: 300,
    });
    // id | ModuleInspect=29 | "httpd" | offset 300 (varint)
    assert_eq!(
        bytes(&ClientFrame { id: 1, request }),
        [1, 29, 5, b'h', b't', b't', b'p', b'd', 0xac, 0x02]
    );
    let mut data = heapless::Vec::new();
    data.extend_from_slice(&[1, 2, 3]).expect("room");
    let response = Response::ModuleManifest(ModuleManifest {
        module: info(),
        total: 3,
        offset: 0,
        data,
    });
    let mut expected = std::vec![2, 1, 19, 1, b'h', 1, b'1', 1];
    expected.extend_from_slice(&[0xab; 32]);
    expected.extend_from_slice(&[10, 3, 0, 3, 1, 2, 3]);
    // id | last | ModuleManifest=19 | ModuleInfo | total | offset | data
    assert_eq!(
        bytes(&ServerFrame {
            id: 2,
            last: true,
            response
        }),
        expected
    );
}

#[test]
fn module_inspect_is_for_readers_and_a_full_part_fits_a_frame() {
    let q = ModuleInspectQuery {
        name: truncated("httpd"),
        offset: 0,
    };
    assert_eq!(Request::ModuleInspect(q).required_role(), Role::Reader);
    let mut module = info();
    module.name = truncated(&"a".repeat(32));
    module.version = truncated(&"v".repeat(64));
    module.size = u64::MAX;
    let mut data = heapless::Vec::new();
    while data.push(0xff).is_ok() {}
    let full = ServerFrame {
        id: u32::MAX,
        last: true,
        response: Response::ModuleManifest(ModuleManifest {
            module,
            total: u32::MAX,
            offset: u32::MAX,
            data,
        }),
    };
    let mut buf = [0u8; MAX_MESSAGE];
    assert!(encode_message(&full, &mut buf).is_ok());
}
