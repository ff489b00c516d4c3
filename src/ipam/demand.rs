//! How many addresses a network must hold: every replica attached to it, plus one virtual IP
//! per service in `vip` endpoint mode.

use crate::spec::{EndpointMode, Project};
use ipnetwork::IpNetwork;

pub fn addresses_on(project: &Project, network: &str) -> u64 {
    project
        .services
        .values()
        .filter(|s| s.network_mode.is_none() && s.networks.contains_key(network))
        .map(|s| {
            let vip = s
                .deploy
                .endpoint_mode
                .as_ref()
                .map_or(EndpointMode::Vip, |m| m.value)
                == EndpointMode::Vip;
            u64::from(s.replicas()) + u64::from(vip)
        })
        .sum()
}

/// The number of addresses in a block (saturating for large IPv6 blocks).
pub fn block_size(net: &IpNetwork) -> u64 {
    let bits = match net {
        IpNetwork::V4(n) => 32 - u32::from(n.prefix()),
        IpNetwork::V6(n) => 128 - u32::from(n.prefix()),
    };
    1u64.checked_shl(bits).unwrap_or(u64::MAX)
}
