//! The bearer token of the TCP control listener.
//!
//! The unix socket needs none: its mode 0600 is its authentication. On TCP every request must
//! carry `Authorization: Bearer TOKEN`, compared in constant time; anything else gets 401 with
//! `WWW-Authenticate: Bearer` before any handler runs, so a refused request changes nothing.
//! The token comes from `--token-file` (mode 0600 or stricter, not empty) or is generated
//! into `<data>/run/token` (mode 0600) and reused by later starts.

use super::error_response;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Why the token could not be had; the daemon does not start.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path}: {error}; check the path given to --token-file")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error(
        "token file {path} has mode {mode:04o}: others may read it; `chmod 600 {path}` and \
         start again"
    )]
    Permissions { path: PathBuf, mode: u32 },

    #[error("token file {path} is empty; write a long random token into it")]
    Empty { path: PathBuf },

    #[error("cannot write a new token to {path}: {error}; check the data dir's permissions")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A bearer token; its `Debug` hides it.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Whether `given` is this token, in time independent of where they differ.
    pub fn matches(&self, given: &str) -> bool {
        self.0.as_bytes().ct_eq(given.as_bytes()).into()
    }

    /// The token in `path`: mode 0600 or stricter, surrounding whitespace trimmed, not empty.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let read = |error| TokenError::Read {
            path: path.to_path_buf(),
            error,
        };
        let mut file = std::fs::File::open(path).map_err(read)?;
        let mode = file.metadata().map_err(read)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        // A token is short; a huge file is a mistake, not a token.
        let mut text = String::new();
        Read::by_ref(&mut file)
            .take(4096)
            .read_to_string(&mut text)
            .map_err(read)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self(Arc::from(token)))
    }

    /// The token at `path` if it exists (checked as [`Token::load`] does), else a new random
    /// one written there with mode 0600 (its directory 0700). Returns whether it is new.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), TokenError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let write = |error| TokenError::Write {
            path: path.to_path_buf(),
            error,
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(write)?;
        }
        let mut random = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .map_err(write)?;
        let token = hex::encode(random);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write)?;
        file.write_all(format!("{token}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(write)?;
        // The umask may have taken bits away, never added; make sure anyway.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(write)?;
        Ok((Self(Arc::from(token)), true))
    }
}

/// Middleware: lets a request with the right bearer token through, answers 401 otherwise.
pub async fn require(State(token): State<Token>, request: Request, next: Next) -> Response {
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    if given.is_some_and(|given| token.matches(given.trim())) {
        return next.run(request).await;
    }
    let error = match given {
        None => "this control API needs `Authorization: Bearer TOKEN`",
        Some(_) => "wrong bearer token",
    };
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        error,
        "set SKIFF_TOKEN, or --token-file, to the daemon's token; nothing was changed",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"skiff\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_themselves() {
        let token = Token(Arc::from("s3cret"));
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret!"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "Token(..)");
    }

    #[test]
    fn a_token_file_must_be_private_and_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Token::load(&path).unwrap_err();
        assert!(err.to_string().contains("mode 0644"), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Token::load(&path).unwrap().matches("abc"));
        std::fs::write(&path, " \n").unwrap();
        let err = Token::load(&path).unwrap_err();
        assert!(matches!(err, TokenError::Empty { .. }), "{err}");
        let err = Token::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, TokenError::Read { .. }), "{err}");
    }

    #[test]
    fn a_generated_token_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/token");
        let (token, new) = Token::load_or_generate(&path).unwrap();
        assert!(new);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        assert!(token.matches(text.trim()));
        let (again, new) = Token::load_or_generate(&path).unwrap();
        assert!(!new);
        assert!(again.matches(text.trim()));
    }
}
