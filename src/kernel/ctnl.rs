//! The connection-tracking table of a namespace, read over ctnetlink: for each tracked
//! connection, where it was sent (the original destination) and who answers it (the reply's
//! source). A VIP's connections are DNATed in the client's own namespace, so there the
//! original destination is the VIP and the reply source the backend that took it.
//!
//! No maintained crate reads ctnetlink without libnetfilter_conntrack, and one dump needs only
//! a few attributes, so this is a small reader on the same nfnetlink plumbing as
//! [`super::nftables::wire`] (linux/netfilter/nfnetlink_conntrack.h): `IPCTNL_MSG_CT_GET` with
//! `NLM_F_DUMP` and family `AF_UNSPEC` dumps both families; each entry has `CTA_TUPLE_ORIG`
//! and `CTA_TUPLE_REPLY`, each holding `CTA_TUPLE_IP` (the addresses) and `CTA_TUPLE_PROTO`.
//!
//! A dump costs the same whatever the namespace holds: the hash table is the host's, shared
//! by every namespace, and the kernel walks all of its buckets (262,144 on a typical host),
//! locking each, to find one namespace's entries. A reader that comes back again and again
//! (the daemon's `stats`) keeps a [`Mirror`] instead: the namespace's new and destroyed
//! connections arrive as events, and a dump is taken only when the namespace's own count of
//! entries (one cheap request) says the mirror missed something.

use super::nftables::wire::{
    attr, attributes, messages, request_family, Msg, NFGENMSG_LEN, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use super::{Ctx, KernelError};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const IPCTNL_MSG_CT_GET_STATS: u16 = 5;
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
const CTA_ID: u16 = 12;
/// Multicast groups (`enum nfnetlink_groups`): connections confirmed, and destroyed.
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;

/// One tracked connection, as much of it as `stats` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub protocol: u8,
    /// Where the first packet was sent.
    pub orig_dst: IpAddr,
    /// Who sends the replies (after DNAT: the backend).
    pub reply_src: IpAddr,
}

/// Every connection tracked in the namespace of `fd` (an nfnetlink socket opened there), by
/// its id (`CTA_ID`), which its events carry too.
pub fn dump(fd: &OwnedFd, ns: Option<&str>) -> Result<Vec<(u32, Tracked)>, KernelError> {
    let ctx = Ctx::new("list", "conntrack entries", ns);
    let req = Msg::raw(
        NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        0,
        0,
    );
    Ok(request_family(&ctx, fd, req, 1, None)?
        .iter()
        .filter_map(|attrs| keyed(attrs))
        .collect())
}

/// How many connections the namespace of `fd` tracks: its own counter, read in one request
/// (`IPCTNL_MSG_CT_GET_STATS`), where a dump walks the host's whole table.
pub fn count(fd: &OwnedFd, ns: Option<&str>) -> Result<u32, KernelError> {
    let ctx = Ctx::new("count", "conntrack entries", ns);
    let req = Msg::raw(
        NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET_STATS,
        NLM_F_REQUEST | NLM_F_ACK,
        2,
        0,
        0,
    );
    request_family(&ctx, fd, req, 2, None)?
        .iter()
        .find_map(|attrs| attr(attrs, CTA_STATS_GLOBAL_ENTRIES))
        .and_then(|b| Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?)))
        .ok_or_else(|| ctx.protocol("no CTA_STATS_GLOBAL_ENTRIES in the reply"))
}

/// A namespace's conntrack table as the events of its new and destroyed connections leave it,
/// checked against the namespace's count of entries and dumped again when they disagree (the
/// first time, after lost events, or for entries that predate the subscription: in the
/// kernel's default mode, `nf_conntrack_events = 2`, only connections made while someone
/// listens report their end).
pub struct Mirror {
    /// Subscribed to the namespace's conntrack events; None where the namespace sends none
    /// (`nf_conntrack_events = 0`): then only an empty table is known without a dump.
    events: Option<OwnedFd>,
    entries: HashMap<u32, Tracked>,
    /// Events were lost (the socket overran): the entries are not to be trusted.
    resync: bool,
}

