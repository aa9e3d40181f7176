//! Decoding of every message a peer sends (requests, responses, both hellos, both preambles):
//! never panics, and whatever decodes re-encodes within the frame limit and decodes to the same
//! value, so no message is accepted that the peer could not have sent.
#![no_main]

use kaos_protocol::handshake::{
    CLIENT_PREAMBLE_LEN, ClientHello, ClientPreamble, SERVER_PREAMBLE_LEN, ServerHello,
    ServerPreamble,
};
use kaos_protocol::{ClientFrame, MAX_MESSAGE, ServerFrame, decode_message, encode_message};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    round_trip::<ClientFrame>(data);
    round_trip::<ServerFrame>(data);
    round_trip::<ServerHello>(data);
    round_trip::<ClientHello>(data);
    if let Some(bytes) = data.first_chunk::<CLIENT_PREAMBLE_LEN>()
        && let Ok(preamble) = ClientPreamble::decode(bytes)
    {
        assert_eq!(
            &preamble.encode(),
            bytes,
            "client preamble has no spare bits"
        );
    }
    if let Some(bytes) = data.first_chunk::<SERVER_PREAMBLE_LEN>()
        && let Ok(preamble) = ServerPreamble::decode(bytes)
    {
        // Byte 9 is reserved: ignored on decode, zero on encode.
        let again = ServerPreamble::decode(&preamble.encode()).expect("re-encoded preamble");
        assert_eq!(again, preamble);
    }
});

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + core::fmt::Debug>(data: &[u8]) {
    let Ok(msg) = decode_message::<T>(data) else {
        return;
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = encode_message(&msg, &mut buf).expect("a decoded message re-encodes");
    assert!(
        n <= data.len(),
        "re-encoding grew from {} to {n} bytes",
        data.len()
    );
    let again = decode_message::<T>(&buf[..n]).expect("a re-encoded message decodes");
    assert_eq!(again, msg);
}
