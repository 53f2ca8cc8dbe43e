//! `hello`: the basic WASI CLI sample.
//!
//! Built both as a WASI preview 1 core module (`wasm32-wasip1`) and as a
//! WASI preview 2 command component (`wasm32-wasip2`), so the same program
//! exercises both of skiff's CLI execution paths. It shows:
//!
//! * stdout output (`hello from skiff`),
//! * argument passing: every argument, including `argv[0]`, is printed as
//!   `arg[N]=VALUE`,
//! * environment passing: every env var is printed sorted as `env K=V`,
//! * exit codes: `HELLO_EXIT=N` in the environment, or `--exit N` on the
//!   command line (the flag wins), ends the program via
//!   `std::process::exit(N)`,
//! * stdin: `--stdin` copies stdin verbatim to stdout,
//! * stderr: `--stderr MSG` writes `MSG` (plus a newline) to stderr.
//! * a long run: `HELLO_SLEEP=SECS` sleeps that long before exiting, so the
//!   same program stands in for a long-running service (skiff's Wasm
//!   services) that is stopped from outside.
//!
//! Order of effects: greeting, args, env, then `--stderr` messages, then the
//! `--stdin` copy, then the sleep, then the exit code.

use std::io::{self, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();

    // Everything goes through one locked handle so output order is exact.
    let stdout = io::stdout();
    let mut out = stdout.lock();

    writeln!(out, "hello from skiff").unwrap();
    for (i, arg) in args.iter().enumerate() {
        writeln!(out, "arg[{i}]={arg}").unwrap();
    }

    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in &vars {
        writeln!(out, "env {k}={v}").unwrap();
    }

    // Scan the flags (skipping argv[0]). Unknown arguments are only echoed.
    let mut exit_code: Option<i32> = std::env::var("HELLO_EXIT").ok().map(|v| parse_code(&v));
    let mut copy_stdin = false;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--exit" => {
                if let Some(v) = rest.next() {
                    exit_code = Some(parse_code(v));
                }
            }
            "--stdin" => copy_stdin = true,
            "--stderr" => {
                if let Some(msg) = rest.next() {
                    // Flush stdout first so interleaving on a shared terminal
                    // matches the program order.
                    out.flush().unwrap();
                    eprintln!("{msg}");
                }
            }
            _ => {}
        }
    }

    if copy_stdin {
        io::copy(&mut io::stdin().lock(), &mut out).unwrap();
    }
    out.flush().unwrap();
    drop(out);

    if let Some(secs) = std::env::var("HELLO_SLEEP")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }

    match exit_code {
        // `std::process::exit` on purpose: this is the path the runtime's
        // exit-code handling is tested against (proc_exit on wasip1,
        // wasi:cli/exit on wasip2).
        Some(code) => std::process::exit(code),
        None => ExitCode::SUCCESS,
    }
}

/// Parses an exit code; anything unparsable is treated as a generic failure.
fn parse_code(s: &str) -> i32 {
    s.trim().parse().unwrap_or(1)
}
