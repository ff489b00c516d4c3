//! Addresses of one subnet: what is reserved (network, broadcast, gateway, aux, statics,
//! kept ones) and the lowest free address of the allocation range.

use super::ExplicitPool;
use ipnetwork::IpNetwork;
use std::collections::HashSet;
use std::net::IpAddr;

#[derive(Debug)]
pub struct AddressPool {
    subnet: IpNetwork,
    /// Where dynamic addresses come from: ip_range, or the subnet.
    range: IpNetwork,
    gateway: Option<IpAddr>,
    used: HashSet<IpAddr>,
    /// Offset into `range` of the next address to try; everything before it is taken.
    cursor: u128,
}

impl AddressPool {
    pub fn new(subnet: IpNetwork, explicit: Option<&ExplicitPool>) -> Self {
        let range = explicit.and_then(|e| e.ip_range).unwrap_or(subnet);
        let gateway = explicit.and_then(|e| e.gateway).or_else(|| nth(&subnet, 1));
        let mut used: HashSet<IpAddr> = explicit
            .map(|e| e.aux.iter().copied().collect())
            .unwrap_or_default();
        used.insert(subnet.network());
        if let IpNetwork::V4(n) = subnet {
            used.insert(IpAddr::V4(n.broadcast()));
        }
        used.extend(gateway);
        AddressPool {
            subnet,
            range,
            gateway,
            used,
            cursor: 0,
        }
    }

    pub fn gateway(&self) -> Option<IpAddr> {
        self.gateway
    }

    pub fn block(&self) -> IpNetwork {
        self.range
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(ip)
    }

    pub fn is_free(&self, ip: IpAddr) -> bool {
        !self.used.contains(&ip)
    }

    pub fn reserve(&mut self, ip: IpAddr) {
        self.used.insert(ip);
    }

    /// The lowest free address of the range, reserved on return.
    pub fn next_free(&mut self) -> Option<IpAddr> {
        let size = range_size(&self.range);
        while self.cursor < size {
            let ip = nth(&self.range, self.cursor)?;
            self.cursor += 1;
            if self.used.insert(ip) {
                return Some(ip);
            }
        }
        None
    }
}

fn range_size(net: &IpNetwork) -> u128 {
    let bits = match net {
        IpNetwork::V4(n) => 32 - u32::from(n.prefix()),
        IpNetwork::V6(n) => (128 - u32::from(n.prefix())).min(64),
    };
    1u128 << bits
}

/// The n-th address of a network.
pub fn nth(net: &IpNetwork, n: u128) -> Option<IpAddr> {
    match net {
        IpNetwork::V4(v4) => {
            let base = u32::from(v4.network());
            u32::try_from(n)
                .ok()
                .and_then(|n| base.checked_add(n))
                .map(|v| IpAddr::V4(v.into()))
        }
        IpNetwork::V6(v6) => u128::from(v6.network())
            .checked_add(n)
            .map(|v| IpAddr::V6(v.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_network_gateway_and_reserved() {
        let subnet: IpNetwork = "10.0.0.0/29".parse().unwrap();
        let mut p = AddressPool::new(subnet, None);
        p.reserve("10.0.0.3".parse().unwrap());
        let got: Vec<String> = std::iter::from_fn(|| p.next_free())
            .map(|i| i.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
    }

    #[test]
    fn ip_range_limits_dynamic_addresses() {
        let explicit = ExplicitPool {
            ip_range: Some("10.0.0.8/30".parse().unwrap()),
            ..Default::default()
        };
        let mut p = AddressPool::new("10.0.0.0/24".parse().unwrap(), Some(&explicit));
        assert_eq!(p.next_free().unwrap().to_string(), "10.0.0.8");
        assert_eq!(p.gateway().unwrap().to_string(), "10.0.0.1");
    }
}
