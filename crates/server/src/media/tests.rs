//! The media policy against data URLs, a scratch media directory and loopback stand-ins for
//! remote servers.

use super::*;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41,
    0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn fetch(url: &str, policy: &MediaPolicy) -> Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(fetch_media(url, policy))
}

fn fetch_at(url: &str, addr: SocketAddr, policy: &MediaPolicy) -> Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(fetch_remote_at(url, addr, policy))
}

#[track_caller]
fn assert_err(r: Result<Vec<u8>>, status: StatusCode, parts: &[&str]) -> MediaSourceError {
    let e = r.expect_err("should fail");
    assert_eq!(e.status(), status, "{e}");
    for p in parts {
        assert!(e.message().contains(p), "`{p}` not in: {e}");
    }
    e
}

fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[test]
fn data_urls_decode_images_only_within_the_limit() {
    let policy = MediaPolicy::default();
    assert_eq!(fetch(&data_url("image/png", PNG), &policy).expect("png"), PNG);
    // Unpadded, line-wrapped and with extra parameters.
    let url = data_url("IMAGE/png;name=x.png", PNG);
    let wrapped = format!("{}\n{}", &url[..40], url[40..].trim_end_matches('='));
    assert_eq!(fetch(&wrapped, &policy).expect("wrapped png"), PNG);

    assert_err(fetch(&data_url("text/plain", b"hi"), &policy), StatusCode::BAD_REQUEST, &["`text/plain`", "image/*"]);
    assert_err(fetch("data:,hello", &policy), StatusCode::BAD_REQUEST, &["none given", "image/*"]);
    assert_err(fetch("data:image/png,rawbytes", &policy), StatusCode::BAD_REQUEST, &["not base64-encoded"]);
    assert_err(fetch("data:image/png;base64", &policy), StatusCode::BAD_REQUEST, &["no `,`"]);
    assert_err(fetch("data:image/png;base64,iVBO!!RwoK", &policy), StatusCode::BAD_REQUEST, &["not valid base64", "data:image/png"]);

    let small = MediaPolicy { max_bytes: 10, ..MediaPolicy::default() };
    assert_eq!(fetch(&data_url("image/gif", &[7; 10]), &small).expect("exactly at the limit"), [7; 10]);
    assert_err(fetch(&data_url("image/gif", &[7; 11]), &small), StatusCode::PAYLOAD_TOO_LARGE, &["11 bytes", "limit of 10 bytes"]);
    // Far over the limit: refused before decoding, and the message shows a shortened URL.
    let big = data_url("image/png", &vec![0; 3000]);
    let e = assert_err(fetch(&big, &small), StatusCode::PAYLOAD_TOO_LARGE, &["at least", "characters)"]);
    assert!(e.message().len() < 300, "{e}");
}

#[test]
fn other_schemes_are_named() {
    let policy = MediaPolicy::default();
    assert_err(fetch("ftp://example.com/x.png", &policy), StatusCode::BAD_REQUEST, &["`ftp:`", "data:image", "http(s)://", "file://"]);
    assert_err(fetch("  ", &policy), StatusCode::BAD_REQUEST, &["empty"]);
    assert_eq!(scheme("C:\\x.png"), None);
    assert_eq!(scheme("x.png"), None);
    assert_eq!(scheme("dir/a:b.png"), None);
    assert_eq!(scheme("HTTPS://h/"), Some("HTTPS"));
}

/// A media directory with `inside.png` (5 bytes) and, next to it, `secret.png`.
fn media_dir(name: &str) -> (PathBuf, PathBuf) {
    let root = ingot_testkit::scratch_dir(&format!("media-{name}"));
    let dir = root.join("media");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("inside.png"), b"PNG!!").expect("write");
    std::fs::write(dir.join("sub/deep.png"), b"deep").expect("write");
    std::fs::write(root.join("secret.png"), b"secret").expect("write");
    (root, dir)
}

