//! Containers on disk: one directory per container under `<data>/linux/containers/<id>`,
//! holding its record (`state.json`, replaced atomically), its overlay upper and work dirs,
//! the overlay mount point and its log.
//!
//! The record is written by the container's monitor (the process that launched it and waits
//! for it) and read by `skiff ps`, `stop`, `logs` and `rm`. A monitor that died leaves a
//! record that still says running: readers check the monitor's pid before trusting it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such container: {name}; see `skiff ps -a`")]
    Unknown { name: String },
    #[error(
        "container name {name} is already in use by {id}; remove it with `skiff rm {name}` or pick another --name"
    )]
    NameInUse { name: String, id: String },
    #[error(
        "invalid container name {name:?}; use letters, digits, `_`, `.` and `-`, starting with a letter or digit"
    )]
    BadName { name: String },
    #[error("{name} matches more than one container ({ids}); give more of the id")]
    Ambiguous { name: String, ids: String },
    #[error(
        "container {name} is an instance of {app}/{workload}, which skiff serve keeps running; \
         change it with `skiff scale {app}/{workload}=N`, or remove the app with `skiff apps rm {app}`"
    )]
    Managed {
        name: String,
        app: String,
        workload: String,
    },
    #[error("container state {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("container state {path} is unreadable ({error}); remove the directory to forget it")]
    Corrupt {
        path: PathBuf,
        error: serde_json::Error,
    },
}

type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// One container's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    /// Seconds since the epoch.
    pub created: u64,
    pub status: Status,
    /// Pid 1 of the container, as the host sees it, and its start time (guards against reuse).
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    /// The monitor waiting for the container.
    pub monitor_pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub finished: Option<u64>,
    pub ports: Vec<String>,
    pub address: Option<String>,
    pub auto_remove: bool,
    /// The daemon's workload this container is an instance of; `None` for `skiff run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// Which deployed workload a container belongs to, so a restarted daemon can find (adopt) it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub app: String,
    pub workload: String,
    /// The app's generation that launched it.
    pub generation: u64,
    /// Which of the workload's instances it is: 0 to replicas - 1.
    pub replica: u32,
}

