//! Container networking: `--net none`, `--net host`, or `--net bridge` (the default), and the
//! ports a bridged container publishes.
//!
//! Runs on the host side once the container's init process exists in its new network namespace,
//! which every call names by that process's pid. In flow order:
//!
//! - [`loopback_up`]: `lo` up inside the namespace (`none` and `bridge`; `host` shares the host's).
//! - [`attach`]: the bridge (`skiff0`, gateway `10.89.0.1/16`), an address lease (`ipam`), a
//!   veth pair whose peer becomes the container's `eth0` (`bridge`), and outbound NAT (`nat`).
//! - [`publish`]: a userland TCP proxy from host ports to the container's address (`ports`).
//! - [`detach`]: the host veth deleted and the lease released.
//!
//! Besides containers, a service of an app gets an address of its own on the bridge, where
//! the daemon relays its ports to a healthy instance ([`service`], [`relay`]).
//!
//! Links, addresses and routes are configured through netlink, never by running `ip`; only the
//! one masquerade rule runs `nft`. This module does not create the namespace (the process setup
//! does) and does not remember attachments: the caller saves the [`Attachment`] with the
//! container's state.

mod bridge;
mod ipam;
mod nat;
mod ports;
pub mod relay;
mod service;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, instrument};

pub use ipam::Ipv4Subnet;
pub use ports::{MAX_CONNECTIONS, PortMapping, PortProxy, publish};
pub use service::{
    add_service_address, lease_service_address, remove_service_address, service_addresses,
    service_owner,
};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("unknown network mode {mode:?}; use none, host or bridge")]
    UnknownMode { mode: String },

    #[error("subnet {subnet} is invalid: {reason}")]
    InvalidSubnet {
        subnet: String,
        reason: &'static str,
    },

    #[error(
        "subnet {subnet} has no free address left; remove stopped containers or use a larger subnet"
    )]
    SubnetExhausted { subnet: Ipv4Subnet },

    #[error("address lease {path}: {error}; check that the state directory is writable")]
    Lease { path: PathBuf, error: io::Error },

    #[error(
        "port mapping {mapping:?} is invalid: {reason}; use HOSTPORT:CONTAINERPORT or \
         IP:HOSTPORT:CONTAINERPORT"
    )]
    InvalidPortMapping {
        mapping: String,
        reason: &'static str,
    },

    #[error("port mapping {mapping:?}: udp is not supported yet; publish tcp ports only")]
    UdpNotSupported { mapping: String },

    #[error("-p has no effect with --net host; the container uses the host's ports")]
    PortsWithHostNetwork,

    #[error("-p has no effect with --net none; use --net bridge to publish ports")]
    PortsWithoutNetwork,

    #[error(
        "host port {} on {} is already in use; choose another host port or stop what listens there",
        address.port(),
        address.ip()
    )]
    PortInUse { address: SocketAddr },

    #[error("cannot listen on {address}: {error}")]
    Bind {
        address: SocketAddr,
        error: io::Error,
    },

    #[error("network namespace of process {pid}: {error}; check that the container is running")]
    Namespace { pid: i32, error: io::Error },

    #[error("cannot open a netlink socket: {error}; bridge networking needs root (CAP_NET_ADMIN)")]
    NetlinkSocket { error: io::Error },

    #[error("{action} {interface}: {error}; bridge networking needs root (CAP_NET_ADMIN)")]
    Netlink {
        action: &'static str,
        interface: String,
        error: rtnetlink::Error,
    },

    #[error(
        "interface {interface} vanished during setup; retry, and check nothing else manages it"
    )]
    InterfaceNotFound { interface: String },

    #[error(
        "cannot enable ip forwarding: {error}; run `sysctl -w net.ipv4.ip_forward=1` or run skiff \
         as root"
    )]
    Forwarding { error: io::Error },

    #[error("cannot run nft for outbound nat: {error}; install nftables")]
    NatCommand { error: io::Error },

    #[error(
        "nft could not add the outbound nat rule ({status}): {stderr}; check nf_tables support"
    )]
    NatRule { status: ExitStatus, stderr: String },
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// How a container is networked (`--net`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own namespace with only `lo`.
    None,
    /// The host's namespace: no isolation, no published ports.
    Host,
    /// Its own namespace, an address on the skiff bridge, outbound NAT and published ports.
    #[default]
    Bridge,
}

impl NetworkMode {
    /// Checks that `-p` means something in this mode, before anything is bound or started.
    pub fn check_ports(self, mappings: &[PortMapping]) -> Result<()> {
        match self {
            _ if mappings.is_empty() => Ok(()),
            Self::Bridge => Ok(()),
            Self::Host => Err(NetError::PortsWithHostNetwork),
            Self::None => Err(NetError::PortsWithoutNetwork),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Host => "host",
            Self::Bridge => "bridge",
        })
    }
}

