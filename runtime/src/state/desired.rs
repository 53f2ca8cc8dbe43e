//! Desired state: the apps that are deployed and their workloads.
//!
//! Specs are opaque JSON here (the app manifest owns their meaning), compared as JSON values so
//! key order does not matter. [`Store::put_app`] replaces an app in one durable transaction and
//! reports what changed; a workload's generation moves only when its kind or spec changed, so
//! the scheduler rolls out exactly the workloads that need it and an idempotent re-deploy
//! touches nothing. A `skiff scale` override is not part of the spec: it survives re-deploys of
//! the same workload and does not bump its generation.

use super::{Result, StateError, Store, from_millis, now_millis};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// What a workload is, as the manifest's table says (`[function.x]`, `[service.x]`, `[job.x]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Function,
    Service,
    Job,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Service => "service",
            Self::Job => "job",
        }
    }

    fn parse(store: &Store, text: &str) -> Result<Self> {
        match text {
            "function" => Ok(Self::Function),
            "service" => Ok(Self::Service),
            "job" => Ok(Self::Job),
            _ => Err(store.unknown("workloads.kind", text)),
        }
    }
}

/// One workload as the caller wants it deployed.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRecord {
    pub name: String,
    pub kind: WorkloadKind,
    pub spec: Value,
}

/// One workload as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWorkload {
    pub name: String,
    pub kind: WorkloadKind,
    /// 1 when first deployed, +1 each time its kind or spec changes.
    pub generation: u64,
    pub spec: Value,
    /// The `skiff scale` override, if any; it wins over the spec's replicas or min.
    pub scale: Option<u32>,
}

/// One app as stored, with its workloads ordered by name.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRecord {
    pub name: String,
    /// 1 when first deployed, +1 each time its spec or any workload changes.
    pub generation: u64,
    pub spec: Value,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub workloads: Vec<StoredWorkload>,
}

/// What [`Store::put_app`] did, workload names sorted within each list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// The app's generation after the put.
    pub generation: u64,
    /// Whether the app was not deployed before.
    pub created: bool,
    /// Whether the app's own spec changed (always false when `created`).
    pub spec_changed: bool,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl PutOutcome {
    /// True when the put changed nothing (an idempotent re-deploy).
    pub fn is_noop(&self) -> bool {
        !self.created
            && !self.spec_changed
            && self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
    }
}

impl Store {
    /// Deploys `name` with `spec` and exactly `workloads`, in one durable transaction: workloads
    /// not listed are deleted, changed ones get generation + 1, unchanged ones keep theirs.
    #[tracing::instrument(skip_all, fields(app = name), err)]
    pub fn put_app(
        &self,
        name: &str,
        spec: &Value,
        workloads: &[WorkloadRecord],
    ) -> Result<PutOutcome> {
        let mut wanted = BTreeMap::new();
        for w in workloads {
            if wanted.insert(w.name.as_str(), w).is_some() {
                return Err(StateError::DuplicateWorkload {
                    app: name.to_string(),
                    workload: w.name.clone(),
                });
            }
        }
        let outcome = self.durable(|tx| self.put_app_tx(tx, name, spec, &wanted))?;
        if !outcome.is_noop() {
            tracing::info!(
                app = name,
                generation = outcome.generation,
                added = outcome.added.len(),
                changed = outcome.changed.len(),
                removed = outcome.removed.len(),
                "app deployed"
            );
        }
        Ok(outcome)
    }

    fn put_app_tx(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        spec: &Value,
        wanted: &BTreeMap<&str, &WorkloadRecord>,
    ) -> Result<PutOutcome> {
        let err = self.db_err();
        let now = now_millis();
        let before = self.read_app(tx, name)?;
        let mut outcome = PutOutcome {
            created: before.is_none(),
            ..PutOutcome::default()
        };
        let old: BTreeMap<&str, &StoredWorkload> = before
            .iter()
            .flat_map(|app| &app.workloads)
            .map(|w| (w.name.as_str(), w))
            .collect();
        let spec_text = spec.to_string();
        if before.is_none() {
            // Workloads reference their app, so its row goes first.
            tx.execute(
                "INSERT INTO apps (name, generation, spec, created, updated)
                 VALUES (?1, 1, ?2, ?3, ?3)",
                params![name, spec_text, now],
            )
            .map_err(&err)?;
        }
        for (&wname, w) in wanted {
            let w_spec = w.spec.to_string();
            match old.get(wname) {
                None => {
                    tx.execute(
                        "INSERT INTO workloads (app, name, kind, generation, spec, scale)
                         VALUES (?1, ?2, ?3, 1, ?4, NULL)",
                        params![name, wname, w.kind.as_str(), w_spec],
                    )
                    .map_err(&err)?;
                    outcome.added.push(wname.to_string());
                }
                Some(o) if o.kind == w.kind && o.spec == w.spec => {
                    outcome.unchanged.push(wname.to_string());
                }
                Some(o) => {
                    tx.execute(
                        "UPDATE workloads SET kind = ?3, generation = ?4, spec = ?5
                         WHERE app = ?1 AND name = ?2",
                        params![
                            name,
                            wname,
                            w.kind.as_str(),
                            gen_sql(o.generation + 1),
                            w_spec
                        ],
                    )
                    .map_err(&err)?;
                    outcome.changed.push(wname.to_string());
                }
            }
        }
        for &wname in old.keys().filter(|n| !wanted.contains_key(*n)) {
            tx.execute(
                "DELETE FROM workloads WHERE app = ?1 AND name = ?2",
                params![name, wname],
            )
            .map_err(&err)?;
            outcome.removed.push(wname.to_string());
        }
        outcome.generation = 1;
        if let Some(app) = before {
            outcome.spec_changed = app.spec != *spec;
            outcome.generation = app.generation;
            if !outcome.is_noop() {
                outcome.generation += 1;
                tx.execute(
                    "UPDATE apps SET generation = ?2, spec = ?3, updated = ?4 WHERE name = ?1",
                    params![name, gen_sql(outcome.generation), spec_text, now],
                )
                .map_err(&err)?;
            }
        }
        Ok(outcome)
    }
}

