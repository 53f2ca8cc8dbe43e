//! `skiff serve`: the daemon. Binds the control socket and the gateway, prints their stable
//! lines, serves every stored app again, then serves until SIGINT or SIGTERM.

use super::client::SocketOption;
use crate::daemon::{Daemon, DaemonConfig};
use crate::gateway::{self, GatewayConfig};
use crate::sched::capacity::Reserve;
use crate::units::ByteSize;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct ServeCommand {
    #[command(flatten)]
    socket: SocketOption,

    /// Address of the HTTP gateway that routes to deployed functions
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    gateway: SocketAddr,

    /// Requests that may wait for a busy function's slot, per function; one more gets 503
    /// with Retry-After. 0 refuses at once
    #[arg(long, value_name = "N", default_value_t = 100)]
    function_queue: usize,

    /// CPU kept back from workloads for the host, in CPUs (`0.5`) or millicores (`500m`)
    #[arg(long, value_name = "CPU", default_value = "100m", value_parser = parse_cpu)]
    reserve_cpu: u64,

    /// Memory kept back from workloads for the host, on top of 10% of the machine's
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    reserve_memory: ByteSize,

    /// Size the node as if the machine had this much memory (tests and benchmarks of
    /// memory pressure); default: the machine's MemTotal
    #[arg(long, value_name = "SIZE", hide = true)]
    capacity_memory: Option<ByteSize>,
}

/// `500m` or `0.5` (CPUs) as millicores.
fn parse_cpu(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a CPU amount; write `500m` or `0.5`");
    match text.strip_suffix('m') {
        Some(millis) => millis.parse().map_err(|_| bad()),
        None => {
            let cpus: f64 = text.parse().map_err(|_| bad())?;
            if !(0.0..=1e6).contains(&cpus) {
                return Err(bad());
            }
            Ok((cpus * 1000.0).round() as u64)
        }
    }
}

impl ServeCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        super::block_on(self.serve(data_dir))
    }

    async fn serve(self, data_dir: &Path) -> anyhow::Result<i32> {
        let daemon = Arc::new(Daemon::open(&DaemonConfig {
            data_dir: data_dir.to_path_buf(),
            function_queue: self.function_queue,
            pool_instances: 1000,
            reserve: Reserve {
                cpu_millis: self.reserve_cpu,
                memory_bytes: self.reserve_memory.0,
                ..Reserve::default()
            },
            capacity_memory: self.capacity_memory.map(|m| m.0),
        })?);
        let socket = self.socket.path();
        let control = crate::api::bind(&socket)?;
        let gateway_listener = tokio::net::TcpListener::bind(self.gateway)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}; pick a free address with --gateway",
                    self.gateway
                )
            })?;
        let gateway_addr = gateway_listener.local_addr()?;
        println!("control api on unix:{}", socket.display());
        println!("gateway on http://{gateway_addr}");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let api = tokio::spawn(crate::api::serve(
            control,
            Arc::clone(&daemon),
            wait_for(stopped.clone()),
        ));
        // Connections wait in the backlog until every stored app is routed again, so no
        // client of a deployed app sees a 404 after a restart.
        let restoring = Arc::clone(&daemon);
        let served = tokio::task::spawn_blocking(move || restoring.restore()).await??;
        tracing::info!(functions = served, "serving");
        daemon.start();
        let gateway = gateway::serve(
            gateway_listener,
            daemon.router(),
            GatewayConfig::default(),
            wait_for(stopped),
        );
        let signals = async {
            shutdown_signal().await;
            let _ = stop.send(true);
        };
        let (result, ()) = tokio::join!(gateway, signals);
        result.context("the gateway failed")?;
        api.await?.context("the control api failed")?;
        let _ = std::fs::remove_file(&socket);
        Ok(0)
    }
}

async fn wait_for(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cpu;

    #[test]
    fn cpu_amounts_read_as_millicores() {
        assert_eq!(parse_cpu("100m"), Ok(100));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        let error = parse_cpu("half").unwrap_err();
        assert!(error.contains("`half` is not a CPU amount"), "{error}");
        assert!(error.contains("write `500m` or `0.5`"), "{error}");
        assert!(parse_cpu("-1").is_err());
        assert!(parse_cpu("1.5m").is_err());
    }
}
