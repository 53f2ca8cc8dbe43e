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
    /// The version this one replaced, while its rollout has not ended.
    pub previous: Option<Previous>,
}

/// A workload's version before its last change.
#[derive(Debug, Clone, PartialEq)]
pub struct Previous {
    pub generation: u64,
    pub spec: Value,
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
                    // The version replaced, for a rollout to come back to; none across kinds.
                    let previous = (o.kind == w.kind).then(|| o.spec.to_string());
                    tx.execute(
                        "UPDATE workloads SET kind = ?3, generation = ?4, spec = ?5,
                         previous_generation = ?6, previous_spec = ?7
                         WHERE app = ?1 AND name = ?2",
                        params![
                            name,
                            wname,
                            w.kind.as_str(),
                            gen_sql(o.generation + 1),
                            w_spec,
                            previous.as_ref().map(|_| gen_sql(o.generation)),
                            previous,
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

    /// Puts a service back to an earlier version after its rollout failed, durably: the
    /// workload's row gets `generation` and `spec` again, and so does its entry in the app's
    /// stored spec, so the next deploy compares against what runs. The app's generation stays.
    #[tracing::instrument(skip_all, fields(app = app, workload = workload, generation), err)]
    pub fn restore_workload(
        &self,
        app: &str,
        workload: &str,
        generation: u64,
        spec: &Value,
    ) -> Result<()> {
        let err = self.db_err();
        let not_found = || StateError::WorkloadNotFound {
            app: app.to_string(),
            workload: workload.to_string(),
        };
        self.durable(|tx| {
            let Some(record) = self.read_app(tx, app)? else {
                return Err(StateError::AppNotFound {
                    app: app.to_string(),
                });
            };
            let mut app_spec = record.spec;
            let entry = app_spec
                .get_mut("services")
                .and_then(|services| services.get_mut(workload))
                .ok_or_else(not_found)?;
            *entry = spec.clone();
            let updated = tx
                .execute(
                    "UPDATE workloads SET generation = ?3, spec = ?4,
                     previous_generation = NULL, previous_spec = NULL
                     WHERE app = ?1 AND name = ?2",
                    params![app, workload, gen_sql(generation), spec.to_string()],
                )
                .map_err(&err)?;
            if updated == 0 {
                return Err(not_found());
            }
            tx.execute(
                "UPDATE apps SET spec = ?2, updated = ?3 WHERE name = ?1",
                params![app, app_spec.to_string(), now_millis()],
            )
            .map_err(&err)?;
            Ok(())
        })?;
        tracing::info!(app, workload, generation, "workload restored");
        Ok(())
    }

    /// Forgets the version `generation` of a workload replaced, once its rollout ended; a
    /// later change (another generation) keeps its own.
    pub fn finish_rollout(&self, app: &str, workload: &str, generation: u64) -> Result<()> {
        let err = self.db_err();
        self.durable(|tx| {
            tx.execute(
                "UPDATE workloads SET previous_generation = NULL, previous_spec = NULL
                 WHERE app = ?1 AND name = ?2 AND generation = ?3",
                params![app, workload, gen_sql(generation)],
            )
            .map_err(&err)
        })?;
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
                "SELECT name, kind, generation, spec, scale, previous_generation, previous_spec
                 FROM workloads WHERE app = ?1 ORDER BY name",
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
    previous_generation: Option<i64>,
    previous_spec: Option<String>,
}

impl RawWorkload {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: r.get(0)?,
            kind: r.get(1)?,
            generation: r.get(2)?,
            spec: r.get(3)?,
            scale: r.get(4)?,
            previous_generation: r.get(5)?,
            previous_spec: r.get(6)?,
        })
    }

