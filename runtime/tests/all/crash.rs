//! `kill -9` of `skiff serve` during traffic and during a deploy, then a restart: every app
//! deployed before is served again, and the app being deployed is either all there (every
//! function routed) or not there at all, never half. The outcome of each round depends on when
//! the kill lands; the test checks that every outcome is one of those two, never the timing.

use crate::daemon::{Daemon, HELLO, client, manifest};
use crate::support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const FUNCTIONS: usize = 40;

/// An app of `FUNCTIONS` functions, `/f0` to `/f39`.
fn many() -> String {
    let mut text = String::from("[app]\nname = \"many\"\n");
    for i in 0..FUNCTIONS {
        text.push_str(&format!(
            "\n[function.f{i}]\nfile = \"hello.wasm\"\nroute = \"/f{i}\"\n"
        ));
    }
    text
}

#[test]
fn kill_9_during_traffic_and_a_deploy_loses_nothing_and_leaves_nothing_half_done() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let hello = manifest(dir.path(), "hello.toml", HELLO);
    let many = manifest(dir.path(), "many.toml", &many());
    let mut daemon = Daemon::start(&skiff, &[]);
    client(&skiff, &["deploy", "-f", &hello]).expect_code(0);

    for (round, delay_ms) in [0u64, 5, 15, 25, 40, 120].into_iter().enumerate() {
        // Steady traffic to the deployed app while the daemon dies (answers may fail then).
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let gateway = daemon.gateway;
        let traffic = {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if try_get(gateway, "/hello") == Some(200) {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        while served.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A deploy in flight, and the kill somewhere in it (or just before it arrives).
        let mut deploy = skiff
            .command()
            .env("SKIFF_SOCKET", crate::daemon::socket(&skiff))
            .args(["deploy", "-f", &many])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        daemon.kill();
        let _ = deploy.wait();
        stop.store(true, Ordering::Relaxed);
        traffic.join().unwrap();

        daemon = Daemon::start(&skiff, &[]);
        assert_eq!(
            get(daemon.gateway, "/hello").status,
            200,
            "round {round}: the app deployed before is served again"
        );
        let apps = client(&skiff, &["apps"]);
        apps.expect_code(0);
        let routed = (0..FUNCTIONS)
            .filter(|i| get(daemon.gateway, &format!("/f{i}")).status == 200)
            .count();
        eprintln!(
            "round {round} (kill after {delay_ms} ms): many {}",
            if apps.stdout.contains("many") {
                "stored"
            } else {
                "not stored"
            }
        );
        if apps.stdout.contains("many") {
            assert_eq!(routed, FUNCTIONS, "round {round}: stored means all served");
        } else {
            assert_eq!(routed, 0, "round {round}: not stored means none served");
        }
        // Forget it for the next round, so each round deploys it anew.
        if apps.stdout.contains("many") {
            client(&skiff, &["apps", "rm", "many"]).expect_code(0);
        }
    }
}

/// The status of `GET path`, or `None` when the daemon is not there to answer.
fn try_get(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: crash.test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}
