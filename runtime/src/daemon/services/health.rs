//! Health checks of a service's instance: a TCP connect, an HTTP GET answering 2xx or 3xx,
//! or a command run inside the container's namespaces (`nsenter`) exiting 0. Each check is
//! bounded by the spec's `timeout`; a check that cannot even start counts as failed.

use crate::app::HealthSpec;
use crate::state::{InstanceState, InstanceUpdate};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Where a check reaches the instance.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub address: IpAddr,
    /// Pid 1 of the container, for `exec`.
    pub pid: i32,
}

/// Runs one check; `Err` says why it failed, for the event log.
pub async fn check(spec: &HealthSpec, target: Target) -> Result<(), String> {
    let run = async {
        if let Some(port) = spec.tcp {
            tcp(SocketAddr::new(target.address, port)).await
        } else if let Some(path) = &spec.http {
            let port = spec.port.ok_or("the http check names no port")?;
            http(SocketAddr::new(target.address, port), path).await
        } else if let Some(command) = &spec.exec {
            exec(target.pid, command.clone(), spec.timeout).await
        } else {
            Ok(())
        }
    };
    match tokio::time::timeout(spec.timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", spec.timeout)),
    }
}

async fn tcp(address: SocketAddr) -> Result<(), String> {
    tokio::net::TcpStream::connect(address)
        .await
        .map(drop)
        .map_err(|e| format!("tcp connect to {address}: {e}"))
}

async fn http(address: SocketAddr, path: &str) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect to {address}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http to {address}: {e}"))?;
    let driver = tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, address.to_string())
        .header(http::header::USER_AGENT, "skiff-health-check")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("bad health path {path:?}: {e}"))?;
    let result = sender.send_request(request).await;
    let outcome = match result {
        Ok(response) => {
            let status = response.status();
            // Read (and drop) the body so the connection ends cleanly; bounded by the timeout.
            let _ = response.into_body().collect().await;
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("GET {path} answered {status}"))
            }
        }
        Err(e) => Err(format!("GET {path}: {e}")),
    };
    driver.abort();
    outcome
}

/// `nsenter --target PID --mount --uts --ipc --net --pid -- COMMAND`, killed at `timeout`.
/// nsenter forks to enter the pid namespace, so it runs in a process group of its own and the
/// whole group is killed: the command too, not just nsenter.
async fn exec(pid: i32, command: Vec<String>, timeout: Duration) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("nsenter")
            .arg("--target")
            .arg(pid.to_string())
            .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--"])
            .args(&command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run nsenter: {e}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("{command:?} exited with {status}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) | Err(_) => {
                    let group = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait();
                    return Err(format!("{command:?} did not finish within {timeout:?}"));
                }
            }
        }
    })
    .await
    .map_err(|e| format!("the check's task failed: {e}"))?
}

/// How often an instance that has not passed a check yet is checked (at most its
/// `interval`), so it is routed as soon as it answers.
pub const STARTING_INTERVAL: Duration = Duration::from_millis(100);

/// Records a check's `outcome` for an instance started at `started`; returns the wait until
/// its next check and its new health, when it changed. Until the first pass checks come every
/// [`STARTING_INTERVAL`] and their failures count only after `interval × retries` (a process
/// takes a moment to listen); then at the spec's pace.
pub fn after_check(
    tracker: &mut Tracker,
    spec: &HealthSpec,
    started: Instant,
    outcome: &Result<(), String>,
) -> (Duration, Option<Health>) {
    let starting = tracker.health == Health::Starting;
    let grace = spec.interval.saturating_mul(spec.retries.max(1));
    let in_grace = starting && started.elapsed() < grace;
    let next = match starting && (in_grace || outcome.is_ok()) {
        true => spec.interval.min(STARTING_INTERVAL),
        false => spec.interval,
    };
    if in_grace && outcome.is_err() {
        return (next, None);
    }
    (next, tracker.record(outcome.is_ok(), spec.retries))
}

/// Tells a change of an instance's health: its row's reason and an event.
pub fn tell(
    cx: &super::Context,
    (app, workload, id): (&str, &str, &str),
    changed: Option<Health>,
    outcome: Result<(), String>,
) {
    let (kind, reason, message) = match (changed, outcome) {
        (Some(Health::Healthy), _) => ("healthy", "healthy".to_string(), None),
        (Some(Health::Unhealthy), Err(why)) => {
            let reason = format!("unhealthy: {why}");
            ("unhealthy", reason.clone(), Some(reason))
        }
        _ => return,
    };
    let update = InstanceUpdate::to(InstanceState::Running).reason(&reason);
    if let Err(error) = cx.store.update_instance_state(id, &update) {
        tracing::warn!(%error, instance = id, "instance state not recorded");
    }
    let message = message.unwrap_or_else(|| "health check passed".into());
    cx.event(app, workload, Some(id), kind, message);
}

/// Whether an instance counts as healthy, from its checks so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Running, no check passed yet.
    Starting,
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

/// An instance's check history: failures in a row decide when it turns unhealthy.
#[derive(Debug, Clone, Copy)]
pub struct Tracker {
    pub health: Health,
    failures: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            health: Health::Starting,
            failures: 0,
        }
    }
}

impl Tracker {
    /// Records one check's outcome; the new health when it changed.
    pub fn record(&mut self, passed: bool, retries: u32) -> Option<Health> {
        let before = self.health;
        if passed {
            self.failures = 0;
            self.health = Health::Healthy;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= retries.max(1) {
                self.health = Health::Unhealthy;
            }
        }
        (self.health != before).then_some(self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_after_retries_failures_in_a_row_healthy_after_one_pass() {
        let mut tracker = Tracker::default();
        assert_eq!(tracker.record(false, 3), None);
        assert_eq!(tracker.record(false, 3), None);
        assert_eq!(tracker.record(false, 3), Some(Health::Unhealthy));
        assert_eq!(tracker.record(false, 3), None);
        assert_eq!(tracker.record(true, 3), Some(Health::Healthy));
        assert_eq!(tracker.record(false, 3), None, "one failure is not enough");
        assert_eq!(tracker.health, Health::Healthy);
    }

    #[test]
    fn a_fresh_instance_is_checked_quickly_and_its_early_failures_do_not_count() {
        let spec: HealthSpec = toml::from_str("tcp = 80\ninterval = \"2s\"\nretries = 3").unwrap();
        let failed = Err("refused".to_string());
        let mut tracker = Tracker::default();
        let now = Instant::now();
        let (next, changed) = after_check(&mut tracker, &spec, now, &failed);
        assert_eq!((next, changed), (STARTING_INTERVAL, None), "in the grace");
        let (next, changed) = after_check(&mut tracker, &spec, now, &Ok(()));
        assert_eq!((next, changed), (STARTING_INTERVAL, Some(Health::Healthy)));
        let (next, _) = after_check(&mut tracker, &spec, now, &Ok(()));
        assert_eq!(next, spec.interval, "healthy: the spec's pace");

        let mut late = Tracker::default();
        let long_ago = Instant::now() - Duration::from_secs(7);
        let (next, changed) = after_check(&mut late, &spec, long_ago, &failed);
        assert_eq!(
            (next, changed),
            (spec.interval, None),
            "past the grace, it counts"
        );
        assert_eq!(late.health, Health::Starting);
    }
}
