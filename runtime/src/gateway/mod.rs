//! The HTTP front door: accepts connections, applies limits, hands requests to handlers.
//!
//! It owns the listener and the connection loop (HTTP/1.1 and h2c through hyper), the limits
//! on headers, bodies, time and concurrency, and request ids. It does not know what answers a
//! request: anything implementing [`crate::instance::HttpHandler`] does. Routing across many
//! workloads arrives with the daemon; `skiff run --listen` serves one handler.

mod server;

pub use server::{ACCESS_LOG, GatewayConfig, serve};
