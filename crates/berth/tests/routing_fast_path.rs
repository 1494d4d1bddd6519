//! The router's HTTP/1.1 fast path over real sockets: raw TCP clients and curl against a real
//! `berth server`, in front of a scripted HTTP/1.1 upstream on 127.0.0.1 (a Service with a
//! hand-written EndpointSlice; no pods, no root). Chunked bodies both ways, pipelining,
//! `Connection: close` from either side, an upstream that breaks off mid-body, and request
//! smuggling attempts.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use berth_testkit::{Server, free_port, wait_for};

const HOST: &str = "fast-default.localhost";

/// Reads one HTTP/1.1 message head (through the empty line); `None` at the end of the stream.
fn read_head(r: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

/// Reads a body framed by `head` (Content-Length, chunked, or until the end; a request
/// without either has none).
fn read_body(r: &mut impl BufRead, head: &str) -> Vec<u8> {
    let request = !head.starts_with("HTTP/");
    let mut body = Vec::new();
    if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).expect("chunk size");
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).expect("hex size");
            if n == 0 {
                while read_line_text(r) != "\r\n" {}
                return body;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).expect("chunk");
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = header(head, "content-length") {
        let mut b = vec![0; n.parse().expect("length")];
        r.read_exact(&mut b).expect("body");
        b
    } else {
        if !request {
            let _ = r.read_to_end(&mut body);
        }
        body
    }
}

fn read_line_text(r: &mut impl BufRead) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("line");
    l
}

