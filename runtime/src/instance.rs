//! The seam between executors and the parts that drive them.
//!
//! An executor (Wasm now, Linux later) implements these traits; the gateway and, later, the
//! scheduler use them without knowing which executor is behind.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

/// Errors inside HTTP bodies, boxed so executors and the gateway agree on one type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP body as it flows between the gateway and an executor.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Something that answers HTTP requests: a Wasm HTTP function, later a service's port.
///
/// The gateway has already applied its limits (header and body size, request time) when
/// `handle` runs; the request body errors with `http_body_util::LengthLimitError` past the
/// body limit. A handler never fails: its failures are answers (500, 504, ...).
pub trait HttpHandler: Send + Sync + 'static {
    fn handle(
        &self,
        request: http::Request<Body>,
    ) -> impl Future<Output = http::Response<Body>> + Send;
}

/// The client's address: the gateway puts it in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Builds a small plain-text response, the shape of every error answer.
pub fn text_response(status: http::StatusCode, text: impl Into<String>) -> http::Response<Body> {
    use http_body_util::{BodyExt, Full};
    let body = Full::new(Bytes::from(text.into()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
