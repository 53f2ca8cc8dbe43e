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
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::EVENT_CHANNEL_CAPACITY;
    use crate::state::tests::temp_store;

    fn event(n: usize) -> NewEvent {
        NewEvent {
            app: Some("shop".into()),
            workload: Some("api".into()),
            instance: None,
            kind: "started".into(),
            message: format!("event {n}"),
        }
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn append_numbers_events_and_since_pages_through_them() {
        let (_dir, store) = temp_store();
        let first = store.append_event(&event(1)).unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(first.message, "event 1");
        for n in 2..=5 {
            store.append_event(&event(n)).unwrap();
        }
        let all = store.events_since(0, 100).unwrap();
        assert_eq!(seqs(&all), [1, 2, 3, 4, 5]);
        assert_eq!(all[0], first);
        assert_eq!(seqs(&store.events_since(2, 2).unwrap()), [3, 4]);
        assert!(store.events_since(5, 10).unwrap().is_empty());
    }

    #[test]
    fn trim_keeps_the_newest_and_never_reuses_a_seq() {
        let (_dir, store) = temp_store();
        for n in 1..=10 {
            store.append_event(&event(n)).unwrap();
        }
        assert_eq!(store.trim_events(3).unwrap(), 7);
        assert_eq!(seqs(&store.events_since(0, 100).unwrap()), [8, 9, 10]);
        assert_eq!(store.trim_events(3).unwrap(), 0);
        assert_eq!(store.trim_events(0).unwrap(), 3);
        assert_eq!(store.append_event(&event(11)).unwrap().seq, 11);
    }

    #[test]
    fn subscribers_see_appended_events_in_order() {
        let (_dir, store) = temp_store();
        store.append_event(&event(0)).unwrap();
        let mut stream = store.subscribe();
        assert_eq!(stream.try_next(), None, "only events after subscribe");
        let a = store.append_event(&event(1)).unwrap();
        let b = store.append_event(&event(2)).unwrap();
        assert_eq!(stream.try_next(), Some(StreamItem::Event(a)));
        assert_eq!(stream.try_next(), Some(StreamItem::Event(b)));
        assert_eq!(stream.try_next(), None);
    }

    #[test]
    fn a_lagging_subscriber_gets_a_marker_and_can_catch_up_from_the_table() {
        let (_dir, store) = temp_store();
        let mut stream = store.subscribe();
        store.append_event(&event(1)).unwrap();
        assert!(matches!(stream.try_next(), Some(StreamItem::Event(e)) if e.seq == 1));
        let over = 6;
        for n in 0..EVENT_CHANNEL_CAPACITY + over {
            store.append_event(&event(n)).unwrap();
        }
        let lagged = stream.try_next();
        assert_eq!(
            lagged,
            Some(StreamItem::Lagged {
                missed: over as u64,
                after: 1
            })
        );
        let gap = store.events_since(1, over).unwrap();
        assert_eq!(seqs(&gap), (2..2 + over as u64).collect::<Vec<_>>());
        let Some(StreamItem::Event(next)) = stream.try_next() else {
            panic!("the stream goes on after the marker");
        };
        assert_eq!(next.seq, 2 + over as u64, "it resumes where the gap ends");
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_store_is_dropped() {
        let (_dir, store) = temp_store();
        let mut stream = store.subscribe();
        let appended = store.append_event(&event(1)).unwrap();
        drop(store);
        assert_eq!(stream.next().await, Some(StreamItem::Event(appended)));
        assert_eq!(stream.next().await, None);
    }
}
