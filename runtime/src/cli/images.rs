//! `skiff images`: the stored images, one line each.

use crate::oci::local::LocalImages;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct ImagesCommand {
    /// Show full digests
    #[arg(long)]
    no_trunc: bool,
}

impl ImagesCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let images = LocalImages::open(data_dir)?;
        println!(
            "{:<48} {:<16} {:<20} {:<6} {:>10}",
            "REPOSITORY", "TAG", "DIGEST", "KIND", "SIZE"
        );
        for record in images.index.list()? {
            let (repository, tag) = split_name(&record.name);
            let digest = if self.no_trunc {
                record.digest.to_string()
            } else {
                format!("sha256:{}", record.digest.short())
            };
            println!(
                "{repository:<48} {tag:<16} {digest:<20} {:<6} {:>10}",
                record.kind.to_string(),
                crate::units::ByteSize(record.size).to_string()
            );
        }
        Ok(0)
    }
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); a digest-only name has tag `<none>`, and
/// an unnamed image (recorded by its digest) has neither, as in `docker images`.
fn split_name(name: &str) -> (&str, &str) {
    if name.starts_with("sha256:") {
        return ("<none>", "<none>");
    }
    if let Some((repository, _digest)) = name.split_once('@') {
        return (repository, "<none>");
    }
    match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, tag),
        _ => (name, "<none>"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            super::split_name("localhost:5000/app:1.0"),
            ("localhost:5000/app", "1.0")
        );
        assert_eq!(
            super::split_name("localhost:5000/app"),
            ("localhost:5000/app", "<none>")
        );
        assert_eq!(super::split_name("r/app@sha256:ab"), ("r/app", "<none>"));
        assert_eq!(super::split_name("sha256:abcd"), ("<none>", "<none>"));
    }
}
