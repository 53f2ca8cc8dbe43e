//! (being written) Capabilities, no_new_privs and seccomp.

use oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp};
use std::io;

pub fn apply_capabilities(_caps: &LinuxCapabilities) -> io::Result<()> {
    Err(io::Error::other("capabilities are not implemented yet"))
}

pub fn set_no_new_privs() -> io::Result<()> {
    Err(io::Error::other("no_new_privs is not implemented yet"))
}

pub fn load_seccomp(_profile: &LinuxSeccomp) -> io::Result<()> {
    Err(io::Error::other("seccomp is not implemented yet"))
}

pub fn default_capabilities_spec(_non_root: bool) -> LinuxCapabilities {
    LinuxCapabilities::default()
}

pub fn default_seccomp() -> LinuxSeccomp {
    LinuxSeccomp::default()
}
