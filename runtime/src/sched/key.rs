//! Names for what the ledger holds: which instance, of what kind, at what priority.
//!
//! The scheduler's own small input types, so `sched` depends on neither the executors nor the
//! app manifest: whoever reads a manifest turns its workloads into [`InstanceKey`]s.

use std::fmt;

use serde::Serialize;

/// What kind of thing holds a reservation, in the design's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A long-running workload, Wasm or Linux.
    Service,
    /// A run-to-completion workload; ranked with services.
    Job,
    /// Instances of a Wasm HTTP function (a warm pool or one per request).
    Function,
    /// A compiled-code cache the Wasm engine keeps in memory; accounted here so it can be
    /// evicted under pressure.
    Cache,
}

impl Kind {
    pub fn priority(self) -> Priority {
        match self {
            Kind::Service | Kind::Job => Priority::Service,
            Kind::Function => Priority::Function,
            Kind::Cache => Priority::Cache,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Service => "service",
            Kind::Job => "job",
            Kind::Function => "function",
            Kind::Cache => "cache",
        })
    }
}

/// Who goes first: higher priorities are served first from the pending queue, and may evict
/// idle reservations of strictly lower priority. `Cache < Function < Service`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Compiled-code caches: the first to go under memory pressure.
    Cache,
    /// Function instances: idle warm pools go before a service is refused.
    Function,
    /// Services and jobs: never evicted to make room for anything else.
    Service,
}

/// One instance the ledger knows: `service shop/cache#0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct InstanceKey {
    pub kind: Kind,
    pub app: String,
    pub workload: String,
    /// Which replica or pool member of the workload, from 0.
    pub replica: u32,
}

impl InstanceKey {
    pub fn new(kind: Kind, app: &str, workload: &str, replica: u32) -> Self {
        InstanceKey {
            kind,
            app: app.to_string(),
            workload: workload.to_string(),
            replica,
        }
    }

    pub fn priority(&self) -> Priority {
        self.kind.priority()
    }

    /// The workload without the replica, as messages about its manifest name it:
    /// `service shop/cache`.
    pub fn workload(&self) -> impl fmt::Display + '_ {
        struct Workload<'a>(&'a InstanceKey);
        impl fmt::Display for Workload<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let key = self.0;
                write!(f, "{} {}/{}", key.kind, key.app, key.workload)
            }
        }
        Workload(self)
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.workload(), self.replica)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_messages_name_them() {
        let key = InstanceKey::new(Kind::Service, "shop", "cache", 2);
        assert_eq!(key.to_string(), "service shop/cache#2");
        assert_eq!(key.workload().to_string(), "service shop/cache");
    }

    #[test]
    fn services_and_jobs_outrank_functions_which_outrank_caches() {
        assert_eq!(Kind::Job.priority(), Priority::Service);
        assert!(Priority::Service > Priority::Function);
        assert!(Priority::Function > Priority::Cache);
    }
}
