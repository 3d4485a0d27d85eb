//! What a container may reach through pasta: the internet, not the networks
//! of the host itself.
//!
//! pasta turns a container's connections into sockets of a host process, so
//! without a filter an agent reached whatever its host reaches: the cloud's
//! metadata service (169.254.169.254, and with it the instance's
//! credentials), the host's own addresses (the shared PostgreSQL, other
//! nodes' dashboards, anything bound to 0.0.0.0), the LAN, a VPN. Each hive
//! keeps one nftables table of its own, `inet hyperhive-<id>`, whose output
//! chain refuses, for pasta's uids alone, every local, private, link-local,
//! shared and multicast address, but DNS to the host's resolvers (pasta
//! forwards the container's queries there), a model endpoint named by
//! address, and the networks the operator allows. The table only refuses:
//! a refusal in any table is final, so no other table's rule (Docker's,
//! ufw's) can let a packet past it, and it changes nothing for any other
//! process of the host.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::runtime::sys;

/// Where a network is refused unless allowed: this host, private networks,
/// link-local (the cloud's metadata service), shared (CGNAT), benchmarking,
/// multicast and the reserved rest.
const REFUSED_V4: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, \
     172.16.0.0/12, 192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 224.0.0.0/3";
/// The same for IPv6: unspecified and loopback, IPv4-mapped (the IPv4 ones
/// through a back door), NAT64 local use, unique local, link-local, multicast.
const REFUSED_V6: &str = "::/127, ::ffff:0:0/96, 64:ff9b:1::/48, fc00::/7, fe80::/10, ff00::/8";

/// A network the operator lets containers reach: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Reads `10.1.2.0/24`, `fd00::/8` or a lone address.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not a network: write an address with a prefix length, such as 10.1.2.0/24 or fd00::/8"
            )
        };
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What containers may reach besides the internet: by default none of the
/// host's own networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Refused networks the operator opens; `None`: no filter at all (the
    /// operator's `allow_networks = "all"`).
    pub allowed: Option<Vec<Network>>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self {
            allowed: Some(Vec::new()),
        }
    }
}

impl EgressPolicy {
    /// Reads `all`, or a comma-separated list of networks (empty: none).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("all") {
            return Ok(Self { allowed: None });
        }
        let allowed = text
            .split(',')
            .filter(|t| !t.trim().is_empty())
            .map(Network::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            allowed: Some(allowed),
        })
    }
}

/// A hive's egress filter, loaded into the host's nftables.
#[derive(Debug)]
pub(super) struct Egress {
    nft: PathBuf,
    table: String,
}

impl Egress {
    /// Loads (or reloads) the hive's table, named `table`, which refuses
    /// what `allowed` does not open.
    pub fn set_up(table: &str, allowed: &[Network]) -> Result<Self, String> {
        let nft = sys::find_tool("nft").ok_or("nft is not installed (Debian package nftables)")?;
        let egress = Self {
            nft,
            table: table.to_owned(),
        };
        egress.run(&egress.ruleset(allowed))?;
        Ok(egress)
    }

