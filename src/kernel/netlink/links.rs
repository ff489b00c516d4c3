//! Links of a namespace: listing them, creating bridges, veths, macvlans and VXLAN devices, and
//! changing their state, MTU, MAC, alias, master and bridge-port flags.

use super::*;
use netlink_packet_route::link::{InfoPortKind, LinkHeader};
use rtnetlink::packet_core::{Emitable, NlaBuffer, NlasIterator, Parseable, ParseableParametrized};

impl Netlink {
    // ---------------------------------------------------------------- reading

    /// All links of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, KernelError> {
        let ctx = self.ctx("list", "links");
        let replies = self.dump(&ctx, links_request()).await?;
        Ok(links_of(replies))
    }

    /// Every link of the namespace with its alias and its 64-bit counters (`IFLA_STATS64`):
    /// the one dump that asks the kernel for statistics, which [`Netlink::links`] skips.
    pub async fn link_stats(&self) -> Result<Vec<LinkStats>, KernelError> {
        let ctx = self.ctx("list", "link statistics");
        let replies = self
            .dump(&ctx, RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .await?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_stats(l)),
                _ => None,
            })
            .collect())
    }

    /// The link called `name`, if any.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, KernelError> {
        let ctx = self.ctx("get link", name);
        let msg = LinkUnspec::new_with_name(name).build();
        self.get_link(&ctx, msg).await
    }

    /// The link with index `index`, if any.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, KernelError> {
        let ctx = self.ctx("get link", format!("ifindex {index}"));
        let msg = LinkUnspec::new_with_index(index).build();
        self.get_link(&ctx, msg).await
    }

    /// The index of the link called `name`, if any.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, KernelError> {
        Ok(self.link_by_name(name).await?.map(|l| l.index))
    }

    async fn get_link(&self, ctx: &Ctx, mut msg: LinkMessage) -> Result<Option<Link>, KernelError> {
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        match self
            .request(
                ctx,
                RouteNetlinkMessage::GetLink(msg),
                NLM_F_REQUEST | NLM_F_ACK,
            )
            .await
        {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ---------------------------------------------------------------- creating links

    /// Create a bridge (admin up). Returns its ifindex.
    pub async fn create_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        alias: Option<&str>,
    ) -> Result<u32, KernelError> {
        self.create_bridge_with_mac(name, mtu, None, alias).await
    }

    /// [`Netlink::create_bridge`] with a fixed MAC address, set in the creating request itself
    /// (a bridge without one takes its ports' lowest MAC, and changes it as ports come and go).
    pub async fn create_bridge_with_mac(
        &self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        alias: Option<&str>,
    ) -> Result<u32, KernelError> {
        let ctx = self.ctx("create bridge", name);
        let mut b = LinkBridge::new(name);
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        if let Some(mac) = mac {
            b = b.address(mac.to_vec());
        }
        let index = self.create_link(&ctx, "bridge", name, b.build()).await?;
        if let Some(alias) = alias {
            self.set_alias(index, Some(alias)).await?;
        }
        Ok(index)
    }

    /// Create a veth pair (see [`VethSpec`]). Returns the host end's ifindex.
    pub async fn create_veth(&self, spec: &VethSpec<'_>) -> Result<u32, KernelError> {
        let ctx = self.ctx("create veth", &spec.name);
        let mut peer = LinkUnspec::new_with_name(&spec.peer_name);
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        if let Some(fd) = spec.peer_ns {
            peer = peer.setns_by_fd(fd.as_raw_fd());
        }
        let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.name.clone())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mtu) = spec.mtu {
            host = host.mtu(mtu);
        }
        if let Some(mac) = spec.mac {
            host = host.address(mac.to_vec());
        }
        if let Some(master) = spec.master {
            host = host.controller(master);
        }
        if spec.up {
            host = host.up();
        }
        let index = self
            .create_link(&ctx, "veth", &spec.name, host.build())
            .await?;
        if let Some(alias) = &spec.alias {
            self.set_alias(index, Some(alias)).await?;
        }
        Ok(index)
    }

    /// Create a macvlan sub-interface, directly in the target namespace when the kernel allows
    /// it, else through [`Netlink::create_macvlan_moved`].
    /// Returns its ifindex when it was created in this handle's namespace (`ns: None`); the
    /// index inside another namespace must be asked to that namespace.
    pub async fn create_macvlan(&self, spec: &MacvlanSpec<'_>) -> Result<Option<u32>, KernelError> {
        let ctx = self.ctx("create macvlan", &spec.name);
        let build = |name: &str, ns: Option<BorrowedFd<'_>>| {
            let mut b = LinkMacVlan::new(name, spec.parent, spec.mode.to_nl());
            if let Some(mtu) = spec.mtu {
                b = b.mtu(mtu);
            }
            if let Some(mac) = spec.mac {
                b = b.address(mac.to_vec());
            }
            if let Some(fd) = ns {
                b = b.setns_by_fd(fd.as_raw_fd());
            }
            if spec.up {
                b = b.up();
            }
            b.build()
        };
        let Some(ns) = spec.ns else {
            let index = self
                .create_link(&ctx, "macvlan", &spec.name, build(&spec.name, None))
                .await?;
            return Ok(Some(index));
        };
        match self
            .send_create(&ctx, "macvlan", build(&spec.name, Some(ns)))
            .await
        {
            Ok(_) => Ok(None),
            // Only a refusal of the cross-namespace creation itself warrants the fallback.
            Err(e) if e.errno() == Some(nix::libc::EINVAL) => {
                self.create_macvlan_moved(spec).await.map(|()| None)
            }
            Err(e) => Err(e),
        }
    }

    /// The two-step form of [`Netlink::create_macvlan`] for kernels that refuse to create a
    /// macvlan directly in another namespace: create it down next to its parent under a
    /// temporary name, then move it into `spec.ns` renaming it on the way, and set it up there
    /// if asked (through a short-lived connection opened inside that namespace).
    pub async fn create_macvlan_moved(&self, spec: &MacvlanSpec<'_>) -> Result<(), KernelError> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let ctx = self.ctx("create macvlan", &spec.name);
        let Some(ns) = spec.ns else {
            return Err(ctx.invalid("no target namespace to move the macvlan to"));
        };
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = format!("nc-tmp-{:08x}", (std::process::id() << 12) ^ seq);
        let mut b = LinkMacVlan::new(&temp, spec.parent, spec.mode.to_nl());
        if let Some(mtu) = spec.mtu {
            b = b.mtu(mtu);
        }
        if let Some(mac) = spec.mac {
            b = b.address(mac.to_vec());
        }
        let index = self.create_link(&ctx, "macvlan", &temp, b.build()).await?;
        if let Err(e) = self.move_link(index, ns, Some(&spec.name)).await {
            let _ = self.delete_link(index).await;
            return Err(e);
        }
        if spec.up {
            // Moving a link takes it down; bring it up from inside its new namespace.
            let there = Netlink::open_fd(ns, None, &tokio::runtime::Handle::current())?;
            let index = there
                .link_index(&spec.name)
                .await?
                .ok_or_else(|| ctx.protocol("moved, but the link cannot be found by name"))?;
            there.set_up(index).await?;
        }
        Ok(())
    }

    /// Create a VXLAN device (see [`VxlanSpec`]). Returns its ifindex.
    pub async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<u32, KernelError> {
        let ctx = self.ctx("create vxlan", &spec.name);
        let mut b = LinkVxlan::new(&spec.name, spec.vni)
            .port(spec.port)
            .learning(spec.learning)
            .proxy(spec.proxy);
        match spec.local {
            Some(IpAddr::V4(ip)) => b = b.local(ip),
            Some(IpAddr::V6(ip)) => b = b.local6(ip),
            None => {}
        }
        if let Some(dev) = spec.underlay {
            b = b.dev(dev);
        }
        if let Some(mtu) = spec.mtu {
            b = b.mtu(mtu);
        }
        if let Some(master) = spec.master {
            b = b.controller(master);
        }
        if spec.up {
            b = b.up();
        }
        let index = self
            .create_link(&ctx, "vxlan", &spec.name, b.build())
            .await?;
        if let Some(alias) = &spec.alias {
            self.set_alias(index, Some(alias)).await?;
        }
        Ok(index)
    }

    /// Create a link of any kind given as a prebuilt message (escape hatch); `kind` is used for
    /// the "not supported" message. Returns the new ifindex.
    pub async fn create_link_message(
        &self,
        kind: &str,
        name: &str,
        msg: LinkMessage,
    ) -> Result<u32, KernelError> {
        let ctx = self.ctx(&format!("create {kind}"), name);
        self.create_link(&ctx, kind, name, msg).await
    }

    // ---------------------------------------------------------------- changing links

    /// Set a link administratively up.
    pub async fn set_up(&self, index: u32) -> Result<(), KernelError> {
        let ctx = self.ctx("set up", format!("ifindex {index}"));
        self.set_link(&ctx, LinkUnspec::new_with_index(index).up().build())
            .await
    }

    /// Set a link administratively down.
    pub async fn set_down(&self, index: u32) -> Result<(), KernelError> {
        let ctx = self.ctx("set down", format!("ifindex {index}"));
        self.set_link(&ctx, LinkUnspec::new_with_index(index).down().build())
            .await
    }

    /// Bring `lo` up (every namespace starts with it down).
    pub async fn lo_up(&self) -> Result<(), KernelError> {
        self.set_up(LOOPBACK_INDEX).await
    }

    /// Enslave a link to a bridge (`Some(master)`) or release it (`None`).
    pub async fn set_master(&self, index: u32, master: Option<u32>) -> Result<(), KernelError> {
        let ctx = self.ctx("set master of", format!("ifindex {index}"));
        let b = LinkUnspec::new_with_index(index);
        let b = match master {
            Some(m) => b.controller(m),
            None => b.nocontroller(),
        };
        self.set_link(&ctx, b.build()).await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), KernelError> {
        let ctx = self.ctx("set mtu of", format!("ifindex {index}"));
        self.set_link(&ctx, LinkUnspec::new_with_index(index).mtu(mtu).build())
            .await
    }

    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), KernelError> {
        let ctx = self.ctx("set mac of", format!("ifindex {index}"));
        self.set_link(
            &ctx,
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
        )
        .await
    }

    /// Set (`Some`) or clear (`None`) the interface alias.
    pub async fn set_alias(&self, index: u32, alias: Option<&str>) -> Result<(), KernelError> {
        let ctx = self.ctx("set alias of", format!("ifindex {index}"));
        if alias.is_some_and(|a| a.len() >= 256) {
            return Err(ctx.invalid("alias longer than 255 bytes"));
        }
        self.set_link(
            &ctx,
            LinkUnspec::new_with_index(index)
                .alias(alias.unwrap_or(""))
                .build(),
        )
        .await
    }

    /// Rename a link (it must be down for most kinds).
    pub async fn rename(&self, index: u32, name: &str) -> Result<(), KernelError> {
        let ctx = self.ctx("rename", format!("ifindex {index} to {name}"));
        self.set_link(&ctx, LinkUnspec::new_with_index(index).name(name).build())
            .await
    }

    /// Move a link into the namespace behind `ns`, renaming it on the way when `new_name` is
    /// given (one request).
    pub async fn move_link(
        &self,
        index: u32,
        ns: BorrowedFd<'_>,
        new_name: Option<&str>,
    ) -> Result<(), KernelError> {
        let ctx = self.ctx("move to another netns", format!("ifindex {index}"));
        let mut b = LinkUnspec::new_with_index(index).setns_by_fd(ns.as_raw_fd());
        if let Some(name) = new_name {
            b = b.name(name);
        }
        self.set_link(&ctx, b.build()).await
    }

    /// Delete a link (for a veth, both ends go).
    pub async fn delete_link(&self, index: u32) -> Result<(), KernelError> {
        let ctx = self.ctx("delete link", format!("ifindex {index}"));
        let msg = LinkUnspec::new_with_index(index).build();
        self.request(
            &ctx,
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }

    /// Isolate a bridge port (isolated ports only talk to non-isolated ports).
    pub async fn set_bridge_port_isolated(&self, index: u32, on: bool) -> Result<(), KernelError> {
        let ctx = self.ctx("set bridge port isolation of", format!("ifindex {index}"));
        self.set_port(&ctx, LinkBridgePort::new(index).isolated(on).build())
            .await
    }

    /// Turn MAC learning of a bridge port on or off.
    pub async fn set_bridge_port_learning(&self, index: u32, on: bool) -> Result<(), KernelError> {
        let ctx = self.ctx("set bridge port learning of", format!("ifindex {index}"));
        self.set_port(&ctx, LinkBridgePort::new(index).learning(on).build())
            .await
    }
}

