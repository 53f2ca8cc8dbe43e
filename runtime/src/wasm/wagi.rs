//! WAGI: a WASI preview-1 module as an HTTP handler, the CGI way.
//!
//! The request arrives as CGI variables in the environment, the query's `&`-separated parts as
//! arguments, and the body on stdin. The module writes headers, a blank line and the body to
//! stdout. `status:` sets the status and `location:` alone means a 302, as in the WAGI spec.

use super::capabilities::Capabilities;
use super::engine::WasmEngine;
use super::error::{Ended, classify};
use super::host::{ModuleHost, module_store};
use super::limits::{Limits, with_deadline};
use super::{WasmError, link};
use crate::instance::{Body, text_response};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmtime::{InstancePre, Module};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

/// Largest output (headers and body) a WAGI handler may write; more fails its writes.
const MAX_OUTPUT: usize = 16 << 20;

pub(crate) struct Wagi {
    pre: InstancePre<ModuleHost>,
}

impl Wagi {
    pub(crate) fn prepare(
        engine: &WasmEngine,
        name: &str,
        module: &Module,
    ) -> Result<Self, WasmError> {
        let pre = link::module_pre(engine, name, module)?;
        if module.get_export("_start").is_none() {
            return Err(WasmError::MissingExport {
                name: name.to_string(),
                export: "`_start`",
                hint: "a WAGI handler is a WASI command module (a binary built for wasm32-wasip1)",
            });
        }
        Ok(Self { pre })
    }

    pub(crate) async fn handle(
        &self,
        engine: &WasmEngine,
        name: &str,
        caps: &Capabilities,
        limits: &Limits,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, WasmError> {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Ok(text_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large\n",
                ));
            }
            Err(e) => {
                return Ok(text_response(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}\n"),
                ));
            }
        };
        let stdout = MemoryOutputPipe::new(MAX_OUTPUT);
        let mut wasi = caps.wasi_builder()?;
        wasi.envs(&cgi_env(&parts, body.len()))
            .args(&cgi_args(name, &parts))
            .stdin(MemoryInputPipe::new(body))
            .stdout(stdout.clone());
        let mut store = module_store(engine, wasi.build_p1(), limits);
        let call = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        };
        match with_deadline(limits, call)
            .await
            .map_err(|e| classify(name, limits, e))
        {
            Ok(()) | Err(Ended::Exit(0)) => {}
            Err(Ended::Exit(code)) => {
                return Err(WasmError::Host {
                    name: name.to_string(),
                    reason: format!("WAGI handler exited with code {code}"),
                });
            }
            Err(Ended::Failed(failure)) => return Err(failure),
        }
        parse_output(&stdout.contents()).map_err(|reason| WasmError::Host {
            name: name.to_string(),
            reason,
        })
    }
}

/// CGI 1.1 variables plus WAGI's `X_FULL_URL`, `X_MATCHED_ROUTE` and `HTTP_*` headers.
fn cgi_env(parts: &http::request::Parts, body_len: usize) -> Vec<(String, String)> {
    let uri = &parts.uri;
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let (server_name, server_port) = host.rsplit_once(':').unwrap_or((host, "80"));
    let path = uri.path();
    let mut env = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        (
            "SERVER_SOFTWARE".into(),
            concat!("skiff/", env!("CARGO_PKG_VERSION")).into(),
        ),
        ("SERVER_PROTOCOL".into(), format!("{:?}", parts.version)),
        ("SERVER_NAME".into(), server_name.into()),
        ("SERVER_PORT".into(), server_port.into()),
        ("REQUEST_METHOD".into(), parts.method.to_string()),
        ("SCRIPT_NAME".into(), String::new()),
        ("PATH_INFO".into(), path.into()),
        ("X_RAW_PATH_INFO".into(), path.into()),
        ("PATH_TRANSLATED".into(), path.into()),
        ("QUERY_STRING".into(), uri.query().unwrap_or("").into()),
        ("X_MATCHED_ROUTE".into(), "/...".into()),
        (
            "X_FULL_URL".into(),
            format!(
                "http://{host}{}",
                uri.path_and_query().map_or("/", |p| p.as_str())
            ),
        ),
        ("CONTENT_LENGTH".into(), body_len.to_string()),
        (
            "CONTENT_TYPE".into(),
            header(parts, http::header::CONTENT_TYPE),
        ),
        ("AUTH_TYPE".into(), String::new()),
        ("REMOTE_USER".into(), String::new()),
    ];
    for (name, value) in &parts.headers {
        // Credentials stay with the gateway, as CGI servers do.
        if name == http::header::AUTHORIZATION
            || name == http::header::CONTENT_TYPE
            || name == http::header::CONTENT_LENGTH
        {
            continue;
        }
        if let Ok(value) = value.to_str() {
            let key = format!(
                "HTTP_{}",
                name.as_str().to_ascii_uppercase().replace('-', "_")
            );
            env.push((key, value.to_string()));
        }
    }
    env
}

