//! skiff: one node daemon and CLI running Wasm and Linux workloads side by side.
//!
//! The map, in flow order (REF → store → ready image → instance → response):
//!
//! - [`units`]: sizes and durations as operators type them.
//! - [`oci`]: digests and the verified content store (references, manifests and the registry
//!   client arrive with the OCI issue).
//! - [`wasm`]: the Wasm executor: engine, compile cache, capabilities, limits, commands and
//!   HTTP functions (`wasi:http/proxy` components and WAGI modules).
//! - [`linux`]: the Linux executor: confined unpacking into layer snapshots, runtime specs,
//!   namespaces, overlay roots, capabilities and seccomp, cgroups v1 and v2, networking, the
//!   monitor of a `skiff run` container and the OCI runtime verbs.
//! - [`instance`]: the seam executors implement and the gateway drives.
//! - [`state`]: durable state in SQLite: deployed apps, recorded instances, events.
//! - [`gateway`]: the HTTP front door: listener, limits, h2c, request ids.
//! - [`app`]: the app manifest (`skiff.toml`), its validation, and what a deploy changes.
//! - [`cli`]: one file per verb.
//!
//! Layering, kept by review: `oci` depends on nothing else in skiff; `wasm` and `linux` read
//! from `oci` and never touch each other or the gateway; `gateway` knows `instance`, never a
//! concrete executor; `cli` wires them together. `state` depends on nothing else in
//! skiff. Still to come, each with its issue: `sched`, `api`.

pub mod app;
pub mod cli;
pub mod gateway;
pub mod instance;
pub mod linux;
pub mod oci;
pub mod state;
pub mod units;
pub mod wasm;
