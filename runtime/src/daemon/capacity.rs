//! The daemon's one ledger of node capacity, its policy under memory pressure, and the reaper
//! that scales idle functions to zero.
//!
//! The node is sized once at start ([`NodeCapacity::detect`], or a test's override) minus a
//! reserve (`skiff serve --reserve-cpu/--reserve-memory`). Every executor reserves through
//! [`NodeLedger`]: functions hold `memory × max(min, 1)` while warm (see [`super::target`]).
//!
//! Under memory pressure, before anything is refused or left pending: the ledger's own
//! victims go first (idle reservations of lower priority), then idle warm functions
//! (`idle_pool`), then the engine's in-memory compiled code (`code_cache`, loaded again from
//! disk when needed). Each eviction is counted in the metrics and written as an event.
//!
//! Service instances reserve through [`NodeLedger::reserve_or_retry`] before their container
//! starts and hold the [`Reservation`] while it runs; one that does not fit stays pending in
//! its supervisor (with the reason, for `skiff ps`) and asks again, after the same pressure
//! policy has had its chance to make room.

use super::Daemon;
use super::router::Router;
use super::target::FunctionTarget;
use crate::metrics;
use crate::sched::capacity::{Capacity, NodeCapacity, Requests};
use crate::sched::key::InstanceKey;
use crate::sched::ledger::{Admission, Ledger, PendingView, Rejection, Reservation};
use crate::state::NewEvent;
use crate::wasm::engine::WasmEngine;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How often the reaper looks at every function.
const REAP_EVERY: Duration = Duration::from_millis(100);

/// Events noted between two reaper ticks at most; a flood of refusals drops the rest.
const OUTBOX: usize = 1000;

/// Someone who takes reservations the ledger grants later; returns the ones it does not own.
type GrantHandler = Box<dyn Fn(Vec<Reservation>) -> Vec<Reservation> + Send + Sync>;

/// The ledger with the daemon's pressure policy around it.
pub struct NodeLedger {
    ledger: Ledger,
    node: NodeCapacity,
    engine: Arc<WasmEngine>,
    router: OnceLock<Weak<Router>>,
    /// Events to write, from paths that must not touch the store (requests); the reaper
    /// writes them.
    outbox: Mutex<Vec<NewEvent>>,
    others: OnceLock<GrantHandler>,
}

impl NodeLedger {
    pub fn new(node: NodeCapacity, engine: Arc<WasmEngine>) -> Self {
        NodeLedger {
            ledger: Ledger::new(node),
            node,
            engine,
            router: OnceLock::new(),
            outbox: Mutex::default(),
            others: OnceLock::new(),
        }
    }

    pub(super) fn set_router(&self, router: &Arc<Router>) {
        let _ = self.router.set(Arc::downgrade(router));
    }

    /// The ledger itself (snapshots, `take_admitted`, `cancel`).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The node as sized at start, with the reserve taken off.
    pub fn node(&self) -> NodeCapacity {
        self.node
    }

    /// Lets another executor take the reservations the ledger grants to its waiters.
    pub fn on_granted(&self, handler: GrantHandler) {
        let _ = self.others.set(handler);
    }

    /// Reserves `requests` for `key`, evicting idle pools and code under pressure. Refused
    /// with the reason when it still does not fit; with `wait`, the key then stays pending in
    /// the ledger and is granted later (see the reaper), else it leaves the queue.
    pub fn reserve(
        &self,
        key: &InstanceKey,
        requests: Requests,
        wait: bool,
    ) -> Result<Reservation, String> {
        self.admit(key, requests, wait, true)
    }

    /// Reserves for a service or job instance that asks again itself while it waits: the
    /// same pressure policy, but no place in the queue and no event per attempt (its
    /// supervisor tells when the reason changes).
    pub fn reserve_or_retry(
        &self,
        key: &InstanceKey,
        requests: Requests,
    ) -> Result<Reservation, String> {
        self.admit(key, requests, false, false)
    }

    fn admit(
        &self,
        key: &InstanceKey,
        requests: Requests,
        wait: bool,
        note: bool,
    ) -> Result<Reservation, String> {
        let mut relieved = false;
        for _ in 0..4 {
            let admission = self.ledger.admit(key.clone(), requests);
            match admission {
                Ok(Admission::Admitted(reservation)) => {
                    metrics::global().decision("admitted");
                    return Ok(reservation);
                }
                Ok(Admission::NeedsEviction { victims }) => {
                    for victim in &victims {
                        self.evict(victim);
                    }
                }
                Ok(Admission::Pending { reason }) => {
                    if !relieved {
                        relieved = true;
                        // Out of the queue first, or the room the evictions free would be
                        // handed to this key's waiter behind the retry's back.
                        // Asked again either way: a waiter goes back in the queue.
                        self.ledger.cancel(key);
                        self.relieve(key, requests);
                        continue;
                    }
                    return Err(self.refuse(key, wait, note, reason.to_string()));
                }
                Err(Rejection::TooLarge { .. } | Rejection::AlreadyAdmitted { .. }) => {
                    let error = admission.err().map(|e| e.to_string()).unwrap_or_default();
                    metrics::global().decision("rejected");
                    return Err(error);
                }
            }
        }
        Err(self.refuse(key, wait, note, "still short after evicting".into()))
    }

