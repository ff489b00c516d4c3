//! Kernel names: namespaces `<project>-<service>-<n>` (as Compose names containers), and
//! short stable interface names (IFNAMSIZ leaves 15 bytes) derived from a hash.

use super::id::ResourceId;
use sha2::{Digest, Sha256};

pub fn netns_name(project: &str, service: &str, replica: u32) -> String {
    format!("{project}-{service}-{replica}")
}

/// `prefix` + hex of a hash of `seed`, at most 15 bytes.
pub fn short_ifname(prefix: &str, seed: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(seed.as_bytes());
    let room = 15usize.saturating_sub(prefix.len());
    let mut name = String::with_capacity(15);
    name.push_str(prefix);
    name.extend(
        digest
            .iter()
            .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
            .take(room)
            .map(char::from),
    );
    name
}

/// The bridge of a network, unless `com.docker.network.bridge.name` names it.
pub fn bridge_name(project: &str, network: &str) -> String {
    short_ifname("ncbr", &format!("{project}/{network}"))
}

/// The host end of an endpoint's veth.
pub fn veth_host_name(project: &str, service: &str, replica: u32, network: &str) -> String {
    short_ifname("nc", &format!("{project}/{service}/{replica}/{network}"))
}

/// The ownership mark set as ifalias on every host-side link netcompose makes.
pub fn ownership_mark(project: &str, address: &str) -> String {
    format!("netcompose:{project}:{address}")
}

/// The project and resource address in a mark, if the alias is one of ours.
pub fn parse_mark(alias: &str) -> Option<(&str, ResourceId)> {
    let (project, address) = alias.strip_prefix("netcompose:")?.split_once(':')?;
    Some((project, address.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_are_stable() {
        let b = bridge_name("demo", "front");
        assert_eq!(b.len(), 15);
        assert_eq!(b, bridge_name("demo", "front"));
        assert_ne!(b, bridge_name("demo", "back"));
        assert!(veth_host_name("p", "web", 1, "front").len() <= 15);
        assert_eq!(
            parse_mark(&ownership_mark("p", "network.front")),
            Some(("p", ResourceId::network("front")))
        );
        assert_eq!(parse_mark("netcompose:p:nonsense"), None);
        assert_eq!(parse_mark("other:p:network.front"), None);
    }
}
