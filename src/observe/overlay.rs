//! An overlay network's share on this host read back: its VXLAN port (found by its mark) and,
//! from that device's FDB and neighbour entries, one resource per remote endpoint, so that a
//! deleted or changed entry shows as drift and `up` writes it again. The kernel keeps only
//! the entries; which replica and node an endpoint is comes from the state.

use super::live::Templates;
use crate::ipam::mac::format_mac;
use crate::kernel::machine::Overlay;
use crate::kernel::netlink::Link as KLink;
use crate::kernel::{Kernel, KernelError, Machine};
use crate::model::resource::{RemoteEndpoint, Resource, ResourceId, Spec, Vxlan};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

/// The VXLAN device marked `address`, and the remote endpoints programmed on it.
pub async fn read<M: Machine>(
    k: &Kernel<M>,
    t: &Templates<'_>,
    address: &ResourceId,
    l: &KLink,
    names_by_index: &HashMap<u32, &str>,
) -> Result<Vec<Resource>, KernelError> {
    let network = match address {
        ResourceId::Vxlan(key) => key.clone(),
        other => other.to_string(),
    };
    let info = l.vxlan.clone().unwrap_or_default();
    let vxlan = Vxlan {
        network: network.clone(),
        name: l.name.clone(),
        bridge: l
            .master
            .and_then(|m| names_by_index.get(&m))
            .map(|m| m.to_string())
            .unwrap_or_default(),
        vni: info.vni.unwrap_or(0),
        port: info.port.unwrap_or(0),
        local: info.local,
        proxy: info.proxy.unwrap_or(false),
        mtu: l.mtu.unwrap_or(0),
    };
    let mut out = vec![Resource {
        address: address.clone(),
        spec: Spec::Vxlan(vxlan),
        depends_on: t.depends_on(address),
    }];
    let (fdb, neighbours) =
        futures::try_join!(k.host().fdb(l.index), k.host().neighbours(l.index))?;
    // Per MAC: its VTEP (from the FDB) and its addresses (from the neighbour entries).
    let mut by_mac: BTreeMap<[u8; 6], (Option<IpAddr>, Vec<IpAddr>)> = BTreeMap::new();
    for e in fdb.iter().filter(|e| e.permanent && e.mac != [0; 6]) {
        by_mac.entry(e.mac).or_default().0 = e.dst;
    }
    for n in neighbours.iter().filter(|n| n.permanent) {
        if let Some(mac) = n.mac {
            by_mac.entry(mac).or_default().1.push(n.ip);
        }
    }
    for (mac, (vtep, mut addresses)) in by_mac {
        let mac = format_mac(&mac);
        addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        let id = match addresses.first() {
            Some(first) => ResourceId::remote(&network, *first),
            // Only the FDB entry is left: it is known by the MAC it had in the state.
            None => match t.remote_with_mac(&network, &mac) {
                Some(id) => id.clone(),
                None => continue,
            },
        };
        let mut spec = match t.get(&id).map(|r| &r.spec) {
            Some(Spec::Remote(known)) => (**known).clone(),
            _ => RemoteEndpoint {
                network: network.clone(),
                device: String::new(),
                service: String::new(),
                replica: 0,
                node: String::new(),
                vtep: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                mac: String::new(),
                addresses: Vec::new(),
            },
        };
        spec.device = l.name.clone();
        spec.vtep = vtep.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        spec.mac = mac;
        spec.addresses = addresses;
        out.push(Resource {
            depends_on: t.depends_on(&id),
            address: id,
            spec: Spec::Remote(Box::new(spec)),
        });
    }
    Ok(out)
}
