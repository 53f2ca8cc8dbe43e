//! The control API: REST and JSON under `/v1`, served by axum on a unix socket.
//!
//! Step in the flow: the CLI's managed verbs (`deploy -f`, `apps`) talk to it; it turns each
//! route into one call on the [`Daemon`] and each [`DaemonError`] into a status and a JSON
//! body `{"error": "...", "hint": "..."}`. It owns the socket file too: mode 0600, its
//! directory 0700 when skiff creates it, a stale file from a dead daemon replaced, a live one
//! refused. It decides nothing about apps itself.

use crate::daemon::{Daemon, DaemonError, Deployed};
use crate::state::AppRecord;
use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;
use tokio::net::UnixListener;

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

/// The `/v1` routes.
pub fn routes(daemon: Arc<Daemon>) -> axum::Router {
    axum::Router::new()
        .route("/v1/info", get(info))
        .route("/v1/apps", get(list_apps))
        .route(
            "/v1/apps/{name}",
            get(get_app).put(put_app).delete(delete_app),
        )
        .fallback(not_found)
        .with_state(daemon)
}

/// Serves the control API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, routes(daemon))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A [`DaemonError`] as the API answers it.
struct Failure(DaemonError);

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
            DaemonError::RouteTaken { .. } => (
                StatusCode::CONFLICT,
                "routes are unique per host across apps; nothing was changed",
            ),
            DaemonError::NotFound { .. } => (StatusCode::NOT_FOUND, "list apps with `skiff apps`"),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "see the daemon's log (SKIFF_LOG=skiff=debug for more)",
            ),
        };
        error_response(status, &self.0.to_string(), hint)
    }
}

fn error_response(status: StatusCode, error: &str, hint: &str) -> Response {
    (status, Json(json!({ "error": error, "hint": hint }))).into_response()
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no such route in the control API",
        "the API is versioned under /v1; see design.md",
    )
}

async fn info() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION"), "api": "v1" }))
}

async fn list_apps(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, Failure> {
    let apps: Vec<Value> = daemon.apps()?.iter().map(summary).collect();
    Ok(Json(json!({ "apps": apps })))
}

async fn get_app(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, Failure> {
    let record = daemon.app(&name)?;
    let mut answer = summary(&record);
    answer["spec"] = record.spec.clone();
    answer["workloads"] = record
        .workloads
        .iter()
        .map(|w| json!({ "name": w.name, "kind": w.kind, "generation": w.generation }))
        .collect();
    answer["functions"] = json!(daemon.function_status(&name));
    Ok(Json(answer))
}

/// Where a manifest came from: the directory its relative paths start from, and its name
/// for messages.
#[derive(Debug, Deserialize)]
struct DeployQuery {
    /// Absolute directory relative `file =` and volume paths resolve against (default `/`).
    base: Option<PathBuf>,
    /// The manifest's name in error messages (default `skiff.toml`).
    file: Option<String>,
}

async fn put_app(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<DeployQuery>,
    manifest: String,
) -> Result<Json<Value>, Failure> {
    let base = query.base.unwrap_or_else(|| PathBuf::from("/"));
    if !base.is_absolute() {
        return Err(Failure(DaemonError::RelativeBase { base }));
    }
    let file = query.file.unwrap_or_else(|| "skiff.toml".to_string());
    let deployed = daemon.deploy(&name, &manifest, &base, &file).await?;
    Ok(Json(deployed_json(&deployed)))
}

fn deployed_json(deployed: &Deployed) -> Value {
    json!({
        "app": deployed.app,
        "generation": deployed.generation,
        "unchanged": deployed.diff.is_empty(),
        "diff": deployed.diff.workloads.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "not_run": deployed.not_run,
    })
}

async fn delete_app(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, Failure> {
    daemon.remove(&name).await?;
    Ok(Json(json!({ "removed": name })))
}

/// One app's line in `GET /v1/apps`.
fn summary(record: &AppRecord) -> Value {
    use crate::state::WorkloadKind;
    let count = |kind| record.workloads.iter().filter(|w| w.kind == kind).count();
    let updated = record
        .updated
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "name": record.name,
        "generation": record.generation,
        "functions": count(WorkloadKind::Function),
        "services": count(WorkloadKind::Service),
        "jobs": count(WorkloadKind::Job),
        "updated": updated,
    })
}
