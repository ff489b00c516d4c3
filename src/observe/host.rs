//! Host facts read from procfs and /etc, readable by any user: the routing table (so that no
//! automatic subnet collides with a network the host reaches) and the upstream nameservers.

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A route of the host: destination and device.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRoute {
    pub destination: IpNetwork,
    pub device: String,
}

/// Every non-default route of the host's main table (IPv4 and IPv6).
pub fn routes() -> Vec<HostRoute> {
    let mut out = std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_v4(&t))
        .unwrap_or_default();
    out.extend(
        std::fs::read_to_string("/proc/net/ipv6_route")
            .map(|t| parse_v6(&t))
            .unwrap_or_default(),
    );
    out.retain(|r| r.destination.prefix() > 0 && r.device != "lo");
    out
}

/// /proc/net/route: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses in
/// little-endian hex.
pub fn parse_v4(text: &str) -> Vec<HostRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The kernel prints the address as a native-endian u32 of network-order bytes.
            let addr = Ipv4Addr::from(dst.to_ne_bytes());
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            let destination = IpNetwork::V4(Ipv4Network::new(addr, prefix).ok()?);
            Some(HostRoute {
                destination,
                device: f[0].to_string(),
            })
        })
        .collect()
}

/// /proc/net/ipv6_route: `dest prefix_len src src_len next_hop metric refcnt use flags dev`.
pub fn parse_v6(text: &str) -> Vec<HostRoute> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dst = u128::from_str_radix(f.first()?, 16).ok()?;
            let prefix = u8::from_str_radix(f.get(1)?, 16).ok()?;
            let destination = IpNetwork::V6(Ipv6Network::new(Ipv6Addr::from(dst), prefix).ok()?);
            Some(HostRoute { destination, device: f.get(9)?.to_string() })
        })
        .filter(|r| !matches!(r.destination, IpNetwork::V6(n) if n.network().segments()[0] == 0xfe80 || n.network().is_multicast()))
        .collect()
}

/// The host's upstream nameservers. When resolv.conf points at a local stub (systemd-resolved
/// at 127.0.0.53), its real upstreams are in /run/systemd/resolve/resolv.conf.
pub fn nameservers() -> Vec<String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default()
    };
    let main = read("/etc/resolv.conf");
    if main.iter().all(|n| n.starts_with("127.")) {
        let upstream = read("/run/systemd/resolve/resolv.conf");
        if !upstream.is_empty() {
            return upstream;
        }
    }
    main
}

pub fn parse_resolv_conf(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_routes() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\neth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r = parse_v4(v4);
        assert_eq!(r[1].destination.to_string(), "192.168.0.0/24");
        assert_eq!(r[1].device, "eth0");
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 br0\n";
        assert_eq!(parse_v6(v6)[0].destination.to_string(), "fd00::/64");
    }

    #[test]
    fn resolv_conf() {
        assert_eq!(
            parse_resolv_conf("# x\nnameserver 10.0.0.1\nsearch a\nnameserver ::1\n"),
            ["10.0.0.1", "::1"]
        );
    }
}
