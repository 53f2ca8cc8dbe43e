//! `wagi-hello`: a WAGI (CGI-style) HTTP handler, built for `wasm32-wasip1`.
//!
//! WAGI runs an ordinary WASI command once per request: the request metadata
//! arrives as CGI environment variables, the request body on stdin, and the
//! program writes a CGI response to stdout (header lines, a blank line, then
//! the body).
//!
//! This sample reads `REQUEST_METHOD`, `PATH_INFO`, `QUERY_STRING`,
//! `X_FULL_URL`, `HTTP_HOST` and `CONTENT_LENGTH`, reads the body from stdin
//! (at most `CONTENT_LENGTH` bytes when that is set, else to EOF) and answers:
//!
//! ```text
//! status: 418                      (only when PATH_INFO is /teapot)
//! content-type: text/plain
//! x-wagi-host: <HTTP_HOST>
//! x-wagi-full-url: <X_FULL_URL>
//!
//! Hello from WAGI! method=<M> path=<PATH_INFO> query=<QS>
//! body=<BODY>
//! ```
//!
//! Missing variables are treated as empty strings; a non-UTF-8 body is
//! printed lossily.

use std::io::{self, Read, Write};

fn main() -> io::Result<()> {
    let var = |name: &str| std::env::var(name).unwrap_or_default();

    let method = var("REQUEST_METHOD");
    let path = var("PATH_INFO");
    let query = var("QUERY_STRING");
    let full_url = var("X_FULL_URL");
    let host = var("HTTP_HOST");
    let content_length: Option<u64> = var("CONTENT_LENGTH").trim().parse().ok();

    // Read the request body. CONTENT_LENGTH bounds it when present.
    let mut body = Vec::new();
    let stdin = io::stdin().lock();
    match content_length {
        Some(len) => stdin.take(len).read_to_end(&mut body)?,
        None => stdin.take(u64::MAX).read_to_end(&mut body)?,
    };
    let body = String::from_utf8_lossy(&body);

    let mut out = io::stdout().lock();
    // Headers. A `status` header must come first so hosts that only look at
    // the leading line still see it.
    if path == "/teapot" {
        writeln!(out, "status: 418")?;
    }
    writeln!(out, "content-type: text/plain")?;
    writeln!(out, "x-wagi-host: {host}")?;
    writeln!(out, "x-wagi-full-url: {full_url}")?;
    // End of headers.
    writeln!(out)?;
    // Body.
    writeln!(
        out,
        "Hello from WAGI! method={method} path={path} query={query}"
    )?;
    writeln!(out, "body={body}")?;
    out.flush()
}
