use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sched::{CloneFlags, setns, unshare};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ports::tests::free_port;
use super::*;

/// Runs `test` on a thread of its own in a fresh network namespace with `lo` up.
fn in_private_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET); run tests as root");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            bridge::loopback_up(&bridge::connect().unwrap())
                .await
                .unwrap();
            test().await
        })
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A process in a network namespace of its own, killed on drop.
struct Container(Child);

impl Container {
    fn start() -> Self {
        let mut child = Command::new("unshare")
            .args(["-n", "sh", "-c", "echo ready; exec sleep 60"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn unshare (util-linux)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Self(child)
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Runs `f` on a thread inside this container's network namespace.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let netns = File::open(format!("/proc/{}/ns/net", self.pid())).unwrap();
        std::thread::spawn(move || {
            setns(&netns, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `check` comes true within a few tries. A socket closed by this process can live on
/// for a moment in a child that another test forked and has not yet exec'd (the fd table is
/// copied at fork; close-on-exec only acts at exec), so "closed" is checked more than once.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    (0..100).any(|_| {
        check() || {
            std::thread::sleep(Duration::from_millis(20));
            false
        }
    })
}

fn connect(address: SocketAddr) -> io::Result<TcpStream> {
    // A bound on a hang, not a timing assertion.
    TcpStream::connect_timeout(&address, Duration::from_secs(10))
}

#[test]
fn network_modes_parse() {
    assert_eq!("none".parse::<NetworkMode>().unwrap(), NetworkMode::None);
    assert_eq!("host".parse::<NetworkMode>().unwrap(), NetworkMode::Host);
    assert_eq!(
        "bridge".parse::<NetworkMode>().unwrap(),
        NetworkMode::Bridge
    );
    assert_eq!(NetworkMode::default(), NetworkMode::Bridge);
    let err = "overlay".parse::<NetworkMode>().unwrap_err();
    assert!(
        err.to_string().contains("use none, host or bridge"),
        "{err}"
    );
}

#[test]
fn ports_need_bridge_mode() {
    let ports = ["8080:80".parse().unwrap()];
    NetworkMode::Bridge.check_ports(&ports).unwrap();
    NetworkMode::Host.check_ports(&[]).unwrap();
    let err = NetworkMode::Host.check_ports(&ports).unwrap_err();
    assert!(err.to_string().contains("--net host"), "{err}");
    assert!(NetworkMode::None.check_ports(&ports).is_err());
}

#[test]
fn veth_names_fit_the_kernel_limit() {
    let (host, peer) = veth_names("a-very-long-container-id-0123456789abcdef");
    assert!(host.starts_with("sk") && host.len() == 10, "{host}");
    assert!(peer.len() <= 15, "{peer}");
    assert_ne!(veth_names("a").0, veth_names("b").0);
}

#[test]
fn loopback_comes_up_in_the_container() {
    in_private_netns(|| async {
        let container = Container::start();
        loopback_up(container.pid()).await.unwrap();
        let reached = container.run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            connect(listener.local_addr().unwrap()).map(drop)
        });
        reached
            .join()
            .unwrap()
            .expect("connect over lo in the container");
    });
}

#[test]
fn attach_gives_eth0_an_address_that_reaches_the_gateway() {
    in_private_netns(|| async {
        let state = tempfile::tempdir().unwrap();
        let config = BridgeConfig::new(state.path());
        let container = Container::start();
        let attachment = attach(&config, "c1", container.pid()).await.unwrap();
        assert_eq!(attachment.gateway, Ipv4Addr::new(10, 89, 0, 1));
        assert!(
            state
                .path()
                .join("leases")
                .join(attachment.address.to_string())
                .exists()
        );

        let netns = bridge::open_netns(container.pid()).unwrap();
        let eth0 = bridge::in_netns(netns, container.pid(), |handle| async move {
            bridge::link_index(&handle, "eth0").await
        });
        assert!(eth0.await.unwrap().is_some(), "no eth0 in the container");

        // The gateway is the host side; the container connects to a listener there.
        let gateway = TcpListener::bind((attachment.gateway, 0)).unwrap();
        let gateway_addr = gateway.local_addr().unwrap();
        let address = attachment.address;
        let from_container = container.run(move || {
            // Binding the address proves eth0 holds it.
            TcpListener::bind((address, 0)).expect("the address is on eth0");
            connect(gateway_addr).map(drop)
        });
        from_container
            .join()
            .unwrap()
            .expect("container reaches the gateway");

        let nat = Command::new("nft")
            .args(["list", "chain", "ip", "skiff", "postrouting_skiff0"])
            .output()
            .unwrap();
        let nat = String::from_utf8_lossy(&nat.stdout);
        assert!(
            nat.contains("10.89.0.0/16") && nat.contains("masquerade"),
            "{nat}"
        );
    });
}

#[test]
fn attaches_get_different_addresses_and_detach_releases() {
    in_private_netns(|| async {
        let state = tempfile::tempdir().unwrap();
        let config = BridgeConfig::new(state.path());
        let (one, two) = (Container::start(), Container::start());
        let first = attach(&config, "one", one.pid()).await.unwrap();
        let second = attach(&config, "two", two.pid()).await.unwrap();
        assert_ne!(first.address, second.address);
        assert_ne!(first.host_veth, second.host_veth);

        detach(&config, &first).await.unwrap();
        detach(&config, &first).await.unwrap();
        let lease = state.path().join("leases").join(first.address.to_string());
        assert!(!lease.exists(), "lease {} not released", lease.display());
        let handle = bridge::connect().unwrap();
        assert_eq!(
            bridge::link_index(&handle, &first.host_veth).await.unwrap(),
            None
        );
        assert!(
            bridge::link_index(&handle, &second.host_veth)
                .await
                .unwrap()
                .is_some()
        );

        let three = Container::start();
        let third = attach(&config, "three", three.pid()).await.unwrap();
        assert_eq!(third.address, first.address, "released address is reused");
    });
}

#[test]
fn publish_proxies_loopback_to_the_container() {
    in_private_netns(|| async {
        let state = tempfile::tempdir().unwrap();
        let config = BridgeConfig::new(state.path());
        let container = Container::start();
        let attachment = attach(&config, "web", container.pid()).await.unwrap();

        let address = attachment.address;
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let server = container.run(move || {
            let listener = TcpListener::bind((address, 8000)).unwrap();
            bound_tx.send(()).unwrap();
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0; 4];
            stream.read_exact(&mut request).unwrap();
            stream.write_all(b"pong").unwrap();
            request
        });
        bound_rx.recv().unwrap();

        let host_port = free_port();
        let mapping: PortMapping = format!("127.0.0.1:{host_port}:8000").parse().unwrap();
        let proxy = publish(&[mapping], IpAddr::V4(address)).await.unwrap();
        let mut client = tokio::net::TcpStream::connect(proxy.local_addrs()[0])
            .await
            .unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut reply = [0; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"pong");
        assert_eq!(&server.join().unwrap(), b"ping");

        let published = proxy.local_addrs()[0];
        proxy.shutdown().await;
        let closed = eventually(|| std::net::TcpStream::connect(published).is_err());
        assert!(closed, "still listening on {published} after shutdown");
    });
}

#[test]
fn port_in_use_is_named_and_nothing_is_served() {
    in_private_netns(|| async {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let free = free_port();
        let mappings: Vec<PortMapping> = [free, taken_port]
            .iter()
            .map(|port| format!("127.0.0.1:{port}:80").parse().unwrap())
            .collect();
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let err = publish(&mappings, localhost).await.unwrap_err();
        assert!(matches!(err, NetError::PortInUse { .. }), "{err}");
        assert!(err.to_string().contains(&taken_port.to_string()), "{err}");
        // The first port was bound and let go again, not left serving.
        let released = eventually(|| TcpListener::bind(("127.0.0.1", free)).is_ok());
        assert!(released, "port {free} still bound after the failed publish");
    });
}

#[test]
fn the_client_is_closed_when_the_container_refuses() {
    in_private_netns(|| async {
        let nobody = free_port();
        let mapping: PortMapping = format!("127.0.0.1:{}:{nobody}", free_port())
            .parse()
            .unwrap();
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let proxy = publish(&[mapping], localhost).await.unwrap();
        let mut client = tokio::net::TcpStream::connect(proxy.local_addrs()[0])
            .await
            .unwrap();
        let mut buf = [0; 1];
        let read = client.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    });
}

#[test]
fn connections_past_the_limit_are_closed() {
    in_private_netns(|| async {
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_addr = target.local_addr().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let limits = relay::Limits {
            connections: 1,
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(60),
        };
        let serving = tokio::spawn(relay::serve(listener, target_addr, limits));

        let mut first = tokio::net::TcpStream::connect(proxy_addr).await.unwrap();
        let (mut upstream, _) = target.accept().await.unwrap();
        let mut second = tokio::net::TcpStream::connect(proxy_addr).await.unwrap();
        let mut buf = [0; 1];
        let read = second.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        // The first connection still works end to end.
        first.write_all(b"x").await.unwrap();
        upstream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"x");
        serving.abort();
    });
}

#[test]
fn a_containers_mac_is_derived_from_its_address() {
    let mac = bridge::mac_of(std::net::Ipv4Addr::new(10, 89, 0, 3));
    assert_eq!(mac, [0x02, 0x5b, 10, 89, 0, 3]);
    assert_eq!(mac[0] & 0b11, 0b10, "locally administered, unicast");
}
