//! Delivering bytes to a session the way TCP may (in pieces of any size), checking on the way
//! the invariants every delivery must keep.

use kaos_net::Session;
use kaos_net::session::{MAX_STREAMS, SessionError};
use kaos_protocol::handshake::{CLIENT_PREAMBLE_LEN, SERVER_PREAMBLE_LEN};
use kaos_protocol::{HEADER_LEN, MAX_FRAME};

use crate::host::Host;

/// The most a session may send for `input` bytes received. Whatever makes the session answer (a
/// preamble, a handshake message, a request frame) is at least [`CLIENT_PREAMBLE_LEN`] bytes
/// long, and is answered with at most two frames (a `Cancel` ends a stream and is acknowledged);
/// one more unit may complete with bytes buffered before this delivery.
pub fn max_output(input: usize) -> usize {
    let units = input / CLIENT_PREAMBLE_LEN + 1;
    SERVER_PREAMBLE_LEN + units * 2 * (HEADER_LEN + MAX_FRAME)
}

/// Delivers `bytes` to `session` in pieces of `piece` bytes (0: all at once), processing after
/// each, and appends what it sends to `out`. Stops early once the session closes (the endpoint
/// stops reading then) or waits for the host key with a full buffer. `Err`: the session ended the
/// connection.
///
/// # Panics
/// A finding: the session refused bytes with a full buffer while it could make progress (it
/// would hang the connection), or sent more than [`max_output`] allows.
pub fn deliver(
    session: &mut Session,
    host: &mut Host,
    bytes: &[u8],
    piece: usize,
    out: &mut Vec<u8>,
) -> Result<(), SessionError> {
    let start = out.len();
    let piece = if piece == 0 {
        bytes.len().max(1)
    } else {
        piece
    };
    for mut rest in bytes.chunks(piece) {
        while !rest.is_empty() && !session.closing() {
            let taken = session.receive(rest);
            session.process(host, out)?;
            if taken == 0 {
                assert!(
                    !host.key_ready(),
                    "session stalled with a full buffer: {session:?}"
                );
                return Ok(());
            }
            rest = &rest[taken..];
        }
    }
    let sent = out.len() - start;
    assert!(
        sent <= max_output(bytes.len()),
        "{sent} bytes sent for {} received",
        bytes.len()
    );
    Ok(())
}

/// Polls the session's streams into a fresh buffer, as the endpoint does once its output is
/// flushed, and returns what was sent.
///
/// # Panics
/// A finding: one poll sent more than one maximal frame per open stream.
pub fn poll(session: &mut Session, host: &mut Host) -> Vec<u8> {
    let mut out = Vec::new();
    let open = session.streams();
    let sent = session.poll_streams(host, &mut out);
    assert_eq!(
        sent,
        !out.is_empty(),
        "poll_streams reported {sent} but sent {} bytes",
        out.len()
    );
    assert!(open <= MAX_STREAMS, "{open} streams open");
    assert!(
        out.len() <= open * (HEADER_LEN + MAX_FRAME),
        "one poll sent {} bytes",
        out.len()
    );
    out
}
