//! Preopened directories: a guest sees only what it was granted, and cannot leave it.

use crate::support::*;
use std::path::Path;

/// A host tree: `data/` (granted), `ro/` (granted read-only), a secret beside them, and
/// symlinks inside `data/` pointing out, absolutely and relatively.
fn host_tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("data/sub")).unwrap();
    std::fs::create_dir_all(r.join("ro")).unwrap();
    std::fs::write(r.join("secret"), "host secret").unwrap();
    std::fs::write(r.join("data/inside.txt"), "granted").unwrap();
    std::fs::write(r.join("ro/kept.txt"), "read only").unwrap();
    std::os::unix::fs::symlink(r.join("secret"), r.join("data/abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret", r.join("data/rel-link")).unwrap();
    std::os::unix::fs::symlink("..", r.join("data/sub/up")).unwrap();
    root
}

fn fs_demo(skiff: &Skiff, tree: &Path, wasm: &Path, args: &[&str]) -> Ran {
    let data = format!("{}:/data", tree.join("data").display());
    let ro = format!("{}:/ro:ro", tree.join("ro").display());
    let mut command = vec!["run", "-v", &data, "-v", &ro, wasm.to_str().unwrap()];
    command.extend_from_slice(args);
    skiff.run(command)
}

#[test]
fn reads_and_writes_inside_a_grant() {
    for wasm in [p1("fs-demo"), p2("fs-demo")] {
        let (skiff, tree) = (Skiff::new(), host_tree());
        fs_demo(&skiff, tree.path(), &wasm, &["read", "/data/inside.txt"])
            .expect_code(0)
            .stdout_has("granted");
        fs_demo(
            &skiff,
            tree.path(),
            &wasm,
            &["write", "/data/new.txt", "from guest"],
        )
        .expect_code(0);
        assert_eq!(
            std::fs::read_to_string(tree.path().join("data/new.txt")).unwrap(),
            "from guest"
        );
        fs_demo(&skiff, tree.path(), &wasm, &["read", "/ro/kept.txt"])
            .expect_code(0)
            .stdout_has("read only");
    }
}

#[test]
fn escapes_get_an_error_never_the_host_file() {
    let escapes: &[&[&str]] = &[
        &["read", "/data/../secret"],
        &["read", "/data/sub/../../secret"],
        &["read", "/data/abs-link"],
        &["read", "/data/rel-link"],
        &["read", "/data/sub/up/../secret"],
    ];
    for wasm in [p1("fs-demo"), p2("fs-demo")] {
        let (skiff, tree) = (Skiff::new(), host_tree());
        let secret = tree.path().join("secret");
        let absolute = secret.to_str().unwrap().to_string();
        let outside_absolute: &[&str] = &["read", &absolute];
        for args in escapes
            .iter()
            .copied()
            .chain([outside_absolute, &["read", "/etc/passwd"]])
        {
            let ran = fs_demo(&skiff, tree.path(), &wasm, args);
            ran.expect_code(1).stderr_has("error:");
            assert!(
                !ran.stdout.contains("host secret") && !ran.stdout.contains("root:"),
                "{args:?} leaked:\n{}",
                ran.stdout
            );
        }
    }
}

#[test]
fn read_only_grants_refuse_writes_and_leave_the_host_as_it_was() {
    for wasm in [p1("fs-demo"), p2("fs-demo")] {
        let (skiff, tree) = (Skiff::new(), host_tree());
        fs_demo(
            &skiff,
            tree.path(),
            &wasm,
            &["write", "/ro/kept.txt", "clobbered"],
        )
        .expect_code(1)
        .stderr_has("error:");
        fs_demo(&skiff, tree.path(), &wasm, &["write", "/ro/new.txt", "x"]).expect_code(1);
        fs_demo(&skiff, tree.path(), &wasm, &["mkdir", "/ro/dir"]).expect_code(1);
        assert_eq!(
            std::fs::read_to_string(tree.path().join("ro/kept.txt")).unwrap(),
            "read only"
        );
        assert!(!tree.path().join("ro/new.txt").exists() && !tree.path().join("ro/dir").exists());
        // Writing through a symlink that points out must not create or change the target.
        fs_demo(
            &skiff,
            tree.path(),
            &wasm,
            &["write", "/data/abs-link", "overwritten"],
        )
        .expect_code(1);
        assert_eq!(
            std::fs::read_to_string(tree.path().join("secret")).unwrap(),
            "host secret"
        );
    }
}

#[test]
fn nothing_is_visible_without_a_grant() {
    for wasm in [p1("fs-demo"), p2("fs-demo")] {
        let skiff = Skiff::new();
        let ran = skiff.run(["run", wasm.to_str().unwrap(), "ls", "/"]);
        ran.expect_code(1).stderr_has("error:");
        skiff
            .run(["run", wasm.to_str().unwrap(), "read", "/etc/hostname"])
            .expect_code(1);
    }
}

#[test]
fn wasmtime_dir_syntax_grants_too() {
    let (skiff, tree) = (Skiff::new(), host_tree());
    let dir = format!("{}::/data", tree.path().join("data").display());
    skiff
        .run([
            "run",
            "--dir",
            &dir,
            p1("fs-demo").to_str().unwrap(),
            "read",
            "/data/inside.txt",
        ])
        .expect_code(0)
        .stdout_has("granted");
}

#[test]
fn a_missing_host_directory_is_reported_before_start() {
    let skiff = Skiff::new();
    let ran = skiff.run([
        "run",
        "-v",
        "/no/such/dir:/data",
        p1("hello").to_str().unwrap(),
    ]);
    ran.expect_code(125)
        .stderr_has("/no/such/dir")
        .stderr_has("no such directory");
    assert!(
        !ran.stdout.contains("hello from skiff"),
        "the guest must not start"
    );
}
