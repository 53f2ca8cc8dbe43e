//! The `skiff` command line: one file per verb, each a `…Command` with `execute`.

mod apps;
mod client;
mod deploy;
mod events;
mod images;
mod init;
mod inspect;
mod load;
mod login;
mod logs;
mod monitor;
pub mod oci;
mod progress;
mod ps;
mod pull;
mod push;
mod registry_options;
mod rm;
mod rmi;
mod run;
mod save;
mod scale;
mod serve;
mod stop;
mod system;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// skiff runs WebAssembly and Linux containers on one node.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every verb takes.
#[derive(Debug, clap::Args)]
pub struct GlobalOptions {
    /// Where skiff keeps compiled code, images and state
    /// [default: /var/lib/skiff as root, $XDG_DATA_HOME/skiff otherwise]
    #[arg(long, global = true, env = "SKIFF_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a WebAssembly program (a file or an image) or serve it over HTTP with --listen; or
    /// run a Linux image as a container
    Run(Box<run::RunCommand>),
    /// List containers
    Ps(ps::PsCommand),
    /// Stop containers: SIGTERM, then SIGKILL after --time
    Stop(stop::StopCommand),
    /// Remove stopped containers
    Rm(rm::RmCommand),
    /// Show a container's output
    Logs(logs::LogsCommand),
    /// Pull an image from a registry
    Pull(pull::PullCommand),
    /// Push a .wasm file as a Wasm OCI artifact, or a stored image, to a registry
    Push(push::PushCommand),
    /// List stored images
    Images(images::ImagesCommand),
    /// Remove images
    Rmi(rmi::RmiCommand),
    /// Show an image's manifest and config as JSON
    Inspect(inspect::InspectCommand),
    /// Load images from a tar archive (OCI layout or docker save)
    Load(load::LoadCommand),
    /// Save images to a tar archive in OCI layout
    Save(save::SaveCommand),
    /// Log in to a registry (credentials are checked, then stored for skiff)
    Login(login::LoginCommand),
    /// Forget a registry's credentials
    Logout(login::LogoutCommand),
    /// The daemon: serve deployed apps, with the control API on a unix socket (and on TCP
    /// with a bearer token)
    Serve(serve::ServeCommand),
    /// Deploy an app manifest (skiff.toml) to the daemon and print what changed
    Deploy(deploy::DeployCommand),
    /// List the daemon's apps; `apps rm NAME` removes one
    Apps(apps::AppsCommand),
    /// Set a function's warm minimum or a service's replicas: `scale APP/WORKLOAD=N`
    Scale(scale::ScaleCommand),
    /// Show the daemon's events (deployed, scaled, removed, ...); --follow streams new ones
    Events(events::EventsCommand),
    /// Manage skiff's own data: `system prune`
    System(system::SystemCommand),
    /// The OCI runtime command line (create, start, state, kill, delete), as runc's
    Oci(Box<oci::OciCommand>),
    /// The first process of a container (run by skiff itself)
    #[command(hide = true)]
    Init(init::InitCommand),
    /// Waits for a detached container (run by `skiff run -d`)
    #[command(hide = true, name = "container-monitor")]
    ContainerMonitor(monitor::MonitorCommand),
}

impl Cli {
    /// The log filter when `SKIFF_LOG` is unset: warnings only, so a guest's output stands
    /// alone; `serve` adds its access log (target `skiff::access`).
    pub fn default_log_filter(&self) -> String {
        if self.is_daemon() {
            format!("warn,{}=info", crate::gateway::ACCESS_LOG)
        } else {
            "warn".to_string()
        }
    }

    /// Whether this is the long-running daemon (`serve`).
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }

    /// Runs the chosen verb; returns the process exit code.
    pub fn execute(self) -> anyhow::Result<i32> {
        let data_dir = self.global.data_dir.unwrap_or_else(default_data_dir);
        match self.command {
            Command::Run(run) => run.execute(&data_dir),
            Command::Pull(pull) => pull.execute(&data_dir),
            Command::Push(push) => push.execute(&data_dir),
            Command::Images(images) => images.execute(&data_dir),
            Command::Rmi(rmi) => rmi.execute(&data_dir),
            Command::Inspect(inspect) => inspect.execute(&data_dir),
            Command::Load(load) => load.execute(&data_dir),
            Command::Save(save) => save.execute(&data_dir),
            Command::Login(login) => login.execute(&data_dir),
            Command::Logout(logout) => logout.execute(&data_dir),
            Command::Serve(serve) => serve.execute(&data_dir),
            Command::Deploy(deploy) => deploy.execute(),
            Command::Apps(apps) => apps.execute(),
            Command::Scale(scale) => scale.execute(),
            Command::Events(events) => events.execute(),
            Command::System(system) => system.execute(&data_dir),
            Command::Ps(ps) => ps.execute(&data_dir),
            Command::Stop(stop) => stop.execute(&data_dir),
            Command::Rm(rm) => rm.execute(&data_dir),
            Command::Logs(logs) => logs.execute(&data_dir),
            Command::Init(init) => init.execute(),
            Command::Oci(oci) => oci.execute(),
            Command::ContainerMonitor(monitor) => monitor.execute(&data_dir),
        }
    }
}

/// Runs a future to completion on a fresh runtime: the CLI's verbs are one-shot.
fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the async runtime")
        .block_on(future)
}

/// `/var/lib/skiff` as root; the XDG data dir otherwise. The one place the CLI reads the
/// environment for a default (clap reads `SKIFF_*` for flags).
fn default_data_dir() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/skiff");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("skiff")
}

fn nix_is_root() -> bool {
    // /proc/self is owned by the effective uid; avoids an unsafe libc call for one check.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