impl FromStr for NetworkMode {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "host" => Ok(Self::Host),
            "bridge" => Ok(Self::Bridge),
            _ => Err(NetError::UnknownMode {
                mode: s.to_string(),
            }),
        }
    }
}

/// The bridge containers attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The bridge interface's name; `skiff0` by default.
    pub name: String,
    /// The containers' subnet; `10.89.0.0/16` by default. The bridge takes the first address
    /// (`10.89.0.1`) as the containers' gateway.
    pub subnet: Ipv4Subnet,
    /// Where address leases live (`<state_dir>/leases/<ip>`), e.g. `<data>/linux/net`.
    pub state_dir: PathBuf,
}

impl BridgeConfig {
    /// Bridge `skiff0` on `10.89.0.0/16`, with leases under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            name: "skiff0".to_string(),
            subnet: Ipv4Subnet::new(Ipv4Addr::new(10, 89, 0, 0), 16)
                .expect("the default subnet is valid"),
            state_dir: state_dir.into(),
        }
    }
}

/// What [`attach`] set up for one container; saved with the container's state for [`detach`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The container's address on `eth0`.
    pub address: Ipv4Addr,
    /// The bridge's address, the container's default route.
    pub gateway: Ipv4Addr,
    /// The host end of the container's veth pair, plugged into the bridge.
    pub host_veth: String,
}

/// Brings `lo` up in the network namespace of process `netns_pid`.
#[instrument(skip_all, fields(netns_pid), err)]
pub async fn loopback_up(netns_pid: i32) -> Result<()> {
    let netns = bridge::open_netns(netns_pid)?;
    bridge::in_netns(netns, netns_pid, |handle| async move {
        bridge::loopback_up(&handle).await
    })
    .await
}

/// Veth names from the container id: `sk` + 8 hex digits on the host, `skc` + the same inside
/// (renamed `eth0` there). Both fit the kernel's 15-character limit.
fn veth_names(container_id: &str) -> (String, String) {
    let hash = hex::encode(&Sha256::digest(container_id.as_bytes())[..4]);
    (format!("sk{hash}"), format!("skc{hash}"))
}

/// Connects the container whose init is `netns_pid` to the bridge: ensures the bridge and NAT
/// exist, leases an address, and gives the container an `eth0` with that address, a default
/// route through the gateway, and `lo` up. On failure nothing is left behind.
#[instrument(skip_all, fields(bridge = %config.name, container_id, netns_pid), err)]
pub async fn attach(
    config: &BridgeConfig,
    container_id: &str,
    netns_pid: i32,
) -> Result<Attachment> {
    let netns = bridge::open_netns(netns_pid)?;
    let handle = bridge::connect()?;
    let bridge_index = bridge::ensure_bridge(&handle, &config.name, &config.subnet).await?;
    nat::enable(&config.name, &config.subnet)?;

    let address = ipam::allocate(&config.state_dir, &config.subnet, container_id)?;
    let (host_veth, peer) = veth_names(container_id);
    let attachment = Attachment {
        address,
        gateway: config.subnet.gateway(),
        host_veth,
    };
    let plugged = async {
        bridge::create_veth(&handle, &attachment.host_veth, &peer, bridge_index, &netns).await?;
        let subnet = config.subnet;
        bridge::in_netns(netns, netns_pid, move |handle| async move {
            bridge::configure_container(&handle, &peer, address, &subnet).await
        })
        .await
    };
    if let Err(e) = plugged.await {
        let _ = bridge::delete_link(&handle, &attachment.host_veth).await;
        let _ = ipam::release(&config.state_dir, address);
        return Err(e);
    }
    info!(%address, host_veth = %attachment.host_veth, "container attached to the bridge");
    Ok(attachment)
}

/// Undoes [`attach`]: deletes the host veth (its peer goes with it, and dies with the namespace
/// anyway) and releases the address. Detaching twice is fine.
#[instrument(skip_all, fields(address = %attachment.address, host_veth = %attachment.host_veth), err)]
pub async fn detach(config: &BridgeConfig, attachment: &Attachment) -> Result<()> {
    let handle = bridge::connect()?;
    bridge::delete_link(&handle, &attachment.host_veth).await?;
    ipam::release(&config.state_dir, attachment.address)?;
    info!("container detached from the bridge");
    Ok(())
}

/// Releases the address leases of containers `alive` says are gone (e.g. after a crash, at
/// daemon start) and returns the addresses freed.
pub fn release_stale(config: &BridgeConfig, alive: impl Fn(&str) -> bool) -> Result<Vec<Ipv4Addr>> {
    ipam::release_stale(&config.state_dir, &config.subnet, alive)
}

/// Real-kernel tests (root). Each runs in a private network namespace of its own, so the bridge,
/// NAT rule and ports it sets up never touch the host's network; "containers" are `unshare -n`
/// children with fresh namespaces.
#[cfg(test)]
mod tests;
