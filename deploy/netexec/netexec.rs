//! `netexec`: the small test server pods run in our tests (the role upstream's `agnhost netexec`
//! plays in conformance tests). Standard library only, so `deploy/images.sh` builds it with a
//! bare `rustc` as a static binary.
//!
//! - HTTP on `--http-port` (default 8080): `/hostname` (the pod name), `/clientip` (the peer's
//!   `ip:port`), `/echo?msg=TEXT`, `/healthz`; `/` and `/request[/...]` echo the request back
//!   (first line `METHOD TARGET`, then the body; header `X-Netexec-Method` too, for HEAD): what
//!   the apiserver's proxy tests check arrives as sent. Anything else is 404.
//! - UDP on `--udp-port` (default 8081): a datagram `hostname`, `clientip` or `echo TEXT` gets
//!   that answer back to its sender.
//! - `netexec dial udp HOST:PORT MESSAGE` sends one datagram and prints the answer (exit 1 after
//!   2 s without one): the UDP client busybox lacks.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

fn answer(request: &str, peer: SocketAddr) -> Option<String> {
    let (path, query) = request.split_once('?').unwrap_or((request, ""));
    match path.trim_start_matches('/') {
        "hostname" => Some(hostname()),
        "clientip" => Some(peer.to_string()),
        "healthz" => Some("ok".into()),
        "echo" => Some(query.split('&').find_map(|kv| kv.strip_prefix("msg=")).unwrap_or("").replace("%20", " ")),
        _ => None,
    }
}

/// Longest request body `/request` echoes.
const MAX_BODY: usize = 1 << 20;

fn serve_http(stream: TcpStream) {
    let Ok(peer) = stream.peer_addr() else { return };
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // The headers: only the body's length matters.
    let mut length = 0usize;
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header.trim() != "" {
        if let Some((k, v)) = header.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        header.clear();
    }
    let mut body = vec![0u8; length.min(MAX_BODY)];
    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
        body.clear();
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("GET");
    let target = words.next().unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let (status, text) = if path == "/" || path == "/request" || path.starts_with("/request/") {
        ("200 OK", format!("{method} {target}\n{}", String::from_utf8_lossy(&body)))
    } else {
        match answer(target, peer) {
            Some(b) => ("200 OK", b),
            None => ("404 Not Found", "not found".to_string()),
        }
    };
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nX-Netexec-Method: {method}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    if method != "HEAD" {
        let _ = out.write_all(text.as_bytes());
    }
}

fn serve_udp(socket: UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
        let text = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        let reply = match text.split_once(' ') {
            Some(("echo", rest)) => Some(rest.to_string()),
            _ => answer(&text, peer),
        };
        if let Some(r) = reply {
            let _ = socket.send_to(r.as_bytes(), peer);
        }
    }
}

fn dial_udp(target: &str, message: &str) -> i32 {
    let Ok(socket) = UdpSocket::bind(("0.0.0.0", 0)) else { return 1 };
    let _ = socket.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    if socket.send_to(message.as_bytes(), target).is_err() {
        return 1;
    }
    let mut buf = [0u8; 2048];
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => {
            println!("{}", String::from_utf8_lossy(&buf[..n]));
            0
        }
        Err(e) => {
            eprintln!("netexec: no answer from {target}: {e}");
            1
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("dial") {
        let code = match (args.get(2).map(String::as_str), args.get(3), args.get(4)) {
            (Some("udp"), Some(target), Some(msg)) => dial_udp(target, msg),
            _ => {
                eprintln!("usage: netexec dial udp HOST:PORT MESSAGE");
                2
            }
        };
        std::process::exit(code);
    }
    let flag = |name: &str, default: u16| -> u16 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (http, udp) = (flag("--http-port", 8080), flag("--udp-port", 8081));
    let socket = match UdpSocket::bind(("0.0.0.0", udp)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netexec: udp port {udp}: {e}");
            std::process::exit(1);
        }
    };
    thread::spawn(move || serve_udp(socket));
    let listener = match TcpListener::bind(("0.0.0.0", http)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("netexec: http port {http}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("netexec: http on {http}, udp on {udp}");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || serve_http(stream));
    }
}
