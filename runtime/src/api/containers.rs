//! `/v1/containers`: `skiff run -d` through the daemon, admitted through the node's ledger.

use super::error_response;
use crate::daemon::Daemon;
use crate::daemon::containers::RunRequest;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// The body of `POST /v1/containers`: `skiff run`'s arguments (with `-d`) and the client's
/// working directory, which relative paths in them start from.
#[derive(Debug, Deserialize)]
pub(super) struct RunBody {
    args: Vec<String>,
    cwd: PathBuf,
}

pub(super) async fn run(State(daemon): State<Arc<Daemon>>, body: String) -> Response {
    let body: RunBody = match serde_json::from_str(&body) {
        Ok(body) => body,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("the body is not {{\"args\": [...], \"cwd\": \"/dir\"}}: {error}"),
                "send skiff run's arguments as JSON; nothing was started",
            );
        }
    };
    if !body.cwd.is_absolute() {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!("cwd {} must be absolute", body.cwd.display()),
            "send the client's working directory; nothing was started",
        );
    }
    let request = RunRequest {
        args: body.args,
        cwd: body.cwd,
    };
    let started = tokio::task::spawn_blocking(move || daemon.run_container(&request)).await;
    match started {
        Ok(Ok(id)) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Ok(Err(refused)) => error_response(
            StatusCode::from_u16(refused.status).unwrap_or(StatusCode::BAD_REQUEST),
            &refused.message,
            "nothing was started",
        ),
        Err(error) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the start failed: {error}"),
            "see the daemon's log",
        ),
    }
}