impl ContainerRecord {
    /// Refuses a change by hand to a container a daemon's workload owns: its supervisor would
    /// undo it (a stopped instance is restarted), so the right verb is the workload's.
    pub fn check_unmanaged(&self, name: &str) -> Result<()> {
        match &self.owner {
            Some(owner) => Err(ContainerError::Managed {
                name: name.to_string(),
                app: owner.app.clone(),
                workload: owner.workload.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// The containers of one data dir.
#[derive(Debug, Clone)]
pub struct Containers {
    root: PathBuf,
}

impl Containers {
    pub fn open(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("linux/containers"),
        }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// A new container directory with its record; the name must be free.
    pub fn create(&self, record: &ContainerRecord) -> Result<PathBuf> {
        check_name(&record.name)?;
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let _lock = lock(&self.root)?;
        if let Some(other) = self.list()?.into_iter().find(|c| c.name == record.name) {
            return Err(ContainerError::NameInUse {
                name: record.name.clone(),
                id: other.id,
            });
        }
        let dir = self.dir(&record.id);
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        self.save(record)?;
        Ok(dir)
    }

    pub fn save(&self, record: &ContainerRecord) -> Result<()> {
        let path = self.dir(&record.id).join("state.json");
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(record).expect("a record serialises");
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    pub fn load(&self, id: &str) -> Result<ContainerRecord> {
        let path = self.dir(id).join("state.json");
        let bytes = std::fs::read(&path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => ContainerError::Unknown { name: id.into() },
            _ => ContainerError::Io {
                path: path.clone(),
                error,
            },
        })?;
        serde_json::from_slice(&bytes).map_err(|error| ContainerError::Corrupt { path, error })
    }

    /// One container's record as things are (see [`Containers::list`]).
    pub fn current(&self, id: &str) -> Result<ContainerRecord> {
        self.load(id).map(observed)
    }

    /// Every container, oldest first, with a dead monitor's `running` shown as exited.
    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(ContainerError::Io {
                    path: self.root.clone(),
                    error,
                });
            }
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if id.starts_with('.') {
                continue;
            }
            match self.load(&id) {
                Ok(record) => records.push(observed(record)),
                // A directory being created or removed right now.
                Err(ContainerError::Unknown { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "skipping a container"),
            }
        }
        records.sort_by_key(|r| r.created);
        Ok(records)
    }

    /// The container a user names: its name, full id or a unique id prefix.
    pub fn find(&self, name: &str) -> Result<ContainerRecord> {
        let all = self.list()?;
        if let Some(found) = all.iter().find(|c| c.name == name || c.id == name) {
            return Ok(found.clone());
        }
        let matches: Vec<&ContainerRecord> =
            all.iter().filter(|c| c.id.starts_with(name)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ContainerError::Unknown { name: name.into() }),
            many => Err(ContainerError::Ambiguous {
                name: name.into(),
                ids: many
                    .iter()
                    .map(|c| short_id(&c.id))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    pub fn remove_dir(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(ContainerError::Io { path: dir, error }),
        }
    }
}

/// The record as things are: a `running` container whose monitor is gone has exited with an
/// unknown code.
fn observed(mut record: ContainerRecord) -> ContainerRecord {
    if record.status != Status::Exited
        && let Some(monitor) = record.monitor_pid
        && !pid_alive(monitor)
    {
        record.status = Status::Exited;
    }
    record
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie has no /proc/PID/exe link target but still has its stat; treat it as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// A process's start time (clock ticks since boot): with the pid, names one process.
pub fn pid_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` is still the process that was recorded.
pub fn same_process(pid: i32, start: Option<u64>) -> bool {
    pid_alive(pid) && (start.is_none() || pid_start_time(pid) == start)
}

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if first_ok && rest_ok && name.len() <= 128 {
        Ok(())
    } else {
        Err(ContainerError::BadName { name: name.into() })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.to_path_buf();
    move |error| ContainerError::Io { path, error }
}

/// An exclusive lock on the containers directory, held while a name is claimed.
fn lock(root: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = root.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
        ContainerError::Io {
            path,
            error: e.into(),
        }
    })
}

/// A fresh 64-hex-digit container id.
pub fn new_id() -> String {
    use sha2::{Digest, Sha256};
    let mut seed = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut seed);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(seed);
    hasher.update(now.as_nanos().to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hex::encode(hasher.finalize())
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            name: name.into(),
            image: "busybox".into(),
            command: vec!["sh".into()],
            created: now(),
            status: Status::Created,
            pid: None,
            pid_start: None,
            monitor_pid: None,
            exit_code: None,
            oom_killed: false,
            finished: None,
            ports: Vec::new(),
            address: None,
            auto_remove: false,
            owner: None,
        }
    }

    #[test]
    fn names_are_unique_and_found_by_name_or_id_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let containers = Containers::open(dir.path());
        containers.create(&record("abc123", "web")).unwrap();
        containers.create(&record("abd456", "db")).unwrap();
        let err = containers.create(&record("fff", "web")).unwrap_err();
        assert!(
            err.to_string().contains("already in use by abc123"),
            "{err}"
        );
        assert!(!containers.dir("fff").exists());
        assert_eq!(containers.find("web").unwrap().id, "abc123");
        assert_eq!(containers.find("abd").unwrap().name, "db");
        assert!(matches!(
            containers.find("ab"),
            Err(ContainerError::Ambiguous { .. })
        ));
        assert!(matches!(
            containers.find("zzz"),
            Err(ContainerError::Unknown { .. })
        ));
    }

    #[test]
    fn bad_names_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let containers = Containers::open(dir.path());
        for bad in ["", "-x", "a/b", "../x", "a b"] {
            assert!(matches!(
                containers.create(&record("id1", bad)),
                Err(ContainerError::BadName { .. })
            ));
        }
        assert!(containers.list().unwrap().is_empty());
    }

    #[test]
    fn a_dead_monitor_means_exited() {
        let dir = tempfile::tempdir().unwrap();
        let containers = Containers::open(dir.path());
        let mut r = record("dead", "gone");
        r.status = Status::Running;
        r.monitor_pid = Some(i32::MAX - 1);
        containers.create(&r).unwrap();
        assert_eq!(containers.find("gone").unwrap().status, Status::Exited);
        assert!(pid_alive(std::process::id() as i32));
        assert!(pid_start_time(std::process::id() as i32).is_some());
    }
}
