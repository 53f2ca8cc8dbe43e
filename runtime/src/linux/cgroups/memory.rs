//! The memory controller: the limit, swap, and the numbers `stats` reports.
//!
//! The OCI spec's `memory.swap` is memory plus swap (v1's `memsw`). When it is not given, swap
//! is capped so the limit is real on a host with swap: v1 `memory.memsw.limit_in_bytes` equals
//! the limit, and v2 `memory.swap.max` (swap alone) is 0. A kernel without swap accounting has
//! no such file, which is fine: there is then no swap to escape to.

use super::{CgroupError, Result, read_keyed, read_u64, write, write_if_present};
use oci_spec::runtime::LinuxMemory;
use std::path::Path;

/// What the v1 and v2 files get: `None` leaves a file alone, `Some(None)` means no limit.
#[derive(Debug, PartialEq, Eq)]
struct Limits {
    memory: Option<Option<i64>>,
    /// memory + swap, as the OCI spec and v1 count it.
    memsw: Option<Option<i64>>,
}

fn limits(memory: &LinuxMemory) -> Limits {
    let bounded = |v: i64| (v >= 0).then_some(v);
    let memory_limit = memory.limit().map(bounded);
    let memsw = match (memory.swap(), memory_limit) {
        (Some(swap), _) => Some(bounded(swap)),
        (None, Some(limit)) => Some(limit),
        (None, None) => None,
    };
    Limits {
        memory: memory_limit,
        memsw,
    }
}

/// v1: `memory.limit_in_bytes`, then `memory.memsw.limit_in_bytes` when the kernel has it.
/// The kernel wants memsw ≥ limit at every moment, so when raising the limit past the old
/// memsw, memsw goes first.
pub fn apply_v1(dir: &Path, memory: &LinuxMemory) -> Result<()> {
    let Limits { memory, memsw } = limits(memory);
    let v1 = |v: Option<i64>| v.unwrap_or(-1);
    let Some(limit) = memory else {
        if let Some(memsw) = memsw {
            write_if_present(dir, "memory.memsw.limit_in_bytes", v1(memsw))?;
        }
        return Ok(());
    };
    match write(dir, "memory.limit_in_bytes", v1(limit)) {
        Err(CgroupError::Write { error, .. })
            if error.raw_os_error() == Some(nix::libc::EINVAL) && memsw.is_some() =>
        {
            // The new limit is above the current memsw: move memsw first, then retry.
            write_if_present(dir, "memory.memsw.limit_in_bytes", v1(memsw.flatten()))?;
            write(dir, "memory.limit_in_bytes", v1(limit))?;
        }
        other => {
            other?;
            if let Some(memsw) = memsw {
                write_if_present(dir, "memory.memsw.limit_in_bytes", v1(memsw))?;
            }
        }
    }
    Ok(())
}

/// v2: `memory.max`, then `memory.swap.max` (swap alone: memsw − limit) when it exists.
pub fn apply_v2(dir: &Path, memory: &LinuxMemory) -> Result<()> {
    let Limits { memory, memsw } = limits(memory);
    let v2 = |v: Option<i64>| v.map_or_else(|| "max".to_string(), |v| v.to_string());
    if let Some(limit) = memory {
        write(dir, "memory.max", v2(limit))?;
    }
    if let Some(memsw) = memsw {
        let swap = match (memsw, memory.flatten()) {
            (None, _) => None,
            (Some(memsw), Some(limit)) => Some((memsw - limit).max(0)),
            (Some(memsw), None) => Some(memsw),
        };
        write_if_present(dir, "memory.swap.max", v2(swap))?;
    }
    Ok(())
}

/// v1: (bytes in use, OOM kills).
pub fn stats_v1(dir: &Path) -> Result<(u64, u64)> {
    Ok((
        read_u64(dir, "memory.usage_in_bytes")?,
        read_keyed(dir, "memory.oom_control", "oom_kill")?,
    ))
}

/// v2: (bytes in use, OOM kills).
pub fn stats_v2(dir: &Path) -> Result<(u64, u64)> {
    Ok((
        read_u64(dir, "memory.current")?,
        read_keyed(dir, "memory.events", "oom_kill")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxMemoryBuilder;

    fn memory(limit: Option<i64>, swap: Option<i64>) -> LinuxMemory {
        let mut b = LinuxMemoryBuilder::default();
        if let Some(limit) = limit {
            b = b.limit(limit);
        }
        if let Some(swap) = swap {
            b = b.swap(swap);
        }
        b.build().unwrap()
    }

    #[test]
    fn swap_defaults_to_the_limit() {
        let l = limits(&memory(Some(100), None));
        assert_eq!(l.memory, Some(Some(100)));
        assert_eq!(l.memsw, Some(Some(100)));
        let l = limits(&memory(Some(100), Some(-1)));
        assert_eq!(l.memsw, Some(None));
        let l = limits(&memory(Some(-1), None));
        assert_eq!((l.memory, l.memsw), (Some(None), Some(None)));
        let l = limits(&memory(None, None));
        assert_eq!((l.memory, l.memsw), (None, None));
    }
}
