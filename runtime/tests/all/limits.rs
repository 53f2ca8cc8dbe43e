//! Limits and misbehaving guests: each ends with its own message and exit code, and a trap
//! shows the guest's function names.

use crate::support::*;

#[test]
fn an_infinite_loop_stops_at_the_timeout() {
    for wasm in [p1("loop"), p2("loop")] {
        let ran = Skiff::new().run(["run", "--timeout", "300ms", wasm.to_str().unwrap()]);
        ran.expect_code(124)
            .stderr_has("time limit of 300ms")
            .stderr_has("raise --timeout");
    }
}

#[test]
fn a_memory_hog_stops_at_the_memory_limit() {
    for (wasm, limit, shown) in [(p1("hog"), "32m", "32 MiB"), (p2("hog"), "48MiB", "48 MiB")] {
        let ran = Skiff::new().run(["run", "--memory", limit, wasm.to_str().unwrap()]);
        ran.expect_code(137)
            .stderr_has("out of memory")
            .stderr_has(&format!("limit {shown}"))
            .stderr_has("raise --memory");
    }
}

#[test]
fn a_trap_shows_the_guest_functions() {
    let ran = Skiff::new().run(["run", p1("trap").to_str().unwrap()]);
    ran.expect_code(134)
        .stdout_has("about to trap")
        .stderr_has("trapped")
        .stderr_has("trap::detonate")
        .stderr_has("trap::explode_deeply")
        .stderr_has("trap::main");
}

#[test]
fn a_program_within_its_limits_runs_normally() {
    let ran = Skiff::new().run([
        "run",
        "--memory",
        "64m",
        "--timeout",
        "30s",
        p1("hello").to_str().unwrap(),
    ]);
    ran.expect_code(0).stdout_has("hello from skiff");
}
