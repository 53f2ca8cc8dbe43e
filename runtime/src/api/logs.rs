//! `GET /v1/instances`: every instance the daemon runs, as recorded (`?app=`, `&workload=`
//! narrow it); `GET /v1/logs/{app}/{workload}`: the merged logs of a service's or job's
//! instances, one JSON entry per line `{"instance","stream","time","log"}` (`?follow=true`
//! keeps it open as instances come and go, until the client goes away or the daemon stops).
//!
//! The reading is the daemon's ([`crate::daemon::logs`]); the streaming, bounded and pulled
//! by the client, is the container log's ([`super::containers::stream`]).

use super::error_response;
use crate::daemon::Daemon;
use crate::daemon::logs::LogsError;
use crate::state::InstanceRecord;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InstancesQuery {
    app: Option<String>,
    workload: Option<String>,
}

/// `{"instances": [...]}`, ordered by app, workload and id.
pub(super) async fn instances(
    State(daemon): State<Arc<Daemon>>,
    query: Result<Query<InstancesQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection, "?app=APP&workload=WORKLOAD"),
    };
    let listed = tokio::task::spawn_blocking(move || {
        daemon.instances(query.app.as_deref(), query.workload.as_deref())
    })
    .await;
    match listed {
        Ok(Ok(rows)) => {
            let rows: Vec<Value> = rows.iter().map(instance_json).collect();
            Json(json!({ "instances": rows })).into_response()
        }
        Ok(Err(error)) => super::Failure(error).into_response(),
        Err(error) => internal(&error.to_string()),
    }
}

fn instance_json(row: &InstanceRecord) -> Value {
    let started = row
        .started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "id": row.id,
        "app": row.app,
        "workload": row.workload,
        "kind": row.kind,
        "generation": row.generation,
        "state": row.state,
        "reason": row.reason,
        "address": row.address,
        "pid": row.pid,
        "container_id": row.container_id,
        "started": started,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    /// Keep streaming as instances come and go (`logs -f`).
    #[serde(default, deserialize_with = "flag")]
    follow: bool,
}

/// `true` or `1`, `false` or `0`: the design writes `?follow=1`, the CLI sends `true`.
fn flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match String::deserialize(deserializer)?.as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "follow={other:?} is not true, false, 1 or 0"
        ))),
    }
}

pub(super) async fn workload(
    State(state): State<super::ApiState>,
    Path((app, workload)): Path<(String, String)>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection, "?follow=true"),
    };
    let daemon = Arc::clone(&state.daemon);
    let opened =
        tokio::task::spawn_blocking(move || daemon.workload_logs(&app, &workload, query.follow))
            .await;
    match opened {
        Ok(Ok(log)) => super::containers::stream(log, state.stopping.clone()),
        Ok(Err(error)) => logs_error(&error),
        Err(error) => internal(&error.to_string()),
    }
}

fn logs_error(error: &LogsError) -> Response {
    let (status, hint) = match error {
        LogsError::NoApp { .. } | LogsError::NoWorkload { .. } => (
            StatusCode::NOT_FOUND,
            "see what runs with `skiff ps`, and write APP/WORKLOAD as it shows",
        ),
        LogsError::Function { .. } => (
            StatusCode::BAD_REQUEST,
            "read the daemon's log for a function's output",
        ),
        LogsError::State(_) => (
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
        &format!("the query takes {expected}"),
    )
}

fn internal(error: &str) -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("the request's task failed: {error}"),
        "see the daemon's log",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow(query: &str) -> Option<bool> {
        let uri: axum::http::Uri = format!("/v1/logs/a/b{query}").parse().unwrap();
        Query::<LogsQuery>::try_from_uri(&uri)
            .ok()
            .map(|q| q.0.follow)
    }

    #[test]
    fn follow_is_true_false_one_or_zero() {
        assert_eq!(follow(""), Some(false));
        assert_eq!(follow("?follow=true"), Some(true));
        assert_eq!(follow("?follow=1"), Some(true));
        assert_eq!(follow("?follow=0"), Some(false));
        assert_eq!(follow("?follow=maybe"), None);
        assert_eq!(follow("?folow=1"), None);
    }
}
