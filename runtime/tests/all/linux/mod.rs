//! `skiff run` on Linux images, checked from inside the container: the image's config and
//! the flags that override it, isolation, resource limits, the container's lifecycle,
//! volumes and bridge networking.
//!
//! These tests need root (namespaces, cgroups, mounts, veths): without it each one prints
//! why it is skipped and passes. They use the busybox sample
//! (`bash samples/linux/busybox/build.sh`). Every container is removed (`skiff rm -f`) when
//! its test ends, pass or fail; bridge tests run in a network namespace of their own
//! ([`Netns`]), so the host's interfaces and nftables are never touched.

mod isolation;
mod lifecycle;
mod limits;
mod network;
mod run;
mod snapshots;
mod volumes;

use crate::support::{Ran, Skiff, tool};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The busybox sample's name once loaded.
pub const IMAGE: &str = "localhost/skiff/busybox:latest";

/// The v1 controllers skiff makes a `skiff/<id>` cgroup under.
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// How often to poll for something a container does in the background, 100ms apart.
const POLLS: u32 = 200;

/// The busybox sample archive.
pub fn busybox_tar() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/target/linux/busybox.tar");
    assert!(
        path.exists(),
        "{} is missing; build it: bash samples/linux/busybox/build.sh",
        path.display()
    );
    path
}

/// A data dir with the busybox sample loaded, or `None` (with the reason printed) when not
/// root. Its containers are removed when it is dropped.
pub fn linux() -> Option<Linux> {
    if !is_root() {
        eprintln!("skipped: Linux containers need root");
        return None;
    }
    let skiff = Skiff::new();
    let tar = busybox_tar();
    skiff
        .run(["load", "-i", tar.to_str().unwrap()])
        .expect_code(0)
        .stdout_has(IMAGE);
    Some(Linux { skiff })
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A `Skiff` for Linux containers; `skiff rm -f` of every container it made on drop.
pub struct Linux {
    pub skiff: Skiff,
}

impl std::ops::Deref for Linux {
    type Target = Skiff;
    fn deref(&self) -> &Skiff {
        &self.skiff
    }
}

impl Drop for Linux {
    fn drop(&mut self) {
        for id in self.ids() {
            let ran = self.skiff.run(["rm", "-f", &id]);
            if ran.code != 0 {
                eprintln!("cleanup: skiff rm -f {id} failed:\n{}", ran.stderr);
            }
        }
    }
}

impl Linux {
    /// The full ids of the containers in the data dir.
    pub fn ids(&self) -> Vec<String> {
        let dir = self.containers_dir();
        let mut ids: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.data_dir.path().join("linux/containers")
    }

    /// `skiff run --rm --net none FLAGS IMAGE sh -c SCRIPT`.
    pub fn sh(&self, flags: &[&str], script: &str) -> Ran {
        let args = [
            &["run", "--rm", "--net", "none"],
            flags,
            &[IMAGE, "sh", "-c", script],
        ];
        self.run(args.concat())
    }

    /// `skiff run -d --net none FLAGS IMAGE ARGS`; the full id it prints.
    pub fn detach(&self, flags: &[&str], args: &[&str]) -> String {
        let ran = self.run([&["run", "-d", "--net", "none"], flags, &[IMAGE], args].concat());
        full_id(&ran)
    }

    /// The `skiff ps -a` line of the container named `name`.
    pub fn ps_line(&self, name: &str) -> Option<String> {
        let listed = self.run(["ps", "-a"]).expect_code(0).stdout.clone();
        listed
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .map(str::to_string)
    }

    /// Waits (bounded) for the container named `name` to exit; its `ps -a` line.
    #[track_caller]
    pub fn wait_exited(&self, name: &str) -> String {
        for _ in 0..POLLS {
            match self.ps_line(name) {
                Some(line) if line.contains("exited") => return line,
                Some(_) => std::thread::sleep(Duration::from_millis(100)),
                None => panic!("{name} is not in `skiff ps -a`"),
            }
        }
        panic!("{name} did not exit: {:?}", self.ps_line(name));
    }

    /// The container's record as `skiff` wrote it.
    pub fn record(&self, id: &str) -> serde_json::Value {
        let path = self.containers_dir().join(id).join("state.json");
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }
}

/// The full id `skiff run -d` printed.
#[track_caller]
pub fn full_id(ran: &Ran) -> String {
    ran.expect_code(0);
    let id = ran.stdout.trim().to_string();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "not an id: {id:?}"
    );
    id
}

