//! A minimal HTTP/1.1 client over std sockets, for crafting requests the fixtures need
//! (raw distribution API calls) inside and outside async tests.

#![allow(dead_code)]

use super::*;

/// A response read off the wire by [`http_request`].
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// In order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), std only, so it works
/// inside and outside async tests. A body cut short of its `Content-Length` (or chunked
/// framing) is an `UnexpectedEof` error.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<RawReply> {
    http_request_within(addr, method, path, headers, body, IO_TIMEOUT)
}

/// [`http_request`] with another socket timeout.
pub fn http_request_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<RawReply> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let (status_line, headers) = loop {
        let Some(head) = read_head(&mut reader)? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        };
        // Skip interim responses (100 Continue).
        if !head.0.split(' ').nth(1).is_some_and(|s| s.starts_with('1')) {
            break head;
        }
    };
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, status_line.clone()))?;
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut out = Vec::new();
    if method != "HEAD" && status != 204 && status != 304 {
        if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            copy_chunked(&mut reader, &mut io::sink(), Some(&mut out))?;
        } else if let Some(length) = find("content-length") {
            let length: u64 = length
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
            reader.by_ref().take(length).read_to_end(&mut out)?;
            if (out.len() as u64) < length {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body cut after {} of {length} bytes", out.len()),
                ));
            }
        } else {
            reader.read_to_end(&mut out)?;
        }
    }
    Ok(RawReply {
        status,
        headers,
        body: out,
    })
}

/// A start line (request or status line) and the headers, in order.
type Head = (String, Vec<(String, String)>);

/// Reads a request or response head: the start line and the headers. `None` on a clean EOF
/// before the first byte.
pub(super) fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut start = String::new();
    if reader.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    let mut total = start.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF inside an HTTP head",
            ));
        }
        total += n;
        if total > 256 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP head too big",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(Some((
        start.trim_end_matches(['\r', '\n']).to_string(),
        headers,
    )))
}

/// Copies a chunked body verbatim (framing included) to `to`, and its decoded data to
/// `decoded` if given.
pub(super) fn copy_chunked(
    from: &mut impl BufRead,
    to: &mut impl Write,
    mut decoded: Option<&mut Vec<u8>>,
) -> io::Result<()> {
    let eof = || io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short");
    loop {
        let mut line = String::new();
        if from.read_line(&mut line)? == 0 {
            return Err(eof());
        }
        to.write_all(line.as_bytes())?;
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let mut line = String::new();
                if from.read_line(&mut line)? == 0 {
                    return Err(eof());
                }
                to.write_all(line.as_bytes())?;
                if line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        let mut data = Vec::new();
        from.take(size + 2).read_to_end(&mut data)?;
        if (data.len() as u64) < size + 2 {
            return Err(eof());
        }
        to.write_all(&data)?;
        if let Some(decoded) = decoded.as_deref_mut() {
            decoded.extend_from_slice(&data[..size as usize]);
        }
    }
}