fn parse_stats(m: LinkMessage) -> LinkStats {
    let mut out = LinkStats {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        ..LinkStats::default()
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => out.name = n,
            LinkAttribute::IfAlias(a) => out.alias = Some(a),
            LinkAttribute::Stats64(s) => {
                out.rx_bytes = s.rx_bytes;
                out.tx_bytes = s.tx_bytes;
                out.rx_packets = s.rx_packets;
                out.tx_packets = s.tx_packets;
                out.rx_dropped = s.rx_dropped;
                out.tx_dropped = s.tx_dropped;
            }
            _ => {}
        }
    }
    out
}

pub(super) fn parse_link(m: LinkMessage) -> Link {
    let mut link = link_of_header(&m.header);
    for attr in m.attributes {
        read_attribute(&mut link, attr);
    }
    link
}

/// A link's kind and its kind's data (linux/if_link.h).
const IFLA_LINKINFO: u16 = 18;
/// The attributes [`read_attribute`] reads (linux/if_link.h).
const READ_ATTRIBUTES: [u16; 8] = [
    1,  // IFLA_ADDRESS
    3,  // IFLA_IFNAME
    4,  // IFLA_MTU
    5,  // IFLA_LINK
    10, // IFLA_MASTER
    IFLA_LINKINFO,
    20, // IFLA_IFALIAS
    37, // IFLA_LINK_NETNSID
];

