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
//! * a TCP server: `HELLO_LISTEN=ADDR`, or `HELLO_SERVE=1` for `$HOST:$PORT`
//!   (wasip2 only: `wasi:sockets`), answers every connection with an HTTP/1.0
//!   `200` whose body is `HELLO_BODY` (default `hello from a wasm service at
//!   ADDR`), for ever; a refused bind exits 3 with the reason on stderr. It
//!   stands in for a Wasm service that publishes a port.
//!
//! Order of effects: greeting, args, env, then `--stderr` messages, then the
//! `--stdin` copy, then the server, then the sleep, then the exit code.

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

    if let Ok(address) = std::env::var("HELLO_LISTEN") {
        serve(&address);
    }
    if std::env::var("HELLO_SERVE").is_ok() {
        let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
        let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
        serve(&format!("{host}:{port}"));
    }

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

/// Answers every connection on `address` with one HTTP/1.0 response; never returns, except
/// by exiting 3 when the address cannot be bound.
fn serve(address: &str) {
    use std::io::Read;
    let body = std::env::var("HELLO_BODY")
        .unwrap_or_else(|_| format!("hello from a wasm service at {address}"));
    let listener = match std::net::TcpListener::bind(address) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {address}: {error}");
            std::process::exit(3);
        }
    };
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        // The request head, read until its blank line (or 8 KiB); what it asks is ignored.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while head.len() < 8192 && !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let response = format!(
            "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}\n",
            body.len() + 1
        );
        let _ = stream.write_all(response.as_bytes());
    }
}

/// Parses an exit code; anything unparsable is treated as a generic failure.
fn parse_code(s: &str) -> i32 {
    s.trim().parse().unwrap_or(1)
}
