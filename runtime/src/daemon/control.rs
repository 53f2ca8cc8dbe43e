//! What the control API asks of the daemon beside deploys: `skiff scale`, the recorded
//! instances and the event log.
//!
//! Scaling stores a workload's override with [`Store::set_scale`] (one durable transaction),
//! records a `scaled` event and announces a [`ScaleChange`] on a bounded broadcast. For a
//! function the number is its warm minimum, for a service its replicas; jobs are not scaled.
//!
//! How the supervisors take a change (the hook): each subscribes once with
//! [`Daemon::scale_changes`] and, on a [`ScaleChange`] for one of its workloads, applies
//! `replicas`. A supervisor that lags behind the broadcast (it holds [`SCALE_CHANNEL`] changes)
//! gets `RecvError::Lagged` and re-reads every workload's `scale` from the store
//! ([`Daemon::app`]), which is also what it does at start: the store is the truth, the
//! broadcast only says "look now".

use super::router::Target;
use super::target::{FunctionTarget, Scale};
use super::{Daemon, DaemonError, Result, stored_spec};
use crate::app::FunctionSpec;
use crate::sched::capacity::Bytes;
use crate::state::{self, Event, EventStream, WorkloadKind};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Scale changes the broadcast holds for a slow supervisor before it lags.
pub const SCALE_CHANNEL: usize = 64;

/// Events the log keeps; `skiff serve` trims older ones at start and then every few minutes.
pub const EVENTS_KEPT: usize = 10_000;

/// Replicas a service may be scaled to when its manifest sets no `max`.
pub const MAX_SERVICE_REPLICAS: u32 = 1000;

/// A stored `skiff scale`: the workload and the number it now runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleChange {
    pub app: String,
    pub workload: String,
    pub kind: WorkloadKind,
    /// A function's warm minimum or a service's replicas.
    pub replicas: u32,
}

pub(super) fn scale_channel() -> broadcast::Sender<ScaleChange> {
    broadcast::channel(SCALE_CHANNEL).0
}

impl Daemon {
    /// Sets `app/workload` to `replicas`: checks it against the workload's kind and `max`,
    /// stores it, records a `scaled` event and announces it. Nothing is stored on an error.
    #[tracing::instrument(skip(self), err(Display, level = "warn"))]
    pub async fn scale(
        self: &Arc<Self>,
        app: &str,
        workload: &str,
        replicas: u32,
    ) -> Result<ScaleChange> {
        let _one_at_a_time = self.changes.lock().await;
        let record = self.app(app)?;
        let stored = record
            .workloads
            .iter()
            .find(|w| w.name == workload)
            .ok_or_else(|| DaemonError::WorkloadNotFound {
                app: app.to_string(),
                workload: workload.to_string(),
            })?;
        let spec = stored_spec(&record)?;
        let max = match stored.kind {
            WorkloadKind::Function => spec.functions.get(workload).map(|f| f.max),
            WorkloadKind::Service => spec
                .services
                .get(workload)
                .map(|s| s.max.unwrap_or(MAX_SERVICE_REPLICAS)),
            WorkloadKind::Job => {
                return Err(DaemonError::NotScalable {
                    app: app.to_string(),
                    workload: workload.to_string(),
                });
            }
        };
        let max = max.ok_or_else(|| DaemonError::Spec {
            app: app.to_string(),
            detail: format!("workload {workload} is stored but missing from the spec"),
        })?;
        if replicas > max {
            return Err(DaemonError::ScaleAboveMax {
                app: app.to_string(),
                workload: workload.to_string(),
                replicas,
                max,
            });
        }
        // A function's new warm minimum is prepared (and checked) before anything is stored.
        let rewarmed = match spec.functions.get(workload) {
            Some(function) if stored.kind == WorkloadKind::Function => {
                let mut function = function.clone();
                function.min = replicas;
                Some(self.prepare_scaled(app, workload, function).await?)
            }
            _ => None,
        };
        {
            let (daemon, app, workload) = (Arc::clone(self), app.to_string(), workload.to_string());
            tokio::task::spawn_blocking(move || {
                daemon.store.set_scale(&app, &workload, Some(replicas))
            })
            .await??;
        }
        let change = ScaleChange {
            app: app.to_string(),
            workload: workload.to_string(),
            kind: stored.kind,
            replicas,
        };
        let what = match stored.kind {
            WorkloadKind::Function => "warm minimum",
            _ => "replicas",
        };
        let event = state::NewEvent {
            app: Some(change.app.clone()),
            workload: Some(change.workload.clone()),
            instance: None,
            kind: "scaled".to_string(),
            message: format!("{} {what} set to {replicas}", stored.kind.as_str()),
        };
        if let Err(error) = self.store.append_event(&event) {
            tracing::warn!(%error, app, workload, "event not recorded");
        }
        match stored.kind {
            WorkloadKind::Service => {
                self.workloads.set_replicas(app, workload, replicas);
            }
            WorkloadKind::Function => {
                if let Some(target) = rewarmed {
                    self.swap_function(app, workload, target);
                }
            }
            WorkloadKind::Job => {}
        }
        // No subscriber yet is not an error: supervisors read the stored scale at start.
        let _ = self.scales.send(change.clone());
        Ok(change)
    }

    /// A target for `app/function` with a new warm minimum: refused when `memory × min`
    /// could never fit the node; warmed (and reserved, or pending) at once when `min > 0`.
    async fn prepare_scaled(
        self: &Arc<Self>,
        app: &str,
        name: &str,
        function: FunctionSpec,
    ) -> Result<Arc<FunctionTarget>> {
        let asked = Scale::of(&function).requests().memory_bytes;
        let allocatable = self.capacity.node().allocatable.memory_bytes;
        if asked > allocatable {
            return Err(DaemonError::TooLarge {
                app: app.to_string(),
                function: name.to_string(),
                asked: Bytes(asked),
                allocatable: Bytes(allocatable),
            });
        }
        let (daemon, app, name) = (Arc::clone(self), app.to_string(), name.to_string());
        let target =
            tokio::task::spawn_blocking(move || daemon.preparer.prepare(&app, &name, &function))
                .await??;
        Ok(Arc::new(target))
    }

    /// Serves `app/function` from `target`; requests in flight finish on the old one.
    fn swap_function(&self, app: &str, name: &str, target: Arc<FunctionTarget>) {
        let mut routes = self.router.app_routes(app);
        if let Some(route) = routes.iter_mut().find(|r| r.function == name) {
            route.target = Target::Function(target);
            self.router.set_app(app, Some(routes));
        }
    }

    /// A feed of scale changes from now on; see the module docs for how to use it.
    pub fn scale_changes(&self) -> broadcast::Receiver<ScaleChange> {
        self.scales.subscribe()
    }

    /// The recorded instances, all or of one app or workload (`GET /v1/instances`). Blocking.
    pub fn instances(
        &self,
        app: Option<&str>,
        workload: Option<&str>,
    ) -> Result<Vec<state::InstanceRecord>> {
        Ok(self.store.list_instances(app, workload)?)
    }

    /// Up to `limit` stored events after `seq`, oldest first.
    pub fn events_since(&self, seq: u64, limit: usize) -> Result<Vec<Event>> {
        Ok(self.store.events_since(seq, limit)?)
    }

    /// Deletes all but the newest `keep` events; returns how many went.
    pub fn trim_events(&self, keep: usize) -> Result<usize> {
        Ok(self.store.trim_events(keep)?)
    }

    /// Events appended from now on, bounded: a slow reader gets a `Lagged` marker.
    pub fn subscribe_events(&self) -> EventStream {
        self.store.subscribe()
    }
}
