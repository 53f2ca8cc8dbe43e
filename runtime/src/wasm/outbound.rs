//! Outbound HTTP from guests: denied unless the function's `allowed_outbound_hosts` names the
//! scheme, host and port (Spin's rule, without wildcards for now).
//!
//! A request is matched on its URI as the guest built it (`wasi:http/outgoing-handler`):
//! scheme, host (case-insensitive) and port (the scheme's default when absent, on either
//! side). Anything else answers the guest `HTTP-request-denied` before a socket is opened.
//!
//! An allowed `http://NAME:PORT` whose host the policy's [`Names`] know (the services of the
//! guest's own app, given by the daemon) connects to the address they name, keeping the
//! `Host` header the guest sent; other hosts go through the system's resolver.

use super::WasmError;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// One `scheme://host[:port]` a function may call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    scheme: String,
    host: String,
    port: u16,
}

/// Host names the embedder resolves itself, before the system's resolver is asked.
pub trait Names: Send + Sync + fmt::Debug {
    /// The address `host` names, if it is one of these names.
    fn resolve(&self, host: &str) -> Option<IpAddr>;
}

/// The hosts a guest may call; empty denies everything. No [`Names`] unless given.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allowed: Arc<[Allowed]>,
    names: Option<Arc<dyn Names>>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl OutboundPolicy {
    /// Reads `scheme://host[:port]` entries; the first that is not one is the error.
    pub fn parse(entries: &[String]) -> Result<Self, WasmError> {
        let mut allowed = Vec::new();
        for entry in entries {
            let invalid = |reason: &str| WasmError::Outbound {
                entry: entry.clone(),
                reason: format!(
                    "{reason}; an outbound host is scheme://host[:port], such as http://cache:6379"
                ),
            };
            let uri: http::Uri = entry.parse().map_err(|_| invalid("not a URL"))?;
            let scheme = uri
                .scheme_str()
                .ok_or_else(|| invalid("no scheme"))?
                .to_ascii_lowercase();
            let host = uri
                .host()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| invalid("no host"))?
                .to_ascii_lowercase();
            let port = uri
                .port_u16()
                .or_else(|| default_port(&scheme))
                .ok_or_else(|| invalid("no port, and the scheme has no default"))?;
            allowed.push(Allowed { scheme, host, port });
        }
        Ok(OutboundPolicy {
            allowed: allowed.into(),
            names: None,
        })
    }

    /// Resolves allowed `http` hosts through `names` first.
    pub fn with_names(self, names: Arc<dyn Names>) -> Self {
        OutboundPolicy {
            names: Some(names),
            ..self
        }
    }

    /// The URI to connect to for `uri`: the same with a named host's address in place of
    /// its name (`http` only: TLS would check the certificate against the address).
    fn connect_to(&self, uri: &http::Uri) -> Option<http::Uri> {
        let names = self.names.as_ref()?;
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
            return None;
        }
        let address = names.resolve(uri.host()?)?;
        let port = uri.port_u16().unwrap_or(80);
        let authority = std::net::SocketAddr::new(address, port).to_string();
        let mut parts = uri.clone().into_parts();
        parts.authority = Some(authority.parse().ok()?);
        http::Uri::from_parts(parts).ok()
    }

    /// Whether a request to `uri` may leave.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(scheme) = uri.scheme_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let Some(host) = uri.host().map(str::to_ascii_lowercase) else {
            return false;
        };
        let Some(port) = uri.port_u16().or_else(|| default_port(&scheme)) else {
            return false;
        };
        self.allowed
            .iter()
            .any(|a| a.scheme == scheme && a.host == host && a.port == port)
    }
}

type Sent = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Sent,
    ) -> Box<dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, Sent)>> + Send>
    {
        if !self.allows(request.uri()) {
            tracing::debug!(uri = %request.uri(), "outbound request denied");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        tracing::debug!(uri = %request.uri(), "outbound request allowed");
        drop(fut);
        let mut request = request;
        if let Some(named) = self.connect_to(request.uri()) {
            // The Host header was set from the guest's URI already; only the socket changes.
            if !request.headers().contains_key(http::header::HOST)
                && let Some(authority) = request.uri().authority()
                && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
            {
                request.headers_mut().insert(http::header::HOST, host);
            }
            tracing::debug!(uri = %request.uri(), to = %named, "outbound host named by the app");
            *request.uri_mut() = named;
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Sent))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn uri(text: &str) -> http::Uri {
        text.parse().unwrap()
    }

    #[test]
    fn nothing_leaves_by_default() {
        assert!(!OutboundPolicy::default().allows(&uri("http://example.com/")));
    }

    #[test]
    fn scheme_host_and_port_must_all_match() {
        let allowed = policy(&["http://Cache:6379", "https://api.example.com"]);
        assert!(allowed.allows(&uri("http://cache:6379/x")));
        assert!(allowed.allows(&uri("https://API.example.com/v1")));
        assert!(allowed.allows(&uri("https://api.example.com:443/")));
        assert!(!allowed.allows(&uri("http://cache:6380/")));
        assert!(!allowed.allows(&uri("https://cache:6379/")));
        assert!(!allowed.allows(&uri("http://api.example.com/")));
        assert!(!allowed.allows(&uri("https://evil.example.com/")));
        assert!(!allowed.allows(&uri("https://api.example.com.evil.io/")));
    }

    #[derive(Debug)]
    struct Cache;

    impl Names for Cache {
        fn resolve(&self, host: &str) -> Option<IpAddr> {
            (host == "cache").then(|| IpAddr::from([10, 89, 0, 5]))
        }
    }

    #[test]
    fn named_http_hosts_connect_to_their_address() {
        let allowed = policy(&["http://cache:6379"]).with_names(Arc::new(Cache));
        let to = allowed.connect_to(&uri("http://cache:6379/x?y=1")).unwrap();
        assert_eq!(to, uri("http://10.89.0.5:6379/x?y=1"));
        let to = allowed.connect_to(&uri("http://cache/")).unwrap();
        assert_eq!(to, uri("http://10.89.0.5:80/"));
        assert_eq!(
            allowed.connect_to(&uri("https://cache/")),
            None,
            "tls keeps its name"
        );
        assert_eq!(allowed.connect_to(&uri("http://other:6379/")), None);
        assert_eq!(policy(&[]).connect_to(&uri("http://cache:6379/")), None);
    }

    #[test]
    fn entries_that_are_not_scheme_host_port_are_refused() {
        for bad in ["cache:6379", "not a url", "ftp://files"] {
            let error = OutboundPolicy::parse(&[bad.to_string()]).unwrap_err();
            assert!(
                error.to_string().contains("scheme://host[:port]"),
                "{error}"
            );
        }
    }
}
