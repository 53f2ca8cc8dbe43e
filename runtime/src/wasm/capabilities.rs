//! What a guest may touch, deny by default.
//!
//! A guest built from `Capabilities::default()` has no arguments, no environment, no
//! filesystem, no sockets and closed stdin; its stdout and stderr are discarded. Each grant is
//! explicit: a preopened host directory (read-only when asked, confined by cap-std so `..`,
//! absolute paths and symlinks cannot leave it), an environment variable, an argument, the
//! host's stdio for a foreground command, a sink capturing stdout and stderr for the daemon.
//! This is the one place ambient authority is taken.

use super::WasmError;
use super::output::Fd;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// A host directory granted to the guest at `guest` (`-v HOST:GUEST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// Why a volume or env flag could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("invalid volume `{0}`; write HOST:GUEST or HOST:GUEST:ro (or wasmtime's HOST::GUEST)")]
    Volume(String),
    #[error("invalid environment variable `{0}`; write NAME=VALUE")]
    Env(String),
}

impl FromStr for Preopen {
    type Err = GrantError;

    /// Reads Docker's `HOST:GUEST[:ro|:rw]` and wasmtime's `HOST::GUEST`.
    fn from_str(text: &str) -> Result<Self, GrantError> {
        let bad = || GrantError::Volume(text.to_string());
        let (host, guest, read_only) = if let Some((host, guest)) = text.split_once("::") {
            (host, guest, false)
        } else {
            let mut parts = text.split(':');
            let host = parts.next().ok_or_else(bad)?;
            let guest = parts.next().ok_or_else(bad)?;
            let read_only = match parts.next() {
                None | Some("rw") => false,
                Some("ro") => true,
                Some(_) => return Err(bad()),
            };
            if parts.next().is_some() {
                return Err(bad());
            }
            (host, guest, read_only)
        };
        if host.is_empty() || guest.is_empty() {
            return Err(bad());
        }
        Ok(Preopen {
            host: host.into(),
            guest: guest.to_string(),
            read_only,
        })
    }
}

/// Parses `NAME=VALUE`.
pub fn parse_env(text: &str) -> Result<(String, String), GrantError> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(GrantError::Env(text.to_string())),
    }
}

/// Reads an env file as Docker does: `NAME=VALUE` per line, `#` comments and blank lines skipped.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, GrantError> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(parse_env)
        .collect()
}

/// Where the guest's standard streams go.
#[derive(Debug, Clone, Default)]
pub enum Stdio {
    /// stdin closed, stdout and stderr discarded (the default).
    #[default]
    Closed,
    /// The host process's own stdin, stdout and stderr: a foreground `skiff run`.
    Inherit,
    /// stdin closed, stdout and stderr to the host's: a served function's log.
    Log,
    /// stdin closed, stdout and stderr into a sink: the daemon's log of one instance.
    Capture(super::output::Capture),
}

/// Whether a guest granted `ports` on `host` may use `address` so: binding and listening on
/// that address and one of its ports, and accepting whoever connects there (`address` is then
/// the client's); nothing else (no outbound connections, no other address: a port bound on
/// the daemon's network is reached through the gateway, not around it).
fn may_listen(
    host: IpAddr,
    ports: &[u16],
    address: std::net::SocketAddr,
    using: SocketAddrUse,
) -> bool {
    match using {
        SocketAddrUse::TcpBind | SocketAddrUse::TcpListen => {
            address.ip() == host && ports.contains(&address.port())
        }
        SocketAddrUse::TcpAccept => true,
        _ => false,
    }
}

/// The grants of one workload. Empty by default: see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    pub stdio: Stdio,
    /// Where outbound HTTP may go; empty (the default) denies it all.
    pub outbound: super::outbound::OutboundPolicy,
    /// TCP ports it may listen on (a Wasm service's `ports`), on the address `listen_on`;
    /// empty (the default) grants no socket at all.
    pub listen: Vec<u16>,
    /// The one address `listen` is granted on: the instance's own loopback address.
    pub listen_on: Option<IpAddr>,
}

