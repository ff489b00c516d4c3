//! FDB and neighbour entries of a VXLAN device read back and deleted: what lets observe see a
//! remote endpoint's forwarding (MAC → VTEP) and neighbour (IP → MAC) entries, and apply remove
//! the ones of an endpoint that went away. They are written by `addrs.rs` (with replace).

use super::addrs::neighbour_address;
use super::*;

impl Netlink {
    /// The FDB entries of device `index` (`bridge fdb show dev INDEX`), from a dump of the
    /// namespace's bridge-family neighbours filtered here (the kernel's filter by device
    /// differs between versions).
    pub async fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>, KernelError> {
        let ctx = self.ctx("list fdb entries", format!("ifindex {index}"));
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        let replies = self
            .dump(&ctx, RouteNetlinkMessage::GetNeighbour(msg))
            .await?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => parse_fdb(&n),
                _ => None,
            })
            .collect())
    }

    /// `bridge fdb del MAC dev INDEX dst DST self`.
    pub async fn delete_fdb(
        &self,
        index: u32,
        mac: [u8; 6],
        dst: Option<IpAddr>,
    ) -> Result<(), KernelError> {
        let ctx = self.ctx(
            "delete fdb entry",
            format!("{} on ifindex {index}", fmt_mac(&mac)),
        );
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        if let Some(dst) = dst {
            msg.attributes
                .push(NeighbourAttribute::Destination(neighbour_address(dst)));
        }
        self.request(
            &ctx,
            RouteNetlinkMessage::DelNeighbour(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }

    /// The IPv4 and IPv6 neighbour entries of link `index` (`ip neigh show dev INDEX`).
    pub async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>, KernelError> {
        let ctx = self.ctx("list neighbours", format!("ifindex {index}"));
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = NeighbourMessage::default();
            msg.header.family = family;
            let replies = self
                .dump(&ctx, RouteNetlinkMessage::GetNeighbour(msg))
                .await?;
            out.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => {
                    parse_neighbour(&n)
                }
                _ => None,
            }));
        }
        Ok(out)
    }

    /// `ip neigh del IP dev INDEX`.
    pub async fn delete_neighbour(&self, index: u32, ip: IpAddr) -> Result<(), KernelError> {
        let ctx = self.ctx("delete neighbour", format!("{ip} on ifindex {index}"));
        let mut msg = NeighbourMessage::default();
        msg.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.ifindex = index;
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(ip)));
        self.request(
            &ctx,
            RouteNetlinkMessage::DelNeighbour(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }
}

fn lladdr(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => b.as_slice().try_into().ok(),
        _ => None,
    })
}

/// `NDA_DST`. In a bridge-family (FDB) message the crate cannot tell its family and leaves
/// the bytes raw: 4 of them are an IPv4 VTEP, 16 an IPv6 one.
fn destination(n: &NeighbourMessage) -> Option<IpAddr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

/// An entry of the device itself (`self`); the bridge also reports, under the port's index,
/// what it learned through it (`master`), which is not the device's.
fn parse_fdb(n: &NeighbourMessage) -> Option<FdbEntry> {
    if !n.header.flags.contains(NeighbourFlags::Own) {
        return None;
    }
    Some(FdbEntry {
        mac: lladdr(n)?,
        dst: destination(n),
        permanent: n.header.state == NeighbourState::Permanent,
    })
}

fn parse_neighbour(n: &NeighbourMessage) -> Option<Neighbour> {
    Some(Neighbour {
        ip: destination(n)?,
        mac: lladdr(n),
        permanent: n.header.state == NeighbourState::Permanent,
    })
}
