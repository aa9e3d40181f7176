//! The real binary on 127.0.0.1 with a rendered group file: both pages, and a refusal.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fetch(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.write_all(request.as_bytes()).expect("sends");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reads");
    reply
}

#[test]
fn serves_the_page_and_the_health_check() {
    let dir = std::env::temp_dir().join(format!("kaos-httpd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let group = dir.join("web.toml");
    std::fs::write(&group, "# group web\ngreeting = \"hello from the test\"\n").expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_httpd"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&group)
        .args(["--name", "web-1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("piped");
    let _server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("announces");
    let addr = line.trim().rsplit(' ').next().expect("address").to_owned();
    assert!(
        line.starts_with("httpd: web-1 listening on 127.0.0.1:"),
        "{line}"
    );

    let page = fetch(&addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("hello from the test") && page.contains(">web-1<"),
        "{page}"
    );
    let health = fetch(&addr, "GET /healthz HTTP/1.1\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n") && health.ends_with("\r\n\r\nok\n"));
    assert!(fetch(&addr, "GET /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(fetch(&addr, "DELETE / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(fetch(&addr, "garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(fetch(&addr, &huge).starts_with("HTTP/1.1 431 "));
    let _ = std::fs::remove_dir_all(&dir);
}
