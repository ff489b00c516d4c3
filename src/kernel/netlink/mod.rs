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
//!
//! This file holds the types, the handle and the request plumbing; the operations are in
//! `links.rs` (links), `addrs.rs` (addresses, routes, FDB and neighbour entries written),
//! `overlay.rs` (FDB and neighbour entries read back and deleted), `tc.rs` (qdiscs and htb
//! classes) and `blocking.rs` (the listings again, on a plain blocking socket, for a thread
//! that reads a namespace in one go).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use futures::StreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
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

mod addrs;
mod blocking;
mod links;
mod overlay;
pub mod tc;

pub use blocking::BlockingNetlink;

use super::netns::{self, NetnsDir};
use super::{Ctx, KernelError};

/// The loopback device is ifindex 1 in every network namespace.
pub const LOOPBACK_INDEX: u32 = 1;

/// What kind of device a link is (`IFLA_INFO_KIND`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct VxlanInfo {
    pub vni: Option<u32>,
    pub local: Option<IpAddr>,
    pub port: Option<u16>,
    pub underlay: Option<u32>,
    pub learning: Option<bool>,
    /// ARP and neighbour discovery answered from the device's neighbour table.
    pub proxy: Option<bool>,
}

/// Bridge-port settings of a link enslaved to a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct BridgePortInfo {
    pub isolated: Option<bool>,
    pub learning: Option<bool>,
}

/// A link as reported by the kernel. Here and in [`Route`], what the kernel did not report
/// is left out of the JSON that carries surveys from the project daemon to a run (a fifth of a
/// survey was `null`s).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    /// `IFLA_IFALIAS` (where netcompose puts its ownership mark).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mac: Option<[u8; 6]>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mtu: Option<u32>,
    /// Index of the bridge this link is enslaved to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub master: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub lower_up: bool,
    /// `IFLA_LINK`: the veth peer's index or the macvlan/vxlan parent's index (in the namespace
    /// named by `link_netnsid` when that is present).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer/parent lives in another namespace with this id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link_netnsid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub macvlan_mode: Option<MacvlanMode>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vxlan: Option<VxlanInfo>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bridge_port: Option<BridgePortInfo>,
}

/// A link's counters as the kernel keeps them (`IFLA_STATS64`), from its own point of view:
/// `rx` is what arrived on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// A route of the main table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gateway: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub oif: Option<u32>,
    /// `RTPROT_*` (2 kernel, 3 boot, 4 static).
    pub protocol: u8,
    /// `RT_SCOPE_*` (0 universe, 253 link, 254 host).
    pub scope: u8,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metric: Option<u32>,
}

/// Macvlan modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Answer ARP and neighbour solicitations from the device's neighbour table (settable
    /// only at creation: the kernel refuses to change it).
    pub proxy: bool,
    pub mtu: Option<u32>,
    pub alias: Option<String>,
    pub master: Option<u32>,
    pub up: bool,
}

/// A forwarding entry of a VXLAN device (`bridge fdb show dev DEV`): frames for `mac` go to
/// the VTEP `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub dst: Option<IpAddr>,
    /// `permanent` (static, never aged out).
    pub permanent: bool,
}

/// A neighbour entry of a link (`ip neigh show dev DEV`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: Option<[u8; 6]>,
    pub permanent: bool,
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
    fn a_survey_leaves_out_what_the_kernel_did_not_report_and_reads_it_either_way() {
        let link = Link {
            index: 2,
            name: "eth0".into(),
            kind: LinkKind::Veth,
            alias: None,
            mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: Some(1500),
            master: None,
            up: true,
            lower_up: true,
            link: Some(4),
            link_netnsid: None,
            macvlan_mode: None,
            vxlan: None,
            bridge_port: None,
        };
        let route = Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: None,
            oif: Some(2),
            protocol: 4,
            scope: 0,
            metric: None,
        };
        let json = serde_json::to_string(&(&link, &route)).unwrap();
        assert!(!json.contains("null"), "{json}");
        assert_eq!(
            serde_json::from_str::<(Link, Route)>(&json).unwrap(),
            (link.clone(), route.clone())
        );
        // As a daemon before this one wrote them: every field, null when absent.
        let written_whole = r#"[{"index":2,"name":"eth0","kind":"Veth","alias":null,"mac":[2,0,0,0,0,1],"mtu":1500,"master":null,"up":true,"lower_up":true,"link":4,"link_netnsid":null,"macvlan_mode":null,"vxlan":null,"bridge_port":null},{"dst":"0.0.0.0/0","gateway":null,"oif":2,"protocol":4,"scope":0,"metric":null}]"#;
        assert_eq!(
            serde_json::from_str::<(Link, Route)>(written_whole).unwrap(),
            (link, route)
        );
    }

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
