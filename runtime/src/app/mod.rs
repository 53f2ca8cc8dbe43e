//! Apps: the manifest (`skiff.toml`) an operator deploys, its validation, and the diff
//! between two versions of an app (the first step of `skiff deploy -f`).
//!
//! It owns the desired state of one app as plain data ([`AppSpec`] and the workload specs),
//! read from TOML and stored as JSON. It does not talk to the daemon, pull images or schedule
//! anything; the only I/O is reading the manifest and checking that its files exist.

mod diff;
mod load;
mod manifest;
mod quantity;
mod validate;

pub use diff::{AppDiff, Change, WorkloadDiff, diff};
pub use load::{ManifestError, Result};
pub use manifest::{
    AppSpec, FunctionSpec, HealthSpec, JobSpec, RestartPolicy, ServiceScale, ServiceSpec, Source,
    VolumeSource, VolumeSpec, WorkloadKind,
};
pub use quantity::{Cpu, Percent};
pub use validate::{Problem, is_name};
