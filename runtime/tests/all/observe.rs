//! What `skiff serve` shows of itself and how its gateway holds up: `/metrics`, access log
//! lines and request ids, and the gateway's limits against a real daemon (header size, a
//! slowloris client, idle connections, body size, h2c).

use crate::serving::*;
use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Checks `text` is Prometheus exposition: comments, or `name{labels} value` lines.
fn assert_exposition(text: &str) {
    assert!(text.ends_with("# EOF\n"), "no OpenMetrics trailer:\n{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name of {line:?}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(labels.ends_with('}'), "labels of {line:?}");
            for pair in labels[1..labels.len() - 1].split(',') {
                let (key, value) = pair.split_once('=').expect("label=value");
                assert!(!key.is_empty() && value.starts_with('"') && value.ends_with('"'));
            }
        }
    }
}

/// The value of the series `series` (name and labels exactly as encoded) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_what_the_gateway_answered() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let mut serving = Serving::start(
        &skiff,
        &["--metrics", "127.0.0.1:0", "--max-body-bytes", "1024"],
    );
    let scrape_addr: std::net::SocketAddr = serving.line("metrics on http://").parse().unwrap();
    let file = write_app(dir.path(), HELLO);
    serving
        .client(&skiff, &["deploy", "-f", &file])
        .expect_code(0);
    for _ in 0..3 {
        assert_eq!(get(serving.gateway, "/hello").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(serving.gateway, "/nowhere").status, 404);
    }
    let big = request(serving.gateway, "POST", "/hello", &[], &"x".repeat(2048));
    assert_eq!(big.status, 413, "{big:?}");

    let scraped = serving.api("GET", "/metrics", "");
    assert_eq!(scraped.status, 200);
    assert!(
        scraped.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        scraped.headers
    );
    let text = scraped.body;
    assert_exposition(&text);
    let series = |s: &str| value(&text, s);
    assert_eq!(
        series(r#"skiff_gateway_responses_total{status="200"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        series(r#"skiff_gateway_responses_total{status="404"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series(r#"skiff_gateway_responses_total{status="413"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(r#"skiff_gateway_refusals_total{reason="body_too_large"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(series("skiff_gateway_in_flight"), Some(0.0), "{text}");

    // The scrape port serves the same registry, without a token, and nothing else.
    let alone = request(scrape_addr, "GET", "/metrics", &[], "");
    assert_eq!(alone.status, 200);
    assert_exposition(&alone.body);
    assert_eq!(
        value(
            &alone.body,
            r#"skiff_gateway_responses_total{status="200"}"#
        ),
        Some(3.0)
    );
    assert_eq!(request(scrape_addr, "GET", "/v1/apps", &[], "").status, 404);
}

#[test]
fn every_response_carries_a_request_id_and_an_access_log_line() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let serving = Serving::start(&skiff, &[]);
    let file = write_app(dir.path(), HELLO);
    serving
        .client(&skiff, &["deploy", "-f", &file])
        .expect_code(0);

    let kept = request(
        serving.gateway,
        "GET",
        "/hello",
        &[("x-request-id", "trace-42.a")],
        "",
    );
    assert_eq!(kept.headers["x-request-id"], "trace-42.a");
    let line = serving.logged(&["skiff::access", "trace-42.a"]);
    for field in [
        "bytes=30",
        "method=GET",
        "path=\"/hello\"",
        "status=200",
        "peer=127.0.0.1:",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }

    let replaced = request(
        serving.gateway,
        "GET",
        "/nowhere",
        &[("x-request-id", "no spaces, <please>")],
        "",
    );
    let id = replaced.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 16, "a fresh id: {id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    serving.logged(&["skiff::access", &id, "status=404"]);

    let assigned = get(serving.gateway, "/hello");
    let other = assigned.headers["x-request-id"].to_str().unwrap();
    assert_ne!(other, id, "each request its own id");

    let h2 = runtime().block_on(fetch(serving.gateway, Version::H2c, "GET", "/hello", ""));
    assert_eq!(h2.status, 200, "h2c works through the daemon: {h2:?}");
    assert!(h2.headers.contains_key("x-request-id"));
    serving.logged(&["skiff::access", "version=HTTP/2.0", "status=200"]);
}

/// Whether the server closes `stream` (EOF, reset, or an error status then EOF) before the
/// read timeout.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

#[test]
fn the_gateway_cuts_off_slow_idle_and_oversized_clients_and_keeps_serving() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let serving = Serving::start(
        &skiff,
        &[
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "1s",
            "--max-header-bytes",
            "8192",
        ],
    );
    let file = write_app(dir.path(), HELLO);
    serving
        .client(&skiff, &["deploy", "-f", &file])
        .expect_code(0);

    // Headers over the limit: 431, or the connection closed.
    let mut big = TcpStream::connect(serving.gateway).unwrap();
    big.set_read_timeout(Some(WAIT)).unwrap();
    let head = format!(
        "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let _ = big.write_all(head.as_bytes());
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // Slowloris: a head that never ends is cut off by the server.
    let mut slow = TcpStream::connect(serving.gateway).unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    assert!(
        closed_by_server(&mut slow),
        "a partial head kept its connection"
    );

    // A connection that never sends a byte is closed too.
    let mut silent = TcpStream::connect(serving.gateway).unwrap();
    assert!(
        closed_by_server(&mut silent),
        "an idle connection stayed open"
    );

    // A keep-alive connection that goes quiet after a request is closed.
    let mut kept = TcpStream::connect(serving.gateway).unwrap();
    kept.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(
        closed_by_server(&mut kept),
        "an idle keep-alive connection stayed open"
    );

    let reply = get(serving.gateway, "/hello");
    assert_eq!(reply.status, 200, "still serving: {reply:?}");
    serving
        .client(&skiff, &["apps"])
        .expect_code(0)
        .stdout_has("greet");
}

#[test]
fn gateway_timeouts_must_be_durations_above_zero() {
    let skiff = Skiff::new();
    for (flag, value, message) in [
        ("--idle-timeout", "0s", "must be above zero"),
        ("--header-timeout", "soon", "write e.g. 10s"),
    ] {
        let refused = skiff
            .command()
            .args(["serve", "--gateway", "127.0.0.1:0", "--socket"])
            .arg(socket(&skiff))
            .args([flag, value])
            .output()
            .unwrap();
        Ran::from(refused)
            .expect_code(2)
            .stderr_has(flag)
            .stderr_has(message);
        assert!(!socket(&skiff).exists(), "nothing was started for {flag}");
    }
}
