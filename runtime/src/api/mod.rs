//! The control API: REST and JSON under `/v1` plus `/metrics`, served by axum on a unix socket
//! and, with a bearer token, on TCP.
//!
//! Step in the flow: the CLI's managed verbs (`deploy -f`, `apps`, `scale`, `events`) talk to
//! it, and so do its container verbs (`run -d`, `ps`, `logs`, `stop`, `rm`) when it runs; it
//! turns each route into one call on the [`Daemon`] and each [`DaemonError`] into a status and
//! a JSON body `{"error": "...", "hint": "..."}`. It owns the socket file too: mode 0600, its
//! directory 0700 when skiff creates it, a stale file from a dead daemon replaced, a live one
//! refused. It decides nothing about apps itself. Each request gets one access-log line.
//!
//! By concept: [`apps`] (deploy, list, remove, scale), [`containers`] (the CLI's container
//! verbs), [`events`] (the log and its live stream), [`logs`] (instances and the merged logs
//! of a workload), [`metrics`] (Prometheus text), [`auth`]
//! (the TCP listener's bearer token), [`tcp`] (the TCP listener's connection limits).

mod apps;
pub mod auth;
mod containers;
mod events;
mod logs;
pub mod metrics;
pub mod tcp;

use crate::daemon::{Daemon, DaemonError};
use axum::Json;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::{Value, json};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::watch;

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("another skiff serve is running on {path}; stop it, or pick another --socket")]
    AlreadyRunning { path: PathBuf },

    #[error("{path} exists and is not a socket; remove it, or pick another --socket")]
    NotASocket { path: PathBuf },

    #[error("cannot listen on unix:{path}: {error}; check the directory's permissions")]
    Bind {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Binds the control socket at `path`, replacing a stale one; mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let bind_error = |error| ApiError::Bind {
        path: path.to_path_buf(),
        error,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(bind_error)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ApiError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ApiError::AlreadyRunning {
                    path: path.to_path_buf(),
                });
            }
            tracing::info!(path = %path.display(), "replacing a stale control socket");
            std::fs::remove_file(path).map_err(bind_error)?;
        }
        Err(_) => {}
    }
    // Created 0600 from the start: the umask covers the window between bind and chmod.
    let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(previous);
    let listener = listener.map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    Ok(listener)
}

/// What the handlers share: the daemon, and whether it is stopping (so a `follow` stream ends
/// and graceful shutdown does not wait for it forever).
#[derive(Clone)]
pub struct ApiState {
    pub daemon: Arc<Daemon>,
    pub stopping: watch::Receiver<bool>,
}

impl FromRef<ApiState> for Arc<Daemon> {
    fn from_ref(state: &ApiState) -> Self {
        Arc::clone(&state.daemon)
    }
}

/// The `/v1` routes and `/metrics`.
pub fn routes(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/v1/info", get(info))
        .route(
            "/v1/containers",
            get(containers::list).post(containers::run),
        )
        .route("/v1/containers/{id}", delete(containers::remove))
        .route("/v1/containers/{id}/stop", post(containers::stop))
        .route("/v1/containers/{id}/logs", get(containers::logs))
        .route("/v1/apps", get(apps::list))
        .route("/v1/workloads", get(apps::workloads))
        .route(
            "/v1/apps/{name}",
            get(apps::get).put(apps::put).delete(apps::delete),
        )
        .route(
            "/v1/apps/{name}/workloads/{workload}/scale",
            put(apps::scale).post(apps::scale),
        )
        .route("/v1/events", get(events::list))
        .route("/v1/instances", get(logs::instances))
        .route("/v1/logs/{app}/{workload}", get(logs::workload))
        .route("/metrics", get(metrics::render))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// One line per control request at info, on the gateway's access-log target, so an operator
/// (and a test) sees what the CLI asked of the daemon. A streamed answer is logged when it
/// starts.
async fn access_log(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    tracing::info!(
        target: crate::gateway::ACCESS_LOG,
        api = "control",
        %method,
        path,
        status = response.status().as_u16(),
        "control request"
    );
    response
}

/// Serves the control API on `listener` (the unix socket; TCP goes through [`tcp::serve`])
/// until `shutdown` resolves.
pub async fn serve<L>(
    listener: L,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A [`DaemonError`] as the API answers it.
pub(crate) struct Failure(pub(crate) DaemonError);

impl From<DaemonError> for Failure {
    fn from(error: DaemonError) -> Self {
        Self(error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, hint) = match &self.0 {
            DaemonError::Manifest(_)
            | DaemonError::NameMismatch { .. }
            | DaemonError::RelativeBase { .. } => (
                StatusCode::BAD_REQUEST,
                "fix the manifest and deploy again; nothing was changed",
            ),
            DaemonError::Function { .. } | DaemonError::Image { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "fix the function (its code, image or volumes) and deploy again; nothing was changed",
            ),
            DaemonError::Workload(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "get the image or fix the workload, and deploy again; nothing was changed",
            ),
            DaemonError::TooLarge { .. } | DaemonError::NeverFits { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "it can never fit this node; nothing was changed",
            ),
            DaemonError::RouteTaken { .. } => (
                StatusCode::CONFLICT,
                "routes are unique per host across apps; nothing was changed",
            ),
            DaemonError::NotFound { .. } | DaemonError::WorkloadNotFound { .. } => (
                StatusCode::NOT_FOUND,
                "list apps with `skiff apps`; nothing was changed",
            ),
            DaemonError::NotScalable { .. } | DaemonError::ScaleAboveMax { .. } => {
                (StatusCode::BAD_REQUEST, "nothing was changed")
            }
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "see the daemon's log (SKIFF_LOG=skiff=debug for more)",
            ),
        };
        error_response(status, &self.0.to_string(), hint)
    }
}

pub(crate) fn error_response(status: StatusCode, error: &str, hint: &str) -> Response {
    (status, Json(json!({ "error": error, "hint": hint }))).into_response()
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no such route in the control API",
        "the API is versioned under /v1; see design.md",
    )
}

/// Version, and the data dir: a CLI sends containers only to the daemon of its own data dir.
async fn info(axum::extract::State(daemon): axum::extract::State<Arc<Daemon>>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "api": "v1",
        "data_dir": daemon.data_dir(),
    }))
}
