//! Capabilities: the OCI spec's five sets applied to the calling thread, and Docker's default set.

use caps::{CapSet, CapsHashSet};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};
use std::io;

/// Docker's default capability set, the one a container gets unless its spec says otherwise.
///
/// Everything else (`SYS_ADMIN`, `NET_ADMIN`, `SYS_PTRACE`, `SYS_MODULE`, ...) is left out.
pub fn docker_default_capabilities() -> Vec<Capability> {
    use Capability::*;
    vec![
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        NetRaw,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ]
}

/// The capability sets Docker gives a container's process.
///
/// Root: bounding = permitted = effective = [`docker_default_capabilities`]. A non-root user
/// (`non_root`): the same bounding set, but empty permitted and effective sets, so the process
/// holds no capability unless it executes a file with file capabilities. Inheritable and ambient
/// are empty in both cases, so nothing is passed across `execve` by inheritance.
pub fn default_capabilities_spec(non_root: bool) -> LinuxCapabilities {
    let set: Capabilities = docker_default_capabilities().into_iter().collect();
    let held = if non_root {
        Capabilities::new()
    } else {
        set.clone()
    };
    let mut spec = LinuxCapabilities::default();
    spec.set_bounding(Some(set))
        .set_permitted(Some(held.clone()))
        .set_effective(Some(held))
        .set_inheritable(Some(Capabilities::new()))
        .set_ambient(Some(Capabilities::new()));
    spec
}

/// Applies `caps` to the calling thread; a set the spec leaves out (`None`) is empty.
///
/// The steps are ordered so that each `capset(2)` stays valid:
///
/// 1. effective is raised to the current permitted set, so `CAP_SETPCAP` is in effect even after
///    a uid change cleared the effective set (see `Syscall::set_ids`);
/// 2. every capability not in `bounding` is dropped from the bounding set;
/// 3. inheritable is set (still with `CAP_SETPCAP` in effect);
/// 4. effective, then permitted (the other order fails while effective holds more than the new
///    permitted set);
/// 5. ambient, last: raising an ambient capability needs it in permitted and inheritable.
///
/// A capability this kernel does not know is skipped with a debug log, as runc does.
pub fn apply_capabilities(caps: &LinuxCapabilities) -> io::Result<()> {
    let supported = caps::runtime::thread_all_supported();
    let bounding = to_caps_set(caps.bounding(), &supported);
    let inheritable = to_caps_set(caps.inheritable(), &supported);
    let permitted = to_caps_set(caps.permitted(), &supported);
    let effective = to_caps_set(caps.effective(), &supported);
    let ambient = to_caps_set(caps.ambient(), &supported);
    if let Some(cap) = effective.difference(&permitted).next() {
        return Err(io::Error::other(format!(
            "capabilities: effective {cap} is not in the permitted set; add it there or drop it"
        )));
    }

    let current =
        caps::read(None, CapSet::Permitted).map_err(|e| caps_error("read permitted", e))?;
    caps::set(None, CapSet::Effective, &current).map_err(|e| caps_error("raise effective", e))?;
    for cap in supported.difference(&bounding) {
        caps::drop(None, CapSet::Bounding, *cap)
            .map_err(|e| caps_error(&format!("drop {cap} from bounding"), e))?;
    }
    for (set, value) in [
        (CapSet::Inheritable, &inheritable),
        (CapSet::Effective, &effective),
        (CapSet::Permitted, &permitted),
    ] {
        caps::set(None, set, value).map_err(|e| caps_error(&format!("set {set:?}"), e))?;
    }
    // The kernel raises an ambient capability only if it is both permitted and inheritable;
    // `runc spec` writes ambient sets without inheritable ones, and runc and crun run them by
    // leaving those out, so skiff does the same.
    let possible: CapsHashSet = ambient
        .iter()
        .filter(|cap| permitted.contains(cap) && inheritable.contains(cap))
        .copied()
        .collect();
    for cap in ambient.difference(&possible) {
        tracing::debug!(capability = %cap, "ambient capability not inheritable; skipped");
    }
    set_ambient(&possible)
}

/// Sets the ambient set; a kernel without ambient capabilities (before 4.3) is fine as long as
/// none are asked for.
fn set_ambient(ambient: &CapsHashSet) -> io::Result<()> {
    if caps::runtime::ambient_set_supported().is_err() {
        if ambient.is_empty() {
            return Ok(());
        }
        return Err(io::Error::other(
            "capabilities: this kernel has no ambient set; remove the ambient capabilities",
        ));
    }
    caps::set(None, CapSet::Ambient, ambient).map_err(|e| caps_error("set Ambient", e))
}

/// The spec's set as `caps` values this kernel supports.
fn to_caps_set(set: &Option<Capabilities>, supported: &CapsHashSet) -> CapsHashSet {
    let mut out = CapsHashSet::new();
    for cap in set.iter().flatten() {
        match to_caps(*cap) {
            Some(c) if supported.contains(&c) => {
                out.insert(c);
            }
            _ => tracing::debug!(capability = %cap, "capability unknown to this kernel; skipped"),
        }
    }
    out
}

/// Maps an OCI capability to the `caps` crate's by name: oci-spec displays `CHOWN` for
/// `CAP_CHOWN`. `None` for a name the `caps` crate does not know.
pub(super) fn to_caps(cap: Capability) -> Option<caps::Capability> {
    format!("CAP_{cap}").parse().ok()
}

fn caps_error(step: &str, e: caps::errors::CapsError) -> io::Error {
    io::Error::other(format!("capabilities: {step}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_caps_name_maps_from_its_oci_capability() {
        for want in caps::all() {
            let json = format!("\"{want}\"");
            let oci: Capability = serde_json::from_str(&json).expect("oci-spec knows the name");
            assert_eq!(to_caps(oci), Some(want), "{oci}");
        }
    }

    #[test]
    fn docker_default_mask_matches_docker() {
        let mask: u64 = docker_default_capabilities()
            .into_iter()
            .map(|c| to_caps(c).expect("known").bitmask())
            .sum();
        assert_eq!(mask, 0xa80425fb);
    }

    #[test]
    fn non_root_default_holds_nothing_but_keeps_the_bounding_set() {
        let root = default_capabilities_spec(false);
        let user = default_capabilities_spec(true);
        assert_eq!(root.bounding(), user.bounding());
        assert_eq!(root.effective(), root.bounding());
        assert_eq!(root.permitted(), root.bounding());
        assert_eq!(user.effective().as_ref().map(|s| s.len()), Some(0));
        assert_eq!(user.permitted().as_ref().map(|s| s.len()), Some(0));
        assert_eq!(root.inheritable().as_ref().map(|s| s.len()), Some(0));
        assert_eq!(root.ambient().as_ref().map(|s| s.len()), Some(0));
    }

    #[test]
    fn effective_outside_permitted_is_refused_before_any_change() {
        let mut spec = default_capabilities_spec(true);
        spec.set_effective(Some([Capability::Chown].into_iter().collect()));
        let err = apply_capabilities(&spec).expect_err("refused");
        assert!(err.to_string().contains("CAP_CHOWN"), "{err}");
    }
}
