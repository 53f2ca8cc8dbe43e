//! The hot path for functions: per-request slots, a bounded waiting queue, and the scaling math.
//!
//! Every request to a function takes a slot from its [`FunctionSlots`] before it runs and gives
//! it back when its [`SlotGuard`] drops. Slots are atomic counters: [`FunctionSlots::try_acquire`]
//! is a compare-and-swap loop that takes no lock at all, so it costs nanoseconds and nothing is
//! ever held across an await. Only a request that finds every slot busy goes further: it joins
//! a bounded queue and sleeps on a [`Notify`] until a slot frees or its time runs out; a full
//! queue answers [`SlotError::Busy`] at once, which the gateway turns into `503` with
//! `Retry-After`. A woken waiter competes with new arrivals for the freed slot (no strict FIFO,
//! which keeps the fast path lock-free); it loops until it wins or its deadline passes.
//!
//! Slots count requests in flight, `max × concurrency` of the manifest; the capacity those
//! instances need is admitted once through the [`Ledger`](super::Ledger), not per request.
//! [`desired_instances`] and [`IdleTracker`] turn in-flight counts into how many instances to
//! keep, down to zero after an idle window. Starting and stopping them is the caller's job.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// Why a request got no slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error(
        "all {max} slots are busy and {queue} requests already wait; retry after {retry_after:?} \
         or raise max in the manifest"
    )]
    Busy {
        max: usize,
        queue: usize,
        retry_after: Duration,
    },
    #[error("no slot freed within {waited:?}; retry after {retry_after:?} or raise max")]
    TimedOut {
        waited: Duration,
        retry_after: Duration,
    },
}

impl SlotError {
    /// What the `Retry-After` header of the `503` should say.
    pub fn retry_after(&self) -> Duration {
        match self {
            SlotError::Busy { retry_after, .. } | SlotError::TimedOut { retry_after, .. } => {
                *retry_after
            }
        }
    }
}

pub type Result<T, E = SlotError> = std::result::Result<T, E>;

/// Limits of one function's slots. Built from the manifest by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotsConfig {
    /// Requests in flight at most: the manifest's `max × concurrency`.
    pub max: usize,
    /// Requests that may wait for a slot; one more gets [`SlotError::Busy`]. 0 = no queue.
    pub queue: usize,
    /// What a refused request is told to wait before retrying.
    pub retry_after: Duration,
}

/// One function's request slots. Share it as `Arc<FunctionSlots>`.
#[derive(Debug)]
pub struct FunctionSlots {
    in_flight: AtomicUsize,
    max: AtomicUsize,
    waiting: AtomicUsize,
    queue: usize,
    retry_after: Duration,
    freed: Notify,
    idle: IdleTracker,
}

impl FunctionSlots {
    pub fn new(config: SlotsConfig) -> Arc<Self> {
        Arc::new(FunctionSlots {
            in_flight: AtomicUsize::new(0),
            max: AtomicUsize::new(config.max),
            waiting: AtomicUsize::new(0),
            queue: config.queue,
            retry_after: config.retry_after,
            freed: Notify::new(),
            idle: IdleTracker::new(Instant::now()),
        })
    }

    /// Takes a slot if one is free, without waiting or locking.
    pub fn try_acquire(self: &Arc<Self>) -> Option<SlotGuard> {
        // SeqCst pairs with `SlotGuard::drop`: a waiter that joined the queue and then saw
        // every slot busy is sure to be seen, and woken, by the release that frees one.
        let max = self.max.load(SeqCst);
        let mut current = self.in_flight.load(SeqCst);
        loop {
            if current >= max {
                return None;
            }
            match (self.in_flight).compare_exchange_weak(current, current + 1, SeqCst, SeqCst) {
                Ok(_) => {
                    return Some(SlotGuard {
                        slots: Arc::clone(self),
                    });
                }
                Err(now) => current = now,
            }
        }
    }

    /// Takes a slot, waiting up to `timeout` in the queue if none is free. A full queue fails
    /// at once with [`SlotError::Busy`]. Cancel-safe: dropping the future leaves the queue.
    pub async fn acquire(self: &Arc<Self>, timeout: Duration) -> Result<SlotGuard> {
        if let Some(slot) = self.try_acquire() {
            return Ok(slot);
        }
        let _queued = self.join_queue()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a release between the look and the await still
            // wakes this waiter.
            freed.as_mut().enable();
            if let Some(slot) = self.try_acquire() {
                return Ok(slot);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(SlotError::TimedOut {
                    waited: timeout,
                    retry_after: self.retry_after,
                });
            }
        }
    }

    fn join_queue(&self) -> Result<Queued<'_>> {
        let mut waiting = self.waiting.load(SeqCst);
        loop {
            if waiting >= self.queue {
                return Err(SlotError::Busy {
                    max: self.max(),
                    queue: self.queue,
                    retry_after: self.retry_after,
                });
            }
            match (self.waiting).compare_exchange_weak(waiting, waiting + 1, SeqCst, SeqCst) {
                Ok(_) => return Ok(Queued(self)),
                Err(now) => waiting = now,
            }
        }
    }

    /// Changes the number of slots (the function was scaled). Waiters see new slots at once;
    /// lowering it lets running requests finish.
    pub fn set_max(&self, max: usize) {
        let before = self.max.swap(max, SeqCst);
        if max > before {
            self.freed.notify_waiters();
        }
    }

    pub fn max(&self) -> usize {
        self.max.load(SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    /// Requests waiting in the queue for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.load(SeqCst)
    }

    /// True when nothing runs or waits and the last request ended at least `window` ago.
    pub fn is_idle(&self, now: Instant, window: Duration) -> bool {
        self.in_flight() == 0 && self.waiting() == 0 && self.idle.is_idle(now, window)
    }

    pub fn last_activity(&self) -> Instant {
        self.idle.last_activity()
    }
}

