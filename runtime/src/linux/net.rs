//! (being written) Container networking. Placeholder API for the launcher.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("networking is not implemented yet")]
pub struct NetError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    None,
    Host,
    Bridge,
}

impl std::str::FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "host" => Ok(Self::Host),
            "bridge" => Ok(Self::Bridge),
            other => Err(format!("unknown network {other}; use none, host or bridge")),
        }
    }
}

pub struct BridgeConfig {
    pub state_dir: PathBuf,
}

impl BridgeConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        Self { state_dir }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub host_veth: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

impl std::str::FromStr for PortMapping {
    type Err = String;
    fn from_str(_s: &str) -> Result<Self, String> {
        Err("not yet".into())
    }
}

pub struct PortProxy;

impl PortProxy {
    pub fn shutdown(self) {}
}

pub async fn loopback_up(_pid: i32) -> Result<(), NetError> {
    Err(NetError)
}
pub async fn attach(_c: &BridgeConfig, _id: &str, _pid: i32) -> Result<Attachment, NetError> {
    Err(NetError)
}
pub async fn detach(_c: &BridgeConfig, _a: &Attachment) -> Result<(), NetError> {
    Err(NetError)
}
pub async fn publish(_m: &[PortMapping], _t: IpAddr) -> Result<PortProxy, NetError> {
    Err(NetError)
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Host => "host",
            Self::Bridge => "bridge",
        })
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.host_ip, self.host_port, self.container_port
        )
    }
}