impl Mirror {
    /// Follow the table of the namespace behind `ns` (`label` names it in errors). Nothing is
    /// read yet: the first [`Mirror::refresh`] does.
    pub fn open_in(ns: BorrowedFd<'_>, label: Option<&str>) -> Result<Mirror, KernelError> {
        let ctx = Ctx::new("subscribe to", "conntrack events", label);
        let events = super::netns::run_in_fd(ns, || -> Result<Option<OwnedFd>, Errno> {
            // The sysctl is the namespace's own: read by a thread inside it.
            let off = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_events")
                .is_ok_and(|v| v.trim() == "0");
            if off {
                return Ok(None);
            }
            let fd = socket(
                AddressFamily::Netlink,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::NetlinkNetFilter,
            )?;
            let groups = 1 << (NFNLGRP_CONNTRACK_NEW - 1) | 1 << (NFNLGRP_CONNTRACK_DESTROY - 1);
            bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
            Ok(Some(fd))
        })
        .and_then(|r| r)
        .map_err(|e| ctx.errno(e))?;
        Ok(Mirror {
            events,
            entries: HashMap::new(),
            resync: false,
        })
    }

    /// Bring the mirror up to date through `fd` (an nfnetlink socket of the same namespace):
    /// the events since the last call, then the count; a dump only when the count disagrees.
    pub fn refresh(&mut self, fd: &OwnedFd, ns: Option<&str>) -> Result<(), KernelError> {
        let ctx = Ctx::new("follow", "conntrack events", ns);
        self.drain(&ctx)?;
        let n = count(fd, ns)? as usize;
        if n == 0 {
            // Nothing is tracked now; later connections arrive as events.
            self.entries.clear();
            self.resync = false;
            return Ok(());
        }
        if self.events.is_some() && !self.resync && n == self.entries.len() {
            return Ok(());
        }
        self.entries = dump(fd, ns)?.into_iter().collect();
        self.resync = false;
        // Events queued during the dump: applying one twice changes nothing.
        self.drain(&ctx)
    }

    /// The connections as of the last [`Mirror::refresh`].
    pub fn tracked(&self) -> impl Iterator<Item = &Tracked> {
        self.entries.values()
    }

    /// Apply every queued event.
    fn drain(&mut self, ctx: &Ctx) -> Result<(), KernelError> {
        let Some(fd) = self.events.as_ref().map(AsRawFd::as_raw_fd) else {
            return Ok(());
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(ctx.protocol("nfnetlink closed the event socket")),
                Ok(n) => self.apply(ctx, &buf[..n])?,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => {}
                // The kernel dropped events for want of room: later ones still come.
                Err(Errno::ENOBUFS) => self.resync = true,
                Err(e) => return Err(ctx.errno(e)),
            }
        }
    }

    /// One datagram of events: a new connection is added, a destroyed one removed.
    fn apply(&mut self, ctx: &Ctx, datagram: &[u8]) -> Result<(), KernelError> {
        for (kind, _, body) in messages(ctx, datagram)? {
            let Some(attrs) = body.get(NFGENMSG_LEN..).map(attributes) else {
                continue;
            };
            if kind == NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW {
                if let Some((id, t)) = keyed(&attrs) {
                    self.entries.insert(id, t);
                }
            } else if kind == NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE {
                if let Some(id) = id(&attrs) {
                    self.entries.remove(&id);
                }
            }
        }
        Ok(())
    }
}

fn id(attrs: &[(u16, Vec<u8>)]) -> Option<u32> {
    Some(u32::from_be_bytes(
        attr(attrs, CTA_ID)?.get(..4)?.try_into().ok()?,
    ))
}

fn keyed(attrs: &[(u16, Vec<u8>)]) -> Option<(u32, Tracked)> {
    Some((id(attrs)?, entry(attrs)?))
}

fn entry(attrs: &[(u16, Vec<u8>)]) -> Option<Tracked> {
    let orig = attributes(attr(attrs, CTA_TUPLE_ORIG)?);
    let reply = attributes(attr(attrs, CTA_TUPLE_REPLY)?);
    let proto = attributes(attr(&orig, CTA_TUPLE_PROTO)?);
    Some(Tracked {
        protocol: *attr(&proto, CTA_PROTO_NUM)?.first()?,
        orig_dst: address(&orig, CTA_IP_V4_DST, CTA_IP_V6_DST)?,
        reply_src: address(&reply, CTA_IP_V4_SRC, CTA_IP_V6_SRC)?,
    })
}

