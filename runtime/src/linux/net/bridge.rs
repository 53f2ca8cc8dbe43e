//! The netlink half of bridge networking: the bridge itself, a container's veth pair, and the
//! work done inside a container's network namespace.
//!
//! Every call goes through rtnetlink; nothing here runs `ip`. A netlink socket stays bound to the
//! network namespace it was created in, so [`in_netns`] creates one on a dedicated thread that
//! has joined the container's namespace and drives it with a small runtime of its own. Address
//! choice ([`super::ipam`]) and NAT ([`super::nat`]) live elsewhere.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::ipam::Ipv4Subnet;
use super::{NetError, Result};

/// The name a container's interface gets inside its namespace.
pub(super) const CONTAINER_INTERFACE: &str = "eth0";

fn netlink_err(action: &'static str, interface: &str) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let interface = interface.to_string();
    move |error| NetError::Netlink {
        action,
        interface,
        error,
    }
}

fn is_errno(error: &rtnetlink::Error, errno: Errno) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -(errno as i32))
}

/// A netlink connection in the calling thread's network namespace, driven by the current runtime.
pub(super) fn connect() -> Result<Handle> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|error| NetError::NetlinkSocket { error })?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The index of the link called `name`, or `None` if there is none.
pub(super) async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|link| link.header.index)),
        Err(e) if is_errno(&e, Errno::ENODEV) => Ok(None),
        Err(e) => Err(netlink_err("looking up", name)(e)),
    }
}

async fn require_index(handle: &Handle, name: &str) -> Result<u32> {
    link_index(handle, name)
        .await?
        .ok_or_else(|| NetError::InterfaceNotFound {
            interface: name.to_string(),
        })
}

async fn set_up(handle: &Handle, name: &str, index: u32) -> Result<()> {
    let message = LinkUnspec::new_with_index(index).up().build();
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(netlink_err("bringing up", name))
}

/// Creates bridge `name` if missing, brings it up and gives it the subnet's gateway address.
/// Another skiff doing the same at the same time is fine: "exists" counts as success.
pub(super) async fn ensure_bridge(handle: &Handle, name: &str, subnet: &Ipv4Subnet) -> Result<u32> {
    match handle
        .link()
        .add(LinkBridge::new(name).build())
        .execute()
        .await
    {
        Err(e) if !is_errno(&e, Errno::EEXIST) => {
            return Err(netlink_err("creating bridge", name)(e));
        }
        _ => {}
    }
    let index = require_index(handle, name).await?;
    set_up(handle, name, index).await?;
    let gateway = IpAddr::V4(subnet.gateway());
    match handle
        .address()
        .add(index, gateway, subnet.prefix())
        .execute()
        .await
    {
        Err(e) if !is_errno(&e, Errno::EEXIST) => Err(netlink_err("addressing bridge", name)(e)),
        _ => Ok(index),
    }
}

/// Gives bridge `bridge` (index `index`) one more address, `address/32`: a service address
/// the host answers on. Already there counts as success (a restarted daemon adds it again).
pub(super) async fn add_address(
    handle: &Handle,
    bridge: &str,
    index: u32,
    address: Ipv4Addr,
) -> Result<()> {
    match handle
        .address()
        .add(index, IpAddr::V4(address), 32)
        .execute()
        .await
    {
        Err(e) if !is_errno(&e, Errno::EEXIST) => {
            Err(netlink_err("adding an address to", bridge)(e))
        }
        _ => Ok(()),
    }
}

