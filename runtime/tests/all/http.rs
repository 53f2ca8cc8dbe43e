//! HTTP functions through `skiff run --listen`: wasi:http components and WAGI modules over
//! HTTP/1.1 and h2c, a fresh instance per request, failures contained to one request.

use crate::support::*;

#[test]
fn a_component_answers_over_http1_and_h2c() {
    let skiff = Skiff::new();
    let server = skiff.serve([p2("http_hello")]);
    let rt = runtime();
    for version in [Version::Http1, Version::H2c] {
        let reply = rt.block_on(fetch(server.addr, version, "GET", "/greet/me?x=1", ""));
        assert_eq!(reply.status, 200, "{version:?}: {reply:?}");
        assert_eq!(reply.body, "Hello from skiff! path=/greet/me?x=1\n");
        assert!(reply.headers.contains_key("x-request-id"));
        let echo = rt.block_on(fetch(server.addr, version, "POST", "/echo", "round trip"));
        assert_eq!((echo.status, echo.body.as_str()), (200, "round trip"));
    }
}

#[test]
fn concurrent_requests_each_get_an_instance() {
    let skiff = Skiff::new();
    let server = skiff.serve([p2("http_hello")]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let replies = rt.block_on(async {
        let requests = (0..32).map(|i| {
            let version = if i % 2 == 0 {
                Version::Http1
            } else {
                Version::H2c
            };
            let (addr, path) = (server.addr, format!("/n/{i}"));
            async move { fetch(addr, version, "GET", &path, "").await }
        });
        futures_join_all(requests).await
    });
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, format!("Hello from skiff! path=/n/{i}\n"));
    }
    let ids: std::collections::HashSet<_> = replies
        .iter()
        .map(|r| r.headers["x-request-id"].clone())
        .collect();
    assert_eq!(ids.len(), replies.len(), "request ids are unique");
}

async fn futures_join_all<F: Future<Output = Reply> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<Reply> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut replies = Vec::new();
    for handle in handles {
        replies.push(handle.await.unwrap());
    }
    replies
}

#[test]
fn a_wagi_module_gets_cgi_variables_and_the_body() {
    let skiff = Skiff::new();
    let server = skiff.serve([p1("wagi-hello")]);
    let rt = runtime();
    for version in [Version::Http1, Version::H2c] {
        let reply = rt.block_on(fetch(server.addr, version, "POST", "/x/y?a=1", "payload"));
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(
            reply.body.contains("method=POST path=/x/y query=a=1"),
            "{}",
            reply.body
        );
        assert!(reply.body.contains("body=payload"), "{}", reply.body);
        assert_eq!(reply.headers["x-wagi-host"], server.addr.to_string());
    }
    assert_eq!(get(server.addr, "/teapot").status, 418);
}

#[test]
fn a_failing_request_answers_500_and_the_next_is_served() {
    let skiff = Skiff::new();
    let server = skiff.serve([
        "--timeout",
        "500ms",
        "--memory",
        "64m",
        p2("http_misbehave").to_str().unwrap(),
    ]);
    for (path, status) in [
        ("/trap", 500),
        ("/ok", 200),
        ("/loop", 504),
        ("/ok", 200),
        ("/hog", 500),
        ("/ok", 200),
    ] {
        let reply = get(server.addr, path);
        assert_eq!(reply.status, status, "{path}: {reply:?}");
        if status != 200 {
            assert!(
                !reply.body.contains("backtrace"),
                "guest details stay in the log: {}",
                reply.body
            );
        }
    }
    let log = server.stop();
    assert!(
        log.contains("trapped") && log.contains("trigger_panic"),
        "the log names the guest frames:\n{log}"
    );
    assert!(
        log.contains("time limit") && log.contains("out of memory"),
        "{log}"
    );
}

#[test]
fn a_body_over_the_limit_is_refused() {
    use std::io::{Read, Write};
    let skiff = Skiff::new();
    let server = skiff.serve([p1("wagi-hello")]);
    // Declare 11 MiB (over the 10 MiB default) and wait for the answer before sending it.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        11 << 20
    )
    .unwrap();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(
        get(server.addr, "/after").status,
        200,
        "the server keeps serving"
    );
}

#[test]
fn a_full_instance_pool_answers_503_and_recovers() {
    use skiff::wasm::capabilities::Capabilities;
    use skiff::wasm::engine::{EngineConfig, WasmEngine};
    use skiff::wasm::http::HttpFunction;
    use skiff::wasm::limits::Limits;
    use std::sync::Arc;
    use std::time::Duration;

    let cache = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        pool_instances: Some(1),
        ..EngineConfig::default()
    };
    let engine = Arc::new(WasmEngine::new(&config, cache.path().to_path_buf()).unwrap());
    let program = engine.load_file(&p2("http_misbehave")).unwrap();
    let limits = Limits {
        timeout: Some(Duration::from_secs(2)),
        memory: None,
    };
    let function =
        Arc::new(HttpFunction::prepare(engine, &program, Capabilities::default(), limits).unwrap());
    let request = |path: &str| {
        use http_body_util::BodyExt;
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::get(path)
            .header("host", "test")
            .body(body)
            .unwrap()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // One request spins in the pool's only slot until its time limit; probes meanwhile
        // find no free slot. Under load a probe can win the slot first, and then the spinning
        // request is the one refused: either way, one side must see 503 with Retry-After.
        let refused = |response: &http::Response<skiff::instance::Body>| {
            response.status() == 503 && response.headers()["retry-after"] == "1"
        };
        let busy = tokio::spawn({
            let function = function.clone();
            let request = request("/loop");
            async move { function.handle(request).await }
        });
        let mut saw_503 = false;
        while !busy.is_finished() && !saw_503 {
            saw_503 = refused(&function.handle(request("/ok")).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let busy = busy.await.unwrap();
        assert!(
            busy.status() == 504 || refused(&busy),
            "the spinning request: {}",
            busy.status()
        );
        assert!(
            saw_503 || refused(&busy),
            "a request with no free slot answers 503"
        );
        assert_eq!(
            function.handle(request("/ok")).await.status(),
            200,
            "the slot is free again"
        );
    });
}
