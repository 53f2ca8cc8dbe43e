//! skiff: one node daemon and CLI running Wasm and Linux workloads side by side.
//!
//! The map, in flow order (REF → store → ready image → instance → response):
//!
//! - [`units`]: sizes and durations as operators type them.
//! - [`wasm`]: the Wasm executor: engine, compile cache, capabilities, limits, commands and
//!   HTTP functions (`wasi:http/proxy` components and WAGI modules).
//! - [`instance`]: the seam executors implement and the gateway drives.
//! - [`gateway`]: the HTTP front door: listener, limits, h2c, request ids.
//! - [`cli`]: one file per verb.
//!
//! Layering, kept by review: `wasm` knows `instance` and `units` only; `gateway` knows
//! `instance`, never a concrete executor; `cli` wires them together. Still to come, each with
//! its issue: `oci` (references, content store, registry), `linux` (namespaces, cgroups,
//! overlay roots), `sched`, `state`, `api`.

pub mod cli;
pub mod gateway;
pub mod instance;
pub mod units;
pub mod wasm;