/// A request's slot; dropping it frees the slot and wakes one waiter.
#[derive(Debug)]
#[must_use = "dropping the guard frees the slot at once"]
pub struct SlotGuard {
    slots: Arc<FunctionSlots>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let slots = &self.slots;
        // Touch before freeing: whoever sees no request in flight also sees this timestamp,
        // never the one from before a long busy spell.
        slots.idle.touch(Instant::now());
        slots.in_flight.fetch_sub(1, SeqCst);
        if slots.waiting.load(SeqCst) > 0 {
            slots.freed.notify_one();
        }
    }
}

/// A place in the queue, given back when the waiter leaves for any reason.
struct Queued<'a>(&'a FunctionSlots);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, SeqCst);
    }
}

/// When a function last did anything, readable and writable from any thread without a lock.
#[derive(Debug)]
pub struct IdleTracker {
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last activity.
    last: AtomicU64,
}

impl IdleTracker {
    pub fn new(now: Instant) -> Self {
        IdleTracker {
            epoch: now,
            last: AtomicU64::new(0),
        }
    }

    /// Records activity at `now`. Never moves the timestamp backwards.
    pub fn touch(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        self.last
            .fetch_max(u64::try_from(nanos).unwrap_or(u64::MAX), SeqCst);
    }

    pub fn last_activity(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last.load(SeqCst))
    }

    /// True when the last activity was at least `window` before `now`.
    pub fn is_idle(&self, now: Instant, window: Duration) -> bool {
        now.saturating_duration_since(self.last_activity()) >= window
    }
}

/// Instances a function needs for `in_flight` requests: `ceil(in_flight / target_concurrency)`
/// within `min..=max`. A `target_concurrency` of 0 counts as 1; if `min > max`, `max` wins.
pub fn desired_instances(in_flight: usize, target_concurrency: u32, min: u32, max: u32) -> u32 {
    let target = u64::from(target_concurrency.max(1));
    let needed = (in_flight as u64).div_ceil(target);
    let needed = u32::try_from(needed).unwrap_or(u32::MAX);
    needed.max(min).min(max)
}

