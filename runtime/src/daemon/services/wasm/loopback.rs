//! One loopback address per Wasm service instance that listens: instances run inside the
//! daemon and share its network, so two replicas (or two services) asking for the same port
//! would collide on one address. Each instance gets its own in 127.77.0.0/16 (all of 127/8
//! reaches the host's loopback on Linux, nothing to configure), is told it as `HOST` (and its
//! first port as `PORT`), may bind nothing else, and is reached there by health checks and
//! the gateway. A lease is held by its replica's slot, so a restart keeps its address.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

/// The addresses in use, by their offset in 127.77.0.0/16.
#[derive(Debug, Default)]
pub struct LoopbackPool {
    used: Mutex<BTreeSet<u16>>,
}

/// One address, given back when dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<LoopbackPool>,
    offset: u16,
    pub address: Ipv4Addr,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut used = self.pool.used.lock().unwrap_or_else(|e| e.into_inner());
        used.remove(&self.offset);
    }
}

impl LoopbackPool {
    /// The lowest free address; `None` when all 65,534 are leased.
    pub fn lease(self: &Arc<Self>) -> Option<Lease> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let offset = (1..=u16::MAX - 1).find(|n| !used.contains(n))?;
        used.insert(offset);
        let [hi, lo] = offset.to_be_bytes();
        Some(Lease {
            pool: Arc::clone(self),
            offset,
            address: Ipv4Addr::new(127, 77, hi, lo),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_loopback_addresses_and_come_back_when_dropped() {
        let pool = Arc::new(LoopbackPool::default());
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_eq!(a.address, Ipv4Addr::new(127, 77, 0, 1));
        assert_eq!(b.address, Ipv4Addr::new(127, 77, 0, 2));
        assert!(a.address.is_loopback());
        drop(a);
        assert_eq!(pool.lease().unwrap().address, Ipv4Addr::new(127, 77, 0, 1));
    }
}
