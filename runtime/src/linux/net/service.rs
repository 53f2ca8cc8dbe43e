//! Service addresses: an address of the bridge's subnet that no container holds, put on the
//! bridge itself, where the daemon listens for a service's ports (a node-local "ClusterIP").
//!
//! The address is leased like a container's ([`super::ipam`]) under an owner name that stays
//! the same across restarts (`service:APP/NAME`), so a service keeps its address for as long
//! as it exists. These calls block (netlink runs on a thread of its own with a small runtime),
//! so they work from async and blocking code alike; each takes milliseconds. Listening and
//! relaying are the caller's ([`super::relay`]).

use std::future::Future;
use std::net::Ipv4Addr;

use tracing::info;

use super::{BridgeConfig, NetError, Result, bridge, ipam};

/// What every service address's owner starts with; a container's is its id.
const OWNER_PREFIX: &str = "service:";

/// The owner name of `app`'s service `service`.
pub fn service_owner(app: &str, service: &str) -> String {
    format!("{OWNER_PREFIX}{app}/{service}")
}

/// The address `owner` ([`service_owner`]) holds, leased now if it holds none. Touches no
/// interface.
pub fn lease_service_address(config: &BridgeConfig, owner: &str) -> Result<Ipv4Addr> {
    ipam::lease_for(&config.state_dir, &config.subnet, owner)
}

/// Every service address leased (by any daemon of this state dir): its address and owner.
pub fn service_addresses(config: &BridgeConfig) -> Result<Vec<(Ipv4Addr, String)>> {
    let leases = ipam::leases(&config.state_dir, &config.subnet)?;
    Ok(leases
        .into_iter()
        .filter(|(_, owner)| owner.starts_with(OWNER_PREFIX))
        .collect())
}

/// Puts `address` on the bridge (creating the bridge if need be). Adding it twice is fine.
pub fn add_service_address(config: &BridgeConfig, address: Ipv4Addr) -> Result<()> {
    let config = config.clone();
    blocking(async move {
        let handle = bridge::connect()?;
        let index = bridge::ensure_bridge(&handle, &config.name, &config.subnet).await?;
        bridge::add_address(&handle, &config.name, index, address).await?;
        info!(%address, bridge = config.name, "service address added");
        Ok(())
    })
}

/// Takes `address` off the bridge and releases its lease. Removing it twice is fine.
pub fn remove_service_address(config: &BridgeConfig, address: Ipv4Addr) -> Result<()> {
    let bridge_name = config.name.clone();
    blocking(async move {
        let handle = bridge::connect()?;
        bridge::remove_address(&handle, &bridge_name, address).await
    })?;
    ipam::release(&config.state_dir, address)?;
    info!(%address, bridge = config.name, "service address removed");
    Ok(())
}

/// Runs `work` to completion on a thread of its own with a current-thread runtime: netlink
/// needs a runtime to drive its socket, and the caller may be inside one (which cannot block
/// on another) or on a plain thread.
fn blocking<T: Send + 'static>(
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    std::thread::Builder::new()
        .name("skiff-netlink".into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|error| NetError::NetlinkSocket { error })?
                .block_on(work)
        })
        .map_err(|error| NetError::NetlinkSocket { error })?
        .join()
        .unwrap_or_else(|_| {
            Err(NetError::NetlinkSocket {
                error: std::io::Error::other("the netlink thread panicked"),
            })
        })
}
