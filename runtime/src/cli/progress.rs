//! Progress of pulls: a bar per blob on a terminal (indicatif), nothing otherwise (the verb
//! prints one summary line either way).

use crate::oci::Digest;
use crate::oci::registry::{Progress, Quiet};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

/// Bars on a terminal, silence in pipes and logs.
pub fn for_stdout() -> Box<dyn Progress> {
    if std::io::stdout().is_terminal() {
        Box::new(Bars::default())
    } else {
        Box::new(Quiet)
    }
}

#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn with_bar(&self, digest: &Digest, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.bars.lock().expect("progress lock").get(digest) {
            f(bar);
        }
    }
}

impl Progress for Bars {
    fn blob_started(&self, digest: &Digest, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(digest.short().to_string());
        self.bars
            .lock()
            .expect("progress lock")
            .insert(digest.clone(), bar);
    }

    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        self.with_bar(digest, |bar| bar.inc(bytes));
    }

    fn blob_finished(&self, digest: &Digest, skipped: bool) {
        if skipped {
            let _ = self
                .multi
                .println(format!("{} already present", digest.short()));
        }
        self.with_bar(digest, |bar| bar.finish());
    }
}
