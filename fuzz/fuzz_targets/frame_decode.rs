//! Frame splitting of bytes from the network, and message decoding of the bodies: never panics,
//! never hands out more than `MAX_FRAME` bytes or more than it was given, and reports an
//! oversize header as soon as the header is complete.
#![no_main]

use kaos_protocol::{
    ClientFrame, FrameError, HEADER_LEN, MAX_FRAME, ServerFrame, decode_message, frame_header,
    split_frame,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A stream of frames, as a peer reads them one after another.
    let mut rest = data;
    loop {
        match split_frame(rest) {
            Ok(Some((body, used))) => {
                assert!(body.len() <= MAX_FRAME, "body of {} bytes", body.len());
                assert!(used <= rest.len(), "used {used} of {} bytes", rest.len());
                assert_eq!(used, HEADER_LEN + body.len());
                assert_eq!(
                    &rest[HEADER_LEN..used],
                    body,
                    "body is not the bytes after the header"
                );
                let header = rest.first_chunk::<HEADER_LEN>().copied();
                assert_eq!(
                    frame_header(body.len()),
                    header,
                    "header does not re-encode"
                );
                decode(body);
                rest = &rest[used..];
            }
            Ok(None) => {
                // Incomplete: no header yet, or a body shorter than announced.
                if let Some(header) = rest.first_chunk::<HEADER_LEN>() {
                    let len = usize::try_from(u32::from_le_bytes(*header)).unwrap_or(usize::MAX);
                    assert!(len <= MAX_FRAME && rest.len() < HEADER_LEN + len);
                }
                break;
            }
            Err(FrameError::Oversize(n)) => {
                assert!(rest.len() >= HEADER_LEN, "oversize without a header");
                assert!(
                    usize::try_from(n).map_or(true, |n| n > MAX_FRAME),
                    "refused {n} bytes"
                );
                break;
            }
            Err(e) => panic!("split_frame failed with {e:?}"),
        }
    }
    // The bytes as one body too, whatever their length.
    decode(data);
});

fn decode(body: &[u8]) {
    let client = decode_message::<ClientFrame>(body);
    let server = decode_message::<ServerFrame>(body);
    for result in [client.err(), server.err()].into_iter().flatten() {
        assert!(
            matches!(result, FrameError::Malformed | FrameError::TrailingBytes),
            "decoding failed with {result:?}"
        );
    }
}
