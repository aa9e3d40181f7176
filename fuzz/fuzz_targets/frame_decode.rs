//! Frame decoding of bytes from the network: never panics, never reads past the announced
//! length, and whatever decodes re-encodes to the same message.
#![no_main]

use kaos_protocol::{ClientFrame, ServerFrame, decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((frame, used))) = decode_frame::<ClientFrame>(data) {
        assert!(used <= data.len());
        let mut buf = vec![0u8; used + 16];
        let n = encode_frame(&frame, &mut buf).expect("a decoded frame re-encodes");
        let (again, _) = decode_frame::<ClientFrame>(&buf[..n]).expect("valid").expect("whole");
        assert_eq!(again, frame);
    }
    let _ = decode_frame::<ServerFrame>(data);
});