/// [`parse_link`] from the payload of an `RTM_NEWLINK` message, parsing only the attributes it
/// reads. A dump's message carries some thirty more (IPv6 settings and counters, queues,
/// properties) that a full parse turns into vectors only to drop: reading 400 host links that
/// way was a fifth of the CPU of an `up` outside its main thread. None if the message is
/// malformed (a full parse would fail too).
pub(super) fn parse_link_payload(payload: &[u8]) -> Option<Link> {
    let header = LinkHeader::parse(payload).ok()?;
    let mut link = link_of_header(&header);
    for nla in NlasIterator::new(payload.get(header.buffer_len()..)?) {
        let nla = nla.ok()?;
        if nla.kind() == IFLA_LINKINFO && read_link_info(&mut link, &nla)? {
            continue;
        }
        if READ_ATTRIBUTES.contains(&nla.kind()) {
            let attr = LinkAttribute::parse_with_param(&nla, header.interface_family).ok()?;
            read_attribute(&mut link, attr);
        }
    }
    Some(link)
}

/// IFLA_LINKINFO's nested attributes (linux/if_link.h).
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_PORT_KIND: u16 = 4;
const IFLA_INFO_PORT_DATA: u16 = 5;
/// The bridge port attributes that [`parse_link_info`] reads.
const IFLA_BRPORT_LEARNING: u16 = 8;
const IFLA_BRPORT_ISOLATED: u16 = 33;

