//! rtnetlink inside a network namespace: links, addresses, routes, FDB and neighbours.
//!
//! A [`Netlink`] wraps an rtnetlink handle whose socket was created inside a given namespace; a
//! netlink socket stays bound to the namespace it was created in, so once open it can be used
//! from any thread or task. Open one per namespace and cache it. Each operation is exactly one
//! netlink request (no `ip` processes); creations ask the kernel to echo the new link back
//! (`NLM_F_ECHO`, Linux ≥ 6.1) so that they return the new ifindex without a second request.
//!
//! Every request is sent with `NLM_F_ACK` and the reply stream must end with the kernel's
//! acknowledgement (or `NLMSG_DONE` for dumps): a connection that dies half-way is an error,
//! never a silent success. Errors carry the kernel's extended-ack text when it gives one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use futures::StreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoMacVlan, InfoPortData, InfoVeth, InfoVxlan,
    LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    ErrorMessage, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{
    AddressMessageBuilder, LinkBridge, LinkBridgePort, LinkMacVlan, LinkMessageBuilder, LinkUnspec,
    LinkVeth, LinkVxlan, RouteMessageBuilder,
};

use super::netns::{self, NetnsDir};
use super::{Ctx, KernelError};

/// The loopback device is ifindex 1 in every network namespace.
pub const LOOPBACK_INDEX: u32 = 1;

/// What kind of device a link is (`IFLA_INFO_KIND`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Veth,
    Macvlan,
    Vxlan,
    /// No `IFLA_INFO_KIND`: loopback and physical devices.
    Device,
    /// Any other kind, by its kernel name (`tun`, `ifb`, ...).
    Other(String),
}

/// The VXLAN parameters of a vxlan link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanInfo {
    pub vni: Option<u32>,
    pub local: Option<IpAddr>,
    pub port: Option<u16>,
    pub underlay: Option<u32>,
    pub learning: Option<bool>,
}

/// Bridge-port settings of a link enslaved to a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgePortInfo {
    pub isolated: Option<bool>,
    pub learning: Option<bool>,
}

/// A link as reported by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    /// `IFLA_IFALIAS` (where netcompose puts its ownership mark).
    pub alias: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Index of the bridge this link is enslaved to.
    pub master: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub lower_up: bool,
    /// `IFLA_LINK`: the veth peer's index or the macvlan/vxlan parent's index (in the namespace
    /// named by `link_netnsid` when that is present).
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer/parent lives in another namespace with this id.
    pub link_netnsid: Option<i32>,
    pub macvlan_mode: Option<MacvlanMode>,
    pub vxlan: Option<VxlanInfo>,
    pub bridge_port: Option<BridgePortInfo>,
}

/// A route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// `RTPROT_*` (2 kernel, 3 boot, 4 static).
    pub protocol: u8,
    /// `RT_SCOPE_*` (0 universe, 253 link, 254 host).
    pub scope: u8,
    pub metric: Option<u32>,
}

/// Macvlan modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    Private,
    Vepa,
    Bridge,
    Passthru,
    Source,
}

impl MacvlanMode {
    fn to_nl(self) -> netlink_packet_route::link::MacVlanMode {
        use netlink_packet_route::link::MacVlanMode as M;
        match self {
            MacvlanMode::Private => M::Private,
            MacvlanMode::Vepa => M::Vepa,
            MacvlanMode::Bridge => M::Bridge,
            MacvlanMode::Passthru => M::Passthrough,
            MacvlanMode::Source => M::Source,
        }
    }

    fn from_nl(m: &netlink_packet_route::link::MacVlanMode) -> Option<Self> {
        use netlink_packet_route::link::MacVlanMode as M;
        Some(match m {
            M::Private => MacvlanMode::Private,
            M::Vepa => MacvlanMode::Vepa,
            M::Bridge => MacvlanMode::Bridge,
            M::Passthrough => MacvlanMode::Passthru,
            M::Source => MacvlanMode::Source,
            _ => return None,
        })
    }
}

/// A veth pair: the host end is created in the handle's namespace, the peer directly inside
/// `peer_ns` (or next to the host end when `None`), in one request. The peer is created down.
#[derive(Debug, Clone, Default)]
pub struct VethSpec<'a> {
    pub name: String,
    /// Applied with a second request after creation (the kernel ignores `IFLA_IFALIAS` when
    /// creating a link), only when set.
    pub alias: Option<String>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    /// Enslave the host end to this bridge at creation.
    pub master: Option<u32>,
    /// Bring the host end up at creation.
    pub up: bool,
    pub peer_name: String,
    pub peer_ns: Option<BorrowedFd<'a>>,
    pub peer_mac: Option<[u8; 6]>,
    // No `peer_up`: the kernel opens the peer before the pair is linked, so asking for it up at
    // creation fails with ENOTCONN. Set it up from the peer's namespace ([`Netlink::set_up`]).
}

