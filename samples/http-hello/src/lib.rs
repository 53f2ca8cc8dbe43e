//! `http-hello`: a `wasi:http/proxy` component (WASI 0.2), built for
//! `wasm32-wasip2` only.
//!
//! The component exports `wasi:http/incoming-handler`, so skiff's HTTP
//! trigger calls `handle` once per request. It shows:
//!
//! * `/echo` (any method): answers 200 with
//!   `content-type: application/octet-stream` and the request body streamed
//!   back unchanged,
//! * any other path: answers 200 with `content-type: text/plain` and the body
//!   `Hello from skiff! path=<PATH_WITH_QUERY>\n`.
//!
//! It deliberately uses Rust `std` (`format!`, `String`, `std::io`), which
//! makes the component import a few `wasi:cli/*` interfaces (environment,
//! stdio, exit) in addition to the `wasi:http` ones: hosts must provide them.
//!
//! Bindings come from the `wasi` crate (0.14.x, a re-export of `wasip2`).

use std::io::Write as _;

use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct HttpHello;

wasi::http::proxy::export!(HttpHello);

impl wasi::exports::http::incoming_handler::Guest for HttpHello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        // `path_with_query` is None only for requests without a path
        // (e.g. OPTIONS *); fall back to "/" for the greeting.
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let path = path_with_query.split('?').next().unwrap_or("");

        if path == "/echo" {
            echo(request, response_out);
        } else {
            let body = format!("Hello from skiff! path={path_with_query}\n");
            let out = start_response(response_out, 200, "text/plain");
            let mut stream = out.write().expect("outgoing body stream");
            stream.write_all(body.as_bytes()).expect("write body");
            stream.flush().expect("flush body");
            // The stream must be dropped before the body is finished.
            drop(stream);
            OutgoingBody::finish(out, None).expect("finish body");
        }
    }
}

/// Builds a response with one `content-type` header, hands it to the host
/// and returns its body for writing.
///
/// The response is given to the host *before* the body is written, so the
/// host can start sending while we stream: writing a large body first could
/// otherwise fill the host's pipe and block forever.
fn start_response(response_out: ResponseOutparam, status: u16, content_type: &str) -> OutgoingBody {
    let headers =
        Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
            .expect("valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("response body taken once");
    ResponseOutparam::set(response_out, Ok(response));
    body
}

/// Streams the request body back as the response body.
fn echo(request: IncomingRequest, response_out: ResponseOutparam) {
    let in_body = request.consume().expect("request body consumed once");
    let out = start_response(response_out, 200, "application/octet-stream");
    {
        // InputStream/OutputStream implement std::io::Read/Write (via the
        // wasi crate's `std` feature); io::copy moves 8 KiB at a time and
        // blocks on the host's pollables as needed.
        let mut input = in_body.stream().expect("request body stream");
        let mut output = out.write().expect("outgoing body stream");
        std::io::copy(&mut input, &mut output).expect("echo body");
        output.flush().expect("flush body");
        // Child streams must be dropped before their parent bodies.
    }
    // Ignore trailers; finishing the incoming body just releases it.
    drop(IncomingBody::finish(in_body));
    OutgoingBody::finish(out, None).expect("finish body");
}
