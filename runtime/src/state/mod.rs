//! Durable state in SQLite: what is deployed, what runs, and what happened.
//!
//! Step in the flow: the scheduler and the control API write here, and a restarted `skiff serve`
//! reads here to reconcile. One file, `<data_dir>/state/skiff.db` (directory mode 0700), holds
//! three kinds of rows:
//!
//! - [`desired`]: apps and their workloads, as deployed (`put_app`, `delete_app`, `set_scale`);
//! - [`observed`]: instances, with the pid, container id and address a restart needs to re-adopt;
//! - [`events`]: an append-only log with bounded retention, streamed in-process to subscribers.
//!
//! Crash safety: the database runs in WAL mode. Every change of desired state is one
//! `BEGIN IMMEDIATE` transaction committed with `synchronous=FULL`, so a deploy that was
//! acknowledged has been fsync'd and survives power loss, and a torn write leaves either the
//! whole change or none of it. Observed state and events are rewritten by the daemon as it runs,
//! so they commit with `synchronous=NORMAL`: still atomic, but the last few may be lost on power
//! loss (not on a crash of skiff alone), which reconcile repairs from the live system.
//!
//! The schema is versioned with `PRAGMA user_version` and upgraded forward only by
//! [`MIGRATIONS`]; a database written by a newer skiff is refused, never downgraded. Opening runs
//! `PRAGMA quick_check`, so a corrupt file is reported with its path at start, not mid-deploy.
//!
//! Concurrency: [`Store`] is `Send + Sync` and wraps one connection in a mutex. The API is
//! synchronous and no lock is ever held across an `.await`; callers on tokio either accept the
//! short block (single-row writes take microseconds to a few milliseconds) or use
//! `spawn_blocking` for durable writes, which wait for an fsync.
//!
//! Not here: what a spec means (the app manifest owns that; specs are stored as opaque JSON),
//! deciding what to run (the scheduler), and blobs or snapshots (the content store and `linux`).

pub mod desired;
pub mod events;
pub mod observed;

#[cfg(test)]
mod tests;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

pub use desired::{AppRecord, Previous, PutOutcome, StoredWorkload, WorkloadKind, WorkloadRecord};
pub use events::{Event, EventStream, NewEvent, StreamItem};
pub use observed::{InstanceKind, InstanceRecord, InstanceState, InstanceUpdate};

/// How long a statement waits for another connection's lock before failing with
/// [`StateError::Busy`]. One daemon owns the file, so waiting at all means another process
/// (a second `skiff serve` on the same data dir, or a backup tool) holds it.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Forward-only migrations: entry `i` upgrades schema version `i` to `i + 1`. Append, never
/// edit a released entry: databases in the field have already run it.
pub const MIGRATIONS: &[&str] = &[
    // 1: apps, workloads, instances, events.
    "CREATE TABLE apps (
        name       TEXT PRIMARY KEY NOT NULL,
        generation INTEGER NOT NULL,
        spec       TEXT NOT NULL,
        created    INTEGER NOT NULL,
        updated    INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE workloads (
        app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        kind       TEXT NOT NULL CHECK (kind IN ('function', 'service', 'job')),
        generation INTEGER NOT NULL,
        spec       TEXT NOT NULL,
        scale      INTEGER CHECK (scale IS NULL OR scale >= 0),
        PRIMARY KEY (app, name)
    ) STRICT;
    CREATE TABLE instances (
        id           TEXT PRIMARY KEY NOT NULL,
        app          TEXT NOT NULL,
        workload     TEXT NOT NULL,
        kind         TEXT NOT NULL CHECK (kind IN ('wasm', 'linux')),
        generation   INTEGER NOT NULL,
        state        TEXT NOT NULL
                     CHECK (state IN ('pending', 'starting', 'running', 'exiting', 'exited')),
        pid          INTEGER,
        pid_start    INTEGER,
        container_id TEXT,
        address      TEXT,
        reason       TEXT,
        started      INTEGER NOT NULL,
        updated      INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX instances_by_workload ON instances (app, workload);
    CREATE TABLE events (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        time     INTEGER NOT NULL,
        app      TEXT,
        workload TEXT,
        instance TEXT,
        kind     TEXT NOT NULL,
        message  TEXT NOT NULL
    ) STRICT;",
    // 2: the version a changed workload replaces, kept until its rollout ends, so a daemon
    // restarted in the middle of one can adopt the old containers and carry on.
    "ALTER TABLE workloads ADD COLUMN previous_generation INTEGER;
    ALTER TABLE workloads ADD COLUMN previous_spec TEXT;",
];

/// Subscribers that fall this many events behind get [`StreamItem::Lagged`] instead of
/// holding more in memory.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {error}; check that the data dir exists and is writable")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error(
        "state database {path} is corrupt ({detail}); restore it from a backup, or move it \
         aside to start with nothing deployed"
    )]
    Corrupt { path: PathBuf, detail: String },

    #[error(
        "state database {path} was written by a newer skiff (schema {found}, this skiff knows \
         up to {supported}); upgrade skiff"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error(
        "upgrading state database {path} to schema {version}: {error}; the database was left \
         at the previous schema"
    )]
    Migrate {
        path: PathBuf,
        version: u32,
        error: rusqlite::Error,
    },

    #[error(
        "state database {path} is locked by another process; stop the other `skiff serve` \
         using this data dir"
    )]
    Busy { path: PathBuf },

    #[error("state database {path}: {error}; check free space and permissions of the data dir")]
    Sqlite {
        path: PathBuf,
        error: rusqlite::Error,
    },

    #[error(
        "state database {path}: {what} holds {value:?}, which this skiff does not know; it was \
         changed by hand or by a newer skiff"
    )]
    UnknownValue {
        path: PathBuf,
        what: &'static str,
        value: String,
    },

    #[error("stored spec of {what} is not valid JSON: {error}; redeploy it with `skiff deploy`")]
    Spec {
        what: String,
        error: serde_json::Error,
    },

    #[error("app {app} is not deployed; list apps with `skiff apps`")]
    AppNotFound { app: String },

    #[error("app {app} has no workload {workload}; list its workloads with `skiff apps {app}`")]
    WorkloadNotFound { app: String, workload: String },

    #[error("app {app} lists workload {workload} twice; give each workload a unique name")]
    DuplicateWorkload { app: String, workload: String },

    #[error("instance {id} is not recorded; list instances with `skiff ps`")]
    InstanceNotFound { id: String },

    #[error("instance {id} is already recorded; give each instance a fresh id")]
    InstanceExists { id: String },
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// skiff's durable state: one SQLite connection behind a mutex, plus the event broadcast.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    events: broadcast::Sender<Event>,
}

