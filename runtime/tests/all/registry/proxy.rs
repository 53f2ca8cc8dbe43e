//! A TCP proxy in front of a registry that injects faults: canned statuses, cut blobs,
//! forged manifests and a bearer-token gate.

#![allow(dead_code)]

use super::*;

/// What a [`FaultProxy`] does to the traffic.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forwards everything, but a response to `GET .../blobs/<digest>` is cut (the connection
    /// closed) after this many body bytes; its headers, `Content-Length` included, are intact.
    CutBlobAfter(usize),
    /// Answers every request with this status and a small distribution-style JSON error body,
    /// without contacting upstream. A 401 carries `WWW-Authenticate: Basic realm="fault-proxy"`.
    Status(u16),
    /// Answers `GET`/`HEAD .../manifests/<ref>` itself with `200`, this body and content type,
    /// and `Docker-Content-Digest` = the body's sha256; forwards everything else. For
    /// manifests the registry will not hold (over 4 MiB) or ones that do not match the
    /// digest they were asked by.
    ServeManifest { media_type: String, body: Vec<u8> },
    /// Forwards everything untouched (to see, with [`FaultProxy::seen`], what a client asked).
    PassThrough,
    /// Token authentication in front of an anonymous registry, as Docker Hub and most cloud
    /// registries do it: a request without `Authorization: Bearer TOKEN` gets 401 with a
    /// `WWW-Authenticate: Bearer realm=".../token",service=...,scope=...` challenge; the realm
    /// hands out TOKEN for these basic credentials (and 401 otherwise).
    BearerAuth {
        user: String,
        password: String,
        token: String,
    },
}

