//! Jobs: a Linux container, or a Wasm command run in-process, run to completion and retried
//! after a failure at most `retries` times with back-off. The outcome is an instance row (`exited`, reason `succeeded` or
//! `failed ...`) keyed by app, job and generation, so a restarted daemon does not run a
//! finished job of the same generation again, and an event.

use super::instance::{self, STOP_GRACE, Workload};
use super::status::{self, InstanceProgress, Progress};
use super::{Context, JobCode};
use crate::app::JobSpec;
use crate::linux::container::{ContainerRecord, Containers, Owner};
use crate::linux::hosts::ExtraHost;
use crate::oci::images::ImageRecord;
use crate::sched::capacity::Requests;
use crate::sched::key::{InstanceKey, Kind};
use crate::sched::ledger::Reservation;
use crate::sched::service::Backoff;
use crate::state::{InstanceKind, InstanceRecord, InstanceState, InstanceUpdate};
use crate::wasm::Program;
use crate::wasm::capabilities::Capabilities;
use crate::wasm::command;
use crate::wasm::limits::Limits;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How often a running job's container is looked at.
const TICK: Duration = Duration::from_millis(250);

/// What a job runner runs.
pub struct JobRun {
    pub app: String,
    pub name: String,
    pub generation: u64,
    pub spec: JobSpec,
    pub code: JobCode,
    /// A container of this job and generation still running from before a restart.
    pub adopt: Option<ContainerRecord>,
    pub progress: status::Shared,
    /// The app's service names, for a Linux job's `/etc/hosts`.
    pub hosts: Vec<ExtraHost>,
}

/// The instance row that records a job's run of one generation.
pub fn instance_id(app: &str, job: &str, generation: u64) -> String {
    format!("job.{app}.{job}.{generation}")
}

/// How the job's generation ended (`succeeded`, `failed ...`), when it already ran to
/// success or final failure.
pub fn finished(cx: &Context, app: &str, job: &str, generation: u64) -> Option<String> {
    let id = instance_id(app, job, generation);
    match cx.store.get_instance(&id) {
        Ok(Some(row)) if row.state == InstanceState::Exited => Some(row.reason.unwrap_or_default()),
        _ => None,
    }
}

/// How one run of a job ended.
enum Outcome {
    Exited(i32),
    /// `stop` turned true first.
    Stopped,
    CannotStart(String),
}