/// A link's IFLA_LINKINFO read as far as [`parse_link_info`] reads it, one nested attribute at
/// a time: its kind and, for a bridge port, the two flags read. A veth host end carries some
/// forty bridge port attributes, which a whole parse turns into a vector of values to drop:
/// that was most of the parse of a host's links. Whether it was read (Some(false): a kind
/// whose data is read, macvlan or VXLAN, which the caller parses whole); None if malformed.
fn read_link_info(link: &mut Link, nla: &NlaBuffer<&[u8]>) -> Option<bool> {
    let mut bridge_port = false;
    for inner in NlasIterator::new(nla.value()) {
        let inner = inner.ok()?;
        match inner.kind() {
            IFLA_INFO_KIND => match InfoKind::parse(&inner).ok()? {
                InfoKind::MacVlan | InfoKind::Vxlan => return Some(false),
                kind => link.kind = link_kind(kind),
            },
            IFLA_INFO_PORT_KIND => {
                bridge_port = InfoPortKind::parse(&inner).ok()? == InfoPortKind::Bridge;
            }
            IFLA_INFO_PORT_DATA if bridge_port => {
                let mut port = BridgePortInfo::default();
                for attr in NlasIterator::new(inner.value()) {
                    let attr = attr.ok()?;
                    if matches!(attr.kind(), IFLA_BRPORT_LEARNING | IFLA_BRPORT_ISOLATED) {
                        read_bridge_port(&mut port, InfoBridgePort::parse(&attr).ok()?);
                    }
                }
                link.bridge_port = Some(port);
            }
            _ => {}
        }
    }
    Some(true)
}

