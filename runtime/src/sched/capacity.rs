//! What the node has to give: CPU, memory and pids, minus a reserve for the host.
//!
//! [`NodeCapacity::detect`] reads the machine once at start (CPUs from the scheduler affinity,
//! `MemTotal` from `/proc/meminfo`, the lower of `pid_max` and `threads-max`) and subtracts a
//! [`Reserve`] so the host, the daemon and the kernel keep room to breathe. The
//! [`Ledger`](super::ledger::Ledger) then shares out what is left. This file does not look at
//! cgroup limits the daemon itself runs under; that comes with the daemon.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// Why the node's capacity could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    #[error("cannot read {path}; skiff needs procfs mounted at /proc to size the node")]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("no MemTotal line in {path}; is procfs mounted at /proc?")]
    MemTotal { path: PathBuf },
    #[error("neither kernel/pid_max nor kernel/threads-max is readable under {path}")]
    Pids { path: PathBuf },
}

pub type Result<T, E = CapacityError> = std::result::Result<T, E>;

/// Amounts of the three resources the ledger shares out. Also what one instance asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Capacity {
    /// Thousandths of a CPU: `500` is half a core (`cpu = "500m"` in the manifest).
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pids: u64,
}

/// What one instance asks the ledger for: the same three resources as the node has.
pub type Requests = Capacity;

/// One of the three resources, to say which one is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Cpu,
    Memory,
    Pids,
}

impl Resource {
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Pids];

    /// The manifest key an operator changes to ask for less of this resource.
    pub fn manifest_key(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Pids => "pids",
        }
    }

    /// `amount` of this resource as a person reads it: `2 CPUs`, `512 MiB of memory`, `90 pids`.
    pub fn describe(self, amount: u64) -> String {
        match self {
            Resource::Cpu if amount.is_multiple_of(1000) => {
                let cores = amount / 1000;
                format!("{cores} CPU{}", if cores == 1 { "" } else { "s" })
            }
            Resource::Cpu => format!("{amount}m of CPU"),
            Resource::Memory => format!("{} of memory", Bytes(amount)),
            Resource::Pids => format!("{amount} pids"),
        }
    }

    /// Like [`describe`](Self::describe) without the resource's name: `22.1 GiB`, `1500m`.
    pub fn amount(self, amount: u64) -> String {
        match self {
            Resource::Cpu => format!("{amount}m"),
            Resource::Memory => Bytes(amount).to_string(),
            Resource::Pids => amount.to_string(),
        }
    }
}

impl Capacity {
    pub const ZERO: Capacity = Capacity {
        cpu_millis: 0,
        memory_bytes: 0,
        pids: 0,
    };

    pub fn get(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Cpu => self.cpu_millis,
            Resource::Memory => self.memory_bytes,
            Resource::Pids => self.pids,
        }
    }

    /// True when every resource of `requests` is within `self`.
    pub fn covers(&self, requests: &Requests) -> bool {
        Resource::ALL
            .iter()
            .all(|&r| requests.get(r) <= self.get(r))
    }

    /// The resources where `requests` is larger than `self`, in [`Resource::ALL`] order.
    pub fn short_of(&self, requests: &Requests) -> Vec<Resource> {
        Resource::ALL
            .into_iter()
            .filter(|&r| requests.get(r) > self.get(r))
            .collect()
    }

    pub fn saturating_add(self, other: Capacity) -> Capacity {
        Capacity {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            pids: self.pids.saturating_add(other.pids),
        }
    }

    pub fn saturating_sub(self, other: Capacity) -> Capacity {
        Capacity {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            pids: self.pids.saturating_sub(other.pids),
        }
    }
}

/// What the node keeps back from workloads. Every default is what [`Reserve::default`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reserve {
    /// Percent of total memory kept back, for the page cache and the kernel. Default 10.
    pub memory_percent: u8,
    /// Bytes kept back on top of the percentage, for the daemon and sshd. Default 256 MiB.
    pub memory_bytes: u64,
    /// CPU kept back, in thousandths of a CPU. Default 100 (a tenth of one core).
    pub cpu_millis: u64,
    /// Pids kept back so the host can still fork to debug a full node. Default 1024.
    pub pids: u64,
}

impl Default for Reserve {
    fn default() -> Self {
        Reserve {
            memory_percent: 10,
            memory_bytes: 256 << 20,
            cpu_millis: 100,
            pids: 1024,
        }
    }
}

impl Reserve {
    /// The amounts this reserve keeps back from a node of `total` capacity.
    pub fn of(&self, total: Capacity) -> Capacity {
        let percent = u128::from(self.memory_percent.min(100));
        let share = (u128::from(total.memory_bytes) * percent / 100) as u64;
        Capacity {
            cpu_millis: self.cpu_millis,
            memory_bytes: share.saturating_add(self.memory_bytes),
            pids: self.pids,
        }
    }
}

/// The node as detected, and what is left for workloads once the reserve is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NodeCapacity {
    /// Everything the machine has.
    pub total: Capacity,
    /// What the reserve keeps back.
    pub reserved: Capacity,
    /// `total - reserved`: what the ledger shares out.
    pub allocatable: Capacity,
}

impl NodeCapacity {
    /// Sizes this machine from `/proc` and takes `reserve` off.
    pub fn detect(reserve: &Reserve) -> Result<NodeCapacity> {
        Self::detect_from(Path::new("/proc"), reserve)
    }