/// The container's cgroup directories, one per controller.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    CONTROLLERS
        .iter()
        .map(|c| Path::new("/sys/fs/cgroup").join(c).join("skiff").join(id))
        .collect()
}

/// Polls `check` (bounded); whether it came true.
pub fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..POLLS {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Loads a variant of the busybox sample named `localhost/skiff/NAME:latest`: its root file
/// system changed by `edit` (in a new layer, with umoci), then `umoci config CONFIG`.
pub fn variant(skiff: &Skiff, name: &str, edit: impl FnOnce(&Path), config: &[&str]) -> String {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let bundle = work.path().join("bundle");
    std::fs::create_dir(&layout).unwrap();
    let tar = busybox_tar();
    tool(
        "tar",
        &["-xf", tar.to_str().unwrap(), "-C", layout.to_str().unwrap()],
    );
    let image = format!("{}:latest", layout.display());
    let bundle_path = bundle.to_str().unwrap();
    tool("umoci", &["unpack", "--image", &image, bundle_path]);
    edit(&bundle.join("rootfs"));
    tool("umoci", &["repack", "--image", &image, bundle_path]);
    if !config.is_empty() {
        tool("umoci", &[&["config", "--image", &image], config].concat());
    }
    // umoci names the image by its tag only; skiff load wants the whole name.
    let full = format!("localhost/skiff/{name}:latest");
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifests = index["manifests"].as_array_mut().unwrap();
    manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "latest");
    assert_eq!(manifests.len(), 1, "{index_path:?}");
    manifests[0]["annotations"]["io.containerd.image.name"] = full.clone().into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let archive = work.path().join("image.tar");
    let files = ["oci-layout", "index.json", "blobs"];
    let args = [
        &[
            "-C",
            layout.to_str().unwrap(),
            "-cf",
            archive.to_str().unwrap(),
        ],
        &files[..],
    ];
    tool("tar", &args.concat());
    skiff
        .run(["load", "-i", archive.to_str().unwrap()])
        .expect_code(0)
        .stdout_has(&full);
    full
}

/// A network namespace of the test's own (`ip netns add skiff-t-...`) with its loopback up,
/// deleted on drop. skiff runs in it under `nsenter --net`, which (unlike `ip netns exec`)
/// leaves the mounts alone, so `/sys/fs/cgroup` stays visible.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "skiff-t-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        tool("ip", &["netns", "add", &name]);
        let netns = Self { name };
        tool("ip", &["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `skiff ARGS` in the namespace, with the data dir and environment of `skiff`.
    pub fn run(&self, skiff: &Skiff, args: &[&str]) -> Ran {
        let base = skiff.command();
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(base.get_program())
            .args(args)
            .stdin(Stdio::null());
        for (key, value) in base.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        Ran::from(command.output().expect("spawning nsenter"))
    }

    /// Runs `f` on a thread that has joined the namespace: sockets it makes are in it.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).expect("opening the netns");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("joining the netns");
            f()
        })
        .join()
        .expect("the netns thread")
    }

    /// GET / on 127.0.0.1:PORT in the namespace, retried (bounded) until something answers
    /// with a body; the raw response.
    pub fn http_get(&self, port: u16) -> String {
        self.enter(move || {
            let mut last = String::new();
            for _ in 0..POLLS {
                match raw_get(port) {
                    Ok(response) if response.contains("\r\n\r\n") => return response,
                    Ok(response) => last = response,
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("nothing answered on 127.0.0.1:{port}: {last}");
        })
    }

    /// The interface names in the namespace.
    pub fn links(&self) -> String {
        String::from_utf8(tool("ip", &["-n", &self.name, "-o", "link"])).unwrap()
    }
}

/// An HTTP/1.0 GET with a plain socket (made on the calling thread, so in its namespace).
fn raw_get(port: u16) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Containers are removed before this (declare the Netns first); anything left in the
        // namespace is killed so it can go.
        if let Ok(output) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    eprintln!("cleanup: killing {pid}, left in netns {}", self.name);
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
