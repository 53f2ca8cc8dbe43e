//! Per-instance limits: memory (linear memories and tables, through a `ResourceLimiter`) and
//! wall time (through epoch deadlines). Exceeding either ends that instance only.

use crate::units::ByteSize;
use std::time::Duration;
use wasmtime::ResourceLimiter;

/// Limits of one workload's instances. No limit by default, as with `docker run`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of linear memory plus table storage an instance may hold (`--memory`).
    pub memory: Option<ByteSize>,
    /// Wall time an instance may run: a command's whole run, or one HTTP request (`--timeout`).
    pub timeout: Option<Duration>,
}

/// The marker error a limiter raises; the executor turns it into `WasmError::MemoryLimit`.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} exceeded")]
pub(crate) struct MemoryLimitExceeded(pub ByteSize);

/// Counts one store's memory and table growth against `Limits::memory`.
///
/// Growing past the limit traps the instance (as Docker's OOM kill ends a container) rather
/// than failing `memory.grow` quietly, so the user learns why their program stopped.
#[derive(Debug, Default)]
pub(crate) struct StoreLimiter {
    limit: Option<ByteSize>,
    used: usize,
}

/// Bytes one table element is counted as: a pointer.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl StoreLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            limit: limits.memory,
            used: 0,
        }
    }

    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let next = self.used.saturating_add(desired.saturating_sub(current));
        match self.limit {
            Some(limit) if next as u64 > limit.0 => {
                Err(wasmtime::Error::new(MemoryLimitExceeded(limit)))
            }
            _ => {
                self.used = next;
                Ok(true)
            }
        }
    }
}

impl ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }
}

/// Races a guest call against the wall-clock limit, for time spent blocked in the host
/// (sleeping, reading stdin) where epoch interruption cannot reach.
pub(crate) async fn with_deadline<T>(
    limits: &Limits,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    match limits.timeout {
        None => call.await,
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(wasmtime::Error::new(wasmtime::Trap::Interrupt)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_counted_across_memories_and_tables() {
        let mut limiter = StoreLimiter::new(&Limits {
            memory: Some(ByteSize(1000)),
            timeout: None,
        });
        assert!(limiter.memory_growing(0, 600, None).unwrap());
        assert!(limiter.table_growing(0, 50, None).unwrap()); // 400 bytes
        let err = limiter.memory_growing(0, 1, None).unwrap_err();
        assert!(err.downcast_ref::<MemoryLimitExceeded>().is_some());
    }

    #[test]
    fn no_limit_allows_growth() {
        let mut limiter = StoreLimiter::default();
        assert!(limiter.memory_growing(0, usize::MAX / 2, None).unwrap());
    }
}