/// A macvlan sub-interface of `parent` (an ifindex in the handle's namespace), created directly
/// inside `ns` when given.
#[derive(Debug, Clone)]
pub struct MacvlanSpec<'a> {
    pub name: String,
    pub parent: u32,
    pub mode: MacvlanMode,
    pub ns: Option<BorrowedFd<'a>>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// A VXLAN device. `learning: false` is what an FDB-programmed overlay wants.
#[derive(Debug, Clone)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub local: Option<IpAddr>,
    /// UDP destination port (4789 is the IANA port).
    pub port: u16,
    /// Underlay device index.
    pub underlay: Option<u32>,
    pub learning: bool,
    pub mtu: Option<u32>,
    pub alias: Option<String>,
    pub master: Option<u32>,
    pub up: bool,
}

/// An rtnetlink connection inside one network namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    ns: Option<String>,
}

impl Netlink {
    /// Open a connection inside the named namespace of `/run/netns` (`None`: the calling
    /// thread's namespace). The socket is created on a thread that entered the namespace and
    /// registered with `rt`, on which the connection task is spawned.
    pub fn open(ns: Option<&str>, rt: &tokio::runtime::Handle) -> Result<Self, KernelError> {
        Self::open_in(&NetnsDir::system(), ns, rt)
    }

    /// [`Netlink::open`] for a namespace of another directory.
    pub fn open_in(
        dir: &NetnsDir,
        ns: Option<&str>,
        rt: &tokio::runtime::Handle,
    ) -> Result<Self, KernelError> {
        match ns {
            None => Self::connect(None, rt),
            Some(name) => {
                let fd = dir.open(Some(name))?;
                Self::open_fd(fd.as_fd(), Some(name), rt)
            }
        }
    }

    /// Open a connection inside the namespace behind `fd`; `label` names it in errors.
    pub fn open_fd(
        fd: BorrowedFd<'_>,
        label: Option<&str>,
        rt: &tokio::runtime::Handle,
    ) -> Result<Self, KernelError> {
        let ctx = Ctx::new("open netlink socket", "NETLINK_ROUTE", label);
        netns::run_in_fd(fd, || Self::connect(label, rt)).map_err(|e| ctx.errno(e))?
    }

    /// Open a connection in the calling thread's current namespace, naming it `label` in
    /// errors: for code already running inside a namespace (`NetnsDir::create_then`,
    /// `NetnsDir::run_in`).
    pub fn open_current(
        label: Option<&str>,
        rt: &tokio::runtime::Handle,
    ) -> Result<Self, KernelError> {
        Self::connect(label, rt)
    }

    fn connect(label: Option<&str>, rt: &tokio::runtime::Handle) -> Result<Self, KernelError> {
        let ctx = Ctx::new("open netlink socket", "NETLINK_ROUTE", label);
        // The socket registers with the runtime's reactor when it is created.
        let _entered = rt.enter();
        let (mut conn, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|e| ctx.os(e))?;
        {
            let socket = conn.socket_mut().socket_mut();
            // Extended acks carry the kernel's error text; capped acks keep them small.
            let _ = socket.set_ext_ack(true);
            let _ = socket.set_cap_ack(true);
        }
        // We check that every request ends with its ack / done, so forward them to us.
        conn.set_forward_ack(true);
        conn.set_forward_done(true);
        rt.spawn(conn);
        Ok(Netlink {
            handle,
            ns: label.map(str::to_string),
        })
    }

    /// The namespace this connection lives in (`None`: the one it was opened from).
    pub fn netns(&self) -> Option<&str> {
        self.ns.as_deref()
    }

    fn ctx(&self, op: &str, object: impl std::fmt::Display) -> Ctx {
        Ctx::new(op, object, self.ns.as_deref())
    }

    // ---------------------------------------------------------------- reading

    /// All links of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, KernelError> {
        let ctx = self.ctx("list", "links");
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let replies = self.dump(&ctx, RouteNetlinkMessage::GetLink(msg)).await?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
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