    /// The table, made anew: declared (so the delete finds one), deleted, and filled.
    fn ruleset(&self, allowed: &[Network]) -> String {
        let t = &self.table;
        let set = |v4: bool| {
            allowed
                .iter()
                .filter(|n| n.addr.is_ipv4() == v4)
                .map(Network::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut r = format!("table inet {t} {{}}\ndelete table inet {t}\ntable inet {t} {{\n");
        r.push_str("  set pastas { typeof meta skuid; }\n");
        r.push_str("  set resolvers4 { type ipv4_addr; }\n");
        r.push_str("  set resolvers6 { type ipv6_addr; }\n");
        r.push_str("  set endpoints4 { type ipv4_addr . inet_service; }\n");
        r.push_str("  set endpoints6 { type ipv6_addr . inet_service; }\n");
        for (name, v4) in [("allowed4", true), ("allowed6", false)] {
            let kind = if v4 { "ipv4_addr" } else { "ipv6_addr" };
            let elements = set(v4);
            let _ = write!(r, "  set {name} {{ type {kind}; flags interval; ");
            if !elements.is_empty() {
                let _ = write!(r, "elements = {{ {elements} }}; ");
            }
            r.push_str("}\n");
        }
        r.push_str(
            "  chain refuse {\n    meta l4proto tcp reject with tcp reset\n    reject with icmpx admin-prohibited\n  }\n",
        );
        // A positive match: a packet of no full socket (a SYN-ACK, a time-wait
        // RST) has no uid, so `skuid != @pastas` would not match it either and
        // the host's own answers would fall through to the refusals.
        r.push_str("  chain out {\n    type filter hook output priority 0; policy accept;\n");
        r.push_str("    meta skuid @pastas jump pasta\n  }\n");
        r.push_str("  chain pasta {\n");
        r.push_str("    meta l4proto { tcp, udp } th dport 53 ip daddr @resolvers4 accept\n");
        r.push_str("    meta l4proto { tcp, udp } th dport 53 ip6 daddr @resolvers6 accept\n");
        r.push_str("    meta l4proto tcp ip daddr . tcp dport @endpoints4 accept\n");
        r.push_str("    meta l4proto tcp ip6 daddr . tcp dport @endpoints6 accept\n");
        r.push_str("    ip daddr @allowed4 accept\n    ip6 daddr @allowed6 accept\n");
        // The host's own addresses, whatever they are (a public one included).
        r.push_str("    fib daddr type { local, broadcast, multicast, anycast } jump refuse\n");
        let _ = writeln!(r, "    ip daddr {{ {REFUSED_V4} }} jump refuse");
        let _ = writeln!(r, "    ip6 daddr {{ {REFUSED_V6} }} jump refuse");
        r.push_str("  }\n}\n");
        r
    }

    /// Filters the connections of the pasta running as `uid`, letting DNS
    /// reach the host's resolvers and TCP reach `endpoints` (the model's).
    pub fn admit(&self, uid: u32, endpoints: &[std::net::SocketAddr]) -> Result<(), String> {
        let t = &self.table;
        let mut r = format!("add element inet {t} pastas {{ {uid} }}\n");
        let resolvers = host_resolvers();
        for (set, v4) in [("resolvers4", true), ("resolvers6", false)] {
            let _ = writeln!(r, "flush set inet {t} {set}");
            let ips: Vec<String> = resolvers
                .iter()
                .filter(|ip| ip.is_ipv4() == v4)
                .map(IpAddr::to_string)
                .collect();
            if !ips.is_empty() {
                let _ = writeln!(r, "add element inet {t} {set} {{ {} }}", ips.join(", "));
            }
        }
        for e in endpoints {
            let set = if e.is_ipv4() {
                "endpoints4"
            } else {
                "endpoints6"
            };
            let _ = writeln!(
                r,
                "add element inet {t} {set} {{ {} . {} }}",
                e.ip(),
                e.port()
            );
        }
        self.run(&r)
    }

    /// Removes the hive's table (its daemon stops; no pasta of it runs).
    /// One a killed daemon left is harmless (its uids run nothing) and is
    /// made anew at its next start.
    pub fn remove(&self) {
        if let Err(e) = self.run(&format!("delete table inet {}\n", self.table)) {
            tracing::warn!("{e}");
        }
    }

    fn run(&self, script: &str) -> Result<(), String> {
        let mut child = Command::new(&self.nft)
            .args(["-f", "-"])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", self.nft.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("could not hand nft its rules: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("nft failed: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft refused the rules of table {}: {}",
                self.table,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// The resolvers of the host's /etc/resolv.conf, where pasta sends the container's DNS.
fn host_resolvers() -> Vec<IpAddr> {
    let text = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().split('%').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_policies_read_as_the_operator_writes_them() {
        assert_eq!(
            Network::parse("10.1.2.0/24").unwrap().to_string(),
            "10.1.2.0/24"
        );
        assert_eq!(
            Network::parse("fd00::1").unwrap().to_string(),
            "fd00::1/128"
        );
        for bad in ["10.1.2.0/33", "lan", "10.1.2/24", "fd00::/129"] {
            let e = Network::parse(bad).unwrap_err();
            assert!(e.contains("such as 10.1.2.0/24"), "{bad}: {e}");
        }
        assert_eq!(EgressPolicy::parse("all").unwrap().allowed, None);
        assert_eq!(EgressPolicy::parse("").unwrap(), EgressPolicy::default());
        assert_eq!(EgressPolicy::default().allowed, Some(vec![]));
        assert_eq!(
            EgressPolicy::parse("10.0.0.0/8, fd00::/8")
                .unwrap()
                .allowed
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn the_ruleset_opens_only_what_is_allowed() {
        let e = Egress {
            nft: PathBuf::from("nft"),
            table: "hyperhive-t".into(),
        };
        let r = e.ruleset(&[Network::parse("10.9.0.0/16").unwrap()]);
        assert!(r.starts_with("table inet hyperhive-t {}\ndelete table inet hyperhive-t\n"));
        assert!(r.contains(
            "set allowed4 { type ipv4_addr; flags interval; elements = { 10.9.0.0/16 }; }"
        ));
        assert!(r.contains("set allowed6 { type ipv6_addr; flags interval; }"));
        assert!(r.contains("meta skuid @pastas jump pasta"));
        assert!(r.contains("169.254.0.0/16"));
    }
}
