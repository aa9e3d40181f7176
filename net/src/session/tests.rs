use super::*;
use kaos_protocol::{Hello, Version, truncated};

struct Fixed;

impl Handler for Fixed {
    fn hello(&mut self) -> ServerHello {
        ServerHello {
            version: kaos_protocol::VERSION,
            hostname: truncated("h"),
        }
    }
    fn request(&mut self, request: &Request) -> Response {
        match request {
            Request::Reboot | Request::Shutdown => Response::Accepted,
            _ => Response::Error(ErrorReply::new(ErrorCode::Unsupported, "test")),
        }
    }
}

fn frame(id: u32, request: Request) -> Vec<u8> {
    let mut buf = vec![0; 256];
    let n = encode_frame(&ClientFrame { id, request }, &mut buf).expect("encodes");
    buf.truncate(n);
    buf
}

fn replies(mut out: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    while let Some((f, used)) = decode_frame::<ServerFrame>(out).expect("valid reply") {
        frames.push(f);
        out = &out[used..];
    }
    assert!(out.is_empty(), "partial reply left");
    frames
}

fn run(session: &mut Session, bytes: &[u8]) -> Result<Vec<ServerFrame>, SessionError> {
    assert_eq!(session.receive(bytes), bytes.len());
    let mut out = Vec::new();
    session.process(&mut Fixed, &mut out)?;
    Ok(replies(&out))
}

#[test]
fn hello_then_requests_in_one_segment() {
    let mut bytes = frame(1, Request::Hello(Hello::new("t")));
    bytes.extend(frame(2, Request::Status));
    let mut s = Session::default();
    let got = run(&mut s, &bytes).expect("valid");
    assert_eq!(got.len(), 2);
    assert!(matches!(got[0].response, Response::Hello(_)));
    assert_eq!(got[1].id, 2);
    assert!(!s.closing());
}

#[test]
fn byte_at_a_time_gives_the_same_answers() {
    let mut bytes = frame(1, Request::Hello(Hello::new("t")));
    bytes.extend(frame(2, Request::Status));
    let mut s = Session::default();
    let mut got = Vec::new();
    for b in bytes {
        got.extend(run(&mut s, &[b]).expect("valid"));
    }
    assert_eq!(got.len(), 2);
}

#[test]
fn request_before_hello_is_refused_and_closes() {
    let mut s = Session::default();
    let got = run(&mut s, &frame(5, Request::Reboot)).expect("valid frame");
    assert!(matches!(
        &got[0].response,
        Response::Error(e) if e.code == ErrorCode::HelloRequired
    ));
    assert!(s.closing());
}

#[test]
fn major_version_mismatch_is_refused() {
    let mut hello = Hello::new("old");
    hello.version = Version { major: 9, minor: 0 };
    let mut s = Session::default();
    let got = run(&mut s, &frame(1, Request::Hello(hello))).expect("valid frame");
    assert!(matches!(
        &got[0].response,
        Response::Error(e) if e.code == ErrorCode::VersionMismatch
    ));
    assert!(s.closing());
}

#[test]
fn bad_magic_is_refused() {
    let mut hello = Hello::new("x");
    hello.magic = *b"HTTP";
    let mut s = Session::default();
    let got = run(&mut s, &frame(1, Request::Hello(hello))).expect("valid frame");
    assert!(matches!(&got[0].response, Response::Error(e) if e.code == ErrorCode::BadMagic));
}

#[test]
fn accepted_shutdown_closes_after_reply_and_ignores_the_rest() {
    let mut bytes = frame(1, Request::Hello(Hello::new("t")));
    bytes.extend(frame(2, Request::Shutdown));
    bytes.extend(frame(3, Request::Status));
    let mut s = Session::default();
    let got = run(&mut s, &bytes).expect("valid");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].response, Response::Accepted);
    assert!(s.closing());
}

#[test]
fn garbage_and_oversize_are_fatal() {
    let mut s = Session::default();
    assert!(run(&mut s, b"GET / HTTP/1.1\r\n\r\n").is_err());
    let mut s = Session::default();
    let oversize = u32::try_from(MAX_FRAME + 1).expect("fits").to_le_bytes();
    assert_eq!(
        run(&mut s, &oversize),
        Err(SessionError::Frame(FrameError::Oversize(
            u32::from_le_bytes(oversize)
        )))
    );
}

#[test]
fn receive_is_bounded_by_one_frame() {
    let mut s = Session::default();
    let big = vec![0u8; 3 * MAX_FRAME];
    assert_eq!(s.receive(&big), HEADER_LEN + MAX_FRAME);
    assert_eq!(s.receive(&big), 0);
}