impl Capabilities {
    /// Checks every preopen before anything starts, so a bad volume is reported up front.
    pub fn validate(&self) -> Result<(), WasmError> {
        for preopen in &self.preopens {
            let reason = match std::fs::metadata(&preopen.host) {
                Ok(meta) if meta.is_dir() => continue,
                Ok(_) => "it is not a directory; mount a directory".to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    "no such directory; create it or fix the path".to_string()
                }
                Err(e) => e.to_string(),
            };
            return Err(WasmError::Preopen {
                host: preopen.host.clone(),
                guest: preopen.guest.clone(),
                reason,
            });
        }
        Ok(())
    }

    /// A WASI context builder holding exactly these grants.
    pub(crate) fn wasi_builder(&self) -> Result<WasiCtxBuilder, WasmError> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(&self.args)
            .envs(&self.env)
            .allow_tcp(!self.listen.is_empty() && self.listen_on.is_some())
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let (false, Some(host)) = (self.listen.is_empty(), self.listen_on) {
            let ports = self.listen.clone();
            builder.socket_addr_check(move |address, using| {
                let allowed = may_listen(host, &ports, address, using);
                Box::pin(async move { allowed })
            });
        }
        match &self.stdio {
            Stdio::Closed => {}
            Stdio::Inherit => {
                builder.inherit_stdio();
            }
            Stdio::Log => {
                builder.inherit_stdout().inherit_stderr();
            }
            Stdio::Capture(capture) => {
                (builder.stdout(capture.stream(Fd::Stdout))).stderr(capture.stream(Fd::Stderr));
            }
        }
        for preopen in &self.preopens {
            let perms = if preopen.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&preopen.host, &preopen.guest, perms)
                .map_err(|e| WasmError::Preopen {
                    host: preopen.host.clone(),
                    guest: preopen.guest.clone(),
                    reason: format!("{e:#}"),
                })?;
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_binds_only_its_ports_on_its_own_address_and_connects_nowhere() {
        let at = |text: &str| text.parse::<std::net::SocketAddr>().unwrap();
        let own: IpAddr = "127.77.0.1".parse().unwrap();
        let (ports, bind) = ([8080], SocketAddrUse::TcpBind);
        assert!(may_listen(own, &ports, at("127.77.0.1:8080"), bind));
        let listen = SocketAddrUse::TcpListen;
        assert!(may_listen(own, &ports, at("127.77.0.1:8080"), listen));
        let refused = [
            ("0.0.0.0:8080", "every interface"),
            ("127.0.0.1:8080", "another instance's loopback address"),
            ("127.77.0.1:22", "another port"),
        ];
        for (address, what) in refused {
            assert!(!may_listen(own, &ports, at(address), bind), "{what}");
        }
        let client = SocketAddrUse::TcpAccept;
        assert!(may_listen(own, &ports, at("127.0.0.1:50000"), client));
        let out = SocketAddrUse::TcpConnect;
        assert!(
            !may_listen(own, &ports, at("127.77.0.1:8080"), out),
            "no outbound"
        );
        assert!(!may_listen(own, &[], at("127.77.0.1:8080"), bind));
    }

    #[test]
    fn volumes_in_docker_and_wasmtime_spelling() {
        let docker: Preopen = "/srv/data:/data:ro".parse().unwrap();
        assert_eq!(
            docker,
            Preopen {
                host: "/srv/data".into(),
                guest: "/data".into(),
                read_only: true
            }
        );
        let rw: Preopen = "./x:/x".parse().unwrap();
        assert!(!rw.read_only);
        let wasmtime: Preopen = "/srv/data::/data".parse().unwrap();
        assert_eq!(wasmtime.guest, "/data");
    }

    #[test]
    fn bad_volumes_say_how_to_write_one() {
        for text in ["/only-host", ":/data", "/a:", "/a:/b:rx", "/a:/b:ro:extra"] {
            let err = text.parse::<Preopen>().unwrap_err();
            assert!(err.to_string().contains("HOST:GUEST"), "{text}: {err}");
        }
    }

    #[test]
    fn env_pairs_and_files() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("NOVALUE").is_err());
        let file = "# comment\nA=1\n\n  B=two  \n";
        assert_eq!(
            parse_env_file(file).unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "two".into())]
        );
    }

    #[test]
    fn missing_preopen_is_reported_before_start() {
        let caps = Capabilities {
            preopens: vec!["/definitely/not/here:/data".parse().unwrap()],
            ..Default::default()
        };
        let err = caps.validate().unwrap_err().to_string();
        assert!(
            err.contains("/definitely/not/here") && err.contains("no such directory"),
            "{err}"
        );
    }
}
