//! Bridge networking (the default `--net`), each test in a network namespace of its own so
//! the host's interfaces and nftables are untouched: published ports answer a real HTTP
//! client, containers get their own addresses and reach the gateway and each other, and bad
//! port requests are refused without losing anything.

use super::*;

const HTTPD: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/www"];

/// `skiff run -d ARGS` in the namespace; the full id.
fn detach(netns: &Netns, linux: &Linux, args: &[&str]) -> String {
    full_id(&netns.run(linux, &[&["run", "-d"], args].concat()))
}

#[test]
fn a_published_port_answers_from_the_container() {
    let Some(linux) = linux() else { return };
    let netns = Netns::new();
    let linux = linux; // dropped (containers removed) before the namespace
    let id = detach(
        &netns,
        &linux,
        &[&["--name", "web", "-p", "8080:80", IMAGE], HTTPD].concat(),
    );
    // The CLI has exited; the container answers through the published port.
    let response = netns.http_get(8080);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.ends_with("\r\n\r\nhello from busybox httpd\n"),
        "{response}"
    );
    // And as users fetch it: curl, in the namespace.
    let curl = Command::new("nsenter")
        .arg(format!("--net={}", netns.path().display()))
        .args([
            "--",
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://127.0.0.1:8080/",
        ])
        .output()
        .expect("running curl");
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "hello from busybox httpd\n",
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let line = linux.ps_line("web").unwrap();
    assert!(line.contains("0.0.0.0:8080:80"), "{line}");
    // The bridge and the container's veth exist only in the test's namespace.
    let links = netns.links();
    assert!(links.contains("skiff0"), "{links}");
    let address = linux.record(&id)["address"].as_str().unwrap().to_string();
    assert!(address.starts_with("10.89."), "{address}");

    linux.run(["rm", "-f", "web"]).expect_code(0);
    // Its veth went with it; the bridge stays for the next container.
    let links = netns.links();
    assert_eq!(links.lines().count(), 2, "lo and skiff0 only:\n{links}");
    let refused = netns.enter(|| std::net::TcpStream::connect(("127.0.0.1", 8080)).is_err());
    assert!(refused, "the port is closed once the container is gone");
}

#[test]
fn containers_get_their_own_addresses_and_reach_the_gateway_and_each_other() {
    let Some(linux) = linux() else { return };
    let netns = Netns::new();
    let linux = linux;
    let web = detach(&netns, &linux, &[&["--name", "web", IMAGE], HTTPD].concat());
    let web_address = linux.record(&web)["address"].as_str().unwrap().to_string();
    // A server of the test's, on the namespace's side of the bridge.
    let listener = netns.enter(|| std::net::TcpListener::bind("0.0.0.0:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        stream
            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nfrom gateway")
            .unwrap();
    });
    let script = format!(
        "ip -4 -o addr show eth0; ip route; \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 10.89.0.1 {port}; echo; \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {web_address} 80; \
         echo; echo mac $(cat /sys/class/net/eth0/address)"
    );
    let ran = netns.run(&linux, &["run", "--rm", IMAGE, "sh", "-c", &script]);
    ran.expect_code(0);
    server.join().unwrap();
    let lines: Vec<&str> = ran.stdout.lines().collect();
    let own = lines[0]
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert!(own.starts_with("10.89."), "{}", ran.stdout);
    assert_ne!(own, web_address, "two containers, two addresses");
    // The MAC follows the address (02:5b + its octets), so a reused address keeps its MAC.
    let octets: Vec<String> = (own.split('.'))
        .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
        .collect();
    ran.stdout_has(&format!("mac 02:5b:{}\n", octets.join(":")));
    ran.stdout_has("default via 10.89.0.1 dev eth0")
        .stdout_has("from gateway\n")
        .stdout_has("hello from busybox httpd");
}

