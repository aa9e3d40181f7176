//! A management session fed arbitrary bytes in arbitrary chunks: it answers, closes, or reports
//! an error, and never panics or grows without bound.
#![no_main]

use kaos_net::{Handler, Session};
use kaos_protocol::{Request, Response, ServerHello, truncated};
use libfuzzer_sys::fuzz_target;

struct Host;

impl Handler for Host {
    fn hello(&mut self) -> ServerHello {
        ServerHello { version: kaos_protocol::VERSION, hostname: truncated("fuzz") }
    }
    fn request(&mut self, _: &Request) -> Response {
        Response::Accepted
    }
}

fuzz_target!(|data: &[u8]| {
    let mut session = Session::default();
    let mut out = Vec::new();
    // The first byte picks the chunk size, as TCP may split a stream anywhere.
    let Some((&chunk, rest)) = data.split_first() else { return };
    for piece in rest.chunks(usize::from(chunk).max(1)) {
        let mut piece = piece;
        while !piece.is_empty() {
            let taken = session.receive(piece);
            if session.process(&mut Host, &mut out).is_err() || taken == 0 {
                return;
            }
            piece = &piece[taken..];
        }
        assert!(out.len() < 1 << 20, "replies bounded by requests");
        out.clear();
    }
});
