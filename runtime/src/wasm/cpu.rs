//! CPU of one in-process instance: a Wasm instance runs inside the daemon, on whichever
//! tokio worker polls it, so it has no cgroup to count or cap its CPU. [`CpuMetered`] wraps
//! the instance's future instead: it measures the thread CPU time each `poll` takes, adds it
//! to a shared counter (what `skiff ps` shows and autoscaling samples), and, given a quota,
//! enforces it the way the kernel's CFS bandwidth control does: at most `quota` of CPU per
//! [`PERIOD`], after which the instance is not polled until the period ends.
//!
//! This works because a guest never holds the thread long: it yields to the host at every
//! epoch tick ([`super::engine`]), so each poll is at most about one tick of CPU. A poll that
//! runs past the budget is not cut short; the excess is owed and paid from the next periods,
//! so over time the instance gets its quota and no more.
//!
//! It does not measure or cap work the instance causes on other threads (blocking host
//! calls moved to the blocking pool), nor memory (the store's limiter does that).

use nix::time::{ClockId, clock_gettime};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// CFS's default period: the quota is allowed once per this much wall-clock time.
pub const PERIOD: Duration = Duration::from_millis(100);

/// The smallest CPU budget per period, as the kernel's (1 ms, i.e. 10 millicores): below
/// that an instance would hardly run at all.
const MIN_BUDGET: Duration = Duration::from_millis(1);

/// CPU time an instance used, in microseconds; written by its [`CpuMetered`], read by
/// whoever shares it.
pub type CpuCounter = Arc<AtomicU64>;

/// A future whose polls are counted as CPU time and, with a quota, throttled.
pub struct CpuMetered<F> {
    /// Boxed so that this wrapper is `Unpin` whatever `F` is, without unsafe pinning.
    inner: Pin<Box<F>>,
    used: CpuCounter,
    quota: Option<Quota>,
}

impl<F: Future> CpuMetered<F> {
    /// Meters `inner` into `used`; with `quota_millicores`, at most that much CPU (1000 = one
    /// core) per [`PERIOD`], at least 10 millicores.
    pub fn new(inner: F, used: CpuCounter, quota_millicores: Option<u32>) -> Self {
        CpuMetered {
            inner: Box::pin(inner),
            used,
            quota: quota_millicores.map(Quota::new),
        }
    }
}

impl<F: Future> Future for CpuMetered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if let Some(quota) = &mut this.quota
            && quota.throttled(cx)
        {
            return Poll::Pending;
        }
        let start = thread_cpu();
        let polled = this.inner.as_mut().poll(cx);
        let used = thread_cpu().saturating_sub(start);
        let micros = u64::try_from(used.as_micros()).unwrap_or(u64::MAX);
        this.used.fetch_add(micros, Ordering::Relaxed);
        if let Some(quota) = &mut this.quota {
            quota.spent = quota.spent.saturating_add(used);
        }
        polled
    }
}

/// CPU time the calling thread has used so far; zero if the clock cannot be read (then
/// nothing is counted or throttled, rather than the instance failing).
fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// A quota's bookkeeping: what the current period allows, what was used against it, and the
/// timer that wakes a throttled instance.
struct Quota {
    budget: Duration,
    /// CPU used in this period, plus what earlier periods overran.
    spent: Duration,
    period_end: Instant,
    /// Made at the first throttle, then reset to each period's end.
    wake: Option<Pin<Box<Sleep>>>,
}

impl Quota {
    fn new(millicores: u32) -> Self {
        // millicores / 1000 of each period: 100 ms × m / 1000 = m × 100 µs.
        let budget = (PERIOD / 1000).saturating_mul(millicores);
        Quota {
            budget: budget.max(MIN_BUDGET),
            spent: Duration::ZERO,
            period_end: Instant::now() + PERIOD,
            wake: None,
        }
    }