/// Runs the job until it succeeds, fails for the last time, or `stop` turns true (then its
/// container is stopped and removed and the job counts as not run).
pub async fn run_job(cx: Arc<Context>, run: JobRun, mut stop: watch::Receiver<bool>) {
    let id = instance_id(&run.app, &run.name, run.generation);
    let kind = match run.code {
        JobCode::Linux(_) => InstanceKind::Linux,
        JobCode::Wasm(_) => InstanceKind::Wasm,
    };
    let row = InstanceRecord::new(&id, &run.app, &run.name, kind, run.generation);
    if cx.store.get_instance(&id).ok().flatten().is_none()
        && let Err(error) = cx.store.insert_instance(&row)
    {
        tracing::warn!(%error, "job instance not recorded");
    }
    let event = |kind: &str, message: String| cx.event(&run.app, &run.name, None, kind, message);
    let mut adopt = run.adopt.clone();
    let mut attempt = 0;
    loop {
        let outcome = match &run.code {
            JobCode::Linux(image) => {
                in_container(&cx, &run, image, attempt, adopt.take(), &mut stop).await
            }
            JobCode::Wasm(program) => in_process(&cx, &run, program, attempt, &mut stop).await,
        };
        let code = match outcome {
            Outcome::Exited(code) => code,
            Outcome::Stopped => {
                let stopped = InstanceUpdate::to(InstanceState::Pending).reason("stopped");
                update(&cx, &id, stopped);
                return;
            }
            Outcome::CannotStart(error) => {
                finish(&cx, &run, &id, format!("failed: cannot start: {error}"));
                event("failed", format!("cannot start: {error}"));
                return;
            }
        };
        // The outcome is recorded first, then told: whoever hears of it can read it.
        if code == 0 {
            finish(&cx, &run, &id, "succeeded".to_string());
            event(
                "succeeded",
                format!("attempt {} exited with code 0", attempt + 1),
            );
            return;
        }
        if attempt >= run.spec.retries {
            let reason = format!(
                "failed: exited with code {code} after {} attempts",
                attempt + 1
            );
            finish(&cx, &run, &id, reason.clone());
            event("failed", reason);
            return;
        }
        let wait = Backoff::default().delay(attempt);
        let message = format!(
            "attempt {} exited with code {code}; retrying in {}s",
            attempt + 1,
            wait.as_secs_f64().ceil()
        );
        status::set(
            &run.progress,
            Progress {
                state: "retrying".into(),
                desired: 1,
                instances: Vec::new(),
                pending: vec![message.clone()],
                ..Progress::default()
            },
        );
        event("retrying", message);
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// One run in a Linux container (or one adopted from before a restart), removed after.
async fn in_container(
    cx: &Context,
    run: &JobRun,
    image: &ImageRecord,
    attempt: u32,
    adopt: Option<ContainerRecord>,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let event = |kind: &str, message: String| cx.event(&run.app, &run.name, None, kind, message);
    // Held until the run's container is removed. An adopted run is already running: a node
    // that shrank meanwhile is said, not enforced.
    let _reservation = match &adopt {
        Some(_) => reserve(cx, run).ok(),
        None => match wait_for_room(cx, run, stop).await {
            Some(reservation) => Some(reservation),
            None => return Outcome::Stopped,
        },
    };
    let record = match adopt {
        Some(record) => {
            event("adopted", format!("run {} adopted", short(&record.id)));
            record
        }
        None => match launch(cx, run, image, attempt).await {
            Ok(record) => {
                event(
                    "started",
                    format!("attempt {} as container {}", attempt + 1, short(&record.id)),
                );
                record
            }
            Err(error) => return Outcome::CannotStart(error),
        },
    };
    let id = instance_id(&run.app, &run.name, run.generation);
    let running = InstanceUpdate::to(InstanceState::Running).container_id(&record.id);
    update(cx, &id, running);
    running_progress(run, attempt, Some(&record));
    let outcome = match wait_exit(cx, &record, run.spec.timeout, stop).await {
        Some(code) => Outcome::Exited(code),
        None => Outcome::Stopped,
    };
    remove(cx, &record).await;
    outcome
}

/// Reserves the job's `memory` in the node's ledger, under a key of its own.
fn reserve(cx: &Context, run: &JobRun) -> Result<Reservation, String> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let key = InstanceKey::new(
        Kind::Job,
        &run.app,
        &run.name,
        RUNS.fetch_add(1, Ordering::Relaxed),
    );
    let requests = Requests {
        memory_bytes: run.spec.memory.map_or(0, |m| m.0),
        ..Requests::ZERO
    };
    cx.ledger.reserve_or_retry(&key, requests)
}

/// Waits, asking the ledger every second, until the node has room for the run; `None` when
/// `stop` turned true first. The wait shows in `skiff ps` and once in the events.
async fn wait_for_room(
    cx: &Context,
    run: &JobRun,
    stop: &mut watch::Receiver<bool>,
) -> Option<Reservation> {
    let mut told = None;
    loop {
        match reserve(cx, run) {
            Ok(reservation) => return Some(reservation),
            Err(reason) => {
                let pending = format!("pending: {reason}");
                if told.as_ref() != Some(&pending) {
                    cx.event(&run.app, &run.name, None, "pending", pending.clone());
                    status::set(
                        &run.progress,
                        Progress {
                            state: "pending".into(),
                            desired: 1,
                            instances: Vec::new(),
                            pending: vec![pending.clone()],
                            ..Progress::default()
                        },
                    );
                    told = Some(pending);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|stop| *stop) => return None,
        }
    }
}

/// One run of a Wasm job in this process, as `skiff run` runs a command: env from the spec,
/// no preopens, its output to its run's log (every attempt appended), its memory and time
/// limits.
async fn in_process(
    cx: &Context,
    run: &JobRun,
    program: &Program,
    attempt: u32,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    cx.event(
        &run.app,
        &run.name,
        None,
        "started",
        format!("attempt {} in-process (wasm)", attempt + 1),
    );
    let id = instance_id(&run.app, &run.name, run.generation);
    update(cx, &id, InstanceUpdate::to(InstanceState::Running));
    running_progress(run, attempt, None);
    let caps = Capabilities {
        args: vec![run.name.clone()],
        env: run.spec.env.clone().into_iter().collect(),
        preopens: Vec::new(),
        stdio: crate::daemon::logs::capture(&cx.data_dir, &id),
        outbound: Default::default(),
        listen: Vec::new(),
        listen_on: None,
    };
    let limits = Limits {
        memory: run.spec.memory,
        timeout: run.spec.timeout,
    };
    tokio::select! {
        ran = command::run(&cx.engine, program, &caps, &limits) => match ran {
            Ok(code) => Outcome::Exited(code),
            Err(error) => {
                cx.event(&run.app, &run.name, None, "trapped", error.to_string());
                Outcome::Exited(error.exit_code())
            }
        },
        _ = stop.wait_for(|stop| *stop) => Outcome::Stopped,
    }
}

fn running_progress(run: &JobRun, attempt: u32, container: Option<&ContainerRecord>) {
    status::set(
        &run.progress,
        Progress {
            state: format!("running (attempt {})", attempt + 1),
            desired: 1,
            instances: container
                .map(|record| InstanceProgress {
                    container: record.id.clone(),
                    health: "healthy",
                    address: record.address.clone(),
                })
                .into_iter()
                .collect(),
            pending: Vec::new(),
            exits: 0,
            cpu: Vec::new(),
        },
    );
}

async fn launch(
    cx: &Context,
    run: &JobRun,
    image: &ImageRecord,
    attempt: u32,
) -> Result<ContainerRecord, String> {
    let owner = Owner {
        app: run.app.clone(),
        workload: run.name.clone(),
        generation: run.generation,
        replica: attempt,
    };
    let workload = Workload {
        command: run.spec.command.clone(),
        env: run.spec.env.clone(),
        memory: run.spec.memory.map(|m| m.0),
        cpus: None,
        volumes: Vec::new(),
        extra_hosts: run.hosts.clone(),
    };
    let (data_dir, image) = (cx.data_dir.clone(), image.clone());
    tokio::task::spawn_blocking(move || instance::launch(&data_dir, &image, &workload, owner))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Exit code a run gets when it passed the job's `timeout`, as `timeout(1)` says it.
const TIMED_OUT: i32 = 124;

/// The exit code, or `None` when stopped first. A run past the job's `timeout` is stopped
/// and gets [`TIMED_OUT`].
async fn wait_exit(
    cx: &Context,
    record: &ContainerRecord,
    timeout: Option<Duration>,
    stop: &mut watch::Receiver<bool>,
) -> Option<i32> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut tick = tokio::time::interval(TICK);
    loop {
        if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
            remove(cx, record).await;
            return Some(TIMED_OUT);
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return None,
        }
        let (data_dir, id) = (cx.data_dir.clone(), record.id.clone());
        let code = tokio::task::spawn_blocking(move || {
            instance::exit_code(&Containers::open(&data_dir), &id)
        })
        .await
        .unwrap_or(None);
        if code.is_some() {
            return code;
        }
    }
}

async fn remove(cx: &Context, record: &ContainerRecord) {
    let (data_dir, id) = (cx.data_dir.clone(), record.id.clone());
    let _ =
        tokio::task::spawn_blocking(move || instance::stop_and_remove(&data_dir, &id, STOP_GRACE))
            .await;
}

fn finish(cx: &Context, run: &JobRun, id: &str, reason: String) {
    status::set(&run.progress, finished_progress(&reason));
    update(
        cx,
        id,
        InstanceUpdate::to(InstanceState::Exited).reason(reason),
    );
}

/// A finished job's progress: its outcome as the state, nothing wanted.
pub fn finished_progress(outcome: &str) -> Progress {
    Progress {
        state: outcome.to_string(),
        ..Progress::default()
    }
}

fn update(cx: &Context, id: &str, update: InstanceUpdate) {
    if let Err(error) = cx.store.update_instance_state(id, &update) {
        tracing::warn!(%error, instance = id, "job state not recorded");
    }
}

fn short(id: &str) -> &str {
    crate::linux::container::short_id(id)
}
