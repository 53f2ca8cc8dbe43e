//! `/v1/apps`: deploy, list, show, remove and scale apps; `/v1/workloads`: what runs.

use super::Failure;
use crate::daemon::{Daemon, DaemonError, Deployed};
use crate::state::AppRecord;
use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

pub(super) async fn list(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, Failure> {
    let apps: Vec<Value> = daemon.apps()?.iter().map(summary).collect();
    Ok(Json(json!({ "apps": apps })))
}

/// Every service and job with its state, instances, CPU and memory (`skiff ps`).
pub(super) async fn workloads(State(daemon): State<Arc<Daemon>>) -> Result<Json<Value>, Failure> {
    let workloads = tokio::task::spawn_blocking(move || daemon.workloads())
        .await
        .map_err(DaemonError::from)??;
    Ok(Json(json!({ "workloads": workloads })))
}

pub(super) async fn get(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, Failure> {
    let record = daemon.app(&name)?;
    let mut answer = summary(&record);
    answer["spec"] = record.spec.clone();
    answer["workloads"] = record
        .workloads
        .iter()
        .map(|w| {
            json!({
                "name": w.name,
                "kind": w.kind,
                "generation": w.generation,
                "scale": w.scale,
            })
        })
        .collect();
    answer["functions"] = json!(daemon.function_status(&name));
    Ok(Json(answer))
}

/// Where a manifest came from: the directory its relative paths start from, and its name
/// for messages.
#[derive(Debug, Deserialize)]
pub(super) struct DeployQuery {
    /// Absolute directory relative `file =` and volume paths resolve against (default `/`).
    base: Option<PathBuf>,
    /// The manifest's name in error messages (default `skiff.toml`).
    file: Option<String>,
}

pub(super) async fn put(
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
    })
}

pub(super) async fn delete(
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

/// `{"replicas": N}` as a body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    replicas: u32,
}

/// `replicas=N`, in the query or as a JSON body `{"replicas": N}`.
pub(super) async fn scale(
    State(daemon): State<Arc<Daemon>>,
    UrlPath((app, workload)): UrlPath<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let replicas = match query.get("replicas") {
        Some(text) => text.parse::<u32>().map_err(|_| {
            format!(
                "replicas={text:?} is not a whole number from 0 to {}",
                u32::MAX
            )
        }),
        None if body.trim().is_empty() => Err("replicas is missing".to_string()),
        None => serde_json::from_str::<ScaleBody>(&body)
            .map(|b| b.replicas)
            .map_err(|e| format!("the body is not {{\"replicas\": N}}: {e}")),
    };
    let replicas = match replicas {
        Ok(n) => n,
        Err(error) => return bad_scale(&error),
    };
    match daemon.scale(&app, &workload, replicas).await {
        Ok(change) => Json(json!({
            "app": change.app,
            "workload": change.workload,
            "kind": change.kind,
            "replicas": change.replicas,
        }))
        .into_response(),
        Err(error) => Failure(error).into_response(),
    }
}

fn bad_scale(error: &str) -> Response {
    super::error_response(
        StatusCode::BAD_REQUEST,
        error,
        "send replicas=N (a whole number from 0) in the query or the body; nothing was changed",
    )
}
