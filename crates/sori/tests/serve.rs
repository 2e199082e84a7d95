//! `sori` as a user runs it: version, help, `serve` answering /healthz and /metrics, flags and
//! their SORI_… environment twins, a clean stop on SIGTERM, and a clear error for bad config.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

const SORI: &str = env!("CARGO_BIN_EXE_sori");

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn version_and_help() {
    let v = Command::new(SORI).arg("--version").output().unwrap();
    assert!(v.status.success());
    // `sori 0.1.0 (1a2b3c4d5e6f)`: the version and the git revision it was built from.
    let line = String::from_utf8_lossy(&v.stdout).trim().to_string();
    let revision = line
        .strip_prefix(&format!("sori {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"));
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match git {
        Some(head) => assert_eq!(revision, head),
        None => assert_eq!(revision, "unknown"),
    }
    let h = Command::new(SORI)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let h = String::from_utf8_lossy(&h.stdout);
    for flag in [
        "--listen",
        "--rtc-port",
        "--advertise-ip",
        "SORI_LISTEN",
        "SORI_RTC_PORT",
        "SORI_ADVERTISE_IP",
    ] {
        assert!(h.contains(flag), "help mentions {flag}");
    }
}

#[test]
fn serve_answers_health_and_metrics_and_stops_on_sigterm() {
    let mut child = Command::new(SORI)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--advertise-ip",
            "127.0.0.1",
            "--turn-listen",
            "127.0.0.1:0",
        ])
        .env("SORI_RTC_PORT", "0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // The log line that says the server is up names the HTTP address and the media candidate.
    let ready = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains("listening on http://"))
        .expect("serve logs its address");
    let addr = ready
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(ready.contains("advertised as 127.0.0.1:"), "{ready}");
    assert!(
        !ready.contains(":40000"),
        "SORI_RTC_PORT=0 chose a free port: {ready}"
    );

    let health = http_get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"));
    let metrics = http_get(&addr, "/metrics");
    assert!(metrics.contains("sori_participants 0"), "{metrics}");
    assert!(metrics.contains("sori_rtp_forwarded_packets_total 0"));

    // `systemctl reload` sends SIGHUP: without a certificate there is nothing to reload, and
    // the server goes on (SIGHUP's default action would end it).
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(lines
        .by_ref()
        .map(|l| l.unwrap())
        .any(|l| l.contains("SIGHUP: nothing to reload")));
    let health = http_get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(lines.map(|l| l.unwrap()).any(|l| l.contains("stopped")));
}

