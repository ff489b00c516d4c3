//! Addresses, routes, FDB and neighbour entries of a namespace.

use super::*;

impl Netlink {
    // ---------------------------------------------------------------- reading

    /// All addresses (IPv4 and IPv6) of the namespace, as (ifindex, address/prefix): one dump
    /// per family ([`LISTED_FAMILIES`]).
    pub async fn addresses(&self) -> Result<Vec<(u32, IpNetwork)>, KernelError> {
        let ctx = self.ctx("list", "addresses");
        let mut out = Vec::new();
        for family in LISTED_FAMILIES {
            let replies = self
                .dump(
                    &ctx,
                    RouteNetlinkMessage::GetAddress(address_request(family)),
                )
                .await?;
            out.extend(
                replies
                    .into_iter()
                    .filter_map(|m| listed_address(family, m)),
            );
        }
        Ok(out)
    }

    /// Unicast routes of the main table (IPv4 and IPv6): one dump per family
    /// ([`LISTED_FAMILIES`]).
    pub async fn routes(&self) -> Result<Vec<Route>, KernelError> {
        let ctx = self.ctx("list", "routes");
        let mut out = Vec::new();
        for family in LISTED_FAMILIES {
            let replies = self
                .dump(&ctx, RouteNetlinkMessage::GetRoute(route_request(family)))
                .await?;
            out.extend(replies.into_iter().filter_map(|m| listed_route(family, m)));
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- changing

    /// Add an address to a link; an identical address is replaced, not an error.
    pub async fn add_address(&self, index: u32, addr: IpNetwork) -> Result<(), KernelError> {
        let ctx = self.ctx("add address", format!("{addr} to ifindex {index}"));
        let msg = address_message(index, addr);
        self.request(
            &ctx,
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map(drop)
    }

    /// Remove an address from a link.
    pub async fn delete_address(&self, index: u32, addr: IpNetwork) -> Result<(), KernelError> {
        let ctx = self.ctx("delete address", format!("{addr} from ifindex {index}"));
        let msg = address_message(index, addr);
        self.request(
            &ctx,
            RouteNetlinkMessage::DelAddress(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }

    /// Add (or replace) a route in the main table: via `gateway` and/or out of `oif`. A route
    /// without gateway gets link scope, like `ip route add DST dev IF`.
    pub async fn add_route(
        &self,
        dst: IpNetwork,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> Result<(), KernelError> {
        let ctx = self.ctx("add route", describe_route(dst, gateway, oif));
        let mut msg = route_message(&ctx, dst, gateway, oif)?;
        if gateway.is_none() {
            msg.header.scope = RouteScope::Link;
        }
        self.request(
            &ctx,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map(drop)
    }

    /// Add (or replace) the default route of the gateway's family.
    pub async fn add_default_route(
        &self,
        gateway: IpAddr,
        oif: Option<u32>,
    ) -> Result<(), KernelError> {
        self.add_route(default_net(gateway), Some(gateway), oif)
            .await
    }

    /// Delete a route of the main table; `gateway` and `oif` narrow the match when given.
    pub async fn delete_route(
        &self,
        dst: IpNetwork,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> Result<(), KernelError> {
        let ctx = self.ctx("delete route", describe_route(dst, gateway, oif));
        let mut msg = route_message(&ctx, dst, gateway, oif)?;
        // Wildcards, as `ip route del` sends them.
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = RouteType::Unspec;
        self.request(
            &ctx,
            RouteNetlinkMessage::DelRoute(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }

    // ---------------------------------------------------------------- overlay helpers

    /// `bridge fdb append|replace MAC dev INDEX dst DST self permanent`: a static FDB entry of a
    /// VXLAN device. The all-zero MAC is the flood list and is appended (several remotes);
    /// other MACs are replaced.
    pub async fn add_fdb(&self, index: u32, mac: [u8; 6], dst: IpAddr) -> Result<(), KernelError> {
        let ctx = self.ctx(
            "add fdb entry",
            format!("{} dst {dst} on ifindex {index}", fmt_mac(&mac)),
        );
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(dst)));
        let mode = if mac == [0; 6] {
            NLM_F_APPEND
        } else {
            NLM_F_REPLACE
        };
        self.request(
            &ctx,
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | mode,
        )
        .await
        .map(drop)
    }

    /// `ip neigh replace IP lladdr MAC dev INDEX nud permanent`.
    pub async fn add_neighbour(
        &self,
        index: u32,
        ip: IpAddr,
        mac: [u8; 6],
    ) -> Result<(), KernelError> {
        let ctx = self.ctx(
            "add neighbour",
            format!("{ip} lladdr {} on ifindex {index}", fmt_mac(&mac)),
        );
        let mut msg = NeighbourMessage::default();
        msg.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(ip)));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(
            &ctx,
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map(drop)
    }
}

/// The families whose addresses and routes are listed, one dump each. A dump of every family at
/// once (AF_UNSPEC) runs through `rtnl_dump_all`, which holds the RTNL mutex, shared by every
/// namespace of the machine, for the whole dump; the IPv4 and IPv6 dumps of addresses and
/// routes take no lock on recent kernels (`RTNL_FLAG_DUMP_UNLOCKED`, Linux 6.9/6.10), so that
/// the daemon's survey of hundreds of namespaces on several threads no longer queues behind
/// (and spins on) the lock that every link change of a run needs. A kernel without a family's
/// handler answers its dump as one of AF_UNSPEC
/// ([rtnetlink_rcv_msg](https://elixir.bootlin.com/linux/v6.12/source/net/core/rtnetlink.c#L6615)),
/// so a reply is kept only when it is of the family asked for.
pub(super) const LISTED_FAMILIES: [AddressFamily; 2] = [AddressFamily::Inet, AddressFamily::Inet6];

/// The dump request of `family`'s addresses.
pub(super) fn address_request(family: AddressFamily) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family;
    msg
}

/// The dump request of `family`'s routes.
pub(super) fn route_request(family: AddressFamily) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family;
    msg
}

/// An address of a dump of `family`'s addresses (one of another family is dropped: see
/// [`LISTED_FAMILIES`]).
pub(super) fn listed_address(
    family: AddressFamily,
    m: RouteNetlinkMessage,
) -> Option<(u32, IpNetwork)> {
    match m {
        RouteNetlinkMessage::NewAddress(a) if a.header.family == family => parse_address(&a),
        _ => None,
    }
}

/// A route of a dump of `family`'s routes (one of another family is dropped: see
/// [`LISTED_FAMILIES`]).
pub(super) fn listed_route(family: AddressFamily, m: RouteNetlinkMessage) -> Option<Route> {
    match m {
        RouteNetlinkMessage::NewRoute(r) if r.header.address_family == family => parse_route(r),
        _ => None,
    }
}

/// An address as (ifindex, address/prefix): the local address of a point-to-point link, else
/// the address.
fn parse_address(a: &AddressMessage) -> Option<(u32, IpNetwork)> {
    let mut local = None;
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let net = IpNetwork::new(local.or(address)?, a.header.prefix_len).ok()?;
    Some((a.header.index, net))
}

fn parse_route(r: RouteMessage) -> Option<Route> {
    let mut table = u32::from(r.header.table);
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = None;
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || r.header.kind != RouteType::Unicast {
        return None;
    }
    let dst = match dst {
        Some(ip) => ip,
        None => match r.header.address_family {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => return None,
        },
    };
    Some(Route {
        dst: IpNetwork::new(dst, r.header.destination_prefix_length).ok()?,
        gateway,
        oif,
        protocol: r.header.protocol.into(),
        scope: r.header.scope.into(),
        metric,
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// The message that adds or deletes `addr`. An IPv6 address is added without duplicate
/// address detection (IFA_F_NODAD, as `ip addr add ... nodad`): IPAM already made it unique
/// on its network, and with DAD the address would stay tentative for a second or two after
/// `up`, dropping every IPv6 packet meanwhile. Docker turns DAD off in containers likewise.
fn address_message(index: u32, addr: IpNetwork) -> AddressMessage {
    match addr {
        IpNetwork::V4(n) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(n.ip(), n.prefix())
            .build(),
        IpNetwork::V6(n) => {
            let mut msg = AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(n.ip(), n.prefix())
                .build();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            msg
        }
    }
}

fn route_message(
    ctx: &Ctx,
    dst: IpNetwork,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
) -> Result<RouteMessage, KernelError> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.network(), dst.prefix())
        .map_err(|e| ctx.invalid(e.to_string()))?;
    if let Some(gw) = gateway {
        b = b.gateway(gw).map_err(|e| ctx.invalid(e.to_string()))?;
    }
    if let Some(oif) = oif {
        b = b.output_interface(oif);
    }
    Ok(b.build())
}

fn default_net(like: IpAddr) -> IpNetwork {
    match like {
        IpAddr::V4(_) => IpNetwork::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => IpNetwork::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
    .expect("prefix 0 is valid")
}

fn describe_route(dst: IpNetwork, gateway: Option<IpAddr>, oif: Option<u32>) -> String {
    let mut s = dst.to_string();
    if let Some(gw) = gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = oif {
        s.push_str(&format!(" dev ifindex {oif}"));
    }
    s
}

pub(super) fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}
