//! `-v HOST:CONTAINER[:ro]` for Linux containers: bind mounts, read-only ones, a missing
//! source, and a destination that is a link out of the root file system.

use super::*;

#[test]
fn a_volume_is_shared_with_the_host() {
    let Some(linux) = linux() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("from-host"), "host\n").unwrap();
    let volume = format!("{}:/data", dir.path().display());
    let ran = linux.sh(
        &["-v", &volume, "--user", "0"],
        "cat /data/from-host; echo container > /data/from-container",
    );
    assert_eq!(ran.expect_code(0).stdout, "host\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("from-container")).unwrap(),
        "container\n"
    );
}

#[test]
fn a_read_only_volume_cannot_be_written() {
    let Some(linux) = linux() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "original\n").unwrap();
    let volume = format!("{}:/ro:ro", dir.path().display());
    let ran = linux.sh(
        &["-v", &volume],
        "cat /ro/file; echo changed > /ro/file; touch /ro/new; rm /ro/file; grep ' /ro ' /proc/self/mountinfo",
    );
    ran.expect_code(0);
    assert!(ran.stdout.starts_with("original\n"), "{}", ran.stdout);
    ran.stderr_has("Read-only file system");
    let mount = ran.stdout.lines().nth(1).unwrap_or("");
    assert!(
        mount
            .split_whitespace()
            .nth(5)
            .unwrap_or("")
            .starts_with("ro"),
        "{mount}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "original\n");
    assert!(!dir.path().join("new").exists());
}

#[test]
fn a_missing_volume_source_is_refused_before_anything_is_made() {
    let Some(linux) = linux() else { return };
    let running = linux.detach(&["--name", "bystander"], &["sleep", "1000"]);
    let before = linux.run(["ps", "-a"]).stdout.clone();
    let ran = linux.sh(&["-v", "/nonexistent/skiff-test:/data"], "true");
    ran.expect_code(125)
        .stderr_has("volume source /nonexistent/skiff-test does not exist");
    let ran = linux.sh(&["-v", "/tmp:relative"], "true");
    ran.expect_code(125).stderr_has("is not absolute");
    assert_eq!(linux.ids(), std::slice::from_ref(&running));
    let after = linux.run(["ps", "-a"]).stdout.clone();
    // Same containers; only the uptime column may have moved on.
    let names = |t: &str| {
        t.lines()
            .map(|l| l.split_whitespace().last().map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&before), names(&after));
    assert_eq!(linux.record(&running)["status"], "running");
}

#[test]
fn a_link_out_of_the_image_cannot_aim_a_volume_at_the_host() {
    let Some(linux) = linux() else { return };
    // /data -> /etc and /escape -> ../../../../etc: both must resolve inside the rootfs.
    let image = variant(
        &linux,
        "links",
        |rootfs| {
            std::os::unix::fs::symlink("/etc", rootfs.join("data")).unwrap();
            std::os::unix::fs::symlink("../../../../../etc", rootfs.join("escape")).unwrap();
        },
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skiff-marker"), "from the volume\n").unwrap();
    let host_etc = std::fs::read_dir("/etc").unwrap().count();
    for destination in ["/data", "/escape"] {
        let volume = format!("{}:{destination}", dir.path().display());
        let ran = linux.run([
            "run",
            "--rm",
            "--net",
            "none",
            "-v",
            &volume,
            &image,
            "sh",
            "-c",
            "cat /etc/skiff-marker; ls /etc | wc -l",
        ]);
        // The bind landed on the container's own /etc.
        assert_eq!(
            ran.expect_code(0).stdout,
            "from the volume\n1\n",
            "-v ...:{destination}"
        );
        assert!(!Path::new("/etc/skiff-marker").exists());
    }
    // The host's /etc is as it was, and no mount was made on it.
    assert_eq!(std::fs::read_dir("/etc").unwrap().count(), host_etc);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some("/etc"))
    );
}