    /// Whether this period's CPU is spent; if so the task is woken at the period's end.
    fn throttled(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            self.refill(Instant::now());
            if self.spent < self.budget {
                return false;
            }
            let end = self.period_end;
            let wake = self
                .wake
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(end)));
            wake.as_mut().reset(end);
            if wake.as_mut().poll(cx).is_pending() {
                return true;
            }
            // The period ended between the look at the clock and the timer: look again.
        }
    }

    /// Starts the periods that have ended by `now`, each paying one budget off what was spent.
    fn refill(&mut self, now: Instant) {
        if now < self.period_end {
            return;
        }
        let behind = now.duration_since(self.period_end).as_nanos() / PERIOD.as_nanos();
        let periods = u32::try_from(behind + 1).unwrap_or(u32::MAX);
        self.spent = (self.spent).saturating_sub(self.budget.saturating_mul(periods));
        self.period_end = match periods {
            // Idle for longer than the debt could be: start afresh from now.
            u32::MAX => now + PERIOD,
            _ => self.period_end + PERIOD * periods,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::task::Waker;

    /// Burns `per_poll` of this thread's CPU each poll, wakes itself and stays pending, like a
    /// guest yielding at epoch ticks; done after `polls` polls (never with `None`).
    struct Spin {
        per_poll: Duration,
        polls: Option<u32>,
        polled: Arc<AtomicU32>,
    }

    impl Future for Spin {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let start = thread_cpu();
            while thread_cpu().saturating_sub(start) < self.per_poll {
                std::hint::spin_loop();
            }
            let polled = self.polled.fetch_add(1, Ordering::Relaxed) + 1;
            if self.polls.is_some_and(|polls| polled >= polls) {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn spin(per_poll_ms: u64, polls: Option<u32>) -> (Spin, Arc<AtomicU32>) {
        let polled = Arc::new(AtomicU32::new(0));
        let spin = Spin {
            per_poll: Duration::from_millis(per_poll_ms),
            polls,
            polled: Arc::clone(&polled),
        };
        (spin, polled)
    }

    #[tokio::test]
    async fn the_counter_counts_the_cpu_of_every_poll() {
        let (spin, polled) = spin(5, Some(4));
        let used = CpuCounter::default();
        CpuMetered::new(spin, Arc::clone(&used), None).await;
        assert_eq!(polled.load(Ordering::Relaxed), 4);
        let used = used.load(Ordering::Relaxed);
        assert!(used >= 20_000, "4 polls of 5 ms each, counted {used} µs");
    }

    #[tokio::test]
    async fn without_a_quota_every_poll_reaches_the_future() {
        let (spin, polled) = spin(20, None);
        let used = CpuCounter::default();
        let mut metered = CpuMetered::new(spin, Arc::clone(&used), None);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..5 {
            assert!(Pin::new(&mut metered).poll(&mut cx).is_pending());
        }
        assert_eq!(polled.load(Ordering::Relaxed), 5, "never throttled");
        assert!(used.load(Ordering::Relaxed) >= 100_000);
    }

    #[tokio::test]
    async fn a_spent_quota_is_not_polled_again_in_its_period() {
        // 10 millicores allow 1 ms per 100 ms; one 50 ms poll owes about 5 s of periods.
        let (spin, polled) = spin(50, None);
        let used = CpuCounter::default();
        let mut metered = CpuMetered::new(spin, Arc::clone(&used), Some(10));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            assert!(Pin::new(&mut metered).poll(&mut cx).is_pending());
        }
        assert_eq!(
            polled.load(Ordering::Relaxed),
            1,
            "throttled after the first"
        );
        assert!(
            used.load(Ordering::Relaxed) >= 50_000,
            "its CPU still counts"
        );
    }

    #[tokio::test]
    async fn a_spinning_future_under_100m_gets_about_a_tenth_of_a_core() {
        let (spin, polled) = spin(1, None);
        let used = CpuCounter::default();
        let metered = CpuMetered::new(spin, Arc::clone(&used), Some(100));
        let ran = tokio::time::timeout(Duration::from_secs(1), metered).await;
        assert!(ran.is_err(), "it spins forever");
        let used = used.load(Ordering::Relaxed);
        // About 100 ms in a second; generous, as the machine may be busy.
        assert!(used < 400_000, "100m over 1 s used {used} µs");
        assert!(polled.load(Ordering::Relaxed) > 0 && used > 0);
    }
}
