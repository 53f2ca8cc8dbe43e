//! Jobs under the daemon: retried, not run again once finished, adopted after a `kill -9`,
//! and Wasm jobs run in-process.

use super::*;

#[test]
fn a_failing_job_is_retried_then_failed_and_a_finished_job_is_not_rerun() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    let manifest = format!(
        r#"[app]
name = "batch"

[job.fails]
image = "{IMAGE}"
command = ["sh", "-c", "exit 3"]
retries = 2

[job.works]
image = "{IMAGE}"
command = ["true"]
"#
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    serve.wait_log("attempt 1 exited with code 3; retrying in 1s");
    serve.wait_log("attempt 2 exited with code 3; retrying in 2s");
    serve.wait_log("failed: exited with code 3 after 3 attempts");
    serve.wait_log("attempt 1 exited with code 0");
    let ps = client(linux, &["ps"]);
    assert_eq!(ps_line(&ps, "batch/works")[2], "succeeded", "{}", ps.stdout);
    assert!(
        ps.stdout
            .contains("failed: exited with code 3 after 3 attempts"),
        "{}",
        ps.stdout
    );
    assert!(linux.ids().is_empty(), "finished runs are removed");

    serve.kill();
    let serve = Serve::start(netns, linux);
    serve.wait_log("job batch/works generation 1 already finished (succeeded)");
    serve.wait_log("job batch/fails generation 1 already finished (failed: exited with code 3");
    assert!(
        !serve.log().contains("attempt 1 as container"),
        "a finished job ran again:\n{}",
        serve.log()
    );
    client(linux, &["apps", "rm", "batch"]).expect_code(0);
}

#[test]
fn wasm_jobs_run_in_process_and_are_retried() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    std::fs::copy(p1("hello"), dir.path().join("hello.wasm")).unwrap();
    let manifest = r#"[app]
name = "wasmjobs"

[job.ok]
file = "hello.wasm"

[job.bad]
file = "hello.wasm"
env = { HELLO_EXIT = "4" }
retries = 1
"#;
    deploy(linux, dir.path(), manifest).expect_code(0);
    serve.wait_log("attempt 1 exited with code 4; retrying in 1s");
    serve.wait_log("failed: exited with code 4 after 2 attempts");
    serve.wait_log("attempt 1 exited with code 0");
    let ps = client(linux, &["ps"]);
    assert_eq!(ps_line(&ps, "wasmjobs/ok")[2], "succeeded", "{}", ps.stdout);
    assert!(linux.ids().is_empty(), "no containers for Wasm jobs");
    // Each run's output is in the job's log, every attempt's, after the run's prefix.
    let printed = client(linux, &["logs", "wasmjobs/ok"]);
    printed
        .expect_code(0)
        .stdout_has("job.wasmjobs.ok.1 | hello from skiff");
    let bad = client(linux, &["logs", "wasmjobs/bad"]);
    let attempts = bad.stdout.matches("job.wasmjobs.bad.1 | hello from skiff");
    assert_eq!(attempts.count(), 2, "{}", bad.stdout);
    client(linux, &["apps", "rm", "wasmjobs"]).expect_code(0);
    let logs = std::fs::read_dir(linux.data_dir.path().join("logs")).unwrap();
    assert_eq!(logs.count(), 0, "the runs' logs went with the app");
}

#[test]
fn a_running_job_is_adopted_after_the_daemons_kill_9() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    let manifest = format!(
        r#"[app]
name = "batch"

[job.waits]
image = "{IMAGE}"
command = ["sh", "-c", "while [ ! -f /tmp/go ]; do sleep 0.1; done"]
"#
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    let (id, pid) = one_running(linux, None);
    serve.kill();
    let serve = Serve::start(netns, linux);
    serve.wait_log(&format!("run {} adopted", &id[..12]));
    // Let it finish: the file it waits for, written into its root from the host.
    std::fs::write(format!("/proc/{pid}/root/tmp/go"), "").unwrap();
    serve.wait_log("attempt 1 exited with code 0");
    assert!(
        !serve.log().contains("as container"),
        "ran again:\n{}",
        serve.log()
    );
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
    client(linux, &["apps", "rm", "batch"]).expect_code(0);
}