/// A TCP proxy on 127.0.0.1 in front of a registry, injecting a [`Fault`]. One request per
/// client connection (it answers with `Connection: close`); stops accepting when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let fault = Arc::new(fault);
        let acceptor = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let (seen, fault) = (seen.clone(), fault.clone());
                    std::thread::spawn(move || {
                        let _ = proxy_one(client, addr, upstream, &fault, &seen);
                    });
                }
            })
        };
        Self {
            addr,
            seen,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:PORT/<repo_and_tag>` through the proxy.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host())
    }

    /// The requests seen so far, as `METHOD /path?query`.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("the seen list").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn proxy_one(
    client: TcpStream,
    proxy: SocketAddr,
    upstream: SocketAddr,
    fault: &Fault,
    seen: &Mutex<Vec<String>>,
) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut to_client = client.try_clone()?;
    let mut from_client = BufReader::new(client);
    // A TLS ClientHello (clients that try https first, like skopeo): hang up, as a plain-HTTP
    // registry's refusal would make them fall back to http.
    if from_client.fill_buf()?.first() == Some(&0x16) {
        return Ok(());
    }
    let Some((request_line, headers)) = read_head(&mut from_client)? else {
        return Ok(());
    };
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    seen.lock()
        .expect("the seen list")
        .push(format!("{method} {target}"));
    let has = |name: &str, needle: &str| {
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v.to_ascii_lowercase().contains(needle))
    };
    let expects_continue = has("expect", "100-continue");
    let path = target.split('?').next().unwrap_or_default();
    let canned = match fault {
        Fault::Status(code) => Some(canned_status(*code)),
        Fault::ServeManifest { media_type, body }
            if (method == "GET" || method == "HEAD") && path.contains("/manifests/") =>
        {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\n\
                 Docker-Content-Digest: {}\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\
                 Connection: close\r\n\r\n",
                body.len(),
                sha256_digest(body)
            );
            Some((head, body.clone()))
        }
        Fault::BearerAuth {
            user,
            password,
            token,
        } => bearer_gate(proxy, path, &headers, (user, password), token),
        _ => None,
    };

    if expects_continue {
        to_client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if let Some((head, body)) = canned {
        // Read the request body first: closing with unread input would reset the connection
        // and could lose the answer.
        copy_body(&mut from_client, &headers, &mut io::sink())?;
        to_client.write_all(head.as_bytes())?;
        if method != "HEAD" {
            to_client.write_all(&body)?;
        }
        to_client.flush()?;
        let _ = to_client.shutdown(Shutdown::Write);
        return Ok(());
    }

    let upstream = TcpStream::connect_timeout(&upstream, IO_TIMEOUT)?;
    upstream.set_read_timeout(Some(IO_TIMEOUT))?;
    upstream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut to_upstream = upstream.try_clone()?;
    let mut head = format!("{request_line}\r\n");
    for (name, value) in &headers {
        if !is_hop_header(name) && !name.eq_ignore_ascii_case("expect") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    to_upstream.write_all(head.as_bytes())?;
    copy_body(&mut from_client, &headers, &mut to_upstream)?;

    let mut from_upstream = BufReader::new(upstream);
    let Some((status_line, response_headers)) = read_head(&mut from_upstream)? else {
        return Ok(());
    };
    let mut head = format!("{status_line}\r\n");
    for (name, value) in &response_headers {
        if !is_hop_header(name) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    to_client.write_all(head.as_bytes())?;
    if method != "HEAD" {
        let is_blob = path.contains("/blobs/") && !path.contains("/blobs/uploads");
        match fault {
            Fault::CutBlobAfter(limit) if method == "GET" && is_blob => {
                io::copy(&mut from_upstream.take(*limit as u64), &mut to_client)?;
            }
            // Upstream closes after the response (we asked it to), framing passes through.
            _ => {
                io::copy(&mut from_upstream, &mut to_client)?;
            }
        }
    }
    to_client.flush()?;
    let _ = to_client.shutdown(Shutdown::Both);
    Ok(())
}

fn is_hop_header(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Copies a request body (`Content-Length` or chunked) verbatim.
fn copy_body(
    from: &mut impl BufRead,
    headers: &[(String, String)],
    to: &mut impl Write,
) -> io::Result<()> {
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        copy_chunked(from, to, None)
    } else if let Some(length) = find("content-length").and_then(|v| v.parse::<u64>().ok()) {
        let copied = io::copy(&mut from.take(length), to)?;
        if copied < length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "request body cut short",
            ));
        }
        Ok(())
    } else {
        Ok(())
    }
}

/// The token flow: `None` lets the request through, `Some` is the proxy's own answer.
fn bearer_gate(
    proxy: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    (user, password): (&str, &str),
    token: &str,
) -> Option<(String, Vec<u8>)> {
    let authorization = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let json = |code: u16, reason: &str, body: String, extra: String| {
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             {extra}Connection: close\r\n\r\n",
            body.len()
        );
        Some((head, body.into_bytes()))
    };
    if path == "/token" {
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{password}")
            )
        );
        if authorization == basic {
            return json(
                200,
                "OK",
                format!(r#"{{"token":"{token}","access_token":"{token}"}}"#),
                String::new(),
            );
        }
        return json(
            401,
            "Unauthorized",
            r#"{"details":"bad credentials"}"#.into(),
            String::new(),
        );
    }
    if authorization == format!("Bearer {token}") {
        return None;
    }
    let repository = path
        .strip_prefix("/v2/")
        .and_then(|rest| rest.split("/manifests/").next())
        .and_then(|rest| rest.split("/blobs/").next())
        .filter(|r| !r.is_empty())
        .unwrap_or("");
    let scope = if repository.is_empty() {
        String::new()
    } else {
        format!(",scope=\"repository:{repository}:pull\"")
    };
    let challenge = format!(
        "WWW-Authenticate: Bearer realm=\"http://{proxy}/token\",service=\"fault-proxy\"{scope}\r\n"
    );
    let (_, body) = canned_status(401);
    json(
        401,
        "Unauthorized",
        String::from_utf8(body).unwrap_or_default(),
        challenge,
    )
}

fn canned_status(code: u16) -> (String, Vec<u8>) {
    let (reason, error) = match code {
        400 => ("Bad Request", "UNSUPPORTED"),
        401 => ("Unauthorized", "UNAUTHORIZED"),
        403 => ("Forbidden", "DENIED"),
        404 => ("Not Found", "NAME_UNKNOWN"),
        429 => ("Too Many Requests", "TOOMANYREQUESTS"),
        500 => ("Internal Server Error", "UNKNOWN"),
        502 => ("Bad Gateway", "UNKNOWN"),
        503 => ("Service Unavailable", "UNAVAILABLE"),
        _ => ("Injected", "UNKNOWN"),
    };
    let body = format!(
        r#"{{"errors":[{{"code":"{error}","message":"fault proxy: injected status {code}","detail":null}}]}}"#
    )
    .into_bytes();
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nDocker-Distribution-Api-Version: registry/2.0\r\n",
        body.len()
    );
    if code == 401 {
        head.push_str("WWW-Authenticate: Basic realm=\"fault-proxy\"\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    (head, body)
}
