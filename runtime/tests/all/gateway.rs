//! The gateway's limits, in-process against a real hyper server and real sockets, with a
//! small handler standing in for a function.

use crate::support::*;
use http_body_util::BodyExt;
use skiff::gateway::{GatewayConfig, serve};
use skiff::instance::{Body, HttpHandler, text_response};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Answers with the body's length; `/slow` waits a while first; `/drip` sends ten chunks
/// 100 ms apart.
struct Echo;

impl HttpHandler for Echo {
    async fn handle(&self, request: http::Request<Body>) -> http::Response<Body> {
        if request.uri().path() == "/drip" {
            return drip();
        }
        if request.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        match request.into_body().collect().await {
            Ok(body) => text_response(http::StatusCode::OK, body.to_bytes().len().to_string()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                text_response(http::StatusCode::PAYLOAD_TOO_LARGE, "too big")
            }
            Err(e) => text_response(http::StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
}

fn drip() -> http::Response<Body> {
    let chunks = futures_util::stream::unfold(0u8, |n| async move {
        if n == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let frame = hyper::body::Frame::data(bytes::Bytes::from(format!("{n}")));
        Some((Ok::<_, skiff::instance::BoxError>(frame), n + 1))
    });
    http::Response::new(http_body_util::StreamBody::new(chunks).boxed_unsync())
}

/// Starts the gateway on a background thread with `config`; returns its address.
fn start(config: GatewayConfig) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve(listener, Arc::new(Echo), config, std::future::pending())
                .await
                .unwrap();
        });
    });
    addr
}

fn small() -> GatewayConfig {
    GatewayConfig {
        max_header_bytes: 8 << 10,
        max_body_bytes: 1024,
        header_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(5),
        max_connections: 64,
        max_in_flight: 4,
    }
}

#[test]
fn bodies_over_the_limit_get_413_declared_or_streamed() {
    let addr = start(small());
    let rt = runtime();
    let declared = rt.block_on(fetch(addr, Version::Http1, "POST", "/", &"x".repeat(2048)));
    assert_eq!(declared.status, 413);
    // h2 sends no content-length here when the body is streamed: the limit still applies.
    let within = rt.block_on(fetch(addr, Version::H2c, "POST", "/", &"x".repeat(1000)));
    assert_eq!((within.status, within.body.as_str()), (200, "1000"));
}

#[test]
fn oversized_headers_are_refused() {
    let addr = start(small());
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let _ = stream.write_all(request.as_bytes());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert_eq!(get(addr, "/").status, 200, "still serving");
}

#[test]
fn a_slow_client_is_cut_off() {
    let addr = start(small());
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Never finish the head: the gateway must close the connection on its own.
    let mut buf = [0u8; 512];
    let closed = match stream.read(&mut buf) {
        Ok(n) => n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the connection stayed open past the header timeout");
}

#[test]
fn a_slow_handler_answers_504() {
    let addr = start(small());
    assert_eq!(get(addr, "/slow").status, 504);
}

#[test]
fn a_full_gateway_answers_503_with_retry_after() {
    let addr = start(small());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let replies = rt.block_on(async {
        let slow: Vec<_> = (0..4)
            .map(|_| tokio::spawn(fetch(addr, Version::Http1, "GET", "/slow", "")))
            .collect();
        let mut busy = None;
        // Keep knocking until the four slow requests hold every slot.
        for _ in 0..50 {
            let reply = fetch(addr, Version::Http1, "GET", "/", "").await;
            if reply.status == 503 {
                busy = Some(reply);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for handle in slow {
            let _ = handle.await;
        }
        busy
    });
    let busy = replies.expect("a request beyond max_in_flight gets 503");
    assert_eq!(busy.headers["retry-after"], "1");
}

#[test]
fn a_long_response_is_not_taken_for_an_idle_connection() {
    let addr = start(GatewayConfig {
        idle_timeout: Duration::from_millis(200),
        ..small()
    });
    // The body takes about five idle timeouts to send; the connection must stay for all of it.
    for version in [Version::Http1, Version::H2c] {
        let reply = runtime().block_on(fetch(addr, version, "GET", "/drip", ""));
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "0123456789"),
            "{version:?}"
        );
    }
}