    fn parse(self, store: &Store, app: &str) -> Result<StoredWorkload> {
        let spec = parse_spec(&self.spec, || format!("workload {app}/{}", self.name))?;
        let previous = match (self.previous_generation, &self.previous_spec) {
            (Some(generation), Some(text)) => Some(Previous {
                generation: generation.max(0) as u64,
                spec: parse_spec(text, || format!("workload {app}/{}'s previous", self.name))?,
            }),
            _ => None,
        };
        Ok(StoredWorkload {
            previous,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::temp_store;
    use serde_json::json;

    fn w(name: &str, kind: WorkloadKind, spec: Value) -> WorkloadRecord {
        WorkloadRecord {
            name: name.to_string(),
            kind,
            spec,
        }
    }

    fn shop() -> Vec<WorkloadRecord> {
        vec![
            w(
                "api",
                WorkloadKind::Function,
                json!({"route": "/api", "max": 100}),
            ),
            w("cache", WorkloadKind::Service, json!({"image": "redis:7"})),
            w("migrate", WorkloadKind::Job, json!({"retries": 3})),
        ]
    }

    fn generations(app: &AppRecord) -> Vec<(String, u64)> {
        app.workloads
            .iter()
            .map(|w| (w.name.clone(), w.generation))
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_app_adds_every_workload_at_generation_one() {
        let (_dir, store) = temp_store();
        let out = store.put_app("shop", &json!({"v": 1}), &shop()).unwrap();
        assert!(out.created && !out.is_noop());
        assert_eq!(out.generation, 1);
        assert_eq!(out.added, names(&["api", "cache", "migrate"]));
        let app = store.get_app("shop").unwrap().unwrap();
        assert_eq!(app.generation, 1);
        assert_eq!(app.spec, json!({"v": 1}));
        assert_eq!(app.created, app.updated);
        assert_eq!(
            generations(&app),
            [
                ("api".into(), 1),
                ("cache".into(), 1),
                ("migrate".into(), 1)
            ]
        );
        assert_eq!(app.workloads[1].kind, WorkloadKind::Service);
        assert_eq!(app.workloads[1].spec, json!({"image": "redis:7"}));
    }

    #[test]
    fn an_identical_put_changes_nothing() {
        let (_dir, store) = temp_store();
        store.put_app("shop", &json!({"v": 1}), &shop()).unwrap();
        let before = store.get_app("shop").unwrap().unwrap();
        let mut reordered = shop();
        reordered.reverse();
        // Key order in a spec does not matter either.
        reordered[2].spec = serde_json::from_str(r#"{"max": 100, "route": "/api"}"#).unwrap();
        let out = store.put_app("shop", &json!({"v": 1}), &reordered).unwrap();
        assert!(out.is_noop(), "{out:?}");
        assert_eq!(out.generation, 1);
        assert_eq!(out.unchanged, names(&["api", "cache", "migrate"]));
        assert_eq!(store.get_app("shop").unwrap().unwrap(), before);
    }

    #[test]
    fn a_put_adds_changes_and_removes_exactly_what_differs() {
        let (_dir, store) = temp_store();
        store.put_app("shop", &json!({"v": 1}), &shop()).unwrap();
        let mut next = shop();
        next[0].spec = json!({"route": "/api", "max": 50});
        next[2] = w("worker", WorkloadKind::Service, json!({}));
        let out = store.put_app("shop", &json!({"v": 1}), &next).unwrap();
        assert_eq!(out.generation, 2);
        assert!(!out.created && !out.spec_changed);
        assert_eq!(out.added, names(&["worker"]));
        assert_eq!(out.changed, names(&["api"]));
        assert_eq!(out.removed, names(&["migrate"]));
        assert_eq!(out.unchanged, names(&["cache"]));
        let app = store.get_app("shop").unwrap().unwrap();
        assert_eq!(app.generation, 2);
        assert_eq!(
            generations(&app),
            [("api".into(), 2), ("cache".into(), 1), ("worker".into(), 1)]
        );
    }

    #[test]
    fn a_changed_kind_is_a_change() {
        let (_dir, store) = temp_store();
        store.put_app("shop", &json!({}), &shop()).unwrap();
        let mut next = shop();
        next[1].kind = WorkloadKind::Job;
        let out = store.put_app("shop", &json!({}), &next).unwrap();
        assert_eq!(out.changed, names(&["cache"]));
        let app = store.get_app("shop").unwrap().unwrap();
        assert_eq!(app.workloads[1].kind, WorkloadKind::Job);
        assert_eq!(app.workloads[1].generation, 2);
    }

    #[test]
    fn a_changed_app_spec_bumps_only_the_app() {
        let (_dir, store) = temp_store();
        store.put_app("shop", &json!({"v": 1}), &shop()).unwrap();
        let out = store.put_app("shop", &json!({"v": 2}), &shop()).unwrap();
        assert!(out.spec_changed && !out.is_noop());
        assert_eq!(out.generation, 2);
        assert_eq!(out.unchanged.len(), 3);
        let app = store.get_app("shop").unwrap().unwrap();
        assert_eq!(app.spec, json!({"v": 2}));
        assert!(app.workloads.iter().all(|w| w.generation == 1));
    }

    #[test]
    fn duplicate_workload_names_are_refused_and_nothing_is_written() {
        let (_dir, store) = temp_store();
        let mut twice = shop();
        twice.push(w("cache", WorkloadKind::Service, json!({})));
        let err = store.put_app("shop", &json!({}), &twice).unwrap_err();
        assert!(
            matches!(err, StateError::DuplicateWorkload { ref workload, .. } if workload == "cache")
        );
        assert!(err.to_string().contains("unique name"), "{err}");
        assert!(store.get_app("shop").unwrap().is_none());
    }

    #[test]
    fn list_get_and_delete() {
        let (_dir, store) = temp_store();
        assert!(store.list_apps().unwrap().is_empty());
        assert!(store.get_app("shop").unwrap().is_none());
        store.put_app("web", &json!({}), &[]).unwrap();
        store.put_app("shop", &json!({}), &shop()).unwrap();
        let listed: Vec<_> = store
            .list_apps()
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(listed, names(&["shop", "web"]));
        assert!(store.delete_app("shop").unwrap());
        assert!(!store.delete_app("shop").unwrap());
        let left: i64 = store
            .lock()
            .query_row("SELECT count(*) FROM workloads", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "workloads went with their app");
        let out = store.put_app("shop", &json!({}), &shop()).unwrap();
        assert!(
            out.created && out.generation == 1,
            "a re-created app starts over"
        );
    }

    #[test]
    fn scale_overrides_survive_puts_and_move_no_generation() {
        let (_dir, store) = temp_store();
        store.put_app("shop", &json!({}), &shop()).unwrap();
        store.set_scale("shop", "cache", Some(3)).unwrap();
        let scale = |store: &Store| {
            let app = store.get_app("shop").unwrap().unwrap();
            (
                app.generation,
                app.workloads[1].generation,
                app.workloads[1].scale,
            )
        };
        assert_eq!(scale(&store), (1, 1, Some(3)));
        store.put_app("shop", &json!({}), &shop()).unwrap();
        assert_eq!(scale(&store), (1, 1, Some(3)));
        let mut next = shop();
        next[1].spec = json!({"image": "redis:8"});
        store.put_app("shop", &json!({}), &next).unwrap();
        assert_eq!(scale(&store), (2, 2, Some(3)));
        store.set_scale("shop", "cache", None).unwrap();
        assert_eq!(scale(&store), (2, 2, None));
    }

    #[test]
    fn a_restored_workload_gets_its_generation_and_spec_back_in_both_places() {
        let (_dir, store) = temp_store();
        let app_spec =
            |image: &str| json!({"name": "shop", "services": {"cache": {"image": image}}});
        let mut v1 = shop();
        v1[1].spec = json!({"image": "redis:7"});
        store.put_app("shop", &app_spec("redis:7"), &v1).unwrap();
        let mut v2 = shop();
        v2[1].spec = json!({"image": "redis:8"});
        store.put_app("shop", &app_spec("redis:8"), &v2).unwrap();
        store
            .restore_workload("shop", "cache", 1, &json!({"image": "redis:7"}))
            .unwrap();
        let app = store.get_app("shop").unwrap().unwrap();
        assert_eq!(app.spec, app_spec("redis:7"));
        assert_eq!(app.workloads[1].generation, 1);
        assert_eq!(app.workloads[1].spec, json!({"image": "redis:7"}));
        assert_eq!(app.generation, 2, "the app's generation stays");
        let again = store.put_app("shop", &app_spec("redis:7"), &v1).unwrap();
        assert!(again.is_noop(), "what runs is what is stored: {again:?}");

        let err = (store.restore_workload("shop", "db", 1, &json!({}))).unwrap_err();
        assert!(
            matches!(err, StateError::WorkloadNotFound { .. }),
            "{err:?}"
        );
        assert_eq!(
            store.get_app("shop").unwrap().unwrap().spec,
            app_spec("redis:7")
        );
    }

    #[test]
    fn a_change_keeps_the_version_it_replaced_until_its_rollout_ends() {
        let (_dir, store) = temp_store();
        store.put_app("shop", &json!({}), &shop()).unwrap();
        let cache = |store: &Store| store.get_app("shop").unwrap().unwrap().workloads[1].clone();
        assert_eq!(
            cache(&store).previous,
            None,
            "a new workload replaced nothing"
        );
        let mut v2 = shop();
        v2[1].spec = json!({"image": "redis:8"});
        store.put_app("shop", &json!({}), &v2).unwrap();
        let replaced = Some(Previous {
            generation: 1,
            spec: json!({"image": "redis:7"}),
        });
        assert_eq!(cache(&store).previous, replaced);
        store.put_app("shop", &json!({}), &v2).unwrap();
        store.set_scale("shop", "cache", Some(2)).unwrap();
        assert_eq!(
            cache(&store).previous,
            replaced,
            "unchanged puts and scales keep it"
        );
        store.finish_rollout("shop", "cache", 1).unwrap();
        assert_eq!(
            cache(&store).previous,
            replaced,
            "a stale generation clears nothing"
        );
        store.finish_rollout("shop", "cache", 2).unwrap();
        assert_eq!(cache(&store).previous, None);

        let mut v3 = shop();
        v3[1].spec = json!({"image": "redis:9"});
        let app_spec = json!({"services": {"cache": {"image": "redis:9"}}});
        store.put_app("shop", &app_spec, &v3).unwrap();
        assert_eq!(cache(&store).previous.unwrap().generation, 2);
        store
            .restore_workload("shop", "cache", 2, &json!({"image": "redis:8"}))
            .unwrap();
        assert_eq!(
            cache(&store).previous,
            None,
            "a rollback ends the rollout too"
        );
        let mut job = v3.clone();
        job[1].kind = WorkloadKind::Job;
        store.put_app("shop", &json!({}), &job).unwrap();
        assert_eq!(
            cache(&store).previous,
            None,
            "nothing to come back to across kinds"
        );
    }

    #[test]
    fn scaling_what_is_not_deployed_says_which() {
        let (_dir, store) = temp_store();
        let err = store.set_scale("shop", "cache", Some(1)).unwrap_err();
        assert!(matches!(err, StateError::AppNotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("`skiff apps`"), "{err}");
        store.put_app("shop", &json!({}), &shop()).unwrap();
        let err = store.set_scale("shop", "db", Some(1)).unwrap_err();
        assert!(
            matches!(err, StateError::WorkloadNotFound { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "app shop has no workload db; list its workloads with `skiff apps shop`"
        );
    }

    #[test]
    fn an_unknown_kind_in_the_file_is_reported() {
        let (_dir, store) = temp_store();
        store.put_app("shop", &json!({}), &shop()).unwrap();
        let conn = store.lock();
        conn.execute_batch("PRAGMA ignore_check_constraints = ON")
            .unwrap();
        conn.execute(
            "UPDATE workloads SET kind = 'daemon' WHERE name = 'cache'",
            [],
        )
        .unwrap();
        drop(conn);
        let err = store.get_app("shop").unwrap_err();
        assert!(err.to_string().contains("\"daemon\""), "{err}");
    }
}
