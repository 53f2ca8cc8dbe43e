//! Registry credentials in Docker's `config.json` format: `{"auths": {"HOST": {"auth":
//! base64("user:password")}}}`, which `skiff login` writes and Docker, podman and skopeo read.
//!
//! The CLI decides which files to read (skiff's own, then Docker's); this module only parses
//! and writes them. Credential helpers (`credsStore`) are not run.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Username and password per registry host.
pub type Credentials = BTreeMap<String, (String, String)>;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read credentials {path}: {detail}; fix or remove the file")]
    Read { path: PathBuf, detail: String },
    #[error("cannot write credentials {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Docker Hub's historical key in config files.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Reads the credentials in a Docker-format file; a missing file has none.
pub fn read(path: &Path) -> Result<Credentials, CredentialsError> {
    let bad = |detail: String| CredentialsError::Read {
        path: path.to_path_buf(),
        detail,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::new()),
        Err(e) => return Err(bad(e.to_string())),
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut credentials = Credentials::new();
    for (key, entry) in json["auths"].as_object().into_iter().flatten() {
        let Some(encoded) = entry["auth"].as_str().filter(|a| !a.is_empty()) else {
            continue;
        };
        let decoded = STANDARD
            .decode(encoded)
            .map_err(|e| bad(format!("{key}: {e}")))?;
        let decoded = String::from_utf8(decoded).map_err(|e| bad(format!("{key}: {e}")))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad(format!("{key}: auth is not user:password")))?;
        credentials.insert(host_of(key), (user.to_string(), password.to_string()));
    }
    Ok(credentials)
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host:5000` → `host:5000`.
fn host_of(key: &str) -> String {
    if key == DOCKER_HUB_KEY || key == "index.docker.io" {
        return "docker.io".into();
    }
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.trim_end_matches('/')
        .split('/')
        .next()
        .unwrap_or(key)
        .to_string()
}

/// Adds (or with `None`, removes) `host`'s entry in a Docker-format file, keeping every other
/// key; the file is replaced atomically with mode 0600.
pub fn store(path: &Path, host: &str, login: Option<(&str, &str)>) -> Result<(), CredentialsError> {
    let write_err = |source| CredentialsError::Write {
        path: path.to_path_buf(),
        error: source,
    };
    let mut json: serde_json::Value = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| CredentialsError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?,
        Err(_) => serde_json::json!({}),
    };
    if !json["auths"].is_object() {
        json["auths"] = serde_json::json!({});
    }
    let auths = json["auths"].as_object_mut().expect("made an object above");
    match login {
        Some((user, password)) => {
            let auth = STANDARD.encode(format!("{user}:{password}"));
            auths.insert(host.to_string(), serde_json::json!({ "auth": auth }));
        }
        None => {
            auths.remove(host);
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    // NamedTempFile is created 0600; the rename keeps that.
    tmp.write_all(
        serde_json::to_string_pretty(&json)
            .expect("json")
            .as_bytes(),
    )
    .map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let alice = STANDARD.encode("alice:s3cret:with-colon");
        let hub = STANDARD.encode("bob:hub");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"localhost:5000":{{"auth":"{alice}"}},"{DOCKER_HUB_KEY}":{{"auth":"{hub}"}},"helper.io":{{}}}},"credsStore":"desktop"}}"#),
        )
        .unwrap();
        let credentials = read(&path).unwrap();
        assert_eq!(
            credentials["localhost:5000"],
            ("alice".into(), "s3cret:with-colon".into())
        );
        assert_eq!(credentials["docker.io"], ("bob".into(), "hub".into()));
        assert!(!credentials.contains_key("helper.io"));
        assert!(read(&dir.path().join("missing.json")).unwrap().is_empty());
    }

    #[test]
    fn store_keeps_other_entries_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        store(&path, "a:1", Some(("u", "p"))).unwrap();
        store(&path, "b:2", Some(("v", "q"))).unwrap();
        store(&path, "a:1", None).unwrap();
        let credentials = read(&path).unwrap();
        assert_eq!(credentials.keys().collect::<Vec<_>>(), ["b:2"]);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_broken_file_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"x":{"auth":"!!!"}}}"#).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("fix or remove"),
            "{err}"
        );
    }
}