#[test]
fn a_port_in_use_is_refused_and_nothing_is_lost() {
    let Some(linux) = linux() else { return };
    let netns = Netns::new();
    let linux = linux;
    detach(
        &netns,
        &linux,
        &[&["--name", "web", "-p", "8080:80", IMAGE], HTTPD].concat(),
    );
    let taken = netns.enter(|| std::net::TcpListener::bind("0.0.0.0:9090").unwrap());

    for port in ["8080", "9090"] {
        let publish = format!("{port}:80");
        let ran = netns.run(
            &linux,
            &[&["run", "-d", "-p", &publish, IMAGE], HTTPD].concat(),
        );
        assert_ne!(ran.code, 0, "{}", ran.stdout);
        ran.stderr_has(&format!("host port {port} on 0.0.0.0 is already in use"));
        let ran = netns.run(&linux, &["run", "--rm", "-p", &publish, IMAGE, "true"]);
        assert_ne!(ran.code, 0, "{}", ran.stdout);
        ran.stderr_has(&format!("host port {port}"));
    }
    drop(taken);
    // Only `web` runs, and it still answers; the refused ones left no veth behind.
    let running = linux.run(["ps"]).stdout.clone();
    assert_eq!(running.lines().count(), 2, "{running}");
    assert!(linux.ps_line("web").unwrap().contains(" up "));
    assert!(netns.http_get(8080).ends_with("hello from busybox httpd\n"));
    let links = netns.links();
    assert_eq!(
        links.lines().count(),
        3,
        "lo, skiff0 and web's veth:\n{links}"
    );

    // -p means nothing with the host's network, or with none.
    let before = linux.ids();
    for net in ["host", "none"] {
        let ran = netns.run(
            &linux,
            &["run", "--rm", "--net", net, "-p", "8081:80", IMAGE, "true"],
        );
        ran.expect_code(125).stderr_has("-p has no effect");
    }
    assert_eq!(linux.ids(), before);
}

#[test]
fn outbound_traffic_is_masqueraded_behind_the_host() {
    let Some(linux) = linux() else { return };
    let netns = Netns::new();
    // An "outside" host beyond the test's namespace, reachable only through it, with no route
    // back to the bridge's subnet: only NAT lets the container talk to it.
    let outside = Netns::new();
    let (inner, outer) = (
        format!("vi{}", std::process::id() % 100_000),
        format!("vo{}", std::process::id() % 100_000),
    );
    tool(
        "ip",
        &[
            "-n",
            &netns.name,
            "link",
            "add",
            &inner,
            "type",
            "veth",
            "peer",
            "name",
            &outer,
        ],
    );
    tool(
        "ip",
        &[
            "-n",
            &netns.name,
            "link",
            "set",
            &outer,
            "netns",
            &outside.name,
        ],
    );
    tool(
        "ip",
        &[
            "-n",
            &netns.name,
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            &inner,
        ],
    );
    tool("ip", &["-n", &netns.name, "link", "set", &inner, "up"]);
    tool(
        "ip",
        &[
            "-n",
            &outside.name,
            "addr",
            "add",
            "192.0.2.2/24",
            "dev",
            &outer,
        ],
    );
    tool("ip", &["-n", &outside.name, "link", "set", &outer, "up"]);
    let linux = linux;
    // The outside server answers with the address it sees the connection come from.
    let listener = outside.enter(|| std::net::TcpListener::bind("192.0.2.2:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut stream, peer) = listener.accept().unwrap();
        stream.write_all(peer.ip().to_string().as_bytes()).unwrap();
    });
    let script = format!("nc 192.0.2.2 {port} </dev/null");
    let ran = netns.run(&linux, &["run", "--rm", IMAGE, "sh", "-c", &script]);
    ran.expect_code(0);
    server.join().unwrap();
    assert_eq!(
        ran.stdout.trim(),
        "192.0.2.1",
        "the container's 10.89 address is masqueraded as the host's"
    );
}
