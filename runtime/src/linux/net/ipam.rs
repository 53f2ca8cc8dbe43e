//! Address management for the bridge: which address each container holds.
//!
//! A lease is a file `<state_dir>/leases/<ip>` holding the owning container's id, created with
//! `create_new`, so two skiff processes allocating at once never hand out the same address: the
//! filesystem decides. Releasing removes the file. Leases of containers that died without a
//! detach are reclaimed by [`release_stale`], which the caller drives because only it knows which
//! containers are alive. This module does not touch interfaces.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{NetError, Result};

/// An IPv4 network: its first address and prefix length, e.g. `10.89.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Subnet {
    /// The subnet of `address/prefix`; host bits of `address` must be zero and the prefix at most
    /// 30, so there is room for a gateway and at least one container.
    pub fn new(address: Ipv4Addr, prefix: u8) -> Result<Self> {
        let subnet = format!("{address}/{prefix}");
        if prefix > 30 {
            return Err(NetError::InvalidSubnet {
                subnet,
                reason: "the prefix must be at most /30 to leave room for a gateway and a container",
            });
        }
        if u32::from(address) & !mask(prefix) != 0 {
            return Err(NetError::InvalidSubnet {
                subnet,
                reason: "host bits are set; give the network address, e.g. 10.89.0.0/16",
            });
        }
        Ok(Self {
            network: address,
            prefix,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The bridge's own address: the first host address (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Addresses a container may hold: after the gateway, before the broadcast address.
    fn container_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 2;
        let broadcast = u32::from(self.network) | !mask(self.prefix);
        (first..broadcast).map(Ipv4Addr::from)
    }

    fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix) == u32::from(self.network)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| NetError::InvalidSubnet {
            subnet: s.to_string(),
            reason,
        };
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected ADDRESS/PREFIX, e.g. 10.89.0.0/16"))?;
        let address = address
            .parse()
            .map_err(|_| invalid("the address is not an IPv4 address"))?;
        let prefix = prefix
            .parse()
            .map_err(|_| invalid("the prefix is not a number"))?;
        Self::new(address, prefix)
    }
}

impl TryFrom<String> for Ipv4Subnet {
    type Error = NetError;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Ipv4Subnet> for String {
    fn from(subnet: Ipv4Subnet) -> Self {
        subnet.to_string()
    }
}

fn leases_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("leases")
}

fn lease_err(path: &Path) -> impl FnOnce(io::Error) -> NetError + '_ {
    move |error| NetError::Lease {
        path: path.to_path_buf(),
        error,
    }
}

/// Takes the lowest free address of `subnet` for `container_id`.
pub(super) fn allocate(
    state_dir: &Path,
    subnet: &Ipv4Subnet,
    container_id: &str,
) -> Result<Ipv4Addr> {
    let dir = leases_dir(state_dir);
    fs::create_dir_all(&dir).map_err(lease_err(&dir))?;
    for address in subnet.container_addresses() {
        let path = dir.join(address.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(container_id.as_bytes())
                    .map_err(lease_err(&path))?;
                return Ok(address);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(lease_err(&path)(e)),
        }
    }
    Err(NetError::SubnetExhausted { subnet: *subnet })
}

/// Every lease in `subnet`: its address and owner.
pub(super) fn leases(state_dir: &Path, subnet: &Ipv4Subnet) -> Result<Vec<(Ipv4Addr, String)>> {
    let dir = leases_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(lease_err(&dir)(e)),
    };
    let mut leases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(lease_err(&dir))?;
        let Some(address) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<Ipv4Addr>().ok())
            .filter(|address| subnet.contains(*address))
        else {
            continue;
        };
        // A lease being written right now reads empty: no owner yet.
        let owner = fs::read_to_string(entry.path()).unwrap_or_default();
        leases.push((address, owner.trim().to_string()));
    }
    leases.sort();
    Ok(leases)
}