fn header(parts: &http::request::Parts, name: HeaderName) -> String {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// argv: the program's name, then the query split on `&`, as WAGI passes it.
fn cgi_args(name: &str, parts: &http::request::Parts) -> Vec<String> {
    let mut args = vec![name.to_string()];
    if let Some(query) = parts.uri.query() {
        args.extend(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        );
    }
    args
}

/// Splits CGI output into a response: header lines up to the first blank line, then the body.
fn parse_output(output: &[u8]) -> Result<http::Response<Body>, String> {
    let (head, body) =
        split_head(output).ok_or("WAGI handler wrote no blank line after its headers")?;
    let head =
        std::str::from_utf8(head).map_err(|_| "WAGI handler wrote headers that are not UTF-8")?;
    let mut response = http::Response::builder();
    let mut status = None;
    let mut has_type_or_location = false;
    for line in head.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("WAGI handler wrote a malformed header line `{line}`"))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "status" => {
                let code = value.split_whitespace().next().unwrap_or("");
                status = Some(
                    StatusCode::from_bytes(code.as_bytes())
                        .map_err(|_| format!("WAGI handler wrote an invalid status `{value}`"))?,
                );
            }
            _ => {
                has_type_or_location |= name == "content-type" || name == "location";
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("invalid header name `{name}`"))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("invalid value for header `{name}`"))?;
                if name == "location" && status.is_none() {
                    status = Some(StatusCode::FOUND);
                }
                response = response.header(header, value);
            }
        }
    }
    if !has_type_or_location {
        return Err("WAGI handler wrote neither content-type nor location".into());
    }
    let body = Full::new(Bytes::copy_from_slice(body))
        .map_err(|never| match never {})
        .boxed_unsync();
    response
        .status(status.unwrap_or(StatusCode::OK))
        .body(body)
        .map_err(|e| e.to_string())
}

fn split_head(output: &[u8]) -> Option<(&[u8], &[u8])> {
    let lf = output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let (at, len) = match (lf, crlf) {
        (Some(a), Some(b)) => {
            if a.0 < b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&output[..at], &output[at + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: http::Response<Body>) -> String {
        String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn output_with_status_and_headers() {
        let response =
            parse_output(b"Content-Type: text/plain\nStatus: 418 teapot\n\nshort and stout")
                .unwrap();
        assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert_eq!(body_of(response).await, "short and stout");
    }

    #[test]
    fn location_alone_redirects() {
        let response = parse_output(b"location: /elsewhere\r\n\r\n").unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
    }

    #[test]
    fn malformed_output_is_an_error() {
        assert!(
            parse_output(b"content-type: text/plain")
                .unwrap_err()
                .contains("blank line")
        );
        assert!(
            parse_output(b"x-only: 1\n\nbody")
                .unwrap_err()
                .contains("content-type")
        );
        assert!(
            parse_output(b"garbage\n\n")
                .unwrap_err()
                .contains("malformed")
        );
    }

    #[test]
    fn cgi_variables() {
        let request = http::Request::get("/hello/x?a=1&b=2")
            .header("host", "example.test:8080")
            .header("x-thing", "y")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let env = cgi_env(&parts, 5);
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PATH_INFO"), Some("/hello/x"));
        assert_eq!(get("QUERY_STRING"), Some("a=1&b=2"));
        assert_eq!(get("SERVER_PORT"), Some("8080"));
        assert_eq!(get("HTTP_X_THING"), Some("y"));
        assert_eq!(
            get("X_FULL_URL"),
            Some("http://example.test:8080/hello/x?a=1&b=2")
        );
        assert_eq!(cgi_args("f.wasm", &parts), ["f.wasm", "a=1", "b=2"]);
    }
}