/// The IPv4 or IPv6 address `v4`/`v6` of a tuple's `CTA_TUPLE_IP`.
fn address(tuple: &[(u16, Vec<u8>)], v4: u16, v6: u16) -> Option<IpAddr> {
    let ip = attributes(attr(tuple, CTA_TUPLE_IP)?);
    if let Some(b) = attr(&ip, v4) {
        let b: [u8; 4] = b.get(..4)?.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(b)));
    }
    let b: [u8; 16] = attr(&ip, v6)?.get(..16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize((v.len() + 3) & !3, 0);
        v
    }

    fn tuple(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let ip = [tlv(CTA_IP_V4_SRC, &src), tlv(CTA_IP_V4_DST, &dst)].concat();
        let proto = tlv(CTA_PROTO_NUM, &[6]);
        [
            tlv(CTA_TUPLE_IP | 0x8000, &ip),
            tlv(CTA_TUPLE_PROTO | 0x8000, &proto),
        ]
        .concat()
    }

    #[test]
    fn reads_the_vip_and_the_backend_of_a_dnated_connection() {
        let body = [
            tlv(
                CTA_TUPLE_ORIG | 0x8000,
                &tuple([10, 0, 0, 5], [10, 0, 0, 100]),
            ),
            tlv(
                CTA_TUPLE_REPLY | 0x8000,
                &tuple([10, 0, 0, 7], [10, 0, 0, 5]),
            ),
        ]
        .concat();
        let t = entry(&attributes(&body)).unwrap();
        assert_eq!(t.protocol, 6);
        assert_eq!(t.orig_dst, IpAddr::from([10, 0, 0, 100]));
        assert_eq!(t.reply_src, IpAddr::from([10, 0, 0, 7]));
        assert_eq!(entry(&attributes(&tlv(CTA_TUPLE_ORIG, &[]))), None);
    }

    /// An event as the kernel multicasts it: nlmsghdr, nfgenmsg, the attributes.
    fn event(kind: u16, id: u32, dst: [u8; 4], backend: [u8; 4]) -> Vec<u8> {
        let body = [
            vec![2, 0, 0, 0],
            tlv(CTA_TUPLE_ORIG | 0x8000, &tuple([10, 0, 0, 5], dst)),
            tlv(CTA_TUPLE_REPLY | 0x8000, &tuple(backend, [10, 0, 0, 5])),
            tlv(CTA_ID, &id.to_be_bytes()),
        ]
        .concat();
        let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | kind).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn events_add_and_remove_connections_by_id_and_repeats_change_nothing() {
        let ctx = Ctx::new("t", "t", None);
        let mut m = Mirror {
            events: None,
            entries: HashMap::new(),
            resync: false,
        };
        let (vip, b1, b2) = ([10, 0, 0, 100], [10, 0, 0, 7], [10, 0, 0, 8]);
        let two_new = [
            event(IPCTNL_MSG_CT_NEW, 1, vip, b1),
            event(IPCTNL_MSG_CT_NEW, 2, vip, b2),
        ]
        .concat();
        m.apply(&ctx, &two_new).unwrap();
        m.apply(&ctx, &event(IPCTNL_MSG_CT_NEW, 1, vip, b1))
            .unwrap();
        let mut backends: Vec<IpAddr> = m.tracked().map(|t| t.reply_src).collect();
        backends.sort();
        assert_eq!(backends, [IpAddr::from(b1), IpAddr::from(b2)]);
        for _ in 0..2 {
            m.apply(&ctx, &event(IPCTNL_MSG_CT_DELETE, 1, vip, b1))
                .unwrap();
        }
        m.apply(&ctx, &event(IPCTNL_MSG_CT_DELETE, 9, vip, b1))
            .unwrap();
        let left: Vec<IpAddr> = m.tracked().map(|t| t.reply_src).collect();
        assert_eq!(left, [IpAddr::from(b2)]);
        assert!(m.apply(&ctx, &[1, 0, 0, 0]).is_ok());
    }
}
