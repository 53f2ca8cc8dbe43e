//! Observed state: the instances skiff started, and what a restarted daemon needs to find them.
//!
//! Rows are written as instances change state, often, so each write is one short transaction
//! with `synchronous=NORMAL` (atomic; on power loss the last few may be lost, and reconcile
//! repairs them from the live system). `pid` with `pid_start` (the process start time in clock
//! ticks, from `/proc/PID/stat`) identifies a Linux process across pid reuse; `container_id`
//! and `address` are how the gateway and a re-adopting daemon reach it.
//!
//! Instances do not reference their app: after `delete_app` they stay recorded until the
//! scheduler has stopped them and called [`Store::remove_instance`].

use super::{Result, StateError, Store, from_millis, now_millis, to_millis};
use rusqlite::{OptionalExtension, Row, params};
use std::time::SystemTime;

/// Which executor runs an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceKind {
    Wasm,
    Linux,
}

impl InstanceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wasm => "wasm",
            Self::Linux => "linux",
        }
    }

    fn parse(store: &Store, text: &str) -> Result<Self> {
        match text {
            "wasm" => Ok(Self::Wasm),
            "linux" => Ok(Self::Linux),
            _ => Err(store.unknown("instances.kind", text)),
        }
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Admitted, waiting for capacity or its image.
    Pending,
    Starting,
    Running,
    /// Asked to stop, not yet gone.
    Exiting,
    Exited,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Exiting => "exiting",
            Self::Exited => "exited",
        }
    }

    fn parse(store: &Store, text: &str) -> Result<Self> {
        match text {
            "pending" => Ok(Self::Pending),
            "starting" => Ok(Self::Starting),
            "running" => Ok(Self::Running),
            "exiting" => Ok(Self::Exiting),
            "exited" => Ok(Self::Exited),
            _ => Err(store.unknown("instances.state", text)),
        }
    }
}

/// One instance as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub id: String,
    pub app: String,
    pub workload: String,
    pub kind: InstanceKind,
    /// The workload generation this instance runs.
    pub generation: u64,
    pub state: InstanceState,
    pub pid: Option<i32>,
    /// The process start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub pid_start: Option<u64>,
    pub container_id: Option<String>,
    /// Where the gateway reaches it, e.g. `10.88.0.5:6379`.
    pub address: Option<String>,
    /// Why it is in its state, e.g. an exit status or `oom`.
    pub reason: Option<String>,
    pub started: SystemTime,
    /// When the row last changed; set by the store.
    pub updated: SystemTime,
}

impl InstanceRecord {
    /// A pending instance started now, with no process yet.
    pub fn new(
        id: impl Into<String>,
        app: impl Into<String>,
        workload: impl Into<String>,
        kind: InstanceKind,
        generation: u64,
    ) -> Self {
        let now = SystemTime::now();
        Self {
            id: id.into(),
            app: app.into(),
            workload: workload.into(),
            kind,
            generation,
            state: InstanceState::Pending,
            pid: None,
            pid_start: None,
            container_id: None,
            address: None,
            reason: None,
            started: now,
            updated: now,
        }
    }
}

/// A change of state; `None` fields keep their recorded value.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceUpdate {
    pub state: InstanceState,
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    pub container_id: Option<String>,
    pub address: Option<String>,
    pub reason: Option<String>,
}

impl InstanceUpdate {
    /// Moves to `state`, changing nothing else.
    pub fn to(state: InstanceState) -> Self {
        Self {
            state,
            pid: None,
            pid_start: None,
            container_id: None,
            address: None,
            reason: None,
        }
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn process(mut self, pid: i32, pid_start: u64) -> Self {
        self.pid = Some(pid);
        self.pid_start = Some(pid_start);
        self
    }

    pub fn container_id(mut self, id: impl Into<String>) -> Self {
        self.container_id = Some(id.into());
        self
    }

    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }
}

const COLUMNS: &str = "id, app, workload, kind, generation, state, pid, pid_start, container_id, \
                       address, reason, started, updated";