#[test]
fn a_bad_config_file_is_a_clear_error() {
    let path = std::env::temp_dir().join(format!("sori-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "[media]\nrtc_port = \"many\"\n").unwrap();
    let out = Command::new(SORI)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rtc_port") && err.contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_public_address_without_api_keys_refuses_to_start() {
    for cmd in ["serve", "signal"] {
        let mut args = vec![cmd, "--listen", "0.0.0.0:0", "--rtc-port", "0", "--no-turn"];
        if cmd == "signal" {
            args = vec![
                cmd,
                "--listen",
                "0.0.0.0:0",
                "--media",
                "ws://127.0.0.1:9/kurento",
            ];
        }
        let out = Command::new(SORI)
            .args(&args)
            .env_remove("SORI_API_KEY")
            .env_remove("SORI_API_SECRET")
            .env_remove("SORI_DEV")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        for way_out in ["--api-key", "--dev", "SORI_DEV=1"] {
            assert!(err.contains(way_out), "{cmd}: {err}");
        }
    }
    // A secret too short to sign with is refused, naming the key.
    let out = Command::new(SORI)
        .args(["serve", "--api-key", "APIshort", "--api-secret", "tooshort"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("APIshort"));
}

#[test]
fn with_keys_a_public_address_starts_and_metrics_get_an_address_of_their_own() {
    let (mut child, line, seen) = start(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--rtc-port",
            "0",
            "--no-turn",
            "--api-key",
            "APIpublic",
            "--api-secret",
            "public-test-secret-0123456789abcdef",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        "listening on http://",
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("joins need an access token")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|l| l.contains("public-test-secret")));
    let metrics_line = seen
        .iter()
        .find(|l| l.contains("metrics on http://"))
        .expect("the metrics address is announced");
    let metrics = after(metrics_line, "metrics on http://")
        .trim_end_matches("/metrics")
        .to_string();
    let page = http_get(&metrics, "/metrics");
    assert!(page.contains("sori_rooms 0"), "{page}");
    // The main listener took a port on every interface.
    assert!(after(&line, "http://").starts_with("0.0.0.0:"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn serve_raises_a_low_open_file_limit() {
    // A shell lowers the soft limit (as a 1024 default would be) and runs sori under it.
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -Sn 256 && exec {SORI} serve --listen 127.0.0.1:0 --rtc-port 0 --no-turn"
            ),
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    lines
        .by_ref()
        .map(|l| l.unwrap())
        .inspect(|l| seen.push(l.clone()))
        .find(|l| l.contains("listening on http://"))
        .unwrap_or_else(|| panic!("sori did not start: {seen:?}"));
    std::thread::spawn(move || lines.for_each(drop));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.iter()
            .any(|l| l.contains("open-file limit raised from 256 to")),
        "{seen:?}"
    );
}

#[test]
fn token_create_prints_a_token_and_a_join_url() {
    let out = Command::new(SORI)
        .args([
            "token",
            "create",
            "--room",
            "회의 1",
            "--identity",
            "ada",
            "--grant",
            "admin,chat",
            "--api-key",
            "APItest",
            "--api-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let keys = sori_signal::auth::Keys::new([(
        "APItest".to_string(),
        "0123456789abcdef0123456789abcdef".to_string(),
    )]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let g = sori_signal::auth::verify(&keys, lines[0], now).unwrap();
    assert_eq!(g.identity.as_deref(), Some("ada"));
    assert_eq!(g.may_join("회의 1"), Ok(()));
    assert!(g.admin && g.chat && !g.subscribe && !g.record);
    assert_eq!(g.publish, sori_signal::auth::Sources::NONE);
    let exp = g.expires.unwrap();
    assert!(
        (now + 6 * 3600 - 2..=now + 6 * 3600).contains(&exp),
        "{exp}"
    );
    assert_eq!(
        lines[1],
        format!(
            "http://127.0.0.1:8080/?room=%ED%9A%8C%EC%9D%98%201&token={}",
            lines[0]
        )
    );
}

/// Starts `sori ARGS` and returns it with the first log line containing `marker`.
fn start(args: &[&str], marker: &str) -> (std::process::Child, String, Vec<String>) {
    let mut child = Command::new(SORI)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let found = lines
        .by_ref()
        .map(|l| l.unwrap())
        .inspect(|l| seen.push(l.clone()))
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} in: {seen:?}"));
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, found, seen)
}

fn after<'a>(line: &'a str, prefix: &str) -> &'a str {
    line.split(prefix)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
}

fn ping(url: &str) -> String {
    let (mut ws, _) = tungstenite::connect(url).unwrap();
    ws.send(tungstenite::Message::text(
        r#"{"jsonrpc":"2.0","id":0,"method":"ping","params":{"interval":5000}}"#,
    ))
    .unwrap();
    let reply = ws.read().unwrap().into_text().unwrap().to_string();
    let _ = ws.close(None);
    reply
}

