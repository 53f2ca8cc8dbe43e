//! What deploying an app would change: per workload added, changed (which fields), removed or
//! unchanged, against the version deployed before.
//!
//! `skiff deploy` prints it, the control API answers `PUT /v1/apps/{name}` with it, and an
//! empty diff makes a redeploy a no-op. It compares specs only; rolling the changes out is the
//! scheduler's job.

use super::manifest::{AppSpec, WorkloadKind};
use serde::Serialize;
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

/// The change of one workload between two versions of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added,
    /// The manifest keys whose values differ, in alphabetical order.
    Changed(Vec<String>),
    Removed,
    Unchanged,
}

/// One workload's line in an [`AppDiff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadDiff {
    pub kind: WorkloadKind,
    pub name: String,
    pub change: Change,
}

/// Every workload of the old and new app, functions first, then services, then jobs, each
/// by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppDiff {
    pub workloads: Vec<WorkloadDiff>,
}

impl AppDiff {
    /// Nothing to add, change or remove: deploying again would be a no-op.
    pub fn is_empty(&self) -> bool {
        self.workloads
            .iter()
            .all(|workload| workload.change == Change::Unchanged)
    }
}

/// Compares `new` with the deployed `old` (`None` on a first deploy).
pub fn diff(old: Option<&AppSpec>, new: &AppSpec) -> AppDiff {
    let mut workloads = Vec::new();
    diff_kind(
        WorkloadKind::Function,
        old.map(|app| &app.functions),
        &new.functions,
        &mut workloads,
    );
    diff_kind(
        WorkloadKind::Service,
        old.map(|app| &app.services),
        &new.services,
        &mut workloads,
    );
    diff_kind(
        WorkloadKind::Job,
        old.map(|app| &app.jobs),
        &new.jobs,
        &mut workloads,
    );
    AppDiff { workloads }
}

fn diff_kind<T: Serialize + PartialEq>(
    kind: WorkloadKind,
    old: Option<&BTreeMap<String, T>>,
    new: &BTreeMap<String, T>,
    out: &mut Vec<WorkloadDiff>,
) {
    let empty = BTreeMap::new();
    let old = old.unwrap_or(&empty);
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let change = match (old.get(name), new.get(name)) {
            (None, _) => Change::Added,
            (Some(_), None) => Change::Removed,
            (Some(before), Some(after)) if before == after => Change::Unchanged,
            (Some(before), Some(after)) => Change::Changed(changed_fields(before, after)),
        };
        out.push(WorkloadDiff {
            kind,
            name: name.clone(),
            change,
        });
    }
}

/// The serialized keys whose values differ. Going through the serde form keeps the names
/// those of the manifest, and new fields are compared without touching this function.
fn changed_fields<T: Serialize>(before: &T, after: &T) -> Vec<String> {
    let as_map = |spec: &T| match serde_json::to_value(spec) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    };
    let (Some(before), Some(after)) = (as_map(before), as_map(after)) else {
        // Specs are structs of plain data and always serialize to an object; should one ever
        // not, the change is still reported, just without its fields.
        return vec!["spec".to_string()];
    };
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect()
}

impl fmt::Display for WorkloadDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { kind, name, change } = self;
        match change {
            Change::Added => write!(f, "+ {kind} {name} (new)"),
            Change::Changed(fields) => write!(f, "~ {kind} {name}: {}", fields.join(", ")),
            Change::Removed => write!(f, "- {kind} {name}"),
            Change::Unchanged => write!(f, "= {kind} {name} (unchanged)"),
        }
    }
}

/// One line per workload, as `skiff deploy` prints it.
impl fmt::Display for AppDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, workload) in self.workloads.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{workload}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::load::tests::DESIGN_EXAMPLE;
    use crate::units::ByteSize;
    use std::path::Path;

    fn shop() -> AppSpec {
        AppSpec::parse_with(DESIGN_EXAMPLE, Path::new("/srv"), "x", false).unwrap()
    }

    #[test]
    fn a_first_deploy_adds_everything() {
        let diff = diff(None, &shop());
        assert_eq!(
            diff.to_string(),
            "+ function api (new)\n+ service cache (new)\n+ job migrate (new)"
        );
        assert!(!diff.is_empty());
    }

    #[test]
    fn redeploying_the_same_app_is_empty() {
        let app = shop();
        let diff = diff(Some(&app), &app.clone());
        assert!(diff.is_empty());
        assert_eq!(
            diff.to_string(),
            "= function api (unchanged)\n= service cache (unchanged)\n= job migrate (unchanged)"
        );
    }

    #[test]
    fn changes_name_their_fields_and_removals_and_additions_show() {
        let old = shop();
        let mut new = old.clone();
        let cache = new.services.get_mut("cache").unwrap();
        cache.image = "localhost:5000/redis:8".into();
        cache.memory = Some(ByteSize::mib(256));
        new.jobs.remove("migrate");
        let mut web = new.functions["api"].clone();
        web.route = "/".into();
        new.functions.insert("web".into(), web);

        let diff = diff(Some(&old), &new);
        assert_eq!(
            diff.to_string(),
            "= function api (unchanged)\n+ function web (new)\n~ service cache: image, memory\n\
             - job migrate"
        );
        assert_eq!(
            diff.workloads[2].change,
            Change::Changed(vec!["image".into(), "memory".into()])
        );
        assert!(!diff.is_empty());
    }

    #[test]
    fn a_key_set_or_cleared_counts_as_changed() {
        let old = shop();
        let mut new = old.clone();
        new.functions.get_mut("api").unwrap().host = None;
        new.jobs.get_mut("migrate").unwrap().timeout = Some(std::time::Duration::from_secs(5));
        let diff = diff(Some(&old), &new);
        assert_eq!(diff.workloads[0].to_string(), "~ function api: host");
        assert_eq!(diff.workloads[2].to_string(), "~ job migrate: timeout");
    }
}