impl Store {
    /// The app `name` with its workloads, or `None` when it is not deployed.
    pub fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        self.read_app(&self.lock(), name)
    }

    /// Every deployed app with its workloads, ordered by name.
    pub fn list_apps(&self) -> Result<Vec<AppRecord>> {
        let conn = self.lock();
        let err = self.db_err();
        let names: Vec<String> = conn
            .prepare_cached("SELECT name FROM apps ORDER BY name")
            .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
            .map_err(&err)?;
        let mut apps = Vec::with_capacity(names.len());
        for name in names {
            apps.extend(self.read_app(&conn, &name)?);
        }
        Ok(apps)
    }

    /// Removes `name` and its workloads in one durable transaction; false when it was not
    /// deployed. Its instances stay recorded until the scheduler has stopped them.
    #[tracing::instrument(skip_all, fields(app = name), err)]
    pub fn delete_app(&self, name: &str) -> Result<bool> {
        let err = self.db_err();
        let deleted = self.durable(|tx| {
            tx.execute("DELETE FROM apps WHERE name = ?1", [name])
                .map_err(&err)
        })?;
        if deleted > 0 {
            tracing::info!(app = name, "app deleted");
        }
        Ok(deleted > 0)
    }

    /// Sets (`Some(n)`) or clears (`None`) the `skiff scale` override of one workload, durably.
    /// Neither generation moves: scaling is not a new version to roll out.
    #[tracing::instrument(skip_all, fields(app = app, workload = workload, scale = ?scale), err)]
    pub fn set_scale(&self, app: &str, workload: &str, scale: Option<u32>) -> Result<()> {
        let err = self.db_err();
        let updated = self.durable(|tx| {
            tx.execute(
                "UPDATE workloads SET scale = ?3 WHERE app = ?1 AND name = ?2",
                params![app, workload, scale],
            )
            .map_err(&err)
        })?;
        if updated == 0 {
            return Err(if self.get_app(app)?.is_none() {
                StateError::AppNotFound {
                    app: app.to_string(),
                }
            } else {
                StateError::WorkloadNotFound {
                    app: app.to_string(),
                    workload: workload.to_string(),
                }
            });
        }
        tracing::info!(app, workload, scale = ?scale, "workload scaled");
        Ok(())
    }

    /// Reads one app on `conn` (a plain connection or an open transaction).
    fn read_app(&self, conn: &rusqlite::Connection, name: &str) -> Result<Option<AppRecord>> {
        let err = self.db_err();
        let row = conn
            .prepare_cached("SELECT generation, spec, created, updated FROM apps WHERE name = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([name], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                    ))
                })
                .optional()
            })
            .map_err(&err)?;
        let Some((generation, spec, created, updated)) = row else {
            return Ok(None);
        };
        let rows: Vec<RawWorkload> = conn
            .prepare_cached(
                "SELECT name, kind, generation, spec, scale FROM workloads
                 WHERE app = ?1 ORDER BY name",
            )
            .and_then(|mut stmt| stmt.query_map([name], RawWorkload::from_row)?.collect())
            .map_err(&err)?;
        let workloads = rows
            .into_iter()
            .map(|raw| raw.parse(self, name))
            .collect::<Result<_>>()?;
        Ok(Some(AppRecord {
            name: name.to_string(),
            generation: generation.max(0) as u64,
            spec: parse_spec(&spec, || format!("app {name}"))?,
            created: from_millis(created),
            updated: from_millis(updated),
            workloads,
        }))
    }
}

/// A workloads row before its text columns are parsed.
struct RawWorkload {
    name: String,
    kind: String,
    generation: i64,
    spec: String,
    scale: Option<i64>,
}

impl RawWorkload {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: r.get(0)?,
            kind: r.get(1)?,
            generation: r.get(2)?,
            spec: r.get(3)?,
            scale: r.get(4)?,
        })
    }

    fn parse(self, store: &Store, app: &str) -> Result<StoredWorkload> {
        let spec = parse_spec(&self.spec, || format!("workload {app}/{}", self.name))?;
        Ok(StoredWorkload {
            kind: WorkloadKind::parse(store, &self.kind)?,
            generation: self.generation.max(0) as u64,
            spec,
            scale: self.scale.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            name: self.name,
        })
    }
}

fn parse_spec(text: &str, what: impl FnOnce() -> String) -> Result<Value> {
    serde_json::from_str(text).map_err(|error| StateError::Spec {
        what: what(),
        error,
    })
}

fn gen_sql(generation: u64) -> i64 {
    i64::try_from(generation).unwrap_or(i64::MAX)
}
