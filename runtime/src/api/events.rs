//! `GET /v1/events`: the stored event log as newline-delimited JSON, and with `follow=true`
//! the live stream after it.
//!
//! One JSON object per line: `{"seq","time","app","workload","instance","kind","message"}`.
//! The live stream reads the store's bounded broadcast; a client too slow for it gets one
//! `{"kind":"missed","missed":N,...}` line in place of the events it lost, never a growing
//! buffer. The stream ends when the daemon stops.

use super::{ApiState, Failure};
use crate::state::{Event, EventStream, StreamItem};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::collections::VecDeque;
use tokio::sync::watch;

/// Stored events one answer holds at most (the newest are not cut: paging goes oldest first,
/// so a client continues with `since=` the last `seq` it got).
pub const MAX_STORED: usize = 1000;

#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    /// Only events with a greater `seq` (default 0: all stored).
    since: Option<u64>,
    /// Only this app's events.
    app: Option<String>,
    /// Keep the response open and stream new events as they happen.
    #[serde(default)]
    follow: bool,
}

pub(super) async fn list(
    State(state): State<ApiState>,
    Query(query): Query<EventsQuery>,
) -> Response {
    // Subscribed before reading the table, so no event falls between the two.
    let live = query.follow.then(|| state.daemon.subscribe_events());
    let stored = {
        let (daemon, app) = (state.daemon.clone(), query.app.clone());
        let since = query.since.unwrap_or(0);
        tokio::task::spawn_blocking(move || stored(&daemon, since, app.as_deref()))
            .await
            .map_err(crate::daemon::DaemonError::from)
            .and_then(|r| r)
    };
    let stored = match stored {
        Ok(stored) => stored,
        Err(error) => return Failure(error).into_response(),
    };
    let ndjson = [(header::CONTENT_TYPE, "application/x-ndjson")];
    let Some(live) = live else {
        let text: String = stored.iter().map(line).collect();
        return (ndjson, text).into_response();
    };
    let follow = Follow {
        last: stored.last().map_or(query.since.unwrap_or(0), |e| e.seq),
        backlog: stored.into(),
        live,
        app: query.app,
        stopping: state.stopping.clone(),
    };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let line = follow.next().await?;
        Some((Ok::<_, std::convert::Infallible>(line), follow))
    });
    (ndjson, Body::from_stream(stream)).into_response()
}

/// Up to [`MAX_STORED`] stored events after `since`, of `app` if given.
fn stored(
    daemon: &crate::daemon::Daemon,
    since: u64,
    app: Option<&str>,
) -> crate::daemon::Result<Vec<Event>> {
    let mut found = Vec::new();
    let mut after = since;
    loop {
        let page = daemon.events_since(after, MAX_STORED)?;
        let Some(last) = page.last() else {
            return Ok(found);
        };
        after = last.seq;
        found.extend(page.into_iter().filter(|e| wanted(e, app)));
        if found.len() >= MAX_STORED {
            found.truncate(MAX_STORED);
            return Ok(found);
        }
    }
}

fn wanted(event: &Event, app: Option<&str>) -> bool {
    app.is_none_or(|app| event.app.as_deref() == Some(app))
}

/// A follower's place: stored events not sent yet, then the live feed.
struct Follow {
    backlog: VecDeque<Event>,
    live: EventStream,
    /// The last `seq` sent or skipped; live events up to it were in the backlog.
    last: u64,
    app: Option<String>,
    stopping: watch::Receiver<bool>,
}

impl Follow {
    /// The next line to send; `None` ends the stream (the daemon is stopping).
    async fn next(&mut self) -> Option<String> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(line(&event));
        }
        loop {
            let item = tokio::select! {
                _ = self.stopping.wait_for(|stop| *stop) => return None,
                item = self.live.next() => item?,
            };
            match item {
                StreamItem::Event(event) if event.seq <= self.last => {}
                StreamItem::Event(event) => {
                    self.last = event.seq;
                    if wanted(&event, self.app.as_deref()) {
                        return Some(line(&event));
                    }
                }
                StreamItem::Lagged { missed, after } => {
                    let message = format!(
                        "missed {missed} events: this client read too slowly; \
                         `skiff events --since {after}` lists them"
                    );
                    let missed = json!({ "kind": "missed", "missed": missed, "after": after, "message": message });
                    return Some(format!("{missed}\n"));
                }
            }
        }
    }
}

/// One event as a line of JSON.
fn line(event: &Event) -> String {
    let value = json!({
        "seq": event.seq,
        "time": humantime::format_rfc3339_millis(event.time).to_string(),
        "app": event.app,
        "workload": event.workload,
        "instance": event.instance,
        "kind": event.kind,
        "message": event.message,
    });
    format!("{value}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EVENT_CHANNEL_CAPACITY, NewEvent, Store};

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn event(app: &str, n: usize) -> NewEvent {
        NewEvent {
            app: Some(app.into()),
            kind: "deployed".into(),
            message: format!("event {n}"),
            ..NewEvent::default()
        }
    }

    fn follow(store: &Store, app: Option<&str>) -> (Follow, watch::Sender<bool>) {
        let (stop, stopping) = watch::channel(false);
        let follow = Follow {
            backlog: VecDeque::new(),
            live: store.subscribe(),
            last: 0,
            app: app.map(str::to_string),
            stopping,
        };
        (follow, stop)
    }

    #[tokio::test]
    async fn a_slow_follower_gets_one_missed_line_then_goes_on() {
        let (_dir, store) = temp_store();
        let (mut follow, _stop) = follow(&store, None);
        let over = 5;
        for n in 0..EVENT_CHANNEL_CAPACITY + over {
            store.append_event(&event("shop", n)).unwrap();
        }
        let missed: serde_json::Value =
            serde_json::from_str(&follow.next().await.unwrap()).unwrap();
        assert_eq!(missed["kind"], "missed");
        assert_eq!(missed["missed"], over);
        assert!(
            missed["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("missed {over} events"))
        );
        let next: serde_json::Value = serde_json::from_str(&follow.next().await.unwrap()).unwrap();
        assert_eq!(next["seq"], over + 1, "the stream goes on after the marker");
    }

    #[tokio::test]
    async fn a_follower_skips_what_its_backlog_sent_and_other_apps() {
        let (_dir, store) = temp_store();
        let (mut follow, stop) = follow(&store, Some("shop"));
        let first = store.append_event(&event("shop", 1)).unwrap();
        follow.backlog.push_back(first);
        follow.last = 1;
        store.append_event(&event("other", 2)).unwrap();
        store.append_event(&event("shop", 3)).unwrap();
        let lines = [follow.next().await.unwrap(), follow.next().await.unwrap()];
        assert!(lines[0].contains(r#""seq":1"#), "{}", lines[0]);
        assert!(lines[1].contains(r#""seq":3"#), "{}", lines[1]);
        stop.send(true).unwrap();
        assert_eq!(follow.next().await, None, "stopping ends the stream");
    }
}