/// Holds `current` instances while the function is not yet idle, so a lull shorter than the
/// idle window does not drop warm instances; scaling up is never held.
pub fn hold_until_idle(current: u32, desired: u32, idle: bool) -> u32 {
    if desired >= current || idle {
        desired
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max: usize, queue: usize) -> Arc<FunctionSlots> {
        FunctionSlots::new(SlotsConfig {
            max,
            queue,
            retry_after: Duration::from_secs(1),
        })
    }

    #[test]
    fn try_acquire_takes_up_to_max_and_a_drop_frees_one() {
        let slots = slots(2, 0);
        let first = slots.try_acquire().unwrap();
        let _second = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        assert_eq!(slots.in_flight(), 2);
        drop(first);
        assert_eq!(slots.in_flight(), 1);
        assert!(slots.try_acquire().is_some());
    }

    #[test]
    fn zero_slots_admit_nothing() {
        assert!(slots(0, 0).try_acquire().is_none());
    }

    #[test]
    fn threads_hammering_never_exceed_max() {
        const MAX: usize = 3;
        let slots = slots(MAX, 0);
        let active = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (slots, active, peak) = (slots.clone(), active.clone(), peak.clone());
                std::thread::spawn(move || {
                    let mut won = 0u32;
                    for _ in 0..20_000 {
                        if let Some(slot) = slots.try_acquire() {
                            let now = active.fetch_add(1, SeqCst) + 1;
                            peak.fetch_max(now, SeqCst);
                            assert!(slots.in_flight() <= MAX);
                            std::hint::spin_loop();
                            active.fetch_sub(1, SeqCst);
                            drop(slot);
                            won += 1;
                        }
                    }
                    won
                })
            })
            .collect();
        let won: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(won > 0);
        assert!(peak.load(SeqCst) <= MAX, "peak {}", peak.load(SeqCst));
        assert_eq!(slots.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_a_request_frees() {
        let slots = slots(1, 4);
        let held = slots.try_acquire().unwrap();
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Duration::from_secs(5)).await.map(drop) }
        });
        while slots.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!((slots.in_flight(), slots.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let slots = slots(1, 1);
        let _held = slots.try_acquire().unwrap();
        let queued = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Duration::from_secs(5)).await.map(drop) }
        });
        while slots.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let error = slots.acquire(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(
            error,
            SlotError::Busy {
                max: 1,
                queue: 1,
                retry_after: Duration::from_secs(1)
            }
        );
        assert_eq!(error.retry_after(), Duration::from_secs(1));
        queued.abort();
        let _ = queued.await;
        assert_eq!(slots.waiting(), 0, "an aborted waiter leaves the queue");
    }

    #[tokio::test]
    async fn no_queue_means_busy_when_full() {
        let slots = slots(1, 0);
        let _held = slots.try_acquire().unwrap();
        let error = slots.acquire(Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(error, SlotError::Busy { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_waiter_gives_up_at_its_timeout() {
        let slots = slots(1, 1);
        let _held = slots.try_acquire().unwrap();
        let started = Instant::now();
        let error = slots.acquire(Duration::from_millis(30)).await.unwrap_err();
        assert!(matches!(error, SlotError::TimedOut { .. }), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(slots.waiting(), 0);
    }

    #[tokio::test]
    async fn raising_max_wakes_waiters() {
        let slots = slots(1, 2);
        let _held = slots.try_acquire().unwrap();
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Duration::from_secs(5)).await.map(drop) }
        });
        while slots.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        slots.set_max(2);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_all_get_through_one_slot() {
        let slots = slots(1, 64);
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move {
                    let slot = slots.acquire(Duration::from_secs(10)).await?;
                    tokio::task::yield_now().await;
                    drop(slot);
                    Ok::<_, SlotError>(())
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!((slots.in_flight(), slots.waiting()), (0, 0));
    }

    #[test]
    fn idle_means_nothing_ran_for_the_window() {
        let slots = slots(1, 0);
        let start = slots.last_activity();
        let window = Duration::from_secs(30);
        assert!(!slots.is_idle(start + Duration::from_secs(29), window));
        assert!(slots.is_idle(start + window, window));
        let slot = slots.try_acquire().unwrap();
        assert!(
            !slots.is_idle(start + Duration::from_secs(3600), window),
            "busy"
        );
        drop(slot);
        let ended = slots.last_activity();
        assert!(ended >= start);
        assert!(!slots.is_idle(ended + Duration::from_secs(1), window));
    }

    #[test]
    fn the_idle_tracker_never_goes_backwards() {
        let start = Instant::now();
        let tracker = IdleTracker::new(start);
        tracker.touch(start + Duration::from_secs(10));
        tracker.touch(start + Duration::from_secs(5));
        assert_eq!(tracker.last_activity(), start + Duration::from_secs(10));
        tracker.touch(start - Duration::from_secs(1));
        assert!(tracker.is_idle(start + Duration::from_secs(20), Duration::from_secs(10)));
    }

    #[test]
    fn desired_instances_round_up_within_min_and_max() {
        assert_eq!(desired_instances(0, 1, 0, 10), 0, "scale to zero");
        assert_eq!(desired_instances(0, 1, 2, 10), 2, "min stays warm");
        assert_eq!(desired_instances(1, 4, 0, 10), 1, "ceil, not floor");
        assert_eq!(desired_instances(4, 4, 0, 10), 1);
        assert_eq!(desired_instances(5, 4, 0, 10), 2);
        assert_eq!(desired_instances(7, 1, 0, 10), 7);
        assert_eq!(desired_instances(500, 1, 0, 10), 10, "max caps");
        assert_eq!(desired_instances(3, 0, 0, 10), 3, "target 0 counts as 1");
        assert_eq!(desired_instances(0, 1, 5, 3), 3, "max wins over min");
        assert_eq!(desired_instances(usize::MAX, 1, 0, u32::MAX), u32::MAX);
    }

    #[test]
    fn scale_down_waits_for_the_idle_window_but_scale_up_does_not() {
        assert_eq!(hold_until_idle(3, 0, false), 3);
        assert_eq!(hold_until_idle(3, 0, true), 0);
        assert_eq!(hold_until_idle(3, 5, false), 5);
        assert_eq!(hold_until_idle(0, 0, false), 0);
    }

    /// Prints the cost of the hot path; never asserts, since timing depends on the machine and
    /// the build profile (run with `--release` for the real figure).
    #[test]
    fn try_acquire_and_release_cost_nanoseconds() {
        const N: u32 = 1_000_000;
        let slots = slots(1024, 0);
        let started = Instant::now();
        for _ in 0..N {
            let slot = slots.try_acquire();
            std::hint::black_box(&slot);
        }
        let each = started.elapsed().as_nanos() as f64 / f64::from(N);
        println!("try_acquire + release: {each:.1} ns/op over {N} iterations");
    }
}
