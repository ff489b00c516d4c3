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

use super::nftables::wire::{attr, attributes, request_family, Msg, NLM_F_DUMP, NLM_F_REQUEST};
use super::{Ctx, KernelError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
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

/// Every connection tracked in the namespace of `fd` (an nfnetlink socket opened there).
pub fn dump(fd: &OwnedFd, ns: Option<&str>) -> Result<Vec<Tracked>, KernelError> {
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
        .filter_map(|attrs| entry(attrs))
        .collect())
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
}
