//! The one ledger of node capacity and of every instance's requests, whatever its kind.
//!
//! Before an instance starts, its owner asks [`Ledger::admit`]. The answer is one of:
//!
//! - a [`Rejection`]: it can never fit (it asks for more than the whole node after the reserve),
//!   or the key already holds a reservation;
//! - [`Admission::Admitted`]: a [`Reservation`] that gives its capacity back when released or
//!   dropped (RAII, so an instance that crashes on any path cannot leak capacity);
//! - [`Admission::NeedsEviction`]: it fits only if idle reservations of lower priority go
//!   (compiled-code caches first, then idle function instances, longest idle first). The caller
//!   stops those victims, drops their reservations, and calls `admit` again. What a victim
//!   frees is left free for that retry rather than handed to the pending queue;
//! - [`Admission::Pending`]: it fits the node but not now. The key waits in a queue ordered by
//!   priority, then age. Each release hands capacity to the oldest waiter of the highest
//!   priority that now fits (a smaller, younger waiter may pass a larger one that does not fit
//!   yet, as Kubernetes pods do without preemption).
//!
//! The ledger only counts: it does not start, stop or evict anything, and it knows no executor.
//! It takes a short `std` mutex, never held across an await; the per-request hot path of
//! functions does not come here but to [`super::function`]'s atomic slots.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use serde::Serialize;
use tracing::instrument;

use super::{
    capacity::{Capacity, NodeCapacity, Requests, Resource},
    key::{InstanceKey, Priority},
};

/// Why an instance can never be admitted as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("{}", too_large(.key, *.resource, *.asked, *.allocatable))]
    TooLarge {
        key: InstanceKey,
        resource: Resource,
        asked: u64,
        allocatable: u64,
    },
    #[error("{key} already holds a reservation; release it before admitting the instance again")]
    AlreadyAdmitted { key: InstanceKey },
}

fn too_large(key: &InstanceKey, resource: Resource, asked: u64, allocatable: u64) -> String {
    format!(
        "{} asks for {}, more than the node's {} after the reserve; lower {} in the manifest",
        key.workload(),
        resource.describe(asked),
        resource.amount(allocatable),
        resource.manifest_key(),
    )
}

pub type Result<T, E = Rejection> = std::result::Result<T, E>;

/// The answer to [`Ledger::admit`] for an instance that can fit the node.
#[derive(Debug)]
#[must_use = "an admitted instance's reservation is released when dropped"]
pub enum Admission {
    /// Start the instance; keep the reservation as long as it runs.
    Admitted(Reservation),
    /// Evict these idle instances, drop their reservations, then call `admit` again.
    NeedsEviction { victims: Vec<InstanceKey> },
    /// Queued: a later release hands it a reservation (see [`Ledger::release`]).
    Pending { reason: Shortfall },
}

/// What a pending instance waits for: the resources short right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    /// `(resource, asked, free)` for each resource that does not fit, in [`Resource::ALL`] order.
    pub short: Vec<(Resource, u64, u64)>,
}

impl Shortfall {
    fn new(free: &Capacity, requests: &Requests) -> Self {
        let short = free
            .short_of(requests)
            .into_iter()
            .map(|r| (r, requests.get(r), free.get(r)))
            .collect();
        Shortfall { short }
    }
}

impl fmt::Display for Shortfall {
    /// `waiting for 512 MiB of memory; 120 MiB free`, joined with `and` when several are short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let asked: Vec<_> = self.short.iter().map(|(r, a, _)| r.describe(*a)).collect();
        let free: Vec<_> = self.short.iter().map(|(r, _, f)| r.amount(*f)).collect();
        write!(
            f,
            "waiting for {}; {} free",
            asked.join(" and "),
            free.join(" and ")
        )
    }
}

/// Capacity held for one instance. Dropping it gives the capacity back, as
/// [`Ledger::release`] does; instances it lets in from the queue then wait in
/// [`Ledger::take_admitted`].
#[derive(Debug)]
#[must_use = "dropping a reservation releases it at once"]
pub struct Reservation {
    state: Arc<Mutex<State>>,
    id: u64,
    key: InstanceKey,
    requests: Requests,
    released: bool,
}

impl Reservation {
    pub fn key(&self) -> &InstanceKey {
        &self.key
    }

    pub fn requests(&self) -> Requests {
        self.requests
    }

