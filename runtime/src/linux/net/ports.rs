//! Published ports (`-p HOSTPORT:CONTAINERPORT`): a userland TCP proxy, as docker-proxy is.
//!
//! A proxy, not DNAT, because it also serves connections to the host's loopback address, which
//! DNAT only reaches with `route_localnet` turned on. Every host port is bound before any accept
//! loop starts, so a port in use fails the whole publish up front. Each mapping serves at most
//! [`MAX_CONNECTIONS`] connections at once; the rest are closed on accept. The relaying itself
//! is [`super::relay`]'s. This module does not
//! decide the target address: the caller passes the container's.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{NetError, Result, relay};

/// Connections one mapping serves at once; further ones are closed as they are accepted.
pub const MAX_CONNECTIONS: usize = 1024;

/// A published port's relay: [`MAX_CONNECTIONS`], 10 s to reach the container, and an hour
/// of silence before a connection is dropped (long-lived quiet connections are normal here).
const LIMITS: relay::Limits = relay::Limits {
    connections: MAX_CONNECTIONS,
    connect: Duration::from_secs(10),
    idle: Duration::from_secs(3600),
};

/// One `-p` flag: TCP connections to `host_ip:host_port` go to the container's `container_port`.
/// Parses from `HOSTPORT:CONTAINERPORT` or `IP:HOSTPORT:CONTAINERPORT` (IPv6 in brackets), each
/// optionally followed by `/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on; `0.0.0.0` (every address) unless given.
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = SocketAddr::new(self.host_ip, self.host_port);
        write!(f, "{host}:{}", self.container_port)
    }
}

impl FromStr for PortMapping {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| NetError::InvalidPortMapping {
            mapping: s.to_string(),
            reason,
        };
        let spec = match s.rsplit_once('/') {
            None => s,
            Some((spec, "tcp")) => spec,
            Some((_, "udp")) => {
                return Err(NetError::UdpNotSupported {
                    mapping: s.to_string(),
                });
            }
            Some(_) => return Err(invalid("the protocol must be tcp")),
        };
        let (host, container_port) = spec
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected HOSTPORT:CONTAINERPORT"))?;
        let (host_ip, host_port) = match host.rsplit_once(':') {
            None => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), host),
            Some((ip, port)) => {
                let ip = ip
                    .strip_prefix('[')
                    .and_then(|ip| ip.strip_suffix(']'))
                    .unwrap_or(ip);
                let ip = ip
                    .parse()
                    .map_err(|_| invalid("the host address is not an IP address"))?;
                (ip, port)
            }
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
        Ok(Self {
            host_ip,
            host_port: port(host_port).ok_or_else(|| invalid("the host port must be 1-65535"))?,
            container_port: port(container_port)
                .ok_or_else(|| invalid("the container port must be 1-65535"))?,
        })
    }
}

/// The running proxy of a container's published ports; dropping it (or [`PortProxy::shutdown`])
/// closes the listeners and every proxied connection.
#[derive(Debug)]
pub struct PortProxy {
    listening: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl PortProxy {
    /// The host addresses listened on, in the order of the mappings.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.listening
    }

    /// Stops serving and returns once every listener and connection is closed.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds every mapping's host port, then proxies its connections to `target:container_port`.
/// Nothing is served unless every port could be bound.
pub async fn publish(mappings: &[PortMapping], target: IpAddr) -> Result<PortProxy> {
    let mut listeners = Vec::with_capacity(mappings.len());
    for mapping in mappings {
        let address = SocketAddr::new(mapping.host_ip, mapping.host_port);
        let listener = TcpListener::bind(address).await.map_err(|error| {
            if error.kind() == io::ErrorKind::AddrInUse {
                NetError::PortInUse { address }
            } else {
                NetError::Bind { address, error }
            }
        })?;
        let target = SocketAddr::new(target, mapping.container_port);
        listeners.push((listener, target));
    }
    let listening = listeners
        .iter()
        .map(|(listener, _)| listener.local_addr())
        .collect::<io::Result<Vec<_>>>()
        .map_err(|error| NetError::Bind {
            address: SocketAddr::new(target, 0),
            error,
        })?;
    let tasks = listeners
        .into_iter()
        .map(|(listener, target)| tokio::spawn(relay::serve(listener, target, LIMITS)))
        .collect();
    Ok(PortProxy { listening, tasks })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn mappings_parse() {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let cases = [
            ("8080:80", any, 8080, 80),
            ("8080:80/tcp", any, 8080, 80),
            (
                "127.0.0.1:8080:80",
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                8080,
                80,
            ),
            ("[::1]:8080:80", "::1".parse().unwrap(), 8080, 80),
        ];
        for (text, host_ip, host_port, container_port) in cases {
            let expected = PortMapping {
                host_ip,
                host_port,
                container_port,
            };
            assert_eq!(text.parse::<PortMapping>().unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn bad_mappings_are_rejected_with_the_mapping_named() {
        for bad in [
            "80",
            "0:80",
            "8080:0",
            "x:80",
            "8080:70000",
            "1.2.3:8080:80",
            "80:80/sctp",
        ] {
            let err = bad.parse::<PortMapping>().unwrap_err();
            assert!(
                matches!(err, NetError::InvalidPortMapping { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(bad), "{err}");
        }
        let err = "53:53/udp".parse::<PortMapping>().unwrap_err();
        assert!(err.to_string().contains("not supported yet"), "{err}");
    }

    /// A port that was free a moment ago (for `-p`, which cannot take port 0).
    pub(in crate::linux::net) fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }
}
