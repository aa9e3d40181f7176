//! Just enough HTTP/1.1: a bounded request head parser that never panics, and the responses.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::io::Read;

/// Largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines.
pub const MAX_HEADERS: usize = 64;
/// Longest request target.
pub const MAX_TARGET: usize = 1024;

/// The parts of a request the server looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path, without a query string.
    pub path: String,
}

/// Why a request is refused, as an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not a well-formed HTTP/1.x request head.
    BadRequest,
    /// 414: the target is longer than [`MAX_TARGET`].
    UriTooLong,
    /// 431: the head is longer than [`MAX_HEAD`] or has more than [`MAX_HEADERS`] lines.
    HeadTooLarge,
    /// 505: not HTTP/1.0 or 1.1.
    Version,
}

impl Refusal {
    /// Status code and reason phrase.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Self::BadRequest => (400, "Bad Request"),
            Self::UriTooLong => (414, "URI Too Long"),
            Self::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Self::Version => (505, "HTTP Version Not Supported"),
        }
    }
}

/// Reads until the blank line that ends the head, at most [`MAX_HEAD`] bytes. `Ok(None)`: the
/// peer closed before sending a whole head.
pub fn read_head(r: &mut impl Read) -> std::io::Result<Result<Option<Vec<u8>>, Refusal>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(Ok(None));
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if let Some(end) = find(&head, b"\r\n\r\n") {
            head.truncate(end);
            return Ok(Ok(Some(head)));
        }
        if head.len() > MAX_HEAD {
            return Ok(Err(Refusal::HeadTooLarge));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a request head (without its final blank line).
pub fn parse(head: &[u8]) -> Result<Request, Refusal> {
    if head.len() > MAX_HEAD {
        return Err(Refusal::HeadTooLarge);
    }
    let text = std::str::from_utf8(head).map_err(|_| Refusal::BadRequest)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or(Refusal::BadRequest)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Refusal::BadRequest);
    }
    if target.len() > MAX_TARGET {
        return Err(Refusal::UriTooLong);
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(Refusal::BadRequest);
    }
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(if version.starts_with("HTTP/") {
            Refusal::Version
        } else {
            Refusal::BadRequest
        });
    }
    let mut count = 0usize;
    for line in lines {
        count = count.saturating_add(1);
        if count > MAX_HEADERS {
            return Err(Refusal::HeadTooLarge);
        }
        let Some((name, _value)) = line.split_once(':') else {
            return Err(Refusal::BadRequest);
        };
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(Refusal::BadRequest);
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
    })
}

/// A whole response (the connection closes after it): status, headers, and the body unless
/// the request was `HEAD`.
pub fn response(status: (u16, &str), extra: &str, body: &str, head_only: bool) -> Vec<u8> {
    let (code, reason) = status;
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// `text` safe inside HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests
mod tests {
    use super::*;

    #[test]
    fn well_formed_requests() {
        let r = parse(b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8").expect("ok");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/healthz"));
        let r = parse(b"POST / HTTP/1.0").expect("ok");
        assert_eq!(r.method, "POST");
    }

    #[test]
    fn malformed_requests_are_refused() {
        for bad in [
            &b""[..],
            b"GET",
            b"GET /",
            b"GET / HTTP/1.1 extra",
            b"get / HTTP/1.1",
            b"GET  / HTTP/1.1",
            b"GET nopath HTTP/1.1",
            b"GET / FTP/1.1",
            b"GET / HTTP/1.1\r\nno colon",
            b"GET / HTTP/1.1\r\n: empty name",
            b"GET / HTTP/1.1\r\nBad Name: x",
            b"GET /\xff HTTP/1.1",
            b"GET /\x7f HTTP/1.1",
        ] {
            assert_eq!(parse(bad), Err(Refusal::BadRequest), "{bad:?}");
        }
        assert_eq!(parse(b"GET / HTTP/2.0"), Err(Refusal::Version));
    }

    #[test]
    fn oversize_requests_are_refused() {
        let long = format!("GET /{} HTTP/1.1", "a".repeat(MAX_TARGET));
        assert_eq!(parse(long.as_bytes()), Err(Refusal::UriTooLong));
        let many = format!("GET / HTTP/1.1{}", "\r\nA: b".repeat(MAX_HEADERS + 1));
        assert_eq!(parse(many.as_bytes()), Err(Refusal::HeadTooLarge));
        assert_eq!(parse(&[b'a'; MAX_HEAD + 1]), Err(Refusal::HeadTooLarge));
        // The reader stops at the limit, whatever the peer keeps sending.
        let endless = std::io::repeat(b'a');
        assert_eq!(
            read_head(&mut endless.take(1 << 20)).expect("reads"),
            Err(Refusal::HeadTooLarge)
        );
    }

    #[test]
    fn the_reader_finds_the_end_of_the_head() {
        let mut input: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
        assert_eq!(
            read_head(&mut input).expect("reads"),
            Ok(Some(b"GET / HTTP/1.1\r\nHost: x".to_vec()))
        );
        let mut cut: &[u8] = b"GET / HTTP/1.1\r\n";
        assert_eq!(read_head(&mut cut).expect("reads"), Ok(None));
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        // Every prefix and every single-byte change of a real request.
        let real = b"GET /healthz HTTP/1.1\r\nHost: h\r\nAccept: */*".to_vec();
        for cut in 0..real.len() {
            let _ = parse(&real[..cut]);
        }
        for i in 0..real.len() {
            for b in [0u8, b' ', b':', b'\r', b'\n', 0x80, 0xff] {
                let mut v = real.clone();
                v[i] = b;
                let _ = parse(&v);
            }
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
