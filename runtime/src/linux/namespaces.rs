//! Entering a container's namespaces: one ordered table, joined by path or created new.
//!
//! Namespaces with a `path` are joined first (in table order: a joined network namespace, as
//! podman passes one, must be entered before the mount namespace is unshared), then every new
//! one is created with a single `unshare`. A new pid namespace applies to the children of the
//! caller, so the init process forks after this step. User namespaces are refused: skiff runs
//! containers as real root with capabilities dropped, as Docker does by default.

use super::syscall::Syscall;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use std::path::PathBuf;

/// The order namespaces are entered in, with the flag for each.
const ORDER: &[(LinuxNamespaceType, CloneFlags)] = &[
    (LinuxNamespaceType::Pid, CloneFlags::CLONE_NEWPID),
    (LinuxNamespaceType::Network, CloneFlags::CLONE_NEWNET),
    (LinuxNamespaceType::Ipc, CloneFlags::CLONE_NEWIPC),
    (LinuxNamespaceType::Uts, CloneFlags::CLONE_NEWUTS),
    (LinuxNamespaceType::Mount, CloneFlags::CLONE_NEWNS),
    (LinuxNamespaceType::Cgroup, CloneFlags::CLONE_NEWCGROUP),
];

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error(
        "user namespaces are not supported; remove the \"user\" namespace from the spec's linux.namespaces"
    )]
    User,
    #[error("unsupported namespace type {typ:?}; remove it from the spec's linux.namespaces")]
    Unsupported { typ: LinuxNamespaceType },
    #[error("cannot join the {typ:?} namespace at {path}: {error}")]
    Join {
        typ: LinuxNamespaceType,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot create namespaces ({flags:?}): {error}")]
    Unshare {
        flags: CloneFlags,
        error: std::io::Error,
    },
}

/// Joins or creates every namespace in `namespaces`.
pub fn enter(sys: &dyn Syscall, namespaces: &[LinuxNamespace]) -> Result<(), NamespaceError> {
    for ns in namespaces {
        match ns.typ() {
            LinuxNamespaceType::User => return Err(NamespaceError::User),
            typ if !ORDER.iter().any(|(t, _)| *t == typ) => {
                return Err(NamespaceError::Unsupported { typ });
            }
            _ => {}
        }
    }
    let mut new = CloneFlags::empty();
    for (typ, flag) in ORDER {
        let Some(ns) = namespaces.iter().find(|n| n.typ() == *typ) else {
            continue;
        };
        match ns.path() {
            Some(path) => sys
                .setns(path, *flag)
                .map_err(|error| NamespaceError::Join {
                    typ: *typ,
                    path: path.clone(),
                    error,
                })?,
            None => new |= *flag,
        }
    }
    if !new.is_empty() {
        sys.unshare(new)
            .map_err(|error| NamespaceError::Unshare { flags: new, error })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::syscall::{Call, RecordingSyscall};

    fn ns(typ: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ);
        ns.set_path(path.map(PathBuf::from));
        ns
    }

    #[test]
    fn joined_namespaces_come_first_then_one_unshare() {
        let sys = RecordingSyscall::default();
        let spec = [
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/run/netns/a")),
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Uts, None),
        ];
        enter(&sys, &spec).unwrap();
        assert_eq!(
            sys.calls(),
            [
                Call::Setns("/run/netns/a".into(), CloneFlags::CLONE_NEWNET),
                Call::Unshare(
                    CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS
                ),
            ]
        );
    }

    #[test]
    fn user_namespaces_are_refused_before_anything_happens() {
        let sys = RecordingSyscall::default();
        let spec = [
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::User, None),
        ];
        let err = enter(&sys, &spec).unwrap_err();
        assert!(err.to_string().contains("not supported"));
        assert!(sys.calls().is_empty());
    }
}
