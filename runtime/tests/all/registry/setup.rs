//! Starting a registry: its config file, a free port, the readiness check, and the oras-py
//! driver script.

use super::*;

/// oras-py driven by one JSON argument; prints one JSON line.
pub(super) const ORAS_SCRIPT: &str = r#"
import json, sys
import oras.client, oras.defaults, oras.provider

# oras-py retries failed requests for minutes (sleeping 2 + 3**n s); fixtures want to fail fast.
oras.provider.Registry.do_request = oras.provider.Registry.do_request.__wrapped__

a = json.loads(sys.argv[1])
c = oras.client.OrasClient(
    hostname=a["host"], insecure=True, auth_backend="basic" if a.get("user") else "token"
)
if a.get("user"):
    c.auth.set_basic_auth(a["user"], a["password"])

op = a["op"]
if op == "push":
    r = c.push(
        target=a["target"],
        files=[f"{path}:{media_type}" for path, media_type in a["files"]],
        manifest_config=a.get("config"),
        disable_path_validation=True,
        quiet=True,
    )
    print(json.dumps({"status": r.status_code, "digest": r.headers.get("Docker-Content-Digest")}))
elif op == "pull_manifest":
    container = c.get_container(a["target"])
    c.auth.load_configs(container)
    accept = ", ".join(oras.defaults.default_manifest_accepted_media_types)
    r = c.do_request(f"{c.prefix}://{container.manifest_url()}", "GET", headers={"Accept": accept})
    c._check_200_response(r)
    print(json.dumps({"digest": r.headers.get("Docker-Content-Digest"), "manifest": r.content.hex()}))
elif op == "pull":
    files = c.pull(target=a["target"], outdir=a["outdir"])
    print(json.dumps({"files": files}))
else:
    sys.exit(f"unknown op {op}")
"#;

/// Polls `GET /v2/` until the registry with this token answers `expected`.
pub(super) fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    expected: u16,
    token: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status})"));
        }
        let reply = http_request_within(addr, "GET", "/v2/", &[], b"", Duration::from_secs(2));
        if let Ok(reply) = reply
            && reply.header("x-skiff-fixture") == Some(token)
            && reply.status == expected
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no {expected} from GET /v2/ within {STARTUP_TIMEOUT:?}"
    ))
}

pub(super) fn registry_config(
    root: &Path,
    addr: SocketAddr,
    token: &str,
    htpasswd: Option<&Path>,
) -> String {
    let mut config = format!(
        r#"version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: "{root}"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: "{addr}"
  secret: "{secret}"
  headers:
    X-Skiff-Fixture: ["{token}"]
"#,
        root = root.display(),
        secret = random_hex(),
    );
    if let Some(path) = htpasswd {
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: skiff-test\n    path: \"{}\"\n",
            path.display()
        ));
    }
    config
}

/// A port nobody listened on a moment ago.
pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// 32 hex digits from std's randomly keyed hasher (no rand crate needed).
pub(super) fn random_hex() -> String {
    let mut out = String::new();
    for _ in 0..2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out
}

pub(super) fn base64(input: String) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = input.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