impl Store {
    /// Records a new instance; its `updated` is set to now.
    pub fn insert_instance(&self, instance: &InstanceRecord) -> Result<()> {
        let err = self.db_err();
        let i = instance;
        self.quick(|tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO instances ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))
            .and_then(|mut stmt| {
                stmt.execute(params![
                    i.id,
                    i.app,
                    i.workload,
                    i.kind.as_str(),
                    i64::try_from(i.generation).unwrap_or(i64::MAX),
                    i.state.as_str(),
                    i.pid,
                    i.pid_start.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                    i.container_id,
                    i.address,
                    i.reason,
                    to_millis(i.started),
                    now_millis(),
                ])
            })
            .map_err(|error| match error.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => {
                    StateError::InstanceExists { id: i.id.clone() }
                }
                _ => err(error),
            })
        })?;
        Ok(())
    }

    /// Applies `update` to instance `id`.
    pub fn update_instance_state(&self, id: &str, update: &InstanceUpdate) -> Result<()> {
        let err = self.db_err();
        let u = update;
        let changed = self.quick(|tx| {
            tx.prepare_cached(
                "UPDATE instances SET state = ?2,
                    pid = COALESCE(?3, pid), pid_start = COALESCE(?4, pid_start),
                    container_id = COALESCE(?5, container_id), address = COALESCE(?6, address),
                    reason = COALESCE(?7, reason), updated = ?8
                 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id,
                    u.state.as_str(),
                    u.pid,
                    u.pid_start.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                    u.container_id,
                    u.address,
                    u.reason,
                    now_millis(),
                ])
            })
            .map_err(&err)
        })?;
        if changed == 0 {
            return Err(StateError::InstanceNotFound { id: id.to_string() });
        }
        Ok(())
    }

    /// One instance, or `None` when `id` is not recorded.
    pub fn get_instance(&self, id: &str) -> Result<Option<InstanceRecord>> {
        let conn = self.lock();
        let raw = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM instances WHERE id = ?1"))
            .and_then(|mut stmt| stmt.query_row([id], RawInstance::from_row).optional())
            .map_err(self.db_err())?;
        raw.map(|r| r.parse(self)).transpose()
    }

    /// Recorded instances, all or of one app or of one workload, ordered by app, workload, id.
    pub fn list_instances(
        &self,
        app: Option<&str>,
        workload: Option<&str>,
    ) -> Result<Vec<InstanceRecord>> {
        let conn = self.lock();
        let rows: Vec<RawInstance> = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM instances
                 WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR workload = ?2)
                 ORDER BY app, workload, id"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![app, workload], RawInstance::from_row)?
                    .collect()
            })
            .map_err(self.db_err())?;
        rows.into_iter().map(|r| r.parse(self)).collect()
    }

    /// Forgets instance `id`; false when it was not recorded.
    pub fn remove_instance(&self, id: &str) -> Result<bool> {
        let err = self.db_err();
        let removed = self.quick(|tx| {
            tx.execute("DELETE FROM instances WHERE id = ?1", [id])
                .map_err(&err)
        })?;
        Ok(removed > 0)
    }
}

/// An instances row before its text columns are parsed.
struct RawInstance {
    id: String,
    app: String,
    workload: String,
    kind: String,
    generation: i64,
    state: String,
    pid: Option<i32>,
    pid_start: Option<i64>,
    container_id: Option<String>,
    address: Option<String>,
    reason: Option<String>,
    started: i64,
    updated: i64,
}

