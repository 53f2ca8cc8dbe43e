//! Workloads of one app reach each other's services by name (`http://cache:6379`).
//!
//! Each Linux service of an app that has `ports` gets a service address: an address of the
//! bridge's subnet leased under `service:APP/NAME` (so it stays the same across restarts,
//! rollouts and scaling), put on the bridge, where the daemon listens on each of the service's
//! ports and relays a connection to one healthy instance, picked from the same set the gateway
//! routes to ([`ServiceTarget::pick_for_port`]; a connection counts in flight, so draining an
//! instance waits for it, up to the drain limit). The names then reach the workloads:
//!
//! - Linux containers of the app get `ADDRESS NAME` and `ADDRESS NAME.APP` in `/etc/hosts`
//!   ([`ServiceNames::lease`] returns those lines before any container starts);
//! - Wasm functions' outbound requests to `http://NAME:PORT` connect to `ADDRESS:PORT`
//!   ([`ServiceNames::resolver`]; the allow-list still decides first).
//!
//! A service of another app is not named. Removing the service or the app releases its
//! address. A container's `/etc/hosts` is written when it starts: a service added to the
//! app later is named only in containers started after it, while a service's
//! address, and so every existing line, never changes. This module does not decide health
//! or run instances: the supervisors do.

use super::proxy::{Counted, ServiceTarget};
use crate::linux::hosts::ExtraHost;
use crate::linux::net::{self, BridgeConfig, relay};
use crate::wasm::outbound::Names;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A service address's relay, per port: 1024 connections at once, 5 s to reach an instance,
/// and 10 minutes of silence before a connection is dropped.
const LIMITS: relay::Limits = relay::Limits {
    connections: 1024,
    connect: Duration::from_secs(5),
    idle: Duration::from_secs(600),
};

/// The service addresses of every app this daemon runs.
pub struct ServiceNames {
    bridge: BridgeConfig,
    named: Mutex<BTreeMap<(String, String), Named>>,
}

/// One service's address and what listens on it.
struct Named {
    address: Ipv4Addr,
    ports: Vec<u16>,
    /// One relay per port once served; aborted when dropped.
    listening: Vec<Listening>,
}

struct Listening(JoinHandle<()>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A service's instances, on one port, for the relay.
struct Instances {
    target: Arc<ServiceTarget>,
    port: u16,
}

impl relay::Upstream for Instances {
    type Guard = Counted;

    fn pick(&self) -> Option<(SocketAddr, Counted)> {
        self.target.pick_for_port(self.port)
    }
}

impl ServiceNames {
    /// Service addresses on the daemon's bridge, leased under `<data>/linux/net`, as its
    /// containers' are.
    pub fn new(data_dir: &Path) -> Self {
        ServiceNames {
            bridge: BridgeConfig::new(data_dir.join("linux/net")),
            named: Mutex::new(BTreeMap::new()),
        }
    }

    /// Leases an address for each of `app`'s `services` (name and ports; Linux services with
    /// ports only) that has none, and releases those of the app's services not listed.
    /// Returns the `/etc/hosts` lines for the app's containers. Blocking (lease files,
    /// netlink); a service whose address cannot be had is logged and left unnamed.
    pub fn lease(&self, app: &str, services: &[(String, Vec<u16>)]) -> Vec<ExtraHost> {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<(String, String)> = (named.keys())
            .filter(|(a, name)| a == app && !services.iter().any(|(s, _)| s == name))
            .cloned()
            .collect();
        for key in gone {
            if let Some(gone) = named.remove(&key) {
                self.release(&key.0, &key.1, gone);
            }
        }
        for (name, ports) in services {
            let key = (app.to_string(), name.clone());
            if let Some(known) = named.get_mut(&key) {
                if &known.ports != ports {
                    // Listened on again, with the new ports, when served.
                    known.ports = ports.clone();
                    known.listening.clear();
                }
                continue;
            }
            let owner = net::service_owner(app, name);
            match net::lease_service_address(&self.bridge, &owner) {
                Ok(address) => {
                    let ports = ports.clone();
                    let listening = Vec::new();
                    named.insert(
                        key,
                        Named {
                            address,
                            ports,
                            listening,
                        },
                    );
                }
                Err(error) => {
                    tracing::error!(%error, app, service = name, "service address not leased; the service is not reachable by name");
                }
            }
        }
        hosts(app, &named)
    }

    /// Puts the service's address on the bridge and relays its ports to `target`'s healthy
    /// instances, unless that is done already. Blocking (netlink); call it within tokio's
    /// runtime (the relays are tasks).
    pub fn serve(&self, app: &str, service: &str, target: &Arc<ServiceTarget>) {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        let Some(named) = named.get_mut(&(app.to_string(), service.to_string())) else {
            return;
        };
        if !named.listening.is_empty() {
            return;
        }
        if let Err(error) = net::add_service_address(&self.bridge, named.address) {
            tracing::error!(%error, app, service, "service address not added to the bridge");
            return;
        }
        for &port in &named.ports {
            let address = SocketAddr::new(IpAddr::V4(named.address), port);
            let listener = std::net::TcpListener::bind(address)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std);
            let listener = match listener {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, %address, app, service, "service address not listened on");
                    continue;
                }
            };
            let upstream = Instances {
                target: Arc::clone(target),
                port,
            };
            let relay = tokio::spawn(relay::serve(listener, upstream, LIMITS));
            named.listening.push(Listening(relay));
            tracing::info!(%address, app, service, "service reachable by name");
        }
    }

    /// Releases the service addresses leased to services this daemon does not name (their
    /// app or service went while no daemon ran to release them). Call it once every app was
    /// restored. Blocking (netlink).
    pub fn release_unnamed(&self) {
        let leased = match net::service_addresses(&self.bridge) {
            Ok(leased) => leased,
            Err(error) => {
                tracing::warn!(%error, "service addresses not listed");
                return;
            }
        };
        let named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        for (address, owner) in leased {
            if named.values().any(|n| n.address == address) {
                continue;
            }
            match net::remove_service_address(&self.bridge, address) {
                Ok(()) => tracing::info!(%address, owner, "unused service address released"),
                Err(error) => tracing::warn!(%error, owner, "unused service address not released"),
            }
        }
    }

    /// Releases every service address of `app` (it was removed). Blocking (netlink).
    pub fn remove_app(&self, app: &str) {
        self.lease(app, &[]);
    }

    /// The address `host` names for a workload of `app`: one of its services, as `NAME` or
    /// `NAME.APP` (case-insensitive).
    pub fn resolve(&self, app: &str, host: &str) -> Option<IpAddr> {
        let named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        let host = host.to_ascii_lowercase();
        let name = match host.strip_suffix(&format!(".{app}")) {
            Some(name) => name,
            None => &host,
        };
        (named.get(&(app.to_string(), name.to_string()))).map(|n| IpAddr::V4(n.address))
    }

    /// What a Wasm workload of `app` resolves its outbound hosts with.
    pub fn resolver(self: &Arc<Self>, app: &str) -> Arc<dyn Names> {
        Arc::new(AppNames {
            app: app.to_string(),
            names: Arc::clone(self),
        })
    }

    fn release(&self, app: &str, service: &str, named: Named) {
        drop(named.listening);
        match net::remove_service_address(&self.bridge, named.address) {
            Ok(()) => {
                tracing::info!(address = %named.address, app, service, "service address released")
            }
            Err(error) => tracing::warn!(%error, app, service, "service address not released"),
        }
    }
}

