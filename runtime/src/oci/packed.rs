//! Files inside image layers: reading one file (a `wasi/wasm` image's `.wasm` entrypoint) out
//! of an image's tar layers, top layer first, honouring whiteouts, without unpacking anything.

use super::media_types as mt;
use std::io::Read;

/// The largest file read out of a layer into memory.
pub const MAX_FILE_BYTES: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PackedError {
    #[error("layer of type `{0}` cannot be read; expected a tar, tar+gzip or tar+zstd layer")]
    MediaType(String),
    #[error("cannot read layer: {0}")]
    Read(#[from] std::io::Error),
    #[error("{path} is {size} bytes, over the {MAX_FILE_BYTES}-byte limit for a Wasm entrypoint")]
    TooLarge { path: String, size: u64 },
}

/// Decompresses a layer by its media type.
pub fn layer_reader<'a>(
    media_type: &str,
    blob: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>, PackedError> {
    Ok(match media_type {
        mt::OCI_LAYER_TAR | mt::DOCKER_LAYER_TAR => Box::new(blob),
        mt::OCI_LAYER_GZIP | mt::DOCKER_LAYER_GZIP => Box::new(flate2::read::GzDecoder::new(blob)),
        mt::OCI_LAYER_ZSTD => Box::new(zstd::stream::read::Decoder::new(blob)?),
        other => return Err(PackedError::MediaType(other.to_string())),
    })
}

/// What one layer says about `path`.
pub enum Found {
    File(Vec<u8>),
    /// A whiteout (or opaque directory) hides it: lower layers must not be consulted.
    Deleted,
    Absent,
}

/// Looks for `path` (absolute in the image, e.g. `/app.wasm`) in one uncompressed tar stream.
pub fn find_in_layer(tar: impl Read, path: &str) -> Result<Found, PackedError> {
    let wanted = normalise(path);
    let (parent, name) = wanted.rsplit_once('/').unwrap_or(("", wanted.as_str()));
    let whiteout = join(parent, &format!(".wh.{name}"));
    let opaque = join(parent, ".wh..wh..opq");
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let entry_path = normalise(&entry.path()?.to_string_lossy());
        if entry_path == whiteout || entry_path == opaque {
            return Ok(Found::Deleted);
        }
        if entry_path == wanted && entry.header().entry_type().is_file() {
            let size = entry.header().size()?;
            if size > MAX_FILE_BYTES {
                return Err(PackedError::TooLarge {
                    path: path.into(),
                    size,
                });
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes)?;
            return Ok(Found::File(bytes));
        }
    }
    Ok(Found::Absent)
}

/// `/a/./b`, `./a/b` and `a/b` all become `a/b`.
fn normalise(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn files_are_found_by_their_image_path() {
        let layer = tar_of(&[("./bin/other", b"x"), ("./app/main.wasm", b"\0asm")]);
        assert!(
            matches!(find_in_layer(&layer[..], "/app/main.wasm").unwrap(), Found::File(b) if b == b"\0asm")
        );
        assert!(matches!(
            find_in_layer(&layer[..], "/app/missing.wasm").unwrap(),
            Found::Absent
        ));
    }

    #[test]
    fn whiteouts_hide_lower_layers() {
        let layer = tar_of(&[("app/.wh.main.wasm", b"")]);
        assert!(matches!(
            find_in_layer(&layer[..], "/app/main.wasm").unwrap(),
            Found::Deleted
        ));
        let opaque = tar_of(&[("app/.wh..wh..opq", b"")]);
        assert!(matches!(
            find_in_layer(&opaque[..], "/app/main.wasm").unwrap(),
            Found::Deleted
        ));
    }

    #[test]
    fn compressed_layers_are_read_by_media_type() {
        use std::io::Write;
        let tar = tar_of(&[("main.wasm", b"\0asm")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let reader = layer_reader(mt::OCI_LAYER_GZIP, &gz[..]).unwrap();
        assert!(matches!(
            find_in_layer(reader, "/main.wasm").unwrap(),
            Found::File(_)
        ));
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        let reader = layer_reader(mt::OCI_LAYER_ZSTD, &zst[..]).unwrap();
        assert!(matches!(
            find_in_layer(reader, "/main.wasm").unwrap(),
            Found::File(_)
        ));
        assert!(matches!(
            layer_reader("application/x-thing", &b""[..]),
            Err(PackedError::MediaType(_))
        ));
    }
}
