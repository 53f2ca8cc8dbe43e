//! The `skiff` binary: parse, set up tracing, dispatch to `cli`.

use clap::Parser;
use skiff::cli::Cli;
use skiff::wasm::WasmError;
use tracing_subscriber::EnvFilter;

fn main() {
    // Installed as `skiff-oci`, skiff is an OCI runtime and takes runc's verbs directly.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let as_runtime = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|name| name == "skiff-oci");
    let cli = if as_runtime { None } else { Some(Cli::parse()) };
    // `SKIFF_LOG` takes `RUST_LOG` syntax; quiet by default so a guest's output stands alone.
    let default = cli
        .as_ref()
        .map_or_else(|| "warn".to_string(), Cli::default_log_filter);
    let filter = EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // The daemon logs every request: its lines queue for stderr rather than block on it.
    let queued = cli
        .as_ref()
        .filter(|cli| cli.is_daemon())
        .map(|_| skiff::logging::QueuedStderr::start());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match &queued {
        Some(queued) => subscriber.with_writer(queued.clone()).init(),
        None => subscriber.with_writer(std::io::stderr).init(),
    }
    let result = match cli {
        Some(cli) => cli.execute(),
        None => skiff::cli::oci::OciCommand::parse().execute(),
    };
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("skiff: error: {err:#}");
            err.downcast_ref::<WasmError>()
                .map_or(skiff::wasm::exit_code::SKIFF_ERROR, WasmError::exit_code)
        }
    };
    if let Some(queued) = queued {
        queued.flush(std::time::Duration::from_secs(1));
    }
    std::process::exit(code);
}