fn link_kind(kind: InfoKind) -> LinkKind {
    match kind {
        InfoKind::Bridge => LinkKind::Bridge,
        InfoKind::Veth => LinkKind::Veth,
        InfoKind::MacVlan => LinkKind::Macvlan,
        InfoKind::Vxlan => LinkKind::Vxlan,
        other => LinkKind::Other(other.to_string()),
    }
}

fn read_bridge_port(port: &mut BridgePortInfo, attr: InfoBridgePort) {
    match attr {
        InfoBridgePort::Isolated(on) => port.isolated = Some(on),
        InfoBridgePort::Learning(on) => port.learning = Some(on),
        _ => {}
    }
}

fn link_of_header(header: &LinkHeader) -> Link {
    Link {
        index: header.index,
        name: String::new(),
        kind: LinkKind::Device,
        alias: None,
        mac: None,
        mtu: None,
        master: None,
        up: header.flags.contains(LinkFlags::Up),
        lower_up: header.flags.contains(LinkFlags::LowerUp),
        link: None,
        link_netnsid: None,
        macvlan_mode: None,
        vxlan: None,
        bridge_port: None,
    }
}

/// Every attribute whose kind is in [`READ_ATTRIBUTES`] is read here.
fn read_attribute(link: &mut Link, attr: LinkAttribute) {
    match attr {
        LinkAttribute::IfName(n) => link.name = n,
        LinkAttribute::IfAlias(a) => link.alias = Some(a),
        LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
        LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
        LinkAttribute::Controller(m) if m != 0 => link.master = Some(m),
        LinkAttribute::Link(l) => link.link = Some(l),
        LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(id),
        LinkAttribute::LinkInfo(infos) => parse_link_info(link, infos),
        _ => {}
    }
}

fn parse_link_info(link: &mut Link, infos: Vec<LinkInfo>) {
    for info in infos {
        match info {
            LinkInfo::Kind(kind) => link.kind = link_kind(kind),
            LinkInfo::Data(InfoData::MacVlan(data)) => {
                for d in data {
                    if let InfoMacVlan::Mode(m) = d {
                        link.macvlan_mode = MacvlanMode::from_nl(&m);
                    }
                }
            }
            LinkInfo::Data(InfoData::Vxlan(data)) => {
                let mut v = VxlanInfo::default();
                for d in data {
                    match d {
                        InfoVxlan::Id(id) => v.vni = Some(id),
                        InfoVxlan::Local(ip) => v.local = Some(IpAddr::V4(ip)),
                        InfoVxlan::Local6(ip) => v.local = Some(IpAddr::V6(ip)),
                        InfoVxlan::Port(p) => v.port = Some(p),
                        InfoVxlan::Link(l) => v.underlay = Some(l),
                        InfoVxlan::Learning(on) => v.learning = Some(on),
                        InfoVxlan::Proxy(on) => v.proxy = Some(on),
                        _ => {}
                    }
                }
                link.vxlan = Some(v);
            }
            LinkInfo::PortData(InfoPortData::BridgePort(data)) => {
                let mut p = BridgePortInfo::default();
                for d in data {
                    read_bridge_port(&mut p, d);
                }
                link.bridge_port = Some(p);
            }
            _ => {}
        }
    }
}

/// The dump request for every link, without statistics (the kernel skips computing them).
pub(super) fn links_request() -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    RouteNetlinkMessage::GetLink(msg)
}