    /// All addresses (IPv4 and IPv6) of the namespace, as (ifindex, address/prefix).
    pub async fn addresses(&self) -> Result<Vec<(u32, IpNetwork)>, KernelError> {
        let ctx = self.ctx("list", "addresses");
        let replies = self
            .dump(
                &ctx,
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            )
            .await?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            let mut local = None;
            let mut address = None;
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                if let Ok(net) = IpNetwork::new(ip, a.header.prefix_len) {
                    out.push((a.header.index, net));
                }
            }
        }
        Ok(out)
    }

    /// Unicast routes of the main table (IPv4 and IPv6).
    pub async fn routes(&self) -> Result<Vec<Route>, KernelError> {
        let ctx = self.ctx("list", "routes");
        let replies = self
            .dump(&ctx, RouteNetlinkMessage::GetRoute(RouteMessage::default()))
            .await?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(r),
                _ => None,
            })
            .collect())
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
            .learning(spec.learning);
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

    // ---------------------------------------------------------------- addresses and routes

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

    // ---------------------------------------------------------------- plumbing

    async fn set_link(&self, ctx: &Ctx, msg: LinkMessage) -> Result<(), KernelError> {
        self.request(
            ctx,
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }

    async fn set_port(&self, ctx: &Ctx, msg: LinkMessage) -> Result<(), KernelError> {
        // Port (slave) data is changed through RTM_NEWLINK on the existing device.
        self.request(
            ctx,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }

    /// Create a link in this namespace and return its index (from the echo, else by name).
    async fn create_link(
        &self,
        ctx: &Ctx,
        kind: &str,
        name: &str,
        msg: LinkMessage,
    ) -> Result<u32, KernelError> {
        let replies = self.send_create(ctx, kind, msg).await?;
        let echoed = replies.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l)
                if l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::IfName(n) if n == name)) =>
            {
                Some(l.header.index)
            }
            _ => None,
        });
        match echoed {
            Some(index) => Ok(index),
            // Kernels before 6.1 do not echo RTM_NEWLINK.
            None => self
                .link_index(name)
                .await?
                .ok_or_else(|| ctx.protocol("created, but the link cannot be found by name")),
        }
    }

    async fn send_create(
        &self,
        ctx: &Ctx,
        kind: &str,
        msg: LinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO;
        match self
            .request(ctx, RouteNetlinkMessage::NewLink(msg), flags)
            .await
        {
            Err(KernelError::Os { source, extack, .. })
                if source.raw_os_error() == Some(nix::libc::EOPNOTSUPP)
                    && extack
                        .as_deref()
                        .is_none_or(|m| m.contains("Unknown device type")) =>
            {
                Err(ctx.unsupported_kind(kind, source))
            }
            other => other,
        }
    }

    async fn dump(
        &self,
        ctx: &Ctx,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
        // A dump that raced with a change is flagged NLM_F_DUMP_INTR and may be inconsistent:
        // take it again.
        for _ in 0..8 {
            let (out, interrupted) = self
                .request_flagged(ctx, msg.clone(), NLM_F_REQUEST | NLM_F_DUMP)
                .await?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(ctx.protocol("the dump kept being interrupted by concurrent changes"))
    }

    /// Send one request and collect its replies; succeed only on the final ack / done.
    async fn request(
        &self,
        ctx: &Ctx,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
        self.request_flagged(ctx, msg, flags)
            .await
            .map(|(out, _)| out)
    }

    /// [`Netlink::request`], also telling whether a reply carried `NLM_F_DUMP_INTR`.
    async fn request_flagged(
        &self,
        ctx: &Ctx,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), KernelError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .map_err(|_| ctx.protocol("the connection is closed"))?;
        let mut out = Vec::new();
        let mut interrupted = false;
        while let Some(reply) = replies.next().await {
            interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok((out, interrupted)),
                        Some(_) => Err(nl_error(ctx, &e)),
                    };
                }
                NetlinkPayload::Done(d) => {
                    return if d.code == 0 {
                        Ok((out, interrupted))
                    } else {
                        Err(ctx.os(std::io::Error::from_raw_os_error(d.code.abs())))
                    };
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(ctx.protocol("overrun: the kernel dropped replies"))
                }
                _ => {}
            }
        }
        // A GET without NLM_F_ACK legitimately ends after its single reply.
        if flags & (NLM_F_ACK | NLM_F_DUMP) == 0 && !out.is_empty() {
            return Ok((out, interrupted));
        }
        Err(ctx.protocol("the connection closed before the kernel acknowledged the request"))
    }
}

fn nl_error(ctx: &Ctx, e: &ErrorMessage) -> KernelError {
    let errno = e.raw_code().abs();
    ctx.os_with_message(
        std::io::Error::from_raw_os_error(errno),
        extack_message(&e.header),
    )
}

