//! The cpu controller: a quota per period (`--cpus 0.5` is 50000 µs per 100000 µs) and a
//! relative share.
//!
//! v1 takes the spec's numbers as they are (`cpu.cfs_period_us`, `cpu.cfs_quota_us`,
//! `cpu.shares`); v2 folds quota and period into `cpu.max` and maps shares (2..=262144) onto
//! `cpu.weight` (1..=10000) the way runc and crun do.

use super::{Result, write};
use oci_spec::runtime::LinuxCpu;
use std::path::Path;

/// v1: period before quota (the kernel checks the quota against the current period), then
/// shares. A quota ≤ 0 means no limit (-1).
pub fn apply_v1(dir: &Path, cpu: &LinuxCpu) -> Result<()> {
    if let Some(period) = cpu.period().filter(|&p| p > 0) {
        write(dir, "cpu.cfs_period_us", period)?;
    }
    if let Some(quota) = cpu.quota() {
        write(dir, "cpu.cfs_quota_us", if quota > 0 { quota } else { -1 })?;
    }
    if let Some(shares) = cpu.shares().filter(|&s| s > 0) {
        write(dir, "cpu.shares", shares)?;
    }
    Ok(())
}

/// v2: `cpu.max` as `QUOTA PERIOD` (`max` for no quota), then `cpu.weight`.
pub fn apply_v2(dir: &Path, cpu: &LinuxCpu) -> Result<()> {
    if let Some(max) = cpu_max(cpu.quota(), cpu.period()) {
        write(dir, "cpu.max", max)?;
    }
    if let Some(shares) = cpu.shares().filter(|&s| s > 0) {
        write(dir, "cpu.weight", shares_to_weight(shares))?;
    }
    Ok(())
}

/// The `cpu.max` line, or `None` when neither quota nor period is given. Without a period
/// the kernel keeps the current one.
fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let period = period.filter(|&p| p > 0);
    if quota.is_none() && period.is_none() {
        return None;
    }
    let quota = match quota {
        Some(q) if q > 0 => q.to_string(),
        _ => "max".to_string(),
    };
    Some(match period {
        Some(period) => format!("{quota} {period}"),
        None => quota,
    })
}

/// runc's mapping: shares 2 → weight 1, 1024 → 39, 262144 → 10000.
fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// CPU time used so far, in microseconds, from a v1 `cpuacct` directory.
pub fn usage_v1(dir: &Path) -> Result<u64> {
    Ok(super::read_u64(dir, "cpuacct.usage")? / 1000)
}

/// CPU time used so far, in microseconds, from a v2 cgroup.
pub fn usage_v2(dir: &Path) -> Result<u64> {
    super::read_keyed(dir, "cpu.stat", "usage_usec")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_folds_quota_and_period() {
        assert_eq!(
            cpu_max(Some(50_000), Some(100_000)).unwrap(),
            "50000 100000"
        );
        assert_eq!(cpu_max(Some(-1), Some(100_000)).unwrap(), "max 100000");
        assert_eq!(cpu_max(None, Some(100_000)).unwrap(), "max 100000");
        assert_eq!(cpu_max(Some(20_000), None).unwrap(), "20000");
        assert_eq!(cpu_max(None, None), None);
    }

    #[test]
    fn shares_map_onto_weight_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1_000_000), 10_000);
    }
}
