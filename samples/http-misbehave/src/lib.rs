//! `http-misbehave`: a misbehaving `wasi:http/proxy` component (WASI 0.2),
//! built for `wasm32-wasip2` only.
//!
//! Used to test that the runtime contains a bad HTTP handler and keeps
//! serving other requests:
//!
//! * `/trap`: panics (in `trigger_panic`, called from
//!   `handle_trap_request`); on wasm a panic aborts, i.e. the instance traps,
//!   and the host should answer 500 (the panic message goes to stderr),
//! * `/loop`: spins forever in a busy loop (tests epoch/fuel interruption
//!   and request timeouts),
//! * `/hog`: allocates and touches 1 MiB chunks until the allocator fails
//!   (tests memory limits; ends in a trap when `memory.grow` is refused),
//! * `.../fetch?url=http://HOST[:PORT]/PATH` (any prefix, so it works behind a route): makes an outbound GET and answers 200 with
//!   `fetched STATUS: BODY`, or 502 with `denied: ERROR` when the host refuses it (tests the
//!   outbound allow-list: deny by default),
//! * anything else: 200 `ok\n` (`content-type: text/plain`).
//!
//! No response is sent on the misbehaving paths before they misbehave.

use std::hint::black_box;
use std::io::Write as _;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

struct HttpMisbehave;

wasi::http::proxy::export!(HttpMisbehave);

impl wasi::exports::http::incoming_handler::Guest for HttpMisbehave {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let path = path_with_query.split('?').next().unwrap_or("");
        match path {
            "/trap" => handle_trap_request(path),
            "/loop" => spin_forever(),
            "/hog" => hog_memory(),
            fetch_path if fetch_path.ends_with("/fetch") => {
                let url = path_with_query
                    .split_once("?url=")
                    .map(|(_, url)| url)
                    .unwrap_or("");
                match fetch(url) {
                    Ok((status, body)) => {
                        respond(response_out, 200, &format!("fetched {status}: {body}"))
                    }
                    Err(error) => respond(response_out, 502, &format!("denied: {error}\n")),
                }
            }
            _ => respond(response_out, 200, "ok\n"),
        }
    }
}

#[inline(never)]
fn handle_trap_request(path: &str) -> ! {
    trigger_panic(black_box(path))
}

#[inline(never)]
fn trigger_panic(path: &str) -> ! {
    panic!("http-misbehave: deliberate panic for {path}")
}

#[inline(never)]
fn spin_forever() -> ! {
    let mut counter: u64 = 0;
    loop {
        // black_box keeps the optimiser from removing the loop.
        counter = black_box(counter.wrapping_add(black_box(1)));
    }
}

#[inline(never)]
fn hog_memory() -> ! {
    const CHUNK: usize = 1024 * 1024;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        // Dirty every page so the memory is really used.
        for i in (0..CHUNK).step_by(4096) {
            chunk[i] = 1;
        }
        kept.push(black_box(chunk));
        black_box(&kept);
    }
}

/// An outbound GET of `url` (`scheme://authority/path`): its status and body.
fn fetch(url: &str) -> Result<(u16, String), String> {
    let (scheme, rest) = url.split_once("://").ok_or("the url needs a scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = match scheme {
        "https" => Scheme::Https,
        _ => Scheme::Http,
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|()| "body taken twice")?;
    let stream = body.stream().map_err(|()| "body stream taken twice")?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn respond(response_out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
        .expect("valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("response body taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let mut stream = body.write().expect("outgoing body stream");
    stream.write_all(text.as_bytes()).expect("write body");
    stream.flush().expect("flush body");
    drop(stream);
    OutgoingBody::finish(body, None).expect("finish body");
}
