//! `/v1/containers`: the CLI's container verbs through the daemon. `POST` is `skiff run -d`,
//! admitted through the node's ledger; `GET` lists what `skiff ps` shows (`?all=true`: `-a`);
//! `GET {id}/logs` is `skiff logs` (`?follow=true`: `-f`); `POST {id}/stop` is `skiff stop`
//! (`?time=SECS`: `-t`); `DELETE {id}` is `skiff rm` (`?force=true`: `-f`).
//!
//! `{id}` is whatever the user typed: a name, an id or a unique id prefix. The answers are the
//! CLI's own: an instance of an app's workload is refused by stop and plain rm (409) with the
//! message the CLI gives alone, an unknown container is 404. The work itself is the daemon's
//! ([`ContainerHost`](crate::daemon::containers::ContainerHost)); this file only maps HTTP.

use super::error_response;
use crate::daemon::Daemon;
use crate::daemon::containers::RunRequest;
use crate::linux::container::ContainerError;
use crate::linux::stop::{MAX_GRACE, StopError};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod logs;

pub(super) use logs::{logs, stream};

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
        Err(error) => task_failed(error),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// Exited containers too (`ps -a`).
    #[serde(default)]
    all: bool,
}

/// `{"containers": [record, ...]}`, oldest first, as `skiff ps` lists them.
pub(super) async fn list(
    State(daemon): State<Arc<Daemon>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection, "?all=true"),
    };
    match tokio::task::spawn_blocking(move || daemon.containers().list(query.all)).await {
        Ok(Ok(records)) => Json(json!({ "containers": records })).into_response(),
        Ok(Err(error)) => container_error(&StopError::Container(error)),
        Err(error) => task_failed(error),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct StopQuery {
    /// Seconds between SIGTERM and SIGKILL (fractions allowed); `skiff stop`'s default.
    time: Option<f64>,
}

/// Stops one container; `{"id", "name"}` once it has exited.
pub(super) async fn stop(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    query: Result<Query<StopQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection, "?time=SECONDS"),
    };
    let grace = match query.time.map(Duration::try_from_secs_f64) {
        None => Duration::from_secs(10),
        Some(Ok(grace)) if grace <= MAX_GRACE => grace,
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!(
                    "time {} is not between 0 and {} seconds",
                    query.time.unwrap_or_default(),
                    MAX_GRACE.as_secs()
                ),
                "give the grace after SIGTERM in seconds; nothing was stopped",
            );
        }
    };
    let stopped = tokio::task::spawn_blocking(move || daemon.containers().stop(&name, grace));
    answer(stopped.await)
}

#[derive(Debug, Deserialize)]
pub(super) struct RemoveQuery {
    /// Kill a running container first (`rm -f`).
    #[serde(default)]
    force: bool,
}

/// Removes one container; `{"id", "name"}`.
pub(super) async fn remove(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection, "?force=true"),
    };
    let removed =
        tokio::task::spawn_blocking(move || daemon.containers().remove(&name, query.force));
    answer(removed.await)
}

fn answer(
    done: Result<
        Result<crate::linux::container::ContainerRecord, StopError>,
        tokio::task::JoinError,
    >,
) -> Response {
    match done {
        Ok(Ok(record)) => Json(json!({ "id": record.id, "name": record.name })).into_response(),
        Ok(Err(error)) => container_error(&error),
        Err(error) => task_failed(error),
    }
}

/// A refusal as the CLI words it alone; the status says which kind.
fn container_error(error: &StopError) -> Response {
    let (status, hint) = match error {
        StopError::Container(ContainerError::Unknown { .. }) => {
            (StatusCode::NOT_FOUND, "nothing was changed")
        }
        StopError::Container(ContainerError::Ambiguous { .. }) => {
            (StatusCode::BAD_REQUEST, "nothing was changed")
        }
        StopError::Container(ContainerError::Managed { .. }) | StopError::Running { .. } => {
            (StatusCode::CONFLICT, "nothing was changed")
        }
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "see the daemon's log (SKIFF_LOG=skiff=debug for more)",
        ),
    };
    error_response(status, &error.to_string(), hint)
}

fn bad_query(rejection: &QueryRejection, expected: &str) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        &format!("bad query: {}", rejection.body_text()),
        &format!("the query takes {expected}; nothing was changed"),
    )
}

fn task_failed(error: tokio::task::JoinError) -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("the container task failed: {error}"),
        "see the daemon's log",
    )
}

/// Newline-delimited JSON, as the log and the event stream are sent.
const NDJSON: [(header::HeaderName, &str); 1] = [(header::CONTENT_TYPE, "application/x-ndjson")];
