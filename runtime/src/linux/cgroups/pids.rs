//! The pids controller: at most N tasks (processes and threads) in the cgroup, which stops a
//! fork bomb at N. The file and its format are the same in v1 and v2.

use super::{Result, read_u64, write};
use oci_spec::runtime::LinuxPids;
use std::path::Path;

/// `pids.max`: the limit, or `max` for a limit ≤ 0 (the spec's "no limit").
pub fn apply(dir: &Path, pids: &LinuxPids) -> Result<()> {
    let limit = pids.limit();
    if limit > 0 {
        write(dir, "pids.max", limit)
    } else {
        write(dir, "pids.max", "max")
    }
}

/// Tasks now in the cgroup.
pub fn current(dir: &Path) -> Result<u64> {
    read_u64(dir, "pids.current")
}