impl Store {
    /// Opens (creating and migrating if needed) `<data_dir>/state/skiff.db`.
    ///
    /// Fails with [`StateError::NewerSchema`] for a database from a newer skiff and
    /// [`StateError::Corrupt`] when the file is not a sound SQLite database.
    #[tracing::instrument(skip_all, fields(data_dir = %data_dir.as_ref().display()), err)]
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        let dir = data_dir.as_ref().join("state");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|error| StateError::Io {
                path: dir.clone(),
                error,
            })?;
        Self::open_file(dir.join("skiff.db"))
    }

    /// Opens the database file at `path` itself; [`Store::open`] picks the path.
    fn open_file(path: PathBuf) -> Result<Self> {
        // Created 0600 before SQLite sees it, so the -wal and -shm files inherit that mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|error| StateError::Io {
                path: path.clone(),
                error,
            })?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(db_err(&path))?;
        configure(&conn).map_err(db_err(&path))?;
        quick_check(&conn, &path)?;
        migrate(&conn, &path, MIGRATIONS)?;
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        tracing::debug!(path = %path.display(), "state database open");
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            events,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database (always `MIGRATIONS.len()` after `open`).
    pub fn schema_version(&self) -> Result<u32> {
        user_version(&self.lock()).map_err(db_err(&self.path))
    }

    /// The connection. A panic while it was held leaves no open transaction (rusqlite's
    /// `Transaction` rolls back on drop), so a poisoned lock is safe to take over.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction committed with `synchronous=FULL`: when
    /// this returns `Ok`, the change is on disk. For desired state.
    fn durable<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let err = db_err(&self.path);
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(&err)?;
        let result = in_transaction(&mut conn, &err, f);
        let restored = conn.pragma_update(None, "synchronous", "NORMAL");
        let value = result?;
        restored.map_err(err)?;
        Ok(value)
    }

    /// Runs `f` in one transaction committed with the connection's `synchronous=NORMAL`:
    /// atomic, but the last commits may be lost on power loss. For observed state and events.
    fn quick<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        in_transaction(&mut self.lock(), &db_err(&self.path), f)
    }

    fn db_err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        db_err(&self.path)
    }

    /// A stored enum column (`what` = `table.column`) holds text this skiff does not know.
    fn unknown(&self, what: &'static str, value: &str) -> StateError {
        StateError::UnknownValue {
            path: self.path.clone(),
            what,
            value: value.to_string(),
        }
    }
}

fn in_transaction<T>(
    conn: &mut Connection,
    err: &impl Fn(rusqlite::Error) -> StateError,
    f: impl FnOnce(&Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let value = f(&tx)?;
    tx.commit().map_err(err)?;
    Ok(value)
}

/// Per-connection settings; see the module docs for why each.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "state database is not in WAL mode; writes are slower");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// `PRAGMA quick_check`: O(size of the database), a few milliseconds for thousands of rows.
fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let mut stmt = conn.prepare("PRAGMA quick_check").map_err(db_err(path))?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
        .map_err(db_err(path))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(StateError::Corrupt {
        path: path.to_path_buf(),
        detail: problems.join("; "),
    })
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Brings the schema to `migrations.len()`, one transaction per step, or refuses a newer one.
fn migrate(conn: &Connection, path: &Path, migrations: &[&str]) -> Result<()> {
    let supported = u32::try_from(migrations.len()).expect("fewer than 2^32 migrations");
    let found = user_version(conn).map_err(db_err(path))?;
    if found > supported {
        return Err(StateError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    for version in found + 1..=supported {
        let sql = migrations[version as usize - 1];
        let step = format!("BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {version}; COMMIT;");
        conn.execute_batch(&step).map_err(|error| {
            // A failed batch can stop before COMMIT; leave no transaction open.
            let _ = conn.execute_batch("ROLLBACK");
            match db_err(path)(error) {
                StateError::Sqlite { error, .. } => StateError::Migrate {
                    path: path.to_path_buf(),
                    version,
                    error,
                },
                other => other,
            }
        })?;
        tracing::info!(path = %path.display(), version, "state database schema upgraded");
    }
    Ok(())
}

/// Maps SQLite's errors to what the operator can do about them.
fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> StateError + '_ {
    move |error| {
        let path = path.to_path_buf();
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StateError::Busy { path },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StateError::Corrupt {
                path,
                detail: error.to_string(),
            },
            _ => StateError::Sqlite { path, error },
        }
    }
}

/// Milliseconds since the Unix epoch, as stored in every time column.
fn to_millis(time: SystemTime) -> i64 {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    i64::try_from(millis).unwrap_or(i64::MAX)
}

fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn now_millis() -> i64 {
    to_millis(SystemTime::now())
}
