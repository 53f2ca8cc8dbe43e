//! `fs-demo`: a tiny file tool for testing preopened directories.
//!
//! Built for `wasm32-wasip1` and `wasm32-wasip2`. The guest can only see the
//! directories the host preopens for it, so tests use this tool to check that
//! a guest cannot escape its sandbox: `read ../secret`, `read /etc/passwd`,
//! reading through a symlink that points outside the preopen, and writing to
//! a read-only preopen must all fail.
//!
//! Usage:
//!
//! ```text
//! fs-demo read PATH          print the file's content (bytes, unchanged)
//! fs-demo write PATH TEXT    create/truncate PATH and write TEXT (no newline added)
//! fs-demo ls DIR             print entry names, one per line, sorted
//! fs-demo mkdir PATH         create a directory (parent must exist)
//! ```
//!
//! On success the exit code is 0. On any I/O error it prints
//! `error: <io error>` to stderr and exits with code 1; a usage error prints
//! `usage: ...` to stderr and exits with code 2.

use std::io::{self, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let result = match args.as_slice() {
        ["read", path] => read(path),
        ["write", path, text] => std::fs::write(path, text),
        ["ls", dir] => ls(dir),
        ["mkdir", path] => std::fs::create_dir(path),
        _ => {
            eprintln!("usage: fs-demo read PATH | write PATH TEXT | ls DIR | mkdir PATH");
            return ExitCode::from(2);
        }
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Copies a file's bytes to stdout unchanged.
fn read(path: &str) -> io::Result<()> {
    let data = std::fs::read(path)?;
    let mut out = io::stdout().lock();
    out.write_all(&data)?;
    out.flush()
}

/// Lists a directory's entry names, sorted, one per line.
fn ls(dir: &str) -> io::Result<()> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut out = io::stdout().lock();
    for name in names {
        writeln!(out, "{name}")?;
    }
    out.flush()
}