/// The address `owner` already holds in `subnet`, or a fresh one leased to it: an owner
/// that keeps its name (a service address, `service:APP/NAME`) keeps its address across
/// daemon restarts, because the lease file outlives the process.
pub(super) fn lease_for(state_dir: &Path, subnet: &Ipv4Subnet, owner: &str) -> Result<Ipv4Addr> {
    let held = leases(state_dir, subnet)?;
    match held.into_iter().find(|(_, held)| held == owner) {
        Some((address, _)) => Ok(address),
        None => allocate(state_dir, subnet, owner),
    }
}

/// Gives `address` back; releasing an address that is not leased is not an error.
pub(super) fn release(state_dir: &Path, address: Ipv4Addr) -> Result<()> {
    let path = leases_dir(state_dir).join(address.to_string());
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(lease_err(&path)(e)),
        _ => Ok(()),
    }
}

/// Releases every lease in `subnet` whose owner `alive` says is gone, and returns the addresses
/// released. Call it when the caller knows the full set of live containers, e.g. at daemon start.
pub(super) fn release_stale(
    state_dir: &Path,
    subnet: &Ipv4Subnet,
    alive: impl Fn(&str) -> bool,
) -> Result<Vec<Ipv4Addr>> {
    let dir = leases_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(lease_err(&dir)(e)),
    };
    let mut released = Vec::new();
    for entry in entries {
        let entry = entry.map_err(lease_err(&dir))?;
        let Some(address) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<Ipv4Addr>().ok())
            .filter(|address| subnet.contains(*address))
        else {
            continue;
        };
        let path = entry.path();
        let owner = fs::read_to_string(&path).map_err(lease_err(&path))?;
        if !alive(owner.trim()) {
            release(state_dir, address)?;
            released.push(address);
        }
    }
    released.sort();
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parses_and_names_its_gateway() {
        let subnet: Ipv4Subnet = "10.89.0.0/16".parse().unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 89, 0, 1));
        assert_eq!(subnet.to_string(), "10.89.0.0/16");
        let last = subnet.container_addresses().last().unwrap();
        assert_eq!(last, Ipv4Addr::new(10, 89, 255, 254));
    }

    #[test]
    fn subnet_rejects_bad_input() {
        for bad in [
            "10.89.0.0",
            "10.89.0.1/16",
            "10.89.0.0/31",
            "x/16",
            "10.89.0.0/x",
        ] {
            let err = bad.parse::<Ipv4Subnet>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn leases_are_unique_released_and_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let subnet: Ipv4Subnet = "10.1.0.0/30".parse().unwrap();
        let a = allocate(dir.path(), &subnet, "a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 1, 0, 2));
        let err = allocate(dir.path(), &subnet, "b").unwrap_err();
        assert!(matches!(err, NetError::SubnetExhausted { .. }), "{err}");

        let released = release_stale(dir.path(), &subnet, |id| id != "a").unwrap();
        assert_eq!(released, vec![a]);
        assert_eq!(allocate(dir.path(), &subnet, "b").unwrap(), a);
        release(dir.path(), a).unwrap();
        release(dir.path(), a).unwrap();
        assert_eq!(allocate(dir.path(), &subnet, "c").unwrap(), a);
    }

    #[test]
    fn an_owner_keeps_its_lease_and_others_get_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let subnet: Ipv4Subnet = "10.1.0.0/29".parse().unwrap();
        let cache = lease_for(dir.path(), &subnet, "service:shop/cache").unwrap();
        let web = lease_for(dir.path(), &subnet, "service:shop/web").unwrap();
        assert_ne!(cache, web);
        assert_eq!(
            lease_for(dir.path(), &subnet, "service:shop/cache").unwrap(),
            cache
        );
        release(dir.path(), cache).unwrap();
        assert_eq!(
            lease_for(dir.path(), &subnet, "service:shop/web").unwrap(),
            web
        );
    }
}
