//! `skiff run FILE.wasm`: modules and components, stdio, args, env and exit codes.

use crate::support::*;
use std::io::Write;
use std::process::Stdio;

#[test]
fn module_gets_args_env_and_its_exit_code() {
    let skiff = Skiff::new();
    let env_file = skiff.data_dir.path().join("app.env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n").unwrap();
    let hello = p1("hello");
    let ran = skiff.run([
        "run".as_ref(),
        "-e".as_ref(),
        "GREETING=hi there".as_ref(),
        "--env-file".as_ref(),
        env_file.as_os_str(),
        hello.as_os_str(),
        "first".as_ref(),
        "--exit".as_ref(),
        "7".as_ref(),
    ]);
    ran.expect_code(7)
        .stdout_has("hello from skiff")
        .stdout_has("arg[0]=hello.wasm")
        .stdout_has("arg[1]=first")
        .stdout_has("env GREETING=hi there")
        .stdout_has("env FROM_FILE=yes");
    assert!(
        !ran.stdout.contains("env PATH="),
        "the host environment stays out:\n{}",
        ran.stdout
    );
}

#[test]
fn component_gets_args_and_env_after_a_double_dash() {
    let skiff = Skiff::new();
    let hello = p2("hello");
    let ran = skiff.run([
        "run".as_ref(),
        "-e".as_ref(),
        "K=v".as_ref(),
        hello.as_os_str(),
        "--".as_ref(),
        "a b".as_ref(),
    ]);
    ran.expect_code(0)
        .stdout_has("arg[1]=a b")
        .stdout_has("env K=v");
    // Rust's std maps a non-zero exit to wasi:cli/exit's plain failure: code 1.
    let ran = skiff.run([
        "run".as_ref(),
        hello.as_os_str(),
        "--exit".as_ref(),
        "3".as_ref(),
    ]);
    ran.expect_code(1);
}

#[test]
fn stdin_and_stderr_pass_through() {
    for hello in [p1("hello"), p2("hello")] {
        let skiff = Skiff::new();
        let mut child = skiff
            .command()
            .args([
                "run".as_ref(),
                hello.as_os_str(),
                "--stdin".as_ref(),
                "--stderr".as_ref(),
                "to-stderr".as_ref(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"piped input\n")
            .unwrap();
        let ran = Ran::from(child.wait_with_output().unwrap());
        ran.expect_code(0)
            .stdout_has("piped input")
            .stderr_has("to-stderr");
    }
}