impl RawInstance {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            app: r.get(1)?,
            workload: r.get(2)?,
            kind: r.get(3)?,
            generation: r.get(4)?,
            state: r.get(5)?,
            pid: r.get(6)?,
            pid_start: r.get(7)?,
            container_id: r.get(8)?,
            address: r.get(9)?,
            reason: r.get(10)?,
            started: r.get(11)?,
            updated: r.get(12)?,
        })
    }

    fn parse(self, store: &Store) -> Result<InstanceRecord> {
        Ok(InstanceRecord {
            kind: InstanceKind::parse(store, &self.kind)?,
            state: InstanceState::parse(store, &self.state)?,
            id: self.id,
            app: self.app,
            workload: self.workload,
            generation: self.generation.max(0) as u64,
            pid: self.pid,
            pid_start: self.pid_start.map(|t| t.max(0) as u64),
            container_id: self.container_id,
            address: self.address,
            reason: self.reason,
            started: from_millis(self.started),
            updated: from_millis(self.updated),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::temp_store;

    #[test]
    fn an_instance_round_trips_with_every_field() {
        let (_dir, store) = temp_store();
        let mut i = InstanceRecord::new("i1", "shop", "cache", InstanceKind::Linux, 4);
        i.state = InstanceState::Running;
        i.pid = Some(4242);
        i.pid_start = Some(987_654_321);
        i.container_id = Some("shop-cache-1".into());
        i.address = Some("10.88.0.5:6379".into());
        store.insert_instance(&i).unwrap();
        let got = store.get_instance("i1").unwrap().unwrap();
        assert!(got.updated >= got.started);
        i.started = from_millis(to_millis(i.started));
        i.updated = got.updated;
        assert_eq!(got, i);
        assert!(store.get_instance("nope").unwrap().is_none());
    }

    #[test]
    fn a_second_insert_of_one_id_is_refused() {
        let (_dir, store) = temp_store();
        let i = InstanceRecord::new("i1", "shop", "api", InstanceKind::Wasm, 1);
        store.insert_instance(&i).unwrap();
        let err = store.insert_instance(&i).unwrap_err();
        assert!(matches!(err, StateError::InstanceExists { .. }), "{err:?}");
    }

    #[test]
    fn updates_change_the_state_and_keep_what_they_leave_out() {
        let (_dir, store) = temp_store();
        let i = InstanceRecord::new("i1", "shop", "cache", InstanceKind::Linux, 1);
        store.insert_instance(&i).unwrap();
        let starting = InstanceUpdate::to(InstanceState::Starting)
            .process(77, 1234)
            .container_id("c1");
        store.update_instance_state("i1", &starting).unwrap();
        let running = InstanceUpdate::to(InstanceState::Running).address("10.0.0.2:80");
        store.update_instance_state("i1", &running).unwrap();
        let exited = InstanceUpdate::to(InstanceState::Exited).reason("exit status 1");
        store.update_instance_state("i1", &exited).unwrap();
        let got = store.get_instance("i1").unwrap().unwrap();
        assert_eq!(got.state, InstanceState::Exited);
        assert_eq!((got.pid, got.pid_start), (Some(77), Some(1234)));
        assert_eq!(got.container_id.as_deref(), Some("c1"));
        assert_eq!(got.address.as_deref(), Some("10.0.0.2:80"));
        assert_eq!(got.reason.as_deref(), Some("exit status 1"));
        let err = store.update_instance_state("i2", &exited).unwrap_err();
        assert!(
            matches!(err, StateError::InstanceNotFound { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn list_filters_by_app_and_workload_and_remove_forgets() {
        let (_dir, store) = temp_store();
        for (id, app, workload) in [
            ("b", "shop", "api"),
            ("a", "shop", "api"),
            ("c", "shop", "cache"),
            ("d", "blog", "api"),
        ] {
            let i = InstanceRecord::new(id, app, workload, InstanceKind::Wasm, 1);
            store.insert_instance(&i).unwrap();
        }
        let ids = |app, workload| -> Vec<String> {
            let list = store.list_instances(app, workload).unwrap();
            list.into_iter().map(|i| i.id).collect()
        };
        assert_eq!(ids(None, None), ["d", "a", "b", "c"]);
        assert_eq!(ids(Some("shop"), None), ["a", "b", "c"]);
        assert_eq!(ids(Some("shop"), Some("api")), ["a", "b"]);
        assert_eq!(ids(None, Some("api")), ["d", "a", "b"]);
        assert!(store.remove_instance("a").unwrap());
        assert!(!store.remove_instance("a").unwrap());
        assert_eq!(ids(Some("shop"), Some("api")), ["b"]);
    }

    #[test]
    fn instances_outlive_their_app() {
        let (_dir, store) = temp_store();
        store.put_app("shop", &serde_json::json!({}), &[]).unwrap();
        let i = InstanceRecord::new("i1", "shop", "api", InstanceKind::Wasm, 1);
        store.insert_instance(&i).unwrap();
        store.delete_app("shop").unwrap();
        assert!(store.get_instance("i1").unwrap().is_some());
    }
}
