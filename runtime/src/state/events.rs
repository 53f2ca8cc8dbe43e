//! Events: an append-only log of what happened (deployed, scaled, started, exited, ...), kept
//! in SQLite with bounded retention and streamed in-process for `skiff events`.
//!
//! [`Store::append_event`] commits the row, then broadcasts it while still holding the
//! connection lock, so subscribers see events in `seq` order. The broadcast channel is bounded
//! ([`EVENT_CHANNEL_CAPACITY`](super::EVENT_CHANNEL_CAPACITY)): a subscriber that falls behind
//! gets one [`StreamItem::Lagged`] saying how many it missed and the last `seq` it saw, and can
//! fill the gap from [`Store::events_since`] (dropping duplicates by `seq`); memory never grows
//! with a slow reader. Retention is the daemon's call: [`Store::trim_events`] keeps the last N.

use super::{Result, Store, from_millis, now_millis};
use rusqlite::{Row, params};
use std::time::SystemTime;
use tokio::sync::broadcast;

/// An event to append; the store assigns `seq` and `time`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEvent {
    pub app: Option<String>,
    pub workload: Option<String>,
    pub instance: Option<String>,
    /// What happened, a lowercase word such as `deployed`, `scaled`, `started` or `exited`.
    pub kind: String,
    /// One line for operators.
    pub message: String,
}

/// An event as stored and streamed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// Strictly increasing, never reused, even after trimming.
    pub seq: u64,
    pub time: SystemTime,
    pub app: Option<String>,
    pub workload: Option<String>,
    pub instance: Option<String>,
    pub kind: String,
    pub message: String,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    Event(Event),
    /// The subscriber fell behind and `missed` events were dropped for it; `after` is the last
    /// `seq` it received (0 if none), to resume from with [`Store::events_since`].
    Lagged {
        missed: u64,
        after: u64,
    },
}

/// A live feed of events appended after [`Store::subscribe`].
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<Event>,
    last_seq: u64,
}

impl EventStream {
    /// The next item; `None` once the store is dropped.
    pub async fn next(&mut self) -> Option<StreamItem> {
        let item = self.rx.recv().await;
        self.map(item)
    }

    /// The next item if one is ready, without waiting; `None` when none is ready or the store
    /// is dropped.
    pub fn try_next(&mut self) -> Option<StreamItem> {
        let item = self.rx.try_recv().map_err(|e| match e {
            broadcast::error::TryRecvError::Lagged(n) => broadcast::error::RecvError::Lagged(n),
            _ => broadcast::error::RecvError::Closed,
        });
        self.map(item)
    }

    fn map(&mut self, item: Result<Event, broadcast::error::RecvError>) -> Option<StreamItem> {
        match item {
            Ok(event) => {
                self.last_seq = event.seq;
                Some(StreamItem::Event(event))
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(StreamItem::Lagged {
                missed,
                after: self.last_seq,
            }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Store {
    /// Appends `event`, then broadcasts it to subscribers.
    pub fn append_event(&self, event: &NewEvent) -> Result<Event> {
        let mut conn = self.lock();
        let err = self.db_err();
        let time = now_millis();
        let seq = super::in_transaction(&mut conn, &err, |tx| {
            tx.prepare_cached(
                "INSERT INTO events (time, app, workload, instance, kind, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    time,
                    event.app,
                    event.workload,
                    event.instance,
                    event.kind,
                    event.message,
                ])
            })
            .map_err(&err)?;
            Ok(tx.last_insert_rowid())
        })?;
        let stored = Event {
            seq: seq.max(0) as u64,
            time: from_millis(time),
            app: event.app.clone(),
            workload: event.workload.clone(),
            instance: event.instance.clone(),
            kind: event.kind.clone(),
            message: event.message.clone(),
        };
        // No subscribers is not an error. Sent under the lock, so the stream is in seq order.
        let _ = self.events.send(stored.clone());
        drop(conn);
        Ok(stored)
    }

    /// Up to `limit` stored events with `seq` greater than `after`, oldest first.
    pub fn events_since(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let conn = self.lock();
        conn.prepare_cached(
            "SELECT seq, time, app, workload, instance, kind, message FROM events
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_map(
                params![
                    i64::try_from(after).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                event_from_row,
            )?
            .collect()
        })
        .map_err(self.db_err())
    }

    /// Deletes all but the newest `keep_last` events; returns how many were deleted.
    pub fn trim_events(&self, keep_last: usize) -> Result<usize> {
        let err = self.db_err();
        self.quick(|tx| {
            tx.execute(
                "DELETE FROM events WHERE seq NOT IN
                    (SELECT seq FROM events ORDER BY seq DESC LIMIT ?1)",
                [i64::try_from(keep_last).unwrap_or(i64::MAX)],
            )
            .map_err(&err)
        })
    }

    /// A live feed of events appended from now on.
    pub fn subscribe(&self) -> EventStream {
        EventStream {
            rx: self.events.subscribe(),
            last_seq: 0,
        }
    }
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        seq: r.get::<_, i64>(0)?.max(0) as u64,
        time: from_millis(r.get(1)?),
        app: r.get(2)?,
        workload: r.get(3)?,
        instance: r.get(4)?,
        kind: r.get(5)?,
        message: r.get(6)?,
    })
}
