//! Layer snapshots as users meet them: a decompression bomb stops at the configured limit and
//! leaves nothing behind, and pruning keeps what a container still runs on.

use super::*;

#[test]
fn a_layer_past_the_size_limit_is_refused_and_nothing_is_left() {
    let Some(linux) = linux() else { return };
    let snapshots = linux.data_dir.path().join("linux/snapshots");
    let ran = linux.run([
        "run",
        "--net",
        "none",
        "--rm",
        "--max-layer-size",
        "100k",
        IMAGE,
        "true",
    ]);
    ran.expect_code(125)
        .stderr_has("layer expands past the limit of 102400 bytes")
        .stderr_has("--max-layer-size");
    let left: Vec<_> = std::fs::read_dir(&snapshots)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no snapshot, whole or half-made: {left:?}");
    assert!(linux.ids().is_empty(), "no container was created");
    // The same image runs under the default limit, and from the environment's.
    linux.sh(&[], "true").expect_code(0);
    let mut command = linux.command();
    command.env("SKIFF_MAX_LAYER_SIZE", "100k");
    let ran = Ran::from(
        command
            .args(["run", "--net", "none", "--rm", IMAGE, "true"])
            .output()
            .unwrap(),
    );
    // The snapshot exists now, so nothing is unpacked and the limit does not apply.
    ran.expect_code(0);
}

#[test]
fn prune_keeps_the_snapshots_a_container_runs_on() {
    let Some(linux) = linux() else { return };
    let snapshots = linux.data_dir.path().join("linux/snapshots");
    linux.detach(&["--name", "keep"], &["sleep", "1000"]);
    linux.run(["rmi", IMAGE]).expect_code(0);
    linux
        .run(["system", "prune"])
        .expect_code(0)
        .stdout_has("removed 0 layer snapshots");
    let count = || std::fs::read_dir(&snapshots).unwrap().count();
    assert_eq!(count(), 1, "the running container's layer stays");
    linux.run(["rm", "-f", "keep"]).expect_code(0);
    linux
        .run(["system", "prune"])
        .expect_code(0)
        .stdout_has("removed 1 layer snapshots");
    assert_eq!(count(), 0);
}