/// The links in a link dump's replies.
fn links_of(replies: Vec<RouteNetlinkMessage>) -> Vec<Link> {
    replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::State;

    #[test]
    fn a_link_parsed_in_part_is_the_link_parsed_whole() {
        let mut m = LinkMessage::default();
        m.header.index = 7;
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        m.attributes = vec![
            LinkAttribute::IfName("nc-vh1".into()),
            LinkAttribute::TxQueueLen(1000),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Controller(3),
            LinkAttribute::Link(2),
            LinkAttribute::LinkNetNsId(0),
            LinkAttribute::IfAlias("netcompose:p/x".into()),
            LinkAttribute::Group(0),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![
                    InfoBridgePort::Isolated(true),
                    InfoBridgePort::Learning(false),
                ])),
            ]),
            LinkAttribute::NumTxQueues(1),
        ];
        let mut bytes = vec![0; m.buffer_len()];
        m.emit(&mut bytes);
        let whole = parse_link(LinkMessage::parse(&bytes).unwrap());
        let part = parse_link_payload(&bytes).expect("a well-formed message");
        assert_eq!(part, whole);
        assert_eq!(
            (
                part.name.as_str(),
                part.kind,
                part.master,
                part.link_netnsid
            ),
            ("nc-vh1", LinkKind::Veth, Some(3), Some(0))
        );
        let port = part.bridge_port.expect("bridge port data");
        assert_eq!((port.isolated, port.learning), (Some(true), Some(false)));
        // Cut in its header, or in the middle of an attribute that is read: no link.
        assert_eq!(parse_link_payload(&bytes[..10]), None);
        assert_eq!(parse_link_payload(&bytes[..24]), None);
    }

    /// A link message of `info` (and a name), parsed in part and whole.
    fn parsed_both_ways(info: Vec<LinkInfo>) -> (Link, Link) {
        let mut m = LinkMessage::default();
        m.header.index = 9;
        m.attributes = vec![
            LinkAttribute::IfName("l".into()),
            LinkAttribute::LinkInfo(info),
        ];
        let mut bytes = vec![0; m.buffer_len()];
        m.emit(&mut bytes);
        let part = parse_link_payload(&bytes).expect("a well-formed message");
        (part, parse_link(LinkMessage::parse(&bytes).unwrap()))
    }

    #[test]
    fn link_info_read_in_part_reads_what_the_whole_parse_reads() {
        let port_data = || {
            LinkInfo::PortData(InfoPortData::BridgePort(vec![
                InfoBridgePort::Priority(32),
                InfoBridgePort::Cost(100),
                InfoBridgePort::Learning(true),
                InfoBridgePort::Isolated(false),
            ]))
        };
        let cases = [
            // A veth host end with every port attribute but the two read skipped.
            vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::PortKind(InfoPortKind::Bridge),
                port_data(),
            ],
            vec![LinkInfo::Kind(InfoKind::Bridge)],
            vec![LinkInfo::Kind(InfoKind::Other("ifb".into()))],
            // Kinds whose data is read are parsed whole.
            vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(42),
                    InfoVxlan::Port(4789),
                    InfoVxlan::Learning(false),
                ])),
                LinkInfo::PortKind(InfoPortKind::Bridge),
                port_data(),
            ],
            vec![
                LinkInfo::Kind(InfoKind::MacVlan),
                LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                    netlink_packet_route::link::MacVlanMode::Bridge,
                )])),
            ],
            // A port of another kind of controller: no bridge port read.
            vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::PortKind(InfoPortKind::Bond),
                LinkInfo::PortData(InfoPortData::BondPort(vec![
                    netlink_packet_route::link::InfoBondPort::QueueId(1),
                ])),
            ],
        ];
        for info in cases {
            let shown = format!("{info:?}");
            let (part, whole) = parsed_both_ways(info);
            assert_eq!(part, whole, "{shown}");
        }
        let (veth, _) = parsed_both_ways(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::PortKind(InfoPortKind::Bridge),
            port_data(),
        ]);
        let port = veth.bridge_port.expect("bridge port data");
        assert_eq!(
            (veth.kind, port.learning, port.isolated),
            (LinkKind::Veth, Some(true), Some(false))
        );
        let (vxlan, _) = parsed_both_ways(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![InfoVxlan::Id(42)])),
        ]);
        assert_eq!(vxlan.vxlan.and_then(|v| v.vni), Some(42));
    }
}
