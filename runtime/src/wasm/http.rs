//! One HTTP request into a Wasm function: a `wasi:http/proxy` component or a WAGI module.
//!
//! `HttpFunction::prepare` does the per-deploy work once: link, check exports, build the
//! `InstancePre`. `handle` does only the per-request work: a fresh `Store` (a pooled slot when
//! the engine pools), instantiate, call. A trap, time-out or memory overrun ends that one
//! instance and answers 500 (504 for time-outs); the next request gets a fresh instance.

use super::capabilities::Capabilities;
use super::engine::WasmEngine;
use super::error::{Ended, classify};
use super::host::{ComponentHost, component_store};
use super::limits::{Limits, with_deadline};
use super::{Code, Program, WasmError, link, wagi};
use crate::instance::{Body, BoxError, HttpHandler, text_response};
use http::StatusCode;
use http_body_util::BodyExt;
use std::sync::Arc;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

/// A deployed HTTP function, ready to answer requests.
pub struct HttpFunction {
    name: String,
    engine: Arc<WasmEngine>,
    handler: Handler,
    caps: Capabilities,
    limits: Limits,
}

enum Handler {
    Proxy(ProxyPre<ComponentHost>),
    Wagi(wagi::Wagi),
}

impl HttpFunction {
    /// Links `program` once: a component must export `wasi:http/incoming-handler`; a core module
    /// is served as a WAGI handler through its `_start`.
    #[tracing::instrument(skip_all, fields(program = program.name()), err(level = "debug"))]
    pub fn prepare(
        engine: Arc<WasmEngine>,
        program: &Program,
        caps: Capabilities,
        limits: Limits,
    ) -> Result<Self, WasmError> {
        caps.validate()?;
        let name = program.name().to_string();
        let handler = match &program.code {
            Code::Component(component) => Handler::Proxy(prepare_proxy(&engine, &name, component)?),
            Code::Module(module) => Handler::Wagi(wagi::Wagi::prepare(&engine, &name, module)?),
        };
        Ok(Self {
            name,
            engine,
            handler,
            caps,
            limits,
        })
    }

    /// Answers one request in a fresh instance.
    #[tracing::instrument(skip_all, fields(function = %self.name, method = %request.method(), path = %request.uri().path()))]
    pub async fn handle(&self, request: http::Request<Body>) -> http::Response<Body> {
        let outcome = match &self.handler {
            Handler::Proxy(pre) => self.handle_proxy(pre, request).await,
            Handler::Wagi(wagi) => {
                wagi.handle(&self.engine, &self.name, &self.caps, &self.limits, request)
                    .await
            }
        };
        outcome.unwrap_or_else(|failure| failure_response(&failure))
    }

    async fn handle_proxy(
        &self,
        pre: &ProxyPre<ComponentHost>,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, WasmError> {
        let mut store = component_store(&self.engine, &self.caps, &self.limits)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let host_error = |e: wasmtime::Error| WasmError::Host {
            name: self.name.clone(),
            reason: format!("{e:#}"),
        };
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request.map(|body| body.map_err(body_error)))
            .map_err(host_error)?;
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(host_error)?;

        // The guest runs in its own task: it may keep streaming the body after it has set
        // the response, and the client's response must not wait for it to finish.
        let pre = pre.clone();
        let (name, limits) = (self.name.clone(), self.limits);
        let guest = tokio::spawn(async move {
            let call = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, outparam)
                    .await
            };
            let result = with_deadline(&limits, call).await;
            if let Err(err) = result {
                return match classify(&name, &limits, err) {
                    Ended::Exit(0) => Ok(()),
                    Ended::Exit(code) => Err(WasmError::Host {
                        name,
                        reason: format!("exited with code {code} while handling a request"),
                    }),
                    Ended::Failed(failure) => {
                        tracing::warn!(error = %failure, "function instance failed");
                        Err(failure)
                    }
                };
            }
            Ok(())
        });

        match receiver.await {
            Ok(Ok(response)) => {
                Ok(response.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
            }
            Ok(Err(code)) => Ok(text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function {} answered with an error: {code:?}\n", self.name),
            )),
            // The guest ended without setting a response: its task says why, and has
            // already logged it.
            Err(_) => match guest.await {
                Ok(Err(failure)) => Ok(failure_answer(&failure)),
                Ok(Ok(())) => Err(WasmError::Host {
                    name: self.name.clone(),
                    reason: "returned without setting a response".into(),
                }),
                Err(join) => Err(WasmError::Host {
                    name: self.name.clone(),
                    reason: format!("instance task failed: {join}"),
                }),
            },
        }
    }
}

impl HttpHandler for HttpFunction {
    fn handle(
        &self,
        request: http::Request<Body>,
    ) -> impl Future<Output = http::Response<Body>> + Send {
        HttpFunction::handle(self, request)
    }
}

fn prepare_proxy(
    engine: &WasmEngine,
    name: &str,
    component: &wasmtime::component::Component,
) -> Result<ProxyPre<ComponentHost>, WasmError> {
    let pre = link::component_pre(engine, name, component, true)?;
    ProxyPre::new(pre).map_err(|_| WasmError::MissingExport {
        name: name.to_string(),
        export: "`wasi:http/incoming-handler`",
        hint: "build it as a wasi:http/proxy component, or run it without --listen",
    })
}

/// Maps a gateway body error into wasi:http's error type.
fn body_error(err: BoxError) -> wasmtime_wasi_http::Error {
    if err.is::<http_body_util::LengthLimitError>() {
        return wasmtime_wasi_http::Error::HttpRequestBodySize(None);
    }
    match err.downcast::<hyper::Error>() {
        Ok(hyper) => wasmtime_wasi_http::Error::Hyper(*hyper),
        Err(_) => wasmtime_wasi_http::Error::HttpProtocolError,
    }
}

/// Logs a failed request and answers it.
fn failure_response(failure: &WasmError) -> http::Response<Body> {
    tracing::warn!(error = %failure, "request failed");
    failure_answer(failure)
}

/// The answer for a failed instance; the details go to the log, not to the client.
fn failure_answer(failure: &WasmError) -> http::Response<Body> {
    let status = match failure {
        WasmError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        WasmError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let reason = match failure {
        WasmError::Trap { name, .. } => format!("function {name} trapped"),
        WasmError::Timeout { name, .. } => format!("function {name} ran past its time limit"),
        WasmError::MemoryLimit { name, .. } => format!("function {name} ran out of memory"),
        other => other.to_string(),
    };
    let reason_phrase = status.canonical_reason().unwrap_or("error");
    let mut response = text_response(status, format!("{reason_phrase}: {reason}\n"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let retry = http::HeaderValue::from_static("1");
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, retry);
    }
    response
}
