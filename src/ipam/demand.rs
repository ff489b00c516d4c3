//! How many addresses a network must hold: every replica attached to it, plus one virtual IP
//! per service in `vip` endpoint mode.

use crate::spec::{EndpointMode, Service};
use ipnetwork::IpNetwork;

/// The addresses a service takes on each network it is attached to: one a replica, and a
/// VIP unless its endpoint mode is dnsrr (none for a service in another's network namespace).
pub fn addresses_of(s: &Service) -> u64 {
    if s.network_mode.is_some() {
        return 0;
    }
    let vip = s
        .deploy
        .endpoint_mode
        .as_ref()
        .map_or(EndpointMode::Vip, |m| m.value)
        == EndpointMode::Vip;
    u64::from(s.replicas()) + u64::from(vip)
}

/// The number of addresses in a block (saturating for large IPv6 blocks).
pub fn block_size(net: &IpNetwork) -> u64 {
    let bits = match net {
        IpNetwork::V4(n) => 32 - u32::from(n.prefix()),
        IpNetwork::V6(n) => 128 - u32::from(n.prefix()),
    };
    1u64.checked_shl(bits).unwrap_or(u64::MAX)
}
