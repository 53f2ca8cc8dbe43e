//! `GET /v1/containers/{id}/logs`: a container's log as its monitor wrote it, one JSON entry
//! per line (`{"stream","time","log"}`), for `skiff logs` to print.
//!
//! With `follow=true` the stream stays open until the container exits (then its last lines
//! come and the stream ends), the daemon stops, or the client goes away. A client that left
//! is seen only on a write, so an idle follow sends an empty line every [`HEARTBEAT`]; the
//! CLI skips empty lines. Each chunk is at most about [`CHUNK`] bytes of whole lines, read on
//! the blocking pool; the stream is pulled by the client, so nothing queues up in between.

use super::{NDJSON, StopError, container_error, task_failed};
use crate::api::ApiState;
use crate::linux::logs::{Chunks, LogChunk};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::watch;

/// The most bytes of whole lines read into one chunk of the answer.
const CHUNK: usize = 64 << 10;

/// How often a follow looks for new lines.
const POLL: Duration = Duration::from_millis(100);

/// How long a follow stays silent before it writes an empty line to see the client is there.
const HEARTBEAT: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
pub(crate) struct LogsQuery {
    /// Keep streaming until the container exits (`logs -f`).
    #[serde(default)]
    follow: bool,
}

pub(crate) async fn logs(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return super::bad_query(&rejection, "?follow=true"),
    };
    let daemon = std::sync::Arc::clone(&state.daemon);
    let opened =
        tokio::task::spawn_blocking(move || daemon.containers().logs(&name, query.follow)).await;
    match opened {
        Ok(Ok(reader)) => stream(reader, state.stopping.clone()),
        Ok(Err(error)) => container_error(&StopError::Container(error)),
        Err(error) => task_failed(error),
    }
}

/// Streams `reader`'s chunks as they come (see the module docs); a workload's merged logs
/// are streamed the same way.
pub(crate) fn stream<R: Chunks>(reader: R, stopping: watch::Receiver<bool>) -> Response {
    let follow = Follow {
        reader: Some(reader),
        stopping,
        idle: Duration::ZERO,
    };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let chunk = follow.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), follow))
    });
    (NDJSON, Body::from_stream(stream)).into_response()
}

/// A reader's place in the log; dropped when the stream ends or the client has gone.
struct Follow<R> {
    /// `None` while a read runs on the blocking pool, and once the log is done.
    reader: Option<R>,
    stopping: watch::Receiver<bool>,
    /// How long nothing was sent.
    idle: Duration,
}

impl<R> Drop for Follow<R> {
    fn drop(&mut self) {
        tracing::debug!("log stream ended");
    }
}

impl<R: Chunks> Follow<R> {
    /// The next chunk to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let mut reader = self.reader.take()?;
            let read = tokio::task::spawn_blocking(move || {
                let chunk = reader.next_chunk(CHUNK);
                (reader, chunk)
            })
            .await;
            let (reader, chunk) = match read {
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(%error, "reading a log failed");
                    return None;
                }
            };
            match chunk {
                Ok(LogChunk::Lines(lines)) => {
                    self.reader = Some(reader);
                    self.idle = Duration::ZERO;
                    return Some(Bytes::from(lines));
                }
                Ok(LogChunk::End) => return None,
                Ok(LogChunk::Wait) => {
                    self.reader = Some(reader);
                    tokio::select! {
                        _ = self.stopping.wait_for(|stop| *stop) => return None,
                        () = tokio::time::sleep(POLL) => {}
                    }
                    self.idle += POLL;
                    if self.idle >= HEARTBEAT {
                        self.idle = Duration::ZERO;
                        return Some(Bytes::from_static(b"\n"));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "reading a log failed");
                    return None;
                }
            }
        }
    }
}
