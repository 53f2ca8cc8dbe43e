//! Bad input: one clear message naming the file and what to do, a non-zero exit, no panic,
//! and nothing left behind in the compile cache.

use crate::support::*;

/// Runs `skiff run FILE` and checks the failure; the cache must stay empty.
fn fails_cleanly(file: &std::path::Path, needles: &[&str]) -> Ran {
    fails_with(file, needles, Cached::Nothing)
}

/// Whether a failure may leave compiled code behind: a valid binary that fails to link is
/// compiled (and that code is sound to reuse); an invalid one must leave nothing.
#[derive(PartialEq)]
enum Cached {
    Nothing,
    SoundCode,
}

fn fails_with(file: &std::path::Path, needles: &[&str], cached: Cached) -> Ran {
    let skiff = Skiff::new();
    let ran = skiff.run(["run", file.to_str().unwrap()]);
    ran.expect_code(125)
        .stderr_has("skiff: error:")
        .stderr_has(file.to_str().unwrap());
    for needle in needles {
        ran.stderr_has(needle);
    }
    if cached == Cached::Nothing {
        assert!(
            skiff.cache_entries().is_empty(),
            "a failed load cached something"
        );
    }
    ran
}

fn scratch(name: &str, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn a_file_that_is_not_wasm() {
    let (_dir, path) = scratch("notes.wasm", b"#!/bin/sh\necho hello\n");
    fails_cleanly(&path, &["is not a WebAssembly file", "pass a .wasm"]);
}

#[test]
fn a_truncated_module() {
    let bytes = std::fs::read(p1("hello")).unwrap();
    let (_dir, path) = scratch("cut.wasm", &bytes[..bytes.len() / 2]);
    fails_cleanly(
        &path,
        &[
            "is not valid WebAssembly",
            "check that the file is complete",
        ],
    );
}

#[test]
fn a_missing_file() {
    fails_cleanly(
        std::path::Path::new("/no/such/program.wasm"),
        &["no such file", "check the path"],
    );
}

#[test]
fn a_component_importing_an_interface_skiff_lacks() {
    let component = wat::parse_str(
        r#"(component
             (import "skiff:test/teleporter@1.0.0" (instance
               (export "beam" (func (param "to" string)))))
           )"#,
    )
    .unwrap();
    let (_dir, path) = scratch("teleport.wasm", &component);
    fails_with(
        &path,
        &[
            "imports `skiff:test/teleporter@1.0.0`",
            "which skiff does not provide",
        ],
        Cached::SoundCode,
    );
}

#[test]
fn a_module_importing_a_function_skiff_lacks() {
    let module = wat::parse_str(
        r#"(module
             (import "env" "launch_missiles" (func))
             (func (export "_start") call 0))"#,
    )
    .unwrap();
    let (_dir, path) = scratch("missiles.wasm", &module);
    fails_with(
        &path,
        &["imports `env::launch_missiles`"],
        Cached::SoundCode,
    );
}

#[test]
fn a_module_that_is_not_a_command() {
    let module = wat::parse_str(
        r#"(module (func (export "add") (param i32 i32) (result i32) local.get 0))"#,
    )
    .unwrap();
    let (_dir, path) = scratch("lib.wasm", &module);
    let ran = Skiff::new().run(["run", path.to_str().unwrap()]);
    ran.expect_code(125)
        .stderr_has("does not export `_start`")
        .stderr_has("wasm32-wasip1");
}

#[test]
fn serving_a_command_component_fails_before_the_port_opens() {
    let ran = Skiff::new().run([
        "run",
        "--listen",
        "127.0.0.1:0",
        p2("hello").to_str().unwrap(),
    ]);
    ran.expect_code(125)
        .stderr_has("does not export `wasi:http/incoming-handler`");
    assert!(
        !ran.stdout.contains("serving http"),
        "the port must not open:\n{}",
        ran.stdout
    );
}
