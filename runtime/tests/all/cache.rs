//! The compile cache: a second run compiles nothing; a corrupt, truncated or incompatible
//! entry is detected and rebuilt, never executed.

use crate::support::*;
use sha2::{Digest, Sha256};
use std::path::Path;

fn run_hello(skiff: &Skiff) -> Ran {
    let ran = skiff.run_debug(["run", p1("hello").to_str().unwrap()]);
    ran.expect_code(0).stdout_has("hello from skiff");
    ran
}

fn only_entry(skiff: &Skiff) -> std::path::PathBuf {
    let entries = skiff.cache_entries();
    assert_eq!(entries.len(), 1, "one cached program expected: {entries:?}");
    entries.into_iter().next().unwrap()
}

#[test]
fn a_second_run_compiles_nothing() {
    let skiff = Skiff::new();
    run_hello(&skiff)
        .stderr_has("compile cache miss")
        .stderr_has("compiling");
    let second = run_hello(&skiff);
    second.stderr_has("compile cache hit");
    assert!(
        !second.stderr.contains("compiling"),
        "second run compiled:\n{}",
        second.stderr
    );
    // Components are cached the same way.
    let component = p2("hello");
    skiff
        .run_debug(["run", component.to_str().unwrap()])
        .expect_code(0)
        .stderr_has("compile cache miss");
    skiff
        .run_debug(["run", component.to_str().unwrap()])
        .expect_code(0)
        .stderr_has("compile cache hit");
}

/// Damages the entry with `damage`, then checks the next run rebuilds it and the one after hits.
fn rebuilds_after(damage: impl FnOnce(&Path)) {
    let skiff = Skiff::new();
    run_hello(&skiff);
    let entry = only_entry(&skiff);
    damage(&entry);
    let rebuilt = run_hello(&skiff);
    rebuilt
        .stderr_has("compile cache entry unusable")
        .stderr_has("compiling");
    assert_eq!(only_entry(&skiff), entry, "the entry is replaced in place");
    run_hello(&skiff).stderr_has("compile cache hit");
}

#[test]
fn a_corrupt_entry_is_rebuilt() {
    rebuilds_after(|entry| {
        let mut code = std::fs::read(entry).unwrap();
        let middle = code.len() / 2;
        for byte in &mut code[middle..middle + 64] {
            *byte ^= 0xff;
        }
        std::fs::write(entry, code).unwrap();
    });
}

#[test]
fn a_truncated_entry_is_rebuilt() {
    rebuilds_after(|entry| {
        let code = std::fs::read(entry).unwrap();
        std::fs::write(entry, &code[..code.len() / 3]).unwrap();
    });
}

#[test]
fn an_incompatible_entry_with_a_matching_checksum_is_rebuilt() {
    // Code from elsewhere (here: not wasmtime's at all) whose sum was rewritten to match:
    // the digest check passes, wasmtime's own compatibility check must refuse it.
    rebuilds_after(|entry| {
        let foreign = b"\x7fELF not code this engine produced".repeat(100);
        std::fs::write(entry, &foreign).unwrap();
        std::fs::write(
            entry.with_extension("sum"),
            hex::encode(Sha256::digest(&foreign)),
        )
        .unwrap();
    });
}

#[test]
fn an_entry_without_its_checksum_is_rebuilt() {
    rebuilds_after(|entry| std::fs::remove_file(entry.with_extension("sum")).unwrap());
}