    /// Like [`detect`](Self::detect) with procfs at `proc`, so tests can point at a fake one.
    pub fn detect_from(proc: &Path, reserve: &Reserve) -> Result<NodeCapacity> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let meminfo = proc.join("meminfo");
        let text = read(&meminfo)?;
        let memory_bytes =
            parse_mem_total(&text).ok_or(CapacityError::MemTotal { path: meminfo })?;
        let limits = ["sys/kernel/pid_max", "sys/kernel/threads-max"]
            .iter()
            .filter_map(|file| read(&proc.join(file)).ok()?.trim().parse::<u64>().ok());
        let pids = limits.min().ok_or_else(|| CapacityError::Pids {
            path: proc.to_path_buf(),
        })?;
        let total = Capacity {
            cpu_millis: cpus * 1000,
            memory_bytes,
            pids,
        };
        Ok(Self::new(total, reserve))
    }

    /// A node of `total` capacity with `reserve` kept back.
    pub fn new(total: Capacity, reserve: &Reserve) -> NodeCapacity {
        let reserved = reserve.of(total);
        NodeCapacity {
            total,
            reserved,
            allocatable: total.saturating_sub(reserved),
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|error| CapacityError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// Bytes from the `MemTotal:  24684084 kB` line of `/proc/meminfo`.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let number: u64 = words.next()?.parse().ok()?;
    let unit = match words.next() {
        None => 1,
        Some("kB") => 1024,
        Some(_) => return None,
    };
    number.checked_mul(unit)
}

/// Bytes with one decimal at most, binary units: `22.1 GiB`, `512 MiB`, `100 bytes`.
#[derive(Debug, Clone, Copy)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (name, shift) in UNITS {
            if self.0 >= 1 << shift {
                let tenths = (u128::from(self.0) * 10) >> shift;
                let (whole, tenth) = (tenths / 10, tenths % 10);
                return match tenth {
                    0 => write!(f, "{whole} {name}"),
                    _ => write!(f, "{whole}.{tenth} {name}"),
                };
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn bytes_read_with_one_decimal_at_most() {
        assert_eq!(Bytes(64 * GIB).to_string(), "64 GiB");
        assert_eq!(Bytes(512 << 20).to_string(), "512 MiB");
        assert_eq!(Bytes(GIB + GIB / 10 + 1).to_string(), "1.1 GiB");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(100).to_string(), "100 bytes");
    }

    #[test]
    fn resources_describe_themselves() {
        assert_eq!(Resource::Cpu.describe(2000), "2 CPUs");
        assert_eq!(Resource::Cpu.describe(1000), "1 CPU");
        assert_eq!(Resource::Cpu.describe(1500), "1500m of CPU");
        assert_eq!(Resource::Memory.describe(512 << 20), "512 MiB of memory");
        assert_eq!(Resource::Pids.describe(90), "90 pids");
    }

    #[test]
    fn the_default_reserve_keeps_a_tenth_of_memory_plus_256_mib() {
        let total = Capacity {
            cpu_millis: 4000,
            memory_bytes: 10 * GIB,
            pids: 4_194_304,
        };
        let node = NodeCapacity::new(total, &Reserve::default());
        assert_eq!(node.reserved.memory_bytes, GIB + (256 << 20));
        assert_eq!(node.allocatable.memory_bytes, 9 * GIB - (256 << 20));
        assert_eq!(node.allocatable.cpu_millis, 3900);
        assert_eq!(node.allocatable.pids, 4_194_304 - 1024);
    }

    #[test]
    fn a_reserve_larger_than_the_node_leaves_zero_not_an_overflow() {
        let tiny = Capacity {
            cpu_millis: 50,
            memory_bytes: 100 << 20,
            pids: 10,
        };
        let node = NodeCapacity::new(tiny, &Reserve::default());
        assert_eq!(node.allocatable, Capacity::ZERO);
    }

    #[test]
    fn detect_reads_meminfo_and_the_lower_pid_limit() {
        let proc = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(proc.path().join("sys/kernel")).unwrap();
        std::fs::write(
            proc.path().join("meminfo"),
            "MemTotal:       24684084 kB\nMemFree:        19533468 kB\n",
        )
        .unwrap();
        std::fs::write(proc.path().join("sys/kernel/pid_max"), "4194304\n").unwrap();
        std::fs::write(proc.path().join("sys/kernel/threads-max"), "191958\n").unwrap();
        let node = NodeCapacity::detect_from(proc.path(), &Reserve::default()).unwrap();
        assert_eq!(node.total.memory_bytes, 24_684_084 * 1024);
        assert_eq!(node.total.pids, 191_958);
        assert!(node.total.cpu_millis >= 1000);
        assert_eq!(node.total.cpu_millis % 1000, 0);
    }

    #[test]
    fn detect_says_what_is_missing() {
        let proc = tempfile::tempdir().unwrap();
        let error = NodeCapacity::detect_from(proc.path(), &Reserve::default()).unwrap_err();
        assert!(matches!(error, CapacityError::Read { .. }), "{error}");
        std::fs::write(proc.path().join("meminfo"), "MemFree: 1 kB\n").unwrap();
        let error = NodeCapacity::detect_from(proc.path(), &Reserve::default()).unwrap_err();
        assert!(matches!(error, CapacityError::MemTotal { .. }), "{error}");
        std::fs::write(proc.path().join("meminfo"), "MemTotal: 1 kB\n").unwrap();
        let error = NodeCapacity::detect_from(proc.path(), &Reserve::default()).unwrap_err();
        assert!(matches!(error, CapacityError::Pids { .. }), "{error}");
    }

    #[test]
    fn this_machine_can_be_sized() {
        if Path::new("/proc/meminfo").exists() {
            let node = NodeCapacity::detect(&Reserve::default()).unwrap();
            assert!(node.total.memory_bytes > 0 && node.total.pids > 0);
        }
    }
}
