//! `httpd`: the example App Module of KaOS (`modules/httpd`, packed by `cargo xtask module
//! httpd`). A static HTTP/1.1 server: `GET /` answers a page with the instance's name and the
//! configured greeting, `GET /healthz` answers `ok`; other paths 404, other methods 405.
//!
//! ```text
//! httpd [--listen ADDR:PORT] [--config FILE] [--name NAME]
//! ```
//!
//! - `--listen`: default `0.0.0.0:80`. The bound address is printed on stdout.
//! - `--config`: default the first `*.toml` (by name) in `/etc/kaos/httpd/`, where the guest
//!   renders the instance's configuration group (`/etc/kaos/httpd/<group>.toml`). Its key
//!   `greeting` (a TOML basic string) is the greeting; without one, "hello from KaOS".
//! - `--name`: default `kaos.name=` from `/proc/cmdline` (the host names each guest so), else
//!   the host name.
//!
//! std only: a thread per connection (at most 64 at once), 5 s to send the request head, the
//! connection closed after each response.

mod config;
mod http;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// What every response is made from.
#[derive(Debug)]
struct Site {
    name: String,
    greeting: String,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match config::Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("httpd: {e}");
            std::process::exit(2);
        }
    };
    let site = Arc::new(Site {
        name: opts.name.unwrap_or_else(config::instance_name),
        greeting: config::greeting(opts.config.as_deref()),
    });
    let listener = match TcpListener::bind(&opts.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("httpd: listening on {}: {e}", opts.listen);
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("httpd: {} listening on {addr}", site.name),
        Err(e) => println!("httpd: {} listening ({e})", site.name),
    }
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let (site, done) = (site.clone(), active.clone());
        let spawned = std::thread::Builder::new().spawn(move || {
            serve(stream, &site);
            done.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Answers one request on `stream`, then closes it.
fn serve(mut stream: TcpStream, site: &Site) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let reply = match http::read_head(&mut stream) {
        Ok(Ok(Some(head))) => answer(http::parse(&head), site),
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(refusal)) => answer(Err(refusal), site),
    };
    let _ = stream.write_all(&reply);
    let _ = stream.flush();
    // A lingering close: unread request bytes (a refused oversize head) would make the kernel
    // reset the connection and the client could lose the response. Drain a bounded amount.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = std::io::copy(&mut (&stream).take(1 << 20), &mut std::io::sink());
}

/// The response to a parsed (or refused) request.
fn answer(request: Result<http::Request, http::Refusal>, site: &Site) -> Vec<u8> {
    let request = match request {
        Ok(r) => r,
        Err(refusal) => {
            let (code, reason) = refusal.status();
            return http::response((code, reason), "", &format!("{code} {reason}\n"), false);
        }
    };
    let head_only = request.method == "HEAD";
    if request.method != "GET" && !head_only {
        return http::response(
            (405, "Method Not Allowed"),
            "Allow: GET, HEAD\r\n",
            "405 Method Not Allowed\n",
            false,
        );
    }
    match request.path.as_str() {
        "/" => http::response((200, "OK"), "", &page(site), head_only),
        "/healthz" => http::response((200, "OK"), "", "ok\n", head_only),
        _ => http::response((404, "Not Found"), "", "404 Not Found\n", head_only),
    }
}

fn page(site: &Site) -> String {
    let (name, greeting) = (http::escape(&site.name), http::escape(&site.greeting));
    format!(
        "<!doctype html>\n<html><head><title>{name}</title></head>\n\
         <body><h1>{greeting}</h1>\n<p>instance <b id=\"name\">{name}</b></p></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let site = Site {
            name: "web-1".into(),
            greeting: "hi <there>".into(),
        };
        let get = |path: &str| {
            let r = http::Request {
                method: "GET".into(),
                path: path.into(),
            };
            String::from_utf8(answer(Ok(r), &site)).unwrap_or_default()
        };
        let root = get("/");
        assert!(root.starts_with("HTTP/1.1 200 OK\r\n"), "{root}");
        assert!(root.contains("<b id=\"name\">web-1</b>") && root.contains("hi &lt;there&gt;"));
        assert!(get("/healthz").ends_with("\r\n\r\nok\n"));
        assert!(get("/nope").starts_with("HTTP/1.1 404 "));
        let post = http::Request {
            method: "POST".into(),
            path: "/".into(),
        };
        let reply = String::from_utf8(answer(Ok(post), &site)).unwrap_or_default();
        assert!(reply.starts_with("HTTP/1.1 405 ") && reply.contains("Allow: GET, HEAD\r\n"));
        let bad = String::from_utf8(answer(Err(http::Refusal::HeadTooLarge), &site));
        assert!(bad.unwrap_or_default().starts_with("HTTP/1.1 431 "));
    }
}