/// Each service of `app` by its name and by `NAME.APP`, sorted by name.
fn hosts(app: &str, named: &BTreeMap<(String, String), Named>) -> Vec<ExtraHost> {
    (named.iter())
        .filter(|((a, _), _)| a == app)
        .flat_map(|((_, name), named)| {
            let address = IpAddr::V4(named.address);
            [name.clone(), format!("{name}.{app}")].map(|name| ExtraHost { name, address })
        })
        .collect()
}

/// One app's view of the service names.
struct AppNames {
    app: String,
    names: Arc<ServiceNames>,
}

impl std::fmt::Debug for AppNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the service names of app {}", self.app)
    }
}

impl Names for AppNames {
    fn resolve(&self, host: &str) -> Option<IpAddr> {
        self.names.resolve(&self.app, host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[(&str, &str, [u8; 4])]) -> ServiceNames {
        let names = ServiceNames::new(Path::new("/nonexistent"));
        let mut named = names.named.lock().unwrap();
        for (app, service, address) in entries {
            let key = (app.to_string(), service.to_string());
            let address = Ipv4Addr::from(*address);
            named.insert(
                key,
                Named {
                    address,
                    ports: vec![6379],
                    listening: Vec::new(),
                },
            );
        }
        drop(named);
        names
    }

    #[test]
    fn an_apps_hosts_name_each_service_twice_and_no_other_apps() {
        let names = names(&[
            ("shop", "cache", [10, 89, 0, 5]),
            ("shop", "db", [10, 89, 0, 6]),
            ("blog", "cache", [10, 89, 0, 7]),
        ]);
        let named = names.named.lock().unwrap();
        let lines: Vec<String> = hosts("shop", &named)
            .iter()
            .map(|h| h.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "cache:10.89.0.5",
                "cache.shop:10.89.0.5",
                "db:10.89.0.6",
                "db.shop:10.89.0.6"
            ]
        );
    }

    #[test]
    fn names_resolve_within_their_app_only() {
        let names = names(&[
            ("shop", "cache", [10, 89, 0, 5]),
            ("blog", "db", [10, 89, 0, 7]),
        ]);
        let cache = Some(IpAddr::from([10, 89, 0, 5]));
        assert_eq!(names.resolve("shop", "cache"), cache);
        assert_eq!(names.resolve("shop", "Cache.Shop"), cache);
        assert_eq!(names.resolve("shop", "db"), None, "blog's db is not shop's");
        assert_eq!(names.resolve("shop", "db.blog"), None);
        assert_eq!(names.resolve("shop", "example.com"), None);
        assert_eq!(names.resolve("blog", "cache"), None);
    }
}