#[test]
fn local_files_only_inside_the_media_dir() {
    let (root, dir) = media_dir("local");
    let inside = dir.join("inside.png");
    let e = assert_err(fetch(&inside.display().to_string(), &MediaPolicy::default()), StatusCode::FORBIDDEN, &[]);
    assert_eq!(e.message(), "local media paths are disabled; start the server with --media-dir DIR to allow files inside DIR");
    assert_err(fetch(&format!("file://{}", inside.display()), &MediaPolicy::default()), StatusCode::FORBIDDEN, &["--media-dir"]);

    let policy = MediaPolicy { media_dir: Some(dir.clone()), ..MediaPolicy::default() };
    assert_eq!(fetch(&inside.display().to_string(), &policy).expect("absolute"), b"PNG!!");
    assert_eq!(fetch("inside.png", &policy).expect("relative to the dir"), b"PNG!!");
    assert_eq!(fetch("sub/../sub/deep.png", &policy).expect("dotdot that stays inside"), b"deep");
    assert_eq!(fetch(&format!("file://{}", inside.display()), &policy).expect("file url"), b"PNG!!");
    assert_eq!(fetch(&format!("file://localhost{}", dir.join("sub/deep.png").display()), &policy).expect("localhost"), b"deep");

    let real_dir = dir.canonicalize().expect("canonical");
    let escapes = [
        "../secret.png".to_owned(),
        "sub/../../secret.png".to_owned(),
        format!("{}/../secret.png", dir.display()),
        format!("file://{}/../secret.png", dir.display()),
        root.join("secret.png").display().to_string(),
        "/etc/passwd".to_owned(),
        // Missing outside: the same 403, not a 400 telling what exists.
        "/nonexistent/x.png".to_owned(),
        "../missing.png".to_owned(),
    ];
    for url in &escapes {
        let e = assert_err(fetch(url, &policy), StatusCode::FORBIDDEN, &["is outside the media directory", url]);
        assert!(e.message().contains(&real_dir.display().to_string()), "{e}");
    }
    assert_err(fetch("nope.png", &policy), StatusCode::BAD_REQUEST, &["nope.png", "no such file"]);
    assert_err(fetch(&dir.join("sub/nope.png").display().to_string(), &policy), StatusCode::BAD_REQUEST, &["no such file"]);
    assert_err(fetch("sub", &policy), StatusCode::BAD_REQUEST, &["not a regular file"]);
    assert_err(fetch("file://otherhost/x.png", &policy), StatusCode::BAD_REQUEST, &["names a host"]);

    let small = MediaPolicy { max_bytes: 4, ..policy.clone() };
    assert_eq!(fetch("sub/deep.png", &small).expect("at the limit"), b"deep");
    assert_err(fetch("inside.png", &small), StatusCode::PAYLOAD_TOO_LARGE, &["inside.png is 5 bytes", "limit of 4 bytes"]);
}

#[cfg(unix)]
#[test]
fn symlinks_out_of_the_media_dir_are_refused() {
    let (root, dir) = media_dir("symlink");
    std::os::unix::fs::symlink(root.join("secret.png"), dir.join("link.png")).expect("symlink");
    std::os::unix::fs::symlink(&root, dir.join("up")).expect("dir symlink");
    std::os::unix::fs::symlink(dir.join("inside.png"), dir.join("ok.png")).expect("symlink inside");
    let policy = MediaPolicy { media_dir: Some(dir.clone()), ..MediaPolicy::default() };
    for url in ["link.png", "up/secret.png"] {
        let e = assert_err(fetch(url, &policy), StatusCode::FORBIDDEN, &[url, "outside the media directory"]);
        // The symlink's target is not revealed.
        assert!(!e.message().contains("secret.png") || url.contains("secret"), "{e}");
    }
    assert_eq!(fetch("ok.png", &policy).expect("a symlink within the dir"), b"PNG!!");
    // The media directory itself given through a symlink still works.
    std::os::unix::fs::symlink(&dir, root.join("alias")).expect("alias");
    let aliased = MediaPolicy { media_dir: Some(root.join("alias")), ..MediaPolicy::default() };
    assert_eq!(fetch(&root.join("alias/inside.png").display().to_string(), &aliased).expect("via alias"), b"PNG!!");
    assert_err(fetch(&root.join("alias/missing.png").display().to_string(), &aliased), StatusCode::BAD_REQUEST, &["no such file"]);
}

#[test]
fn address_classes() {
    let table: &[(&str, Option<&str>)] = &[
        ("127.0.0.1", Some("loopback")),
        ("127.255.0.9", Some("loopback")),
        ("10.0.0.1", Some("private")),
        ("172.16.0.1", Some("private")),
        ("172.31.255.255", Some("private")),
        ("172.32.0.1", None),
        ("192.168.1.1", Some("private")),
        ("169.254.169.254", Some("link-local")),
        ("100.64.0.1", Some("shared (CGNAT)")),
        ("100.127.255.255", Some("shared (CGNAT)")),
        ("100.128.0.1", None),
        ("0.0.0.0", Some("unspecified")),
        ("0.1.2.3", Some("unspecified")),
        ("255.255.255.255", Some("broadcast")),
        ("224.0.0.1", Some("multicast")),
        ("240.0.0.1", Some("reserved")),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("::1", Some("loopback")),
        ("::", Some("unspecified")),
        ("fe80::1", Some("link-local")),
        ("febf::1", Some("link-local")),
        ("fc00::1", Some("unique-local")),
        ("fd12:3456::1", Some("unique-local")),
        ("fec0::1", Some("site-local")),
        ("ff02::1", Some("multicast")),
        ("2001:4860:4860::8888", None),
        ("2606:4700::1111", None),
        ("::ffff:127.0.0.1", Some("loopback")),
        ("::ffff:10.1.2.3", Some("private")),
        ("::ffff:169.254.169.254", Some("link-local")),
        ("::ffff:100.64.1.1", Some("shared (CGNAT)")),
        ("::ffff:8.8.8.8", None),
        ("::127.0.0.1", Some("loopback")),
        ("64:ff9b::192.168.0.1", Some("private")),
        ("64:ff9b::8.8.8.8", None),
        ("2002:a00:1::", Some("private")),
        ("2002:808:808::", None),
    ];
    for (ip, class) in table {
        let addr: IpAddr = ip.parse().expect("ip");
        assert_eq!(address_class(addr), *class, "{ip}");
    }
}

