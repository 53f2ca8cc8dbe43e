//! skiff: one node daemon and CLI running Wasm and Linux workloads side by side.
//!
//! The map, in flow order (REF → store → ready image → instance → response):
//!
//! - [`units`]: sizes and durations as operators type them.
//! - [`oci`]: references, manifests, the verified content store, the registry client,
//!   layouts.
//! - [`wasm`]: the Wasm executor: engine, compile cache, capabilities, limits, commands and
//!   HTTP functions (`wasi:http/proxy` components and WAGI modules).
//! - [`linux`]: the Linux executor: confined unpacking into layer snapshots, runtime specs,
//!   namespaces, overlay roots, capabilities and seccomp, cgroups v1 and v2, networking, the
//!   monitor of a `skiff run` container and the OCI runtime verbs.
//! - [`instance`]: the seam executors implement and the gateway drives.
//! - [`sched`]: the scheduler's rules: the capacity ledger, function slots, scaling, restarts.
//! - [`state`]: durable state in SQLite: deployed apps, recorded instances, events.
//! - [`gateway`]: the HTTP front door: listener, limits, h2c, request ids.
//! - [`app`]: the app manifest (`skiff.toml`), its validation, and what a deploy changes.
//! - [`daemon`]: `skiff serve`'s deployed apps: stored, prepared, routed by the gateway, and
//!   served again after a restart.
//! - [`metrics`]: the daemon's Prometheus metrics, one registry per process.
//! - [`api`]: the control API (axum on a unix socket, and on TCP with a bearer token) in front
//!   of the daemon, with `/metrics` and the event stream.
//! - [`logging`]: the daemon's bounded, non-blocking log writer.
//! - [`cli`]: one file per verb.
//!
//! Layering, kept by review: `oci` depends on nothing else in skiff; `wasm` and `linux` read
//! from `oci` and never touch each other or the gateway; `gateway` knows `instance`, never a
//! concrete executor; `app`, `sched` and `state` depend on nothing else in skiff; `daemon`
//! wires them to the Wasm executor and the gateway; `api` calls only `daemon`; `cli` wires
//! everything together.

pub mod api;
pub mod app;
pub mod cli;
pub mod daemon;
pub mod gateway;
pub mod instance;
pub mod linux;
pub mod logging;
pub mod metrics;
pub mod oci;
pub mod sched;
pub mod state;
pub mod units;
pub mod wasm;
