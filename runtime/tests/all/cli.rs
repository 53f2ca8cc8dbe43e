//! The command line itself: version, help, flag parsing errors.

use crate::support::*;

#[test]
fn version_prints_the_crate_version() {
    let ran = Skiff::new().run(["--version"]);
    ran.expect_code(0)
        .stdout_has(concat!("skiff ", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_the_verbs() {
    let ran = Skiff::new().run(["help"]);
    ran.expect_code(0)
        .stdout_has("run")
        .stdout_has("Usage: skiff");
    let ran = Skiff::new().run(["run", "--help"]);
    ran.expect_code(0)
        .stdout_has("--volume")
        .stdout_has("--memory")
        .stdout_has("--listen");
}

#[test]
fn bad_flag_values_say_how_to_write_them() {
    let skiff = Skiff::new();
    let hello = p1("hello");
    let ran = skiff.run([
        "run".as_ref(),
        "--memory".as_ref(),
        "lots".as_ref(),
        hello.as_os_str(),
    ]);
    assert_eq!(ran.code, 2, "clap's usage error code:\n{}", ran.stderr);
    ran.stderr_has("invalid size `lots`").stderr_has("32m");
    let ran = skiff.run([
        "run".as_ref(),
        "-v".as_ref(),
        "/tmp".as_ref(),
        hello.as_os_str(),
    ]);
    ran.stderr_has("HOST:GUEST");
    let ran = skiff.run([
        "run".as_ref(),
        "--timeout".as_ref(),
        "soon".as_ref(),
        hello.as_os_str(),
    ]);
    ran.stderr_has("invalid duration `soon`");
    let ran = skiff.run([
        "run".as_ref(),
        "-e".as_ref(),
        "NOVALUE".as_ref(),
        hello.as_os_str(),
    ]);
    ran.stderr_has("NAME=VALUE");
    assert!(
        skiff.cache_entries().is_empty(),
        "a rejected command compiles nothing"
    );
}
