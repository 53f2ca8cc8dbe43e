//! The HTTP front door: accepts connections, applies limits, hands requests to handlers.
//!
//! It owns the listener and the connection loop (HTTP/1.1 and h2c through hyper), the limits
//! on headers, bodies, time, idle connections and concurrency ([`server`]), when a connection
//! is idle (`connection`), and request ids and access log lines (`access`); it counts into
//! [`crate::metrics`]. It does not know what answers a
//! request: anything implementing [`crate::instance::HttpHandler`] does. Routing across many
//! workloads arrives with the daemon; `skiff run --listen` serves one handler.

mod access;
mod connection;
mod server;

pub use access::ACCESS_LOG;
pub use server::{GatewayConfig, serve};