/// Takes `address` off bridge `bridge`, if the bridge has it.
pub(super) async fn remove_address(handle: &Handle, bridge: &str, address: Ipv4Addr) -> Result<()> {
    let Some(index) = link_index(handle, bridge).await? else {
        return Ok(());
    };
    let mut found = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(IpAddr::V4(address))
        .execute();
    while let Some(message) = found
        .try_next()
        .await
        .map_err(netlink_err("listing the addresses of", bridge))?
    {
        match handle.address().del(message).execute().await {
            Err(e) if !is_errno(&e, Errno::EADDRNOTAVAIL) => {
                return Err(netlink_err("removing an address from", bridge)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates the veth pair `host`/`peer`, plugs `host` into the bridge and brings it up, then moves
/// `peer` into the network namespace `netns`. A leftover `host` link (from an attach that died
/// halfway) is removed first: the container id it is named after belongs to this container.
pub(super) async fn create_veth(
    handle: &Handle,
    host: &str,
    peer: &str,
    bridge: u32,
    netns: &File,
) -> Result<()> {
    delete_link(handle, host).await?;
    delete_link(handle, peer).await?;
    // The peer is created inside the container's namespace: moving it there afterwards
    // (RTM_SETLINK with a netns) waits out a network RCU grace period, ~30 ms a container.
    let peer_message = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .setns_by_fd(netns.as_raw_fd())
        .build();
    let veth = LinkVeth::new(host, peer)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
        .build();
    handle
        .link()
        .add(veth)
        .execute()
        .await
        .map_err(netlink_err("creating veth", host))?;
    let index = require_index(handle, host).await?;
    let plug = LinkUnspec::new_with_index(index)
        .controller(bridge)
        .up()
        .build();
    handle
        .link()
        .set(plug)
        .execute()
        .await
        .map_err(netlink_err("attaching to the bridge", host))
}

/// Deletes link `name` if it exists.
pub(super) async fn delete_link(handle: &Handle, name: &str) -> Result<()> {
    let Some(index) = link_index(handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(index).execute().await {
        Err(e) if !is_errno(&e, Errno::ENODEV) => Err(netlink_err("deleting", name)(e)),
        _ => Ok(()),
    }
}

/// The MAC address of the container holding `address`: `02:5b:` (locally administered) and
/// the four octets of the address, as Docker derives its own. An address leased again keeps its
/// MAC, so the neighbour entries the host and the other containers cached for it stay right;
/// a fresh random MAC would leave them pointing at the container that went, for as long as
/// the kernel takes to find out (tens of seconds).
pub(super) fn mac_of(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    [0x02, 0x5b, a, b, c, d]
}

/// Inside the container's namespace: `peer` becomes `eth0` with `address` (and the MAC
/// [`mac_of`] it), up, with a default route through `gateway`; `lo` comes up too.
pub(super) async fn configure_container(
    handle: &Handle,
    peer: &str,
    address: Ipv4Addr,
    subnet: &Ipv4Subnet,
) -> Result<()> {
    let eth0 = CONTAINER_INTERFACE;
    let index = require_index(handle, peer).await?;
    let rename = LinkUnspec::new_with_index(index)
        .name(eth0.to_string())
        .address(mac_of(address).to_vec())
        .build();
    handle
        .link()
        .set(rename)
        .execute()
        .await
        .map_err(netlink_err("renaming to eth0", peer))?;
    handle
        .address()
        .add(index, IpAddr::V4(address), subnet.prefix())
        .execute()
        .await
        .map_err(netlink_err("addressing", eth0))?;
    set_up(handle, eth0, index).await?;
    let default_route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(subnet.gateway())
        .output_interface(index)
        .build();
    handle
        .route()
        .add(default_route)
        .execute()
        .await
        .map_err(netlink_err("adding the default route via", eth0))?;
    loopback_up(handle).await
}

pub(super) async fn loopback_up(handle: &Handle) -> Result<()> {
    let index = require_index(handle, "lo").await?;
    set_up(handle, "lo", index).await
}

/// Opens the network namespace of process `pid`.
pub(super) fn open_netns(pid: i32) -> Result<File> {
    File::open(format!("/proc/{pid}/ns/net")).map_err(|error| NetError::Namespace { pid, error })
}

/// Runs `work` with a netlink handle bound to the network namespace `netns` (that of `pid`, which
/// is only named in errors). The work runs on a thread of its own that joins the namespace and
/// ends afterwards, so no thread of the caller's runtime ever changes namespace.
pub(super) async fn in_netns<T, F, Fut>(netns: File, pid: i32, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("skiff-netns-{pid}"))
        .spawn(move || {
            let _ = tx.send(run_in_netns(netns, pid, work));
        })
        .map_err(|error| NetError::Namespace { pid, error })?;
    rx.await.unwrap_or_else(|_| {
        Err(NetError::Namespace {
            pid,
            error: io::Error::other("the namespace worker thread panicked"),
        })
    })
}

fn run_in_netns<T, F, Fut>(netns: File, pid: i32, work: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|errno| NetError::Namespace {
        pid,
        error: errno.into(),
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|error| NetError::Namespace { pid, error })?;
    runtime.block_on(async move { work(connect()?).await })
}
