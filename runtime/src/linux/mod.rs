//! The Linux executor: native OCI images in namespaces, cgroups and an overlayfs root, as
//! runc and crun run them.
//!
//! In flow order:
//!
//! - [`unpack`]: one layer's tar stream into a directory, confined to it (no `..`, absolute
//!   paths, links out, or devices), whiteouts turned into overlayfs whiteouts, bounded in size.
//! - [`snapshot`]: content-addressed snapshot directories, one per layer chain, shared by every
//!   container of an image; the "prepare" step of the data flow.
//! - [`spec`]: an image config plus `skiff run` flags become an OCI runtime spec, the one
//!   description of a container the rest of this module reads.
//! - [`syscall`]: every kernel call a container's setup makes, behind a trait with a recording
//!   fake so ordering is unit-tested without root.
//! - [`namespaces`], [`rootfs`], [`security`]: the steps inside the new container: namespaces,
//!   mounts and `pivot_root`, capabilities, `no_new_privs` and seccomp.
//! - [`cgroups`]: memory, CPU and pids limits, v1 and v2 each behind one trait.
//! - [`net`]: `none`, `host` or a bridge with a veth per container and published ports;
//!   [`hosts`] the names a container is given in its `/etc/hosts`.
//! - [`user`]: `--user` and the image's `User` resolved against the container's own files.
//! - [`process`]: the init stages that turn a spec into a running process, and the channel
//!   the launcher drives them over; [`exec`] the last steps before `execve`; [`reaper`] skiff
//!   as pid 1 of a `skiff run` container, forwarding signals and reaping orphans.
//! - [`monitor`]: a `skiff run` container's life (cgroup, network, ports, log, exit status),
//!   in the foreground CLI or a detached monitor; [`container`] its record on disk; [`logs`]
//!   reads its log back, [`stop`] stops and removes it (`skiff logs`, `stop`, `rm`, alone or
//!   through the daemon).
//! - [`launch`]: one container prepared and started under a detached monitor, for `skiff run`
//!   and the daemon's services and jobs.
//! - [`bundle`]: the OCI runtime verbs on a bundle (create, start, state, kill, delete, run),
//!   for `skiff oci` and callers such as podman and containerd.
//!
//! This module reads from `oci` (images, layers) and never touches the scheduler or gateway.

pub mod bundle;
pub mod cgroups;
pub mod container;
pub mod exec;
pub mod hosts;
pub mod launch;
pub mod logs;
pub mod monitor;
pub mod namespaces;
pub mod net;
pub mod process;
pub mod reaper;
pub mod rootfs;
pub mod security;
pub mod snapshot;
pub mod spec;
pub mod stop;
pub mod syscall;
pub mod unpack;
pub mod user;