    /// Marks the instance idle (evictable by higher priorities) or busy again. Marking busy also
    /// withdraws it from an eviction another admit has named it for.
    pub fn set_idle(&self, idle: bool) {
        let mut state = lock(&self.state);
        let seq = state.next_seq();
        if let Some(held) = state.reserved.get_mut(&self.id) {
            held.evicting &= idle;
            held.idle_since = match (idle, held.idle_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(seq),
                (false, _) => None,
            };
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.released {
            let mut state = lock(&self.state);
            let granted = state.release(self.id);
            state.inbox.extend(granted);
        }
    }
}

/// The shared ledger. Clones are handles to the same ledger.
#[derive(Debug, Clone)]
pub struct Ledger {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    node: NodeCapacity,
    used: Capacity,
    seq: u64,
    /// Held reservations by id; ids grow, so this is admission order.
    reserved: BTreeMap<u64, Held>,
    ids: HashMap<InstanceKey, u64>,
    /// Waiters by (highest priority first, oldest first).
    pending: BTreeMap<(std::cmp::Reverse<Priority>, u64), Waiter>,
    /// Reservations handed out by a drop, not yet taken by the caller.
    inbox: Vec<Grant>,
}

/// A reservation made for a waiter, before its [`Reservation`] guard exists.
type Grant = (u64, InstanceKey, Requests);

#[derive(Debug)]
struct Held {
    key: InstanceKey,
    requests: Requests,
    /// When it was marked idle (a sequence number, smaller is older); `None` while busy.
    idle_since: Option<u64>,
    /// Named as a victim by an admit; its release leaves the capacity free for the retry.
    evicting: bool,
}

#[derive(Debug)]
struct Waiter {
    key: InstanceKey,
    requests: Requests,
}

impl Ledger {
    /// A ledger sharing out `node.allocatable`.
    pub fn new(node: NodeCapacity) -> Self {
        let state = State {
            node,
            used: Capacity::ZERO,
            seq: 0,
            reserved: BTreeMap::new(),
            ids: HashMap::new(),
            pending: BTreeMap::new(),
            inbox: Vec::new(),
        };
        Ledger {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Asks for room for `key`; see the module docs for the four answers. Asking again for a
    /// pending key keeps its place in the queue.
    #[instrument(skip_all, fields(key = %key), err)]
    pub fn admit(&self, key: InstanceKey, requests: Requests) -> Result<Admission> {
        let mut state = lock(&self.state);
        if state.ids.contains_key(&key) {
            return Err(Rejection::AlreadyAdmitted { key });
        }
        let allocatable = state.node.allocatable;
        if let Some(&resource) = allocatable.short_of(&requests).first() {
            let (asked, allocatable) = (requests.get(resource), allocatable.get(resource));
            return Err(Rejection::TooLarge {
                key,
                resource,
                asked,
                allocatable,
            });
        }
        let free = state.free();
        if free.covers(&requests) {
            state.remove_waiter(&key);
            let id = state.reserve(key.clone(), requests);
            drop(state);
            return Ok(Admission::Admitted(self.reservation(id, key, requests)));
        }
        if let Some(victims) = state.victims(key.priority(), &requests) {
            state.remove_waiter(&key);
            return Ok(Admission::NeedsEviction { victims });
        }
        if !state.pending.values().any(|w| w.key == key) {
            let seq = state.next_seq();
            let priority = key.priority();
            let waiter = Waiter { key, requests };
            state
                .pending
                .insert((std::cmp::Reverse(priority), seq), waiter);
        }
        Ok(Admission::Pending {
            reason: Shortfall::new(&free, &requests),
        })
    }

    /// Gives `reservation`'s capacity back and returns the reservations this handed to
    /// waiters, oldest of the highest priority first; the caller starts those instances.
    pub fn release(&self, mut reservation: Reservation) -> Vec<Reservation> {
        reservation.released = true;
        let granted = lock(&self.state).release(reservation.id);
        self.reservations(granted)
    }

    /// Reservations handed to waiters when other reservations were dropped rather than released
    /// through [`release`](Self::release). The caller starts those instances.
    pub fn take_admitted(&self) -> Vec<Reservation> {
        let granted = std::mem::take(&mut lock(&self.state).inbox);
        self.reservations(granted)
    }

    /// Takes `key` out of the pending queue (its workload was removed). False if it was not there.
    pub fn cancel(&self, key: &InstanceKey) -> bool {
        lock(&self.state).remove_waiter(key)
    }

    /// Free, used and pending capacity, for `skiff ps` and `/v1/info`.
    pub fn snapshot(&self) -> LedgerSnapshot {
        let state = lock(&self.state);
        let free = state.free();
        LedgerSnapshot {
            node: state.node,
            used: state.used,
            free,
            reserved: (state.reserved.values())
                .map(|held| ReservedView {
                    key: held.key.clone(),
                    requests: held.requests,
                    priority: held.key.priority(),
                    idle: held.idle_since.is_some(),
                })
                .collect(),
            pending: (state.pending.values())
                .map(|waiter| PendingView {
                    key: waiter.key.clone(),
                    requests: waiter.requests,
                    priority: waiter.key.priority(),
                    reason: Shortfall::new(&free, &waiter.requests).to_string(),
                })
                .collect(),
        }
    }

    fn reservation(&self, id: u64, key: InstanceKey, requests: Requests) -> Reservation {
        Reservation {
            state: Arc::clone(&self.state),
            id,
            key,
            requests,
            released: false,
        }
    }

    fn reservations(&self, ids: Vec<Grant>) -> Vec<Reservation> {
        (ids.into_iter())
            .map(|(id, key, requests)| self.reservation(id, key, requests))
            .collect()
    }
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn free(&self) -> Capacity {
        self.node.allocatable.saturating_sub(self.used)
    }

    fn reserve(&mut self, key: InstanceKey, requests: Requests) -> u64 {
        let id = self.next_seq();
        self.used = self.used.saturating_add(requests);
        self.ids.insert(key.clone(), id);
        let held = Held {
            key,
            requests,
            idle_since: None,
            evicting: false,
        };
        self.reserved.insert(id, held);
        id
    }

    /// Frees reservation `id` and, unless it was evicted for someone, hands the room to
    /// waiters in queue order. Returns what was handed out.
    fn release(&mut self, id: u64) -> Vec<Grant> {
        let Some(held) = self.reserved.remove(&id) else {
            return Vec::new();
        };
        self.used = self.used.saturating_sub(held.requests);
        self.ids.remove(&held.key);
        if held.evicting {
            return Vec::new();
        }
        let mut granted = Vec::new();
        let order: Vec<_> = self.pending.keys().copied().collect();
        for place in order {
            if self.free().covers(&self.pending[&place].requests) {
                let Waiter { key, requests } = self.pending.remove(&place).expect("listed above");
                let id = self.reserve(key.clone(), requests);
                granted.push((id, key, requests));
            }
        }
        granted
    }

    fn remove_waiter(&mut self, key: &InstanceKey) -> bool {
        let place = self.pending.iter().find(|(_, w)| &w.key == key);
        match place.map(|(place, _)| *place) {
            Some(place) => self.pending.remove(&place).is_some(),
            None => false,
        }
    }

    /// The idle reservations below `priority` whose release would make `requests` fit, lowest
    /// priority and longest idle first, or `None` if even all of them would not do. Marks them
    /// as evicting so a second admit does not count them again.
    fn victims(&mut self, priority: Priority, requests: &Requests) -> Option<Vec<InstanceKey>> {
        let mut candidates: Vec<_> = (self.reserved.iter())
            .filter(|(_, held)| !held.evicting && held.key.priority() < priority)
            .filter_map(|(&id, held)| Some((held.key.priority(), held.idle_since?, id)))
            .collect();
        candidates.sort_unstable();
        let mut room = self.free();
        let mut chosen = Vec::new();
        for (_, _, id) in candidates {
            if room.covers(requests) {
                break;
            }
            let freed = self.reserved[&id].requests;
            let helps = room.short_of(requests).iter().any(|&r| freed.get(r) > 0);
            if helps {
                room = room.saturating_add(freed);
                chosen.push(id);
            }
        }
        if !room.covers(requests) {
            return None;
        }
        let victims = (chosen.iter())
            .map(|id| {
                let held = self.reserved.get_mut(id).expect("chosen from reserved");
                held.evicting = true;
                held.key.clone()
            })
            .collect();
        Some(victims)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update leaves the state consistent before it can panic, so a poisoned lock is
    // still a good ledger; refusing it would leak every reservation dropped afterwards.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The ledger as `skiff ps` and `GET /v1/info` show it.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerSnapshot {
    pub node: NodeCapacity,
    pub used: Capacity,
    pub free: Capacity,
    /// In admission order.
    pub reserved: Vec<ReservedView>,
    /// In the order they will be served.
    pub pending: Vec<PendingView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReservedView {
    pub key: InstanceKey,
    pub requests: Requests,
    pub priority: Priority,
    /// Idle instances of functions and caches may be evicted for higher priorities.
    pub idle: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PendingView {
    pub key: InstanceKey,
    pub requests: Requests,
    pub priority: Priority,
    /// What it waits for now, such as `waiting for 512 MiB of memory; 120 MiB free`.
    pub reason: String,
}

#[cfg(test)]
mod tests;
