//! `skiff serve`: the daemon. Binds the control socket, the gateway and the optional TCP
//! control and metrics listeners, prints their stable lines, serves every stored app again,
//! then serves until SIGINT or SIGTERM.
//!
//! Stable lines, in this order: `control api on unix:PATH`, `gateway on http://ADDR`, then
//! with `--api` `control api on http://ADDR` (and `token in PATH` when skiff wrote a
//! new token), then with `--metrics` `metrics on http://ADDR`.

use super::client::SocketOption;
use crate::api::{self, ApiState, auth::Token};
use crate::daemon::services::controller::Tuning;
use crate::daemon::{Daemon, DaemonConfig, EVENTS_KEPT};
use crate::gateway::{self, GatewayConfig};
use crate::sched::capacity::Reserve;
use crate::units::ByteSize;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

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

    /// Also serve the control API on TCP at ADDR; every request there needs the bearer token
    #[arg(long = "api", visible_alias = "control-tcp", value_name = "ADDR")]
    control_tcp: Option<SocketAddr>,

    /// The TCP control API's bearer token: a file of mode 0600 or stricter
    /// [default: generated into DATA_DIR/run/token]
    #[arg(long, value_name = "PATH", requires = "control_tcp")]
    token_file: Option<PathBuf>,

    /// Serve Prometheus' /metrics alone on ADDR, without a token, for scrapers
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Time a gateway client has to send a request head; slower ones are cut off
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    header_timeout: Duration,

    /// Time a gateway connection may stay open without a request; then it is closed
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    idle_timeout: Duration,

    /// Largest request body the gateway takes, in bytes; larger ones get 413
    #[arg(long, value_name = "BYTES", default_value_t = 10 << 20)]
    max_body_bytes: u64,

    /// Largest request head (request line and headers) the gateway takes, in bytes (HTTP/1.1
    /// buffers at least 8192)
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 10)]
    max_header_bytes: usize,

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

    /// Time between CPU samples of autoscaled services (`cpu_target`)
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = positive_duration)]
    autoscale_interval: Duration,

    /// How long an autoscaled service's load must stay lower before its replicas come down
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    autoscale_window: Duration,
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
        // A bad token file stops the start before anything is bound or opened.
        let token = match (&self.control_tcp, &self.token_file) {
            (None, _) => None,
            (Some(_), Some(file)) => Some((Token::load(file)?, None)),
            (Some(_), None) => {
                let path = data_dir.join("run/token");
                let (token, new) = Token::load_or_generate(&path)?;
                Some((token, new.then_some(path)))
            }
        };
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
            autoscale: Tuning {
                interval: self.autoscale_interval,
                window: self.autoscale_window,
            },
        })?);
        daemon.set_container_runner(Box::new(super::run::CliRunner));
        let socket = self.socket.path();
        let control = api::bind(&socket)?;
        let gateway_listener = listen(self.gateway, "--gateway").await?;
        let control_tcp = match self.control_tcp {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    tracing::warn!(
                        %addr,
                        "the TCP control API is plain HTTP: its token crosses the network in \
                         the clear; keep it on loopback or put TLS in front of it"
                    );
                }
                Some(listen(addr, "--api").await?)
            }
            None => None,
        };
        let metrics = match self.metrics {
            Some(addr) => Some(listen(addr, "--metrics").await?),
            None => None,
        };
        println!("control api on unix:{}", socket.display());
        println!("gateway on http://{}", gateway_listener.local_addr()?);
        if let Some(listener) = &control_tcp {
            println!("control api on http://{}", listener.local_addr()?);
        }
        if let Some((_, Some(path))) = &token {
            println!("token in {}", path.display());
        }
        if let Some(listener) = &metrics {
            println!("metrics on http://{}", listener.local_addr()?);
        }

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let state = ApiState {
            daemon: Arc::clone(&daemon),
            stopping: stopped.clone(),
        };
        let mut servers = tokio::task::JoinSet::new();
        let routes = api::routes(state);
        servers.spawn(api::serve(
            control,
            routes.clone(),
            wait_for(stopped.clone()),
        ));
        if let (Some(listener), Some((token, _))) = (control_tcp, token) {
            let guarded = routes.layer(axum::middleware::from_fn_with_state(
                token,
                api::auth::require,
            ));
            servers.spawn(api::tcp::serve(
                listener,
                guarded,
                api::tcp::TcpLimits::default(),
                wait_for(stopped.clone()),
            ));
        }
        if let Some(listener) = metrics {
            servers.spawn(api::metrics::serve(listener, wait_for(stopped.clone())));
        }
        // Connections wait in the backlog until every stored app is routed again, so no
        // client of a deployed app sees a 404 after a restart.
        let restoring = Arc::clone(&daemon);
        let served = tokio::task::spawn_blocking(move || restoring.restore()).await??;
        tracing::info!(functions = served, "serving");
        daemon.start();
        tokio::spawn(trim_events(Arc::clone(&daemon)));
        let config = GatewayConfig {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes,
            ..GatewayConfig::default()
        };
        let gateway = gateway::serve(gateway_listener, daemon.router(), config, wait_for(stopped));
        let signals = async {
            shutdown_signal().await;
            let _ = stop.send(true);
        };
        let (result, ()) = tokio::join!(gateway, signals);
        result.context("the gateway failed")?;
        while let Some(served) = servers.join_next().await {
            served?.context("the control api failed")?;
        }
        let _ = std::fs::remove_file(&socket);
        Ok(0)
    }
}

/// Keeps the event log at [`EVENTS_KEPT`]: at start, then every ten minutes.
async fn trim_events(daemon: Arc<Daemon>) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        let trimming = Arc::clone(&daemon);
        match tokio::task::spawn_blocking(move || trimming.trim_events(EVENTS_KEPT)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(trimmed)) => tracing::debug!(trimmed, "old events trimmed"),
            Ok(Err(error)) => tracing::warn!(%error, "old events not trimmed"),
            Err(error) => tracing::warn!(%error, "old events not trimmed"),
        }
    }
}

/// A duration above zero, as `10s` or `1m`.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("must be above zero, e.g. 10s".to_string()),
        Err(e) => Err(format!("{e}; write e.g. 10s, 500ms or 1m")),
    }
}

async fn listen(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}; pick a free address with {flag}"))
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
