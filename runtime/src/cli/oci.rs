//! `skiff oci ...`: the OCI runtime command line (runc's and crun's), so containerd, podman
//! and conformance suites can drive skiff's Linux executor. Installed as a link named
//! `skiff-oci`, skiff takes these verbs directly (`skiff-oci create ...`), as runtimes are
//! called.

use crate::linux::bundle::{DEFAULT_ROOT, Runtime};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Parser)]
#[command(
    name = "skiff-oci",
    version,
    about = "skiff's OCI runtime command line"
)]
pub struct OciCommand {
    /// Where container state lives
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_ROOT)]
    root: PathBuf,

    /// Write errors here too (callers such as conmon read it)
    #[arg(long, global = true, value_name = "FILE")]
    log: Option<PathBuf>,

    /// Format of --log: text or json
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    log_format: String,

    /// Accepted for runc compatibility; skiff manages cgroupfs paths either way
    #[arg(long, global = true)]
    systemd_cgroup: bool,

    /// Accepted for runc compatibility
    #[arg(long, global = true)]
    debug: bool,

    #[command(subcommand)]
    verb: OciVerb,
}

#[derive(Debug, clap::Subcommand)]
enum OciVerb {
    /// Create a container from a bundle; its process waits for `start`
    Create {
        /// The bundle directory (config.json and the root filesystem)
        #[arg(short, long, value_name = "DIR", default_value = ".")]
        bundle: PathBuf,
        /// Write pid 1's pid here
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// A terminal is not supported yet; given, create fails with a clear error
        #[arg(long, value_name = "SOCKET")]
        console_socket: Option<PathBuf>,
        /// Accepted for runc compatibility (skiff always uses pivot_root)
        #[arg(long)]
        no_pivot: bool,
        /// Accepted for runc compatibility
        #[arg(long)]
        no_new_keyring: bool,
        id: String,
    },
    /// Run the created container's process
    Start { id: String },
    /// Create, start, wait for and delete a container; exits with its code
    Run {
        /// The bundle directory (config.json and the root filesystem)
        #[arg(short, long, value_name = "DIR", default_value = ".")]
        bundle: PathBuf,
        /// Write pid 1's pid here
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        id: String,
    },
    /// Print the container's state as runtime-spec JSON
    State { id: String },
    /// Send a signal to the container's process [default: TERM]
    Kill {
        /// Signal every process of the container (SIGKILL only)
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Delete a stopped container (with --force, kill it first)
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
}

impl OciCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let runtime = Runtime::new(self.root.clone());
        let result: anyhow::Result<()> = match &self.verb {
            OciVerb::Create {
                bundle,
                pid_file,
                console_socket,
                id,
                ..
            } => {
                if console_socket.is_some() {
                    Err(anyhow::anyhow!(
                        "a terminal (--console-socket) is not supported yet; run without -t"
                    ))
                } else {
                    runtime
                        .create(id, bundle, pid_file.as_deref())
                        .map(drop)
                        .map_err(Into::into)
                }
            }
            OciVerb::Start { id } => runtime.start(id).map_err(Into::into),
            OciVerb::Run {
                bundle,
                pid_file,
                id,
            } => match runtime.run(id, bundle, pid_file.as_deref()) {
                Ok(code) => return Ok(code),
                Err(e) => Err(e.into()),
            },
            OciVerb::State { id } => runtime.state(id).map_err(Into::into).and_then(|state| {
                println!("{}", serde_json::to_string_pretty(&state)?);
                Ok(())
            }),
            OciVerb::Kill { all, id, signal } => runtime.kill(id, signal, *all).map_err(Into::into),
            OciVerb::Delete { force, id } => runtime.delete(id, *force).map_err(Into::into),
        };
        match result {
            Ok(()) => Ok(0),
            Err(e) => {
                self.log_error(&format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// Callers like conmon show the runtime's error from its log file.
    fn log_error(&self, message: &str) {
        let Some(path) = &self.log else { return };
        let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        else {
            return;
        };
        let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let line = if self.log_format == "json" {
            serde_json::json!({"level": "error", "msg": message, "time": time}).to_string()
        } else {
            format!("{time} error: {message}")
        };
        let _ = writeln!(file, "{line}");
    }
}
