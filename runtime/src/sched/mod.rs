//! The scheduler's pure logic: what may run, how many, and when to try again.
//!
//! Step "schedule" of the flow, between a ready image and a running instance. It owns the
//! rules and the counting, not the doing: no daemon loop, no executor, no manifest types. It
//! knows instances by [`InstanceKey`]; whoever reads the manifest and drives the executors
//! feeds it small inputs and acts on its answers.
//!
//! - [`capacity`]: the node's CPU, memory and pids, minus a reserve.
//! - [`key`]: which instance, of what kind, at what priority.
//! - [`ledger`]: admit, queue, evict-to-fit and release against that capacity.
//! - [`function`]: per-request slots on the hot path, the waiting queue, scaling on
//!   in-flight requests and to zero.
//! - [`service`]: the HPA rule with its tolerance and stabilisation, restart back-off.

pub mod capacity;
pub mod function;
pub mod key;
pub mod ledger;
pub mod service;

pub use capacity::{Capacity, NodeCapacity, Requests, Reserve, Resource};
pub use key::{InstanceKey, Kind, Priority};
pub use ledger::{Admission, Ledger, LedgerSnapshot, Rejection, Reservation, Shortfall};