#[test]
fn media_alone_serves_the_control_api_health_and_metrics() {
    let (mut child, line, _) = start(
        &[
            "media",
            "--kurento-listen",
            "127.0.0.1:0",
            "--rtc-port",
            "0",
            "--advertise-ip",
            "127.0.0.1",
        ],
        "control API on ws://",
    );
    let url = format!("ws://{}", after(&line, "ws://"));
    assert!(url.ends_with("/kurento"), "{url}");
    assert!(ping(&url).contains(r#""value":"pong""#));
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/kurento")
        .to_string();
    assert!(http_get(&addr, "/healthz").ends_with("ok\n"));
    assert!(http_get(&addr, "/metrics").contains("sori_rtp_forwarded_packets_total 0"));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn serve_with_kurento_exposes_the_control_api_with_its_token() {
    let (mut child, _, seen) = start(
        &[
            "serve",
            "--kurento",
            "--kurento-listen",
            "127.0.0.1:0",
            "--kurento-token",
            "s3cret",
            "--listen",
            "127.0.0.1:0",
            "--rtc-port",
            "0",
            "--no-turn",
        ],
        "listening on http://",
    );
    assert!(
        !seen.iter().any(|l| l.contains("TURN")),
        "--no-turn: {seen:?}"
    );
    let line = seen
        .iter()
        .find(|l| l.contains("control API on ws://"))
        .expect("the control API is announced first");
    assert!(
        !seen.iter().any(|l| l.contains("s3cret")),
        "the token is never logged"
    );
    let url = format!("ws://{}", after(line, "ws://"));
    assert!(
        tungstenite::connect(url.as_str()).is_err(),
        "no token, no entry"
    );
    assert!(ping(&format!("{url}?access_token=s3cret")).contains("pong"));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn browser_origins_need_kurento_allow_origin() {
    let (mut child, line, _) = start(
        &[
            "media",
            "--kurento-listen",
            "127.0.0.1:0",
            "--rtc-port",
            "0",
            "--kurento-allow-origin",
            "https://app.example.com",
        ],
        "control API on ws://",
    );
    let url = format!("ws://{}", after(&line, "ws://"));
    let from = |origin: &str| {
        use tungstenite::client::IntoClientRequest;
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        match tungstenite::connect(req) {
            Ok(_) => 101,
            Err(tungstenite::Error::Http(r)) => r.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(from("https://app.example.com"), 101);
    assert_eq!(from("http://localhost:8080"), 403);
    assert!(ping(&url).contains("pong"), "no Origin: an application");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn signal_without_a_reachable_media_server_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let out = Command::new(SORI)
        .args([
            "signal",
            "--listen",
            "127.0.0.1:0",
            "--media",
            "ws://127.0.0.1:1/kurento?access_token=hidden",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the media server at ws://127.0.0.1:1/kurento"),
        "{err}"
    );
    assert!(!err.contains("hidden"), "the token is not shown: {err}");
}

#[test]
fn ice_tcp_follows_its_flags_and_a_taken_tcp_port_is_a_clear_error() {
    // Everything on loopback.
    let config = std::env::temp_dir().join(format!("sori-icetcp-{}.toml", std::process::id()));
    std::fs::write(&config, "[media]\nbind_ip = \"127.0.0.1\"\n").unwrap();
    let config = config.display().to_string();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let base = [
        "media",
        "--config",
        &config,
        "--kurento-listen",
        "127.0.0.1:0",
        "--rtc-port",
        "0",
        "--advertise-ip",
        "127.0.0.1",
    ];

    let out = Command::new(SORI)
        .args(base)
        .args(["--rtc-tcp-port", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the media port")
            && err.contains(&format!("TCP 127.0.0.1:{port}")),
        "{err}"
    );

    // On by default, advertised next to UDP on the same port number.
    let (mut child, line, _) = start(&base, "control API on ws://");
    let udp = after(&line, "(media: UDP ")
        .trim_end_matches(',')
        .to_string();
    let udp_port = udp.rsplit(':').next().unwrap();
    assert!(
        line.contains(&format!("127.0.0.1:{udp_port}/tcp")),
        "{line}"
    );
    let addr = after(&line, "ws://")
        .trim_end_matches("/kurento")
        .to_string();
    let metrics = http_get(&addr, "/metrics");
    assert!(
        metrics.contains("sori_ice_tcp_connections{state=\"open\"} 0"),
        "{metrics}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Off: the taken port does not matter and nothing TCP is advertised.
    let mut args = base.to_vec();
    args.extend(["--rtc-tcp-port", &port, "--no-rtc-tcp"]);
    let (mut child, line, _) = start(&args, "control API on ws://");
    assert!(!line.contains("/tcp"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(&config).unwrap();
}

#[test]
fn serve_runs_turn_and_joined_carries_credentials_for_it() {
    let secret = "turn-s3cret-value";
    let (mut child, line, seen) = start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rtc-port",
            "0",
            "--advertise-ip",
            "127.0.0.1",
            "--turn-listen",
            "127.0.0.1:0",
            "--turn-secret",
            secret,
        ],
        "listening on http://",
    );
    assert!(
        !seen.iter().any(|l| l.contains(secret)),
        "the TURN secret is never logged"
    );
    let turn_line = seen
        .iter()
        .find(|l| l.contains("TURN on UDP+TCP "))
        .expect("TURN is announced");
    let turn: std::net::SocketAddr = after(turn_line, "TURN on UDP+TCP ").parse().unwrap();
    assert_eq!(turn.ip().to_string(), "127.0.0.1");

    let http = after(&line, "http://");
    let (mut ws, _) = tungstenite::connect(format!("ws://{http}/ws")).unwrap();
    ws.send(tungstenite::Message::text(
        r#"{"type":"join","v":1,"room":"turn","name":"Ada"}"#,
    ))
    .unwrap();
    let joined = ws.read().unwrap().into_text().unwrap().to_string();
    let _ = ws.close(None);
    let urls = format!(
        r#""urls":["stun:{turn}","turn:{turn}?transport=udp","turn:{turn}?transport=tcp"]"#
    );
    assert!(joined.contains(&urls), "{joined}");
    let field = |name: &str| {
        let start = joined.find(&format!(r#""{name}":""#)).unwrap() + name.len() + 4;
        joined[start..].split('"').next().unwrap().to_string()
    };
    let username = field("username");
    assert!(username.ends_with(":p1"), "{username}");
    assert_eq!(
        field("credential"),
        sori_turn::credentials::password(secret, &username)
    );

    // A STUN Binding request over UDP gets this socket's address back.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    request.extend_from_slice(b"sori-binding");
    udp.send_to(&request, turn).unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(from, turn);
    assert!(
        n >= 20 && buf[..2] == [0x01, 0x01],
        "a Binding success response"
    );
    assert_eq!(&buf[8..20], b"sori-binding");
    // TURN over TCP listens on the same port.
    TcpStream::connect(turn).expect("TURN listens on TCP");

    child.kill().unwrap();
    child.wait().unwrap();
}

/// A self-signed certificate for `names` and its key, as PEM files in a fresh directory.
fn pem_files(tag: &str, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    use base64::Engine;
    let pem = |label: &str, der: &[u8]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let body: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            body.join("\n")
        )
    };
    let generated =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let dir = std::env::temp_dir().join(format!("sori-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, pem("CERTIFICATE", generated.cert.der())).unwrap();
    std::fs::write(
        &key,
        pem("PRIVATE KEY", &generated.signing_key.serialize_der()),
    )
    .unwrap();
    (cert, key)
}

#[test]
fn serve_with_a_certificate_runs_turn_over_tls_and_joined_carries_turns() {
    let (cert, key) = pem_files("serve", &["localhost"]);
    let (mut child, line, seen) = start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rtc-port",
            "0",
            "--advertise-ip",
            "127.0.0.1",
            "--turn-listen",
            "127.0.0.1:0",
            "--turn-tls-listen",
            "127.0.0.1:0",
            "--turn-tls-cert",
            cert.to_str().unwrap(),
            "--turn-tls-key",
            key.to_str().unwrap(),
            "--turn-tls-host",
            "localhost",
        ],
        "listening on http://",
    );
    let tls_line = seen
        .iter()
        .find(|l| l.contains("TURN on TLS "))
        .expect("TURN over TLS is announced");
    let tls: std::net::SocketAddr = after(tls_line, "TURN on TLS ").parse().unwrap();
    let turns = format!("turns:localhost:{}?transport=tcp", tls.port());
    if !tls_line.contains(&format!("turns:localhost:{}", tls.port())) {
        child.kill().unwrap();
        panic!("{tls_line}");
    }

    let http = after(&line, "http://");
    let (mut ws, _) = tungstenite::connect(format!("ws://{http}/ws")).unwrap();
    ws.send(tungstenite::Message::text(
        r#"{"type":"join","v":1,"room":"tls","name":"Ada"}"#,
    ))
    .unwrap();
    let joined = ws.read().unwrap().into_text().unwrap().to_string();
    let _ = ws.close(None);
    assert!(
        joined.contains(&format!(r#"?transport=tcp","{turns}"]"#)),
        "turns: follows the other TURN URLs, with the same credential: {joined}"
    );

    // A TLS client trusting the certificate completes the handshake with the server.
    use sori_turn::rustls;
    let mut roots = rustls::RootCertStore::empty();
    let cert_pem = std::fs::read_to_string(&cert).unwrap();
    let b64: String = cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    roots.add(der.into()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(std::sync::Arc::new(client), "localhost".try_into().unwrap())
            .unwrap();
    let mut tcp = TcpStream::connect(tls).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .expect("the TLS handshake succeeds");
    }

    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(cert.parent().unwrap());
}

#[test]
fn a_bad_turn_certificate_is_a_clear_error() {
    let (cert, key) = pem_files("bad", &["localhost"]);
    let base = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--rtc-port",
        "0",
        "--advertise-ip",
        "127.0.0.1",
        "--turn-listen",
        "127.0.0.1:0",
        "--turn-tls-listen",
        "127.0.0.1:0",
    ];
    // A certificate without a key: a configuration error, before anything starts.
    let out = Command::new(SORI)
        .args(base)
        .args(["--turn-tls-cert", cert.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("turn.tls_key"), "{err}");

    // A key file that holds no key: the start fails naming it.
    let garbage = cert.parent().unwrap().join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let out = Command::new(SORI)
        .args(base)
        .args(["--turn-tls-cert", cert.to_str().unwrap()])
        .args(["--turn-tls-key", garbage.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("garbage.pem") && !err.contains("panicked"),
        "{err}"
    );
    let _ = key;
    let _ = std::fs::remove_dir_all(cert.parent().unwrap());
}

#[test]
fn rooms_manages_a_running_server_through_its_api() {
    const SECRET: &str = "rooms-cli-secret-0123456789abcdef";
    let (mut server, ready, _) = start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rtc-port",
            "0",
            "--advertise-ip",
            "127.0.0.1",
            "--no-turn",
            "--api-key",
            "APIcli",
            "--api-secret",
            SECRET,
        ],
        "listening on http://",
    );
    let url = format!("http://{}", after(&ready, "http://"));
    let rooms = |args: &[&str], secret: &str| {
        let out = Command::new(SORI)
            .arg("rooms")
            .args(args)
            .env("SORI_URL", &url)
            .env("SORI_API_KEY", "APIcli")
            .env("SORI_API_SECRET", secret)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = rooms(&["create", "standup", "--max-participants", "3"], SECRET);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("standup is open (RM_"), "{out}");
    let (code, out, _) = rooms(&["list"], SECRET);
    assert_eq!(code, Some(0));
    assert_eq!(out, "standup  0 participant(s)  sfu\n");
    let (code, out, _) = rooms(&["participants", "standup"], SECRET);
    assert_eq!((code, out.as_str()), (Some(0), "nobody in standup\n"));
    let (code, out, _) = rooms(&["--json", "list"], SECRET);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"max_participants\":3"), "{out}");
    // Refusals: the server's Twirp code, exit 1; a usage error, exit 2.
    let (code, _, err) = rooms(&["remove", "standup", "nobody"], SECRET);
    assert_eq!(code, Some(1));
    assert!(err.contains("not_found"), "{err}");
    let (code, _, err) = rooms(&["list"], "another-secret-of-enough-length-0123");
    assert_eq!(code, Some(1));
    assert!(err.contains("unauthenticated"), "{err}");
    let (code, _, err) = rooms(&["record", "standup", "maybe"], SECRET);
    assert_eq!(code, Some(2), "{err}");
    let (code, out, _) = rooms(&["end", "standup"], SECRET);
    assert_eq!((code, out.as_str()), (Some(0), "standup ended\n"));
    let (_, out, _) = rooms(&["list"], SECRET);
    assert_eq!(out, "no rooms\n");
    let _ = server.kill();
    let _ = server.wait();
}