#[test]
fn remote_urls_need_the_flag() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let e = assert_err(fetch(&format!("http://127.0.0.1:{port}/x.png"), &MediaPolicy::default()), StatusCode::FORBIDDEN, &[]);
    assert_eq!(e.message(), "remote media URLs are disabled; start the server with --allow-remote-media");
    assert_err(fetch("https://example.com/x.png", &MediaPolicy::default()), StatusCode::FORBIDDEN, &["--allow-remote-media"]);
    assert_never_connected(&listener);
}

/// `listener` has no connection waiting: nothing connected to it.
#[track_caller]
fn assert_never_connected(listener: &TcpListener) {
    listener.set_nonblocking(true).expect("nonblocking");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a connection was made: {other:?}"),
    }
}

#[test]
fn non_public_hosts_are_refused_without_connecting() {
    let policy = MediaPolicy { allow_remote: true, ..MediaPolicy::default() };
    let v4 = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = v4.local_addr().expect("addr").port();
    // IPv6 loopback may be missing in a sandbox; then only the refusal is checked.
    let v6 = TcpListener::bind("[::1]:0").ok();
    let v6_port = v6.as_ref().map_or(80, |l| l.local_addr().expect("addr").port());
    let cases = [
        (format!("http://127.0.0.1:{port}/x.png"), "127.0.0.1 is a loopback address"),
        (format!("http://localhost:{port}/"), "localhost resolves to"),
        (format!("http://[::1]:{v6_port}/"), "::1 is a loopback address"),
        ("http://[::1]/".to_owned(), "::1 is a loopback address"),
        (format!("http://[::ffff:127.0.0.1]:{port}/"), "::ffff:127.0.0.1 is a loopback address"),
        ("http://10.0.0.1/".to_owned(), "10.0.0.1 is a private address"),
        ("https://192.168.0.10/cat.png".to_owned(), "a private address"),
        ("http://169.254.169.254/latest/meta-data".to_owned(), "169.254.169.254 is a link-local address"),
        ("http://100.64.0.1/".to_owned(), "shared (CGNAT)"),
        ("http://0.0.0.0/".to_owned(), "unspecified"),
        ("http://[fd00::1]/".to_owned(), "unique-local"),
    ];
    // A 403 naming the address class comes only from vetting, before any connection: a
    // connection attempt would end in a 502 or a 504 instead.
    for (url, expected) in &cases {
        assert_err(fetch(url, &policy), StatusCode::FORBIDDEN, &[expected, "public hosts"]);
    }
    assert_err(fetch(&format!("http://localhost:{port}/"), &policy), StatusCode::FORBIDDEN, &["loopback"]);
    assert_never_connected(&v4);
    if let Some(v6) = &v6 {
        assert_never_connected(v6);
    }
}

/// A one-connection HTTP server on loopback: `reply` gets the stream after the request's
/// head was read, and its result is returned by the handle.
fn serve<T: Send + 'static>(reply: impl FnOnce(TcpStream) -> T + Send + 'static) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).expect("read") == 1 {
            head.push(byte[0]);
        }
        reply(stream)
    });
    (addr, handle)
}

fn remote_policy() -> MediaPolicy {
    MediaPolicy { allow_remote: true, ..MediaPolicy::default() }
}

