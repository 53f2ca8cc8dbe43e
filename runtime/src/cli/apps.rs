//! `skiff apps`: list the daemon's apps; `skiff apps rm NAME` removes one. (`rm` alone is the
//! container verb, so removing an app lives under `apps`.)

use super::client::{self, ClientOptions};

#[derive(Debug, clap::Args)]
pub struct AppsCommand {
    #[command(subcommand)]
    action: Option<AppsAction>,

    #[command(flatten)]
    daemon: ClientOptions,
}

#[derive(Debug, clap::Subcommand)]
enum AppsAction {
    /// Remove deployed apps: stop serving them and forget them (named volumes are kept)
    Rm {
        #[arg(required = true, value_name = "APP")]
        names: Vec<String>,
    },
}

impl AppsCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let endpoint = self.daemon.endpoint()?;
        match self.action {
            None => {
                let answer = super::block_on(client::request(
                    &endpoint,
                    http::Method::GET,
                    "/v1/apps",
                    String::new(),
                ))?
                .ok()?;
                print!("{}", table(&answer));
                Ok(0)
            }
            Some(AppsAction::Rm { names }) => super::block_on(async {
                for name in names {
                    let path = format!("/v1/apps/{}", client::encode(&name));
                    client::request(&endpoint, http::Method::DELETE, &path, String::new())
                        .await?
                        .ok()?;
                    println!("{name}");
                }
                Ok(0)
            }),
        }
    }
}

fn table(answer: &serde_json::Value) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "FUNCTIONS".into(),
        "SERVICES".into(),
        "JOBS".into(),
        "GENERATION".into(),
    ]];
    for app in answer["apps"].as_array().into_iter().flatten() {
        let field = |key: &str| match &app[key] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rows.push([
            field("name"),
            field("functions"),
            field("services"),
            field("jobs"),
            field("generation"),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}
