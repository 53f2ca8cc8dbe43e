//! `skiff container-monitor ID` (hidden): the detached monitor `skiff run -d` starts. It
//! says `started ID` or `failed MESSAGE` on stdout once, then waits for the container.

use crate::linux::container::Containers;
use crate::linux::monitor::{self, Output};
use std::io::Write;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct MonitorCommand {
    /// The container's id
    id: String,
}

impl MonitorCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        // Our own session: the CLI and its terminal may go away.
        let _ = nix::unistd::setsid();
        let containers = Containers::open(data_dir);
        let output = Output {
            mirror: false,
            forward_signals: false,
        };
        let code = monitor::run(&containers, data_dir, &self.id, output, |started| {
            let mut stdout = std::io::stdout();
            let _ = match started {
                Ok(record) => writeln!(stdout, "started {}", record.id),
                Err(e) => writeln!(
                    stdout,
                    "failed {} {}",
                    super::run::exit_code_for(e),
                    e.to_string().replace('\n', " ")
                ),
            };
            let _ = stdout.flush();
        });
        match code {
            Ok(code) => Ok(code),
            Err(e) => {
                // Before `started` was called (no plan, no record): tell the CLI.
                println!("failed 125 {e}");
                Err(e.into())
            }
        }
    }
}
