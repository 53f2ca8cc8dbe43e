//! Outbound NAT for the bridge: IPv4 forwarding on, and one masquerade rule for the subnet.
//!
//! Links and addresses go through netlink; this one rule does not. Speaking nftables over netlink
//! means encoding its expression bytecode by hand, so we run `nft` with a small script instead.
//! The script is one atomic transaction that creates table `ip skiff` and a postrouting nat chain
//! per bridge if missing, flushes that chain, and adds the rule, so running it again changes
//! nothing. It runs in the calling thread's network namespace (a child inherits it), which is
//! what lets tests keep it inside a private namespace. Forward-chain policy (e.g. Docker's
//! `FORWARD DROP`) is the host's business and is left alone.

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};

use super::ipam::Ipv4Subnet;
use super::{NetError, Result};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns on IPv4 forwarding and masquerades traffic from `subnet` that leaves through any
/// interface but `bridge`.
pub(super) fn enable(bridge: &str, subnet: &Ipv4Subnet) -> Result<()> {
    if fs::read_to_string(IP_FORWARD).is_ok_and(|v| v.trim() == "1") {
        // Already on; writing needs a writable /proc/sys, which is not a given.
    } else {
        fs::write(IP_FORWARD, "1").map_err(|error| NetError::Forwarding { error })?;
    }
    // Checking is a read; installing commits a ruleset, which waits out an RCU grace period
    // (~30 ms per container on our machines), so it happens only when the rule is missing.
    if rule_present(bridge, subnet) {
        return Ok(());
    }
    run_nft(&script(bridge, subnet))
}

/// True when the chain holds exactly the rule `script` adds.
fn rule_present(bridge: &str, subnet: &Ipv4Subnet) -> bool {
    let Ok(output) = Command::new("nft")
        .args(["list", "chain", "ip", "skiff", &chain_name(bridge)])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    let listed = String::from_utf8_lossy(&output.stdout);
    output.status.success()
        && listed.contains(&format!(
            "ip saddr {subnet} oifname != \"{bridge}\" masquerade"
        ))
}

fn chain_name(bridge: &str) -> String {
    let bridge: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("postrouting_{bridge}")
}

fn script(bridge: &str, subnet: &Ipv4Subnet) -> String {
    let chain = chain_name(bridge);
    format!(
        "table ip skiff {{\n\
         \tchain {chain} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         }}\n\
         flush chain ip skiff {chain}\n\
         add rule ip skiff {chain} ip saddr {subnet} oifname != \"{bridge}\" masquerade\n"
    )
}

fn run_nft(script: &str) -> Result<()> {
    let nat_err = |error| NetError::NatCommand { error };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(nat_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(nat_err)?;
    }
    let output = child.wait_with_output().map_err(nat_err)?;
    if !output.status.success() {
        return Err(NetError::NatRule {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_masquerades_the_subnet_leaving_other_interfaces() {
        let subnet = "10.89.0.0/16".parse().unwrap();
        let script = script("skiff-0", &subnet);
        assert!(script.contains("chain postrouting_skiff_0 {"), "{script}");
        assert!(
            script.contains("flush chain ip skiff postrouting_skiff_0"),
            "{script}"
        );
        assert!(
            script.contains("ip saddr 10.89.0.0/16 oifname != \"skiff-0\" masquerade"),
            "{script}"
        );
    }
}
