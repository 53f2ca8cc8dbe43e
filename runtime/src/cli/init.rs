//! `skiff init` (hidden): the first process of a container, started by skiff itself over a
//! socket it passes down; see `linux::process`.

#[derive(Debug, clap::Args)]
pub struct InitCommand {}

impl InitCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        Ok(crate::linux::process::init_main())
    }
}