/// The `NLMSGERR_ATTR_MSG` text of an extended ack. `payload` is what follows the error code:
/// the original request header (capped: 16 bytes; uncapped: the whole request), then TLVs.
fn extack_message(payload: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let parse_tlvs = |mut rest: &[u8]| -> Option<Option<String>> {
        let mut found = None;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return None;
            }
            let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
            let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
            if len < 4 || len > rest.len() {
                return None;
            }
            if kind == NLMSGERR_ATTR_MSG {
                let text = &rest[4..len];
                let text = text.split(|b| *b == 0).next().unwrap_or(&[]);
                found = Some(String::from_utf8_lossy(text).into_owned());
            }
            let aligned = (len + 3) & !3;
            rest = &rest[aligned.min(rest.len())..];
        }
        Some(found)
    };
    if payload.len() < 16 {
        return None;
    }
    // Capped ack (we ask for it): TLVs right after the 16-byte header.
    if let Some(found) = parse_tlvs(&payload[16..]) {
        return found;
    }
    // Uncapped: skip the whole original request.
    let orig = u32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
    let orig = (orig + 3) & !3;
    payload.get(orig..).and_then(parse_tlvs).flatten()
}

fn parse_link(m: LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        kind: LinkKind::Device,
        alias: None,
        mac: None,
        mtu: None,
        master: None,
        up: m.header.flags.contains(LinkFlags::Up),
        lower_up: m.header.flags.contains(LinkFlags::LowerUp),
        link: None,
        link_netnsid: None,
        macvlan_mode: None,
        vxlan: None,
        bridge_port: None,
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::IfAlias(a) => link.alias = Some(a),
            LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
            LinkAttribute::Controller(m) if m != 0 => link.master = Some(m),
            LinkAttribute::Link(l) => link.link = Some(l),
            LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(id),
            LinkAttribute::LinkInfo(infos) => parse_link_info(&mut link, infos),
            _ => {}
        }
    }
    link
}

fn parse_link_info(link: &mut Link, infos: Vec<LinkInfo>) {
    for info in infos {
        match info {
            LinkInfo::Kind(kind) => {
                link.kind = match kind {
                    InfoKind::Bridge => LinkKind::Bridge,
                    InfoKind::Veth => LinkKind::Veth,
                    InfoKind::MacVlan => LinkKind::Macvlan,
                    InfoKind::Vxlan => LinkKind::Vxlan,
                    other => LinkKind::Other(other.to_string()),
                }
            }
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
                        _ => {}
                    }
                }
                link.vxlan = Some(v);
            }
            LinkInfo::PortData(InfoPortData::BridgePort(data)) => {
                let mut p = BridgePortInfo::default();
                for d in data {
                    match d {
                        InfoBridgePort::Isolated(on) => p.isolated = Some(on),
                        InfoBridgePort::Learning(on) => p.learning = Some(on),
                        _ => {}
                    }
                }
                link.bridge_port = Some(p);
            }
            _ => {}
        }
    }
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

fn address_message(index: u32, addr: IpNetwork) -> AddressMessage {
    match addr {
        IpNetwork::V4(n) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(n.ip(), n.prefix())
            .build(),
        IpNetwork::V6(n) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(n.ip(), n.prefix())
            .build(),
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

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extack_is_parsed_from_capped_and_uncapped_acks() {
        let mut tlv = Vec::new();
        let text = b"Unknown device type\0";
        tlv.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        tlv.extend_from_slice(&1u16.to_ne_bytes());
        tlv.extend_from_slice(text);
        while tlv.len() % 4 != 0 {
            tlv.push(0);
        }
        // capped: 16-byte header claiming a 40-byte request
        let mut capped = vec![0u8; 16];
        capped[..4].copy_from_slice(&40u32.to_ne_bytes());
        capped.extend_from_slice(&tlv);
        assert_eq!(
            extack_message(&capped).as_deref(),
            Some("Unknown device type")
        );
        // uncapped: the whole 40-byte request precedes the TLVs
        let mut full = vec![0u8; 40];
        full[..4].copy_from_slice(&40u32.to_ne_bytes());
        full.extend_from_slice(&tlv);
        assert_eq!(
            extack_message(&full).as_deref(),
            Some("Unknown device type")
        );
        assert_eq!(extack_message(&[0u8; 16]), None);
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(fmt_mac(&[2, 0x42, 0xac, 0, 0, 0xff]), "02:42:ac:00:00:ff");
    }
}