    fn refuse(&self, key: &InstanceKey, wait: bool, note: bool, reason: String) -> String {
        if !wait {
            self.ledger.cancel(key);
        }
        metrics::global().decision("pending");
        if note {
            self.note(key, "pending", reason.clone());
        }
        metrics::global()
            .pending
            .set(self.ledger.snapshot().pending.len() as i64);
        reason
    }

    /// Takes `key` out of the pending queue (its function is gone).
    pub fn forget(&self, key: &InstanceKey) {
        self.ledger.cancel(key);
    }

    /// What waits for capacity, with the reason.
    pub fn pending(&self) -> Vec<PendingView> {
        self.ledger.snapshot().pending
    }

    /// Evicts idle warm functions that keep no minimum (longest idle first) until `requests`
    /// fit, then the in-memory compiled code.
    fn relieve(&self, except: &InstanceKey, requests: Requests) {
        let Some(router) = self.router.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut idle: Vec<_> = (router.targets().into_iter())
            .filter(|t| &t.key != except && t.scale.min == 0 && t.is_warm())
            .filter(|t| t.slots.in_flight() == 0 && t.slots.waiting() == 0)
            .collect();
        idle.sort_by_key(|t| t.slots.last_activity());
        let mut free: Capacity = self.ledger.snapshot().free;
        for target in idle {
            if free.covers(&requests) {
                break;
            }
            if self.evict(&target.key) {
                free = free.saturating_add(target.scale.requests());
            }
        }
        // Code in memory is not in the ledger (it is file-backed and the kernel may reclaim
        // it), so dropping it cannot make `requests` fit; it only relieves the machine.
        let dropped = match free.covers(&requests) {
            true => 0,
            false => self.engine.forget_loaded_code(),
        };
        if dropped > 0 {
            metrics::global().eviction("code_cache");
            tracing::info!(programs = dropped, "compiled code dropped from memory");
        }
    }

    /// Scales the function holding `victim` to zero if it is still idle.
    fn evict(&self, victim: &InstanceKey) -> bool {
        let Some(target) = self.target(victim) else {
            return false;
        };
        if !target.scale_to_zero() {
            return false;
        }
        metrics::global().eviction("idle_pool");
        self.note(
            victim,
            "evicted",
            "idle warm instances evicted under memory pressure".into(),
        );
        true
    }

    fn target(&self, key: &InstanceKey) -> Option<Arc<FunctionTarget>> {
        let router = self.router.get()?.upgrade()?;
        router.targets().into_iter().find(|t| &t.key == key)
    }

    fn note(&self, key: &InstanceKey, kind: &str, message: String) {
        let event = NewEvent {
            app: Some(key.app.clone()),
            workload: Some(key.workload.clone()),
            instance: None,
            kind: kind.to_string(),
            message,
        };
        let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if outbox.len() < OUTBOX {
            outbox.push(event);
        }
    }

    fn take_notes(&self) -> Vec<NewEvent> {
        std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Starts the reaper thread: every [`REAP_EVERY`] it marks warm functions idle or busy in the
/// ledger, scales to zero those idle past their window (`min = 0`), warms functions the
/// ledger granted room to, and writes the events noted meanwhile. It stops with the daemon.
pub fn spawn_reaper(daemon: &Arc<Daemon>) {
    let daemon = Arc::downgrade(daemon);
    std::thread::Builder::new()
        .name("skiff-reaper".into())
        .spawn(move || {
            while let Some(daemon) = daemon.upgrade() {
                reap(&daemon, Instant::now());
                drop(daemon);
                std::thread::sleep(REAP_EVERY);
            }
        })
        .expect("spawning the reaper thread");
}

fn reap(daemon: &Daemon, now: Instant) {
    let targets = daemon.router.targets();
    for target in &targets {
        if !target.is_warm() {
            continue;
        }
        if target.should_scale_to_zero(now) && target.scale_to_zero() {
            daemon.capacity.note(
                &target.key,
                "scaled_to_zero",
                "idle: no instance kept".into(),
            );
            continue;
        }
        let idle = target.slots.in_flight() == 0 && target.slots.waiting() == 0;
        target.mark_idle(idle);
        target.report_instances();
    }
    let capacity = &daemon.capacity;
    let granted = capacity.ledger.take_admitted();
    let mut others = Vec::new();
    for reservation in granted {
        match targets.iter().find(|t| &t.key == reservation.key()) {
            Some(target) => {
                if let Err(error) = target.adopt(reservation) {
                    tracing::warn!(%error, "granted function not warmed");
                }
            }
            None => others.push(reservation),
        }
    }
    if let Some(handler) = capacity.others.get() {
        others = handler(others);
    }
    drop(others);
    metrics::global()
        .pending
        .set(capacity.ledger.snapshot().pending.len() as i64);
    for event in capacity.take_notes() {
        if let Err(error) = daemon.store.append_event(&event) {
            tracing::warn!(%error, "event not recorded");
        }
    }
}
