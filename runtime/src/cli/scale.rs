//! `skiff scale APP/WORKLOAD=N`: a function's warm minimum or a service's replicas.

use super::client::{self, ClientOptions};

#[derive(Debug, clap::Args)]
pub struct ScaleCommand {
    /// What to scale and to how many, e.g. `shop/api=3`
    #[arg(value_name = "APP/WORKLOAD=N")]
    target: String,

    #[command(flatten)]
    daemon: ClientOptions,
}

/// `APP/WORKLOAD=N`, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    app: &'a str,
    workload: &'a str,
    replicas: u32,
}

fn parse(text: &str) -> anyhow::Result<Target<'_>> {
    let malformed = || {
        anyhow::anyhow!("`{text}` is not APP/WORKLOAD=N; write it as e.g. `skiff scale shop/api=3`")
    };
    let (name, replicas) = text.split_once('=').ok_or_else(malformed)?;
    let (app, workload) = name.split_once('/').ok_or_else(malformed)?;
    if app.is_empty() || workload.is_empty() || workload.contains('/') {
        return Err(malformed());
    }
    let replicas = replicas.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "`{replicas}` in `{text}` is not a whole number from 0; write e.g. {name}=3"
        )
    })?;
    Ok(Target {
        app,
        workload,
        replicas,
    })
}

impl ScaleCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let target = parse(&self.target)?;
        let endpoint = self.daemon.endpoint()?;
        let path = format!(
            "/v1/apps/{}/workloads/{}/scale?replicas={}",
            client::encode(target.app),
            client::encode(target.workload),
            target.replicas
        );
        let answer = super::block_on(client::request(
            &endpoint,
            http::Method::PUT,
            &path,
            String::new(),
        ))?
        .ok()?;
        println!(
            "{} {}/{} scaled to {}",
            answer["kind"].as_str().unwrap_or("workload"),
            target.app,
            target.workload,
            answer["replicas"]
        );
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_malformed_ones_say_the_form() {
        assert_eq!(
            parse("shop/api=3").unwrap(),
            Target {
                app: "shop",
                workload: "api",
                replicas: 3
            }
        );
        for bad in ["shop/api", "shop=3", "/api=3", "shop/=3", "a/b/c=1", ""] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("is not APP/WORKLOAD=N"), "{bad}: {err}");
        }
        for bad in ["shop/api=-1", "shop/api=x", "shop/api="] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("is not a whole number"), "{bad}: {err}");
        }
    }
}