#[test]
fn fetches_the_body_from_the_vetted_address() {
    let (addr, server) = serve(|mut s| {
        write!(s, "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n", PNG.len()).expect("head");
        s.write_all(PNG).expect("body");
    });
    // The URL's host is never resolved: the pinned address is used.
    let got = fetch_at("http://images.example.invalid/cat.png", addr, &remote_policy()).expect("fetched");
    assert_eq!(got, PNG);
    server.join().expect("server");

    let (addr, server) = serve(|mut s| s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").expect("write"));
    assert_err(fetch_at("http://h.invalid/x.png", addr, &remote_policy()), StatusCode::BAD_GATEWAY, &["404", "h.invalid"]);
    server.join().expect("server");

    // https goes through TLS: a server that does not speak it is an upstream failure.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
    });
    assert_err(fetch_at("https://h.invalid/x.png", addr, &remote_policy()), StatusCode::BAD_GATEWAY, &["https://h.invalid/x.png"]);
    server.join().expect("server");

    // Nothing listening: an upstream failure.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    assert_err(fetch_at("http://h.invalid/x.png", closed, &remote_policy()), StatusCode::BAD_GATEWAY, &["h.invalid"]);
}

#[test]
fn the_byte_limit_stops_reading() {
    let policy = MediaPolicy { max_bytes: 100_000, ..remote_policy() };
    // Declared too large: refused before the body is read.
    let (addr, server) = serve(|mut s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100001\r\n\r\n").expect("head");
    });
    assert_err(fetch_at("http://h.invalid/big.png", addr, &policy), StatusCode::PAYLOAD_TOO_LARGE, &["100001 bytes", "limit of 100000"]);
    server.join().expect("server");

    // No length, an endless body: reading stops past the limit and the connection closes.
    let (addr, server) = serve(|mut s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").expect("head");
        let chunk = [0u8; 64 << 10];
        let mut sent = 0usize;
        while sent < 256 << 20 && s.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    assert_err(fetch_at("http://h.invalid/endless.png", addr, &policy), StatusCode::PAYLOAD_TOO_LARGE, &["more than 100000"]);
    let sent = server.join().expect("server");
    assert!(sent < 64 << 20, "the client kept reading: {sent} bytes sent");
}

#[test]
fn a_slow_server_times_out() {
    let policy = MediaPolicy { timeout: Duration::from_millis(300), ..remote_policy() };
    let (addr, server) = serve(|mut s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nslow").expect("head");
        std::thread::sleep(Duration::from_secs(2));
    });
    // Without the timeout the fetch would wait out the server and fail on the short body (502).
    assert_err(fetch_at("http://h.invalid/slow.png", addr, &policy), StatusCode::GATEWAY_TIMEOUT, &["h.invalid", "longer than the server's limit of 300ms"]);
    server.join().expect("server");
}

#[test]
fn redirects_are_vetted_hop_by_hop() {
    let policy = remote_policy();
    let target = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = target.local_addr().expect("addr").port();
    let redirects = [
        (format!("http://127.0.0.1:{port}/x.png"), "127.0.0.1 is a loopback address"),
        (format!("http://localhost:{port}/x.png"), "localhost resolves to"),
        // Relative: against the redirecting URL, whose host is loopback here.
        ("/other.png".to_owned(), "127.0.0.1 is a loopback address"),
    ];
    for (location, expected) in &redirects {
        let location = location.clone();
        let (addr, server) = serve(move |mut s| {
            write!(s, "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n").expect("write");
        });
        let url = format!("http://{addr}/start.png");
        assert_err(fetch_at(&url, addr, &policy), StatusCode::FORBIDDEN, &["redirects to", expected]);
        server.join().expect("server");
    }
    let (addr, server) = serve(|mut s| {
        s.write_all(b"HTTP/1.1 301 Moved\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n").expect("write");
    });
    assert_err(fetch_at("http://h.invalid/a.png", addr, &policy), StatusCode::FORBIDDEN, &["file:///etc/passwd", "not an http(s) URL"]);
    server.join().expect("server");
    assert_never_connected(&target);
}

#[test]
fn locations_join_like_urls() {
    let base = "http://h.example:8080/a/b.png?q=1";
    assert_eq!(join_location(base, "https://x.example/c"), "https://x.example/c");
    assert_eq!(join_location(base, "//x.example/c"), "http://x.example/c");
    assert_eq!(join_location(base, "/c.png"), "http://h.example:8080/c.png");
    assert_eq!(join_location(base, "c.png"), "http://h.example:8080/a/c.png");
    assert_eq!(join_location("http://h.example", "c.png"), "http://h.example/c.png");
}

#[test]
fn statuses() {
    assert_eq!(Invalid(String::new()).status(), StatusCode::BAD_REQUEST);
    assert_eq!(Forbidden(String::new()).status(), StatusCode::FORBIDDEN);
    assert_eq!(TooLarge(String::new()).status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(Upstream(String::new()).status(), StatusCode::BAD_GATEWAY);
    assert_eq!(MediaSourceError::Timeout(String::new()).status(), StatusCode::GATEWAY_TIMEOUT);
}