/// The upstream: answers by path. `/echo` sends back the request head and body as a chunked
/// body; `/close` answers and closes; `/broken` promises 100 bytes, sends 10 and closes;
/// anything else answers `ok`.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut out) = conn.try_clone() else { return };
                let mut r = BufReader::new(conn);
                while let Some(head) = read_head(&mut r) {
                    let body = read_body(&mut r, &head);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let reply = match path.as_str() {
                        "/echo" => {
                            let text = format!("{head}BODY:{}", String::from_utf8_lossy(&body));
                            let (a, b) = text.split_at(text.len() / 2);
                            format!(
                                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                                a.len(),
                                b.len()
                            )
                        }
                        "/close" => "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye".to_owned(),
                        "/broken" => "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_owned(),
                        _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned(),
                    };
                    if out.write_all(reply.as_bytes()).is_err() || path == "/close" || path == "/broken" {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn setup() -> (Server, u16) {
    setup_with(&[])
}

fn setup_with(extra: &[&str]) -> (Server, u16) {
    let port = upstream();
    let http = free_port();
    let listen = format!("127.0.0.1:{http}");
    let s = Server::start(&[&["--no-node", "--http-listen", &listen][..], extra].concat());
    s.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: fast\nspec:\n  ports:\n  - port: 80\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: fast-1\n  labels: {{kubernetes.io/service-name: fast}}\n\
             addressType: IPv4\nports: [{{port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n---\n\
             apiVersion: berth.dev/v1\nkind: Route\nmetadata:\n  name: fast\nspec:\n  to: {{name: fast}}\n"
        ),
    );
    wait_for("the route to answer", Duration::from_secs(30), || {
        let mut c = client(http);
        send(&mut c, &format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n"));
        let head = read_head(&mut c)?;
        head.starts_with("HTTP/1.1 200").then_some(())
    });
    (s, http)
}

fn client(http: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    BufReader::new(s)
}

fn send(c: &mut BufReader<TcpStream>, raw: &str) {
    c.get_mut().write_all(raw.as_bytes()).expect("send");
}

/// Reads until the router closes the connection; fails if it stays open (read timeout).
fn closed(c: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).is_ok()
}

#[test]
fn fast_path_bodies_pipelining_and_closes() {
    let (_s, http) = setup();

    // A chunked request body arrives whole, with X-Forwarded-* set and hop-by-hop headers
    // gone; the chunked response comes back chunked.
    let mut c = client(http);
    send(
        &mut c,
        &format!(
            "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
        ),
    );
    let head = read_head(&mut c).expect("response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"), "{head}");
    assert_eq!(header(&head, "connection"), None, "the upstream's hop-by-hop header is not passed on: {head}");
    let echoed = String::from_utf8(read_body(&mut c, &head)).expect("text");
    assert!(echoed.ends_with("BODY:hello, world"), "{echoed}");
    assert_eq!(header(&echoed, "x-forwarded-for"), Some("192.0.2.7, 127.0.0.1"), "{echoed}");
    assert_eq!(header(&echoed, "x-forwarded-proto"), Some("http"), "{echoed}");
    assert_eq!(header(&echoed, "x-forwarded-host"), Some(HOST), "{echoed}");
    for gone in ["x-hop", "keep-alive", "connection"] {
        assert_eq!(header(&echoed, gone), None, "{gone} forwarded: {echoed}");
    }

    // Pipelined: three requests in one write (one with a Content-Length body), three answers
    // in order on the same connection.
    send(
        &mut c,
        &format!(
            "GET /a HTTP/1.1\r\nHost: {HOST}\r\n\r\nPOST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\n\r\nbodyGET /b HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
        ),
    );
    let answers: Vec<String> = (0..3)
        .map(|_| {
            let head = read_head(&mut c).expect("pipelined response");
            String::from_utf8(read_body(&mut c, &head)).expect("text")
        })
        .collect();
    assert_eq!(answers[0], "ok");
    assert!(answers[1].starts_with("POST /echo") && answers[1].ends_with("BODY:body"), "{}", answers[1]);
    assert_eq!(answers[2], "ok");

    // The upstream closes after answering: the client's connection goes on.
    send(&mut c, &format!("GET /close HTTP/1.1\r\nHost: {HOST}\r\n\r\n"));
    let head = read_head(&mut c).expect("response");
    assert_eq!(read_body(&mut c, &head), b"bye");
    send(&mut c, &format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n"));
    let head = read_head(&mut c).expect("response after the upstream closed");
    assert_eq!(read_body(&mut c, &head), b"ok");

    // The client asks to close: the answer says so and the connection ends.
    send(&mut c, &format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"));
    let head = read_head(&mut c).expect("response");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert_eq!(read_body(&mut c, &head), b"ok");
    assert!(closed(&mut c), "the router closes after Connection: close");

    // The upstream breaks off mid-body: the client's connection is closed, not left hanging.
    let mut c = client(http);
    send(&mut c, &format!("GET /broken HTTP/1.1\r\nHost: {HOST}\r\n\r\n"));
    let head = read_head(&mut c).expect("response");
    assert_eq!(header(&head, "content-length"), Some("100"), "{head}");
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("the router closes the connection (no read timeout)");
    assert_eq!(got, b"0123456789");

    // curl: a chunked upload and a plain GET through the same router.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-H", &format!("Host: {HOST}"), "-H", "Transfer-Encoding: chunked"])
        .args(["--data-binary", "from curl", &format!("http://127.0.0.1:{http}/echo")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.ends_with("BODY:from curl"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fast_path_refuses_smuggling_and_hands_the_rest_to_hyper() {
    let (_s, http) = setup();
    for attack in [
        // Both framings: which one the upstream would believe is the smuggler's bet.
        format!(
            "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"
        ),
        format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody"),
        format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0x4\r\n\r\nbody"),
        // A chunk size with a bare LF and one without hex digits.
        format!(
            "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n4;x\nGET /a HTTP/1.1\r\nbody\r\n0\r\n\r\n"
        ),
        format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n;\r\n\r\n"),
    ] {
        let mut c = client(http);
        send(&mut c, &attack);
        let head = read_head(&mut c).expect("an answer");
        assert!(head.starts_with("HTTP/1.1 400"), "{attack:?} got {head}");
        let _ = read_body(&mut c, &head);
        assert!(closed(&mut c), "{attack:?}: connection closed after 400");
    }

    // HTTP/1.0 goes through hyper, and so does everything after it on that connection.
    let mut c = client(http);
    send(&mut c, &format!("GET / HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n"));
    let head = read_head(&mut c).expect("answer to HTTP/1.0");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(read_body(&mut c, &head), b"ok");
    send(&mut c, &format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"));
    let head = read_head(&mut c).expect("next answer");
    assert_eq!(read_body(&mut c, &head), b"ok");

    // Expect: 100-continue is hyper's: the client gets its 100 and then the answer.
    let mut c = client(http);
    send(&mut c, &format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"));
    let head = read_head(&mut c).expect("100 Continue");
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    send(&mut c, "hi");
    let head = read_head(&mut c).expect("answer");
    assert!(String::from_utf8_lossy(&read_body(&mut c, &head)).ends_with("BODY:hi"), "{head}");

    // Unknown hosts get the 404 page; the connection stays usable.
    let mut c = client(http);
    send(&mut c, "GET / HTTP/1.1\r\nHost: nobody.example.test\r\n\r\n");
    let head = read_head(&mut c).expect("404");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(String::from_utf8_lossy(&read_body(&mut c, &head)).contains("No route"));
    send(&mut c, &format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n"));
    let head = read_head(&mut c).expect("answer after 404");
    assert_eq!(read_body(&mut c, &head), b"ok");
    c.get_mut().shutdown(Shutdown::Write).expect("shutdown");
    assert!(closed(&mut c));
}

/// The router serves on threads of its own (`--router-threads`), each accepting from the same
/// listener: connections land on all of them alike and every one is answered, on the fast path
/// and after a hand-over to hyper (HTTP/1.0) alike.
#[test]
fn router_threads_share_the_listener() {
    let (s, http) = setup_with(&["--router-threads", "3"]);
    let pid = s.child.as_ref().expect("running").id();
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("threads")
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| c.starts_with("berth-router"))
        .collect();
    assert_eq!(names.len(), 3, "router threads: {names:?}");
    let handles: Vec<_> = (0..12)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = client(http);
                let version = if i % 3 == 0 { "1.0" } else { "1.1" };
                for _ in 0..3 {
                    send(&mut c, &format!("GET / HTTP/{version}\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n"));
                    let head = read_head(&mut c).expect("an answer");
                    assert!(head.contains(" 200 "), "{head}");
                    assert_eq!(read_body(&mut c, &head), b"ok");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client");
    }
}

/// HTTPS clients speaking HTTP/1.1 are served by the fast path too (header names keep their
/// case, X-Forwarded-Proto says https), keep-alive included; HTTP/2 by ALPN goes to hyper.
#[test]
fn fast_path_over_tls() {
    let https = free_port();
    let listen = format!("127.0.0.1:{https}");
    let (s, _http) = setup_with(&["--https-listen", &listen]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (crt, key) = berth_testkit::self_signed_cert(dir.path(), "secure.example.test");
    let (crt_s, key_s) = (crt.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    s.ok(&["create", "secret", "tls", "secure-tls", "--cert", crt_s, "--key", key_s]);
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: secure\nspec:\n  tls:\n  - hosts: [secure.example.test]\n    secretName: secure-tls\n  rules:\n  - host: secure.example.test\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: fast, port: {number: 80}}}}\n",
    );
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", crt_s])
            .args(["--resolve", &format!("secure.example.test:{https}:127.0.0.1")])
            .args(args)
            .output()
            .expect("curl");
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let url = |path: &str| format!("https://secure.example.test:{https}{path}");
    wait_for("the TLS route to answer", Duration::from_secs(30), || {
        curl(&["--http1.1", &url("/")]).filter(|body| body == "ok")
    });
    let echoed = curl(&["--http1.1", "-H", "X-Case: Kept", "--data-binary", "over tls", &url("/echo")]).expect("echo");
    assert!(echoed.contains("\r\nX-Case: Kept\r\n"), "header name case kept (fast path): {echoed}");
    assert_eq!(header(&echoed, "x-forwarded-proto"), Some("https"), "{echoed}");
    assert!(echoed.ends_with("BODY:over tls"), "{echoed}");
    // Two requests on one kept connection.
    let both = curl(&["--http1.1", "-w", "|%{num_connects}", &url("/a"), &url("/b")]).expect("two requests");
    assert_eq!(both, "ok|1ok|0", "the second request reuses the connection");
    let h2 = curl(&["--http2", "-w", "|%{http_version}", &url("/")]).expect("HTTP/2");
    assert_eq!(h2, "ok|2");
}
