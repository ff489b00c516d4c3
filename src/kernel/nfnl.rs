//! Reading and deleting nftables tables straight from the kernel over nfnetlink, without
//! running `nft`.
//!
//! `observe` needs, for every table of the project (one per replica namespace), only which
//! chains exist and the comment (the netcompose tag) of each rule, in order. Asking `nft -j
//! list table` costs a process per namespace (several ms each: exec, dynamic linking, nft's
//! cache); a few netlink requests on a socket opened in the namespace cost a fraction of a ms.
//! The kernel's answers carry an errno, so a missing table is `ErrorKind::NotFound`, not a
//! message to read. Writing tables still goes through `nft` ([`super::nft`]).
//!
//! The wire format (linux/netfilter/nf_tables.h): each message is an `nlmsghdr` of type
//! `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*`, an `nfgenmsg` (family, version, resource id), then
//! attributes. A rule's comment is in `NFTA_RULE_USERDATA`, as libnftnl's TLVs (type u8, length
//! u8, value), type 0 (`NFTNL_UDATA_RULE_COMMENT`) being a NUL-terminated string.

use super::netns::NetnsDir;
use super::{Ctx, ErrorKind, KernelError};
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_GETCHAIN: u16 = 4;
pub(super) const NFT_MSG_GETRULE: u16 = 7;
pub(super) const NFPROTO_INET: u8 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_USERDATA: u16 = 7;
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

/// Each chain of a table with the tags of its rules, in order.
pub type ChainTags = Vec<(String, Vec<String>)>;
/// A message's attributes: (type, payload).
pub(super) type Attributes = Vec<(u16, Vec<u8>)>;

/// The rule tags of each chain of inet table `table` in namespace `ns` (None: the caller's),
/// chains and rules in the kernel's order, `?` for a rule without a comment; None when the
/// table does not exist.
pub fn table_tags(
    dir: &NetnsDir,
    ns: Option<&str>,
    table: &str,
) -> Result<Option<ChainTags>, KernelError> {
    let ctx = Ctx::new("list table", table, ns);
    let table = table.to_string();
    dir.run_in(ns, move || read_table(&ctx, &table))?
}

/// Delete inet table `table` in namespace `ns` (None: the caller's), with everything in it;
/// false when there was no such table.
pub fn delete_table(dir: &NetnsDir, ns: Option<&str>, table: &str) -> Result<bool, KernelError> {
    let ctx = Ctx::new("delete table", table, ns);
    let table = table.to_string();
    let deleted = dir.run_in(ns, move || {
        let fd = open(&ctx)?;
        delete(&ctx, &fd, &table)
    })?;
    match deleted {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// An nfnetlink socket inside the namespace behind `ns` (`label` names it in errors), for the
/// readers of counters and connections: it stays in that namespace and may be used from any
/// thread.
pub fn open_in(ns: BorrowedFd<'_>, label: Option<&str>) -> Result<OwnedFd, KernelError> {
    let ctx = Ctx::new("open netlink socket", "NETLINK_NETFILTER", label);
    super::netns::run_in_fd(ns, || open(&ctx)).map_err(|e| ctx.errno(e))?
}

pub(super) fn open(ctx: &Ctx) -> Result<OwnedFd, KernelError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| ctx.errno(e))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| ctx.errno(e))?;
    Ok(fd)
}

/// nf_tables changes only in a batch: begin, NFT_MSG_DELTABLE (acknowledged), end.
fn delete(ctx: &Ctx, fd: &OwnedFd, table: &str) -> Result<(), KernelError> {
    let name = [table.as_bytes(), &[0]].concat();
    let batch =
        |kind: u16, seq: u32| message(kind, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
    let mut req = batch(NFNL_MSG_BATCH_BEGIN, 1);
    req.extend(message(
        NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELTABLE,
        NLM_F_REQUEST | NLM_F_ACK,
        2,
        NFPROTO_INET,
        0,
        &[(NFTA_TABLE_NAME, &name)],
    ));
    req.extend(batch(NFNL_MSG_BATCH_END, 3));
    send(fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(|e| ctx.errno(e))?;
    receive(ctx, fd, 2).map(|_| ())
}

/// Whether inet table `table` exists: NFT_MSG_GETTABLE by name, ENOENT when it does not.
fn exists(ctx: &Ctx, fd: &OwnedFd, table: &str, seq: u32) -> Result<bool, KernelError> {
    let name = [table.as_bytes(), &[0]].concat();
    let req = message(
        NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        NFPROTO_INET,
        0,
        &[(NFTA_TABLE_NAME, &name)],
    );
    send(fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(|e| ctx.errno(e))?;
    match receive(ctx, fd, seq) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn read_table(ctx: &Ctx, table: &str) -> Result<Option<ChainTags>, KernelError> {
    let fd = open(ctx)?;
    if !exists(ctx, &fd, table, 1)? {
        return Ok(None);
    }
    let dump = |msg: u16, seq: u32| dump(ctx, &fd, msg, seq);
    let mut chains: ChainTags = dump(NFT_MSG_GETCHAIN, 2)?
        .iter()
        .filter(|attrs| string(attrs, NFTA_CHAIN_TABLE).as_deref() == Some(table))
        .filter_map(|attrs| string(attrs, NFTA_CHAIN_NAME))
        .map(|name| (name, Vec::new()))
        .collect();
    for attrs in dump(NFT_MSG_GETRULE, 3)? {
        if string(&attrs, NFTA_RULE_TABLE).as_deref() != Some(table) {
            continue;
        }
        let Some(chain) = string(&attrs, NFTA_RULE_CHAIN) else {
            continue;
        };
        let tag = attr(&attrs, NFTA_RULE_USERDATA)
            .and_then(comment)
            .unwrap_or_else(|| "?".to_string());
        if let Some((_, tags)) = chains.iter_mut().find(|(n, _)| *n == chain) {
            tags.push(tag);
        }
    }
    Ok(Some(chains))
}

/// A message: `nlmsghdr`, `nfgenmsg` (family, version 0, resource id in network order), then
/// each attribute padded to 4 bytes.
pub(super) fn message(
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[(u16, &[u8])],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.push(0);
    m.extend_from_slice(&res_id.to_be_bytes());
    for (kind, payload) in attrs {
        m.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize((m.len() + 3) & !3, 0);
    }
    let len = (m.len() as u32).to_ne_bytes();
    m[..4].copy_from_slice(&len);
    m
}

/// One dump of the inet family: the attributes of every object, in the kernel's order.
pub(super) fn dump(
    ctx: &Ctx,
    fd: &OwnedFd,
    msg: u16,
    seq: u32,
) -> Result<Vec<Attributes>, KernelError> {
    let req = message(
        NFNL_SUBSYS_NFTABLES << 8 | msg,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
        &[],
    );
    send(fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(|e| ctx.errno(e))?;
    receive(ctx, fd, seq)
}

/// The replies to request `seq` until the end of its dump or its acknowledgement: the
/// attributes of each inet object. An error the kernel sends back, for this request or for
/// another message of its batch, is returned with its errno.
pub(super) fn receive(ctx: &Ctx, fd: &OwnedFd, seq: u32) -> Result<Vec<Attributes>, KernelError> {
    receive_family(ctx, fd, seq, Some(NFPROTO_INET))
}

/// [`receive`] for objects of `family` (None: of any family, as conntrack's dumps of both).
pub(super) fn receive_family(
    ctx: &Ctx,
    fd: &OwnedFd,
    seq: u32,
    family: Option<u8>,
) -> Result<Vec<Attributes>, KernelError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(|e| ctx.errno(e))?;
        if n == 0 {
            return Err(ctx.protocol("nfnetlink closed the dump"));
        }
        let mut rest = &buf[..n];
        while rest.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let got_seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
            if len < NLMSG_HDRLEN || len > rest.len() {
                return Err(ctx.protocol("truncated nfnetlink message"));
            }
            let body = &rest[NLMSG_HDRLEN..len];
            rest = &rest[((len + 3) & !3).min(rest.len())..];
            if kind == NLMSG_ERROR {
                let code = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| ctx.protocol("truncated nfnetlink error"))?;
                match (code, got_seq == seq) {
                    (0, true) => return Ok(out),
                    (0, false) => continue,
                    _ => return Err(ctx.os(std::io::Error::from_raw_os_error(-code))),
                }
            }
            if got_seq != seq {
                continue;
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                _ if body.len() >= NFGENMSG_LEN && family.is_none_or(|f| body[0] == f) => {
                    out.push(attributes(&body[NFGENMSG_LEN..]));
                }
                _ => {}
            }
        }
    }
}

/// The top-level attributes of a message body: (type without flags, payload).
pub(super) fn attributes(mut b: &[u8]) -> Attributes {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, b[4..len].to_vec()));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

pub(super) fn attr(attrs: &[(u16, Vec<u8>)], kind: u16) -> Option<&[u8]> {
    attrs
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v.as_slice())
}

/// A NUL-terminated string attribute.
pub(super) fn string(attrs: &[(u16, Vec<u8>)], kind: u16) -> Option<String> {
    attr(attrs, kind).map(cstr)
}

pub(super) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The comment in a rule's user data (libnftnl TLVs).
pub(super) fn comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], udata[1] as usize);
        let value = udata.get(2..2 + len)?;
        if kind == NFTNL_UDATA_RULE_COMMENT {
            return Some(cstr(value));
        }
        udata = &udata[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_attributes_and_comments() {
        // NFTA_RULE_CHAIN "vip", then NFTA_RULE_USERDATA holding a comment TLV.
        let mut body = Vec::new();
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&NFTA_RULE_CHAIN.to_ne_bytes());
        body.extend_from_slice(b"vip\0");
        let udata = [&[NFTNL_UDATA_RULE_COMMENT, 4][..], b"nc:\0"].concat();
        body.extend_from_slice(&((4 + udata.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&(NFTA_RULE_USERDATA | 0x8000).to_ne_bytes());
        body.extend_from_slice(&udata);
        let attrs = attributes(&body);
        assert_eq!(string(&attrs, NFTA_RULE_CHAIN).as_deref(), Some("vip"));
        assert_eq!(
            attr(&attrs, NFTA_RULE_USERDATA)
                .and_then(comment)
                .as_deref(),
            Some("nc:")
        );
        assert_eq!(comment(&[1, 1, 7]), None);
    }

    #[test]
    fn messages_are_padded_and_name_their_subsystem() {
        let m = message(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            9,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        assert_eq!(m.len(), NLMSG_HDRLEN + NFGENMSG_LEN);
        assert_eq!(&m[18..20], &10u16.to_be_bytes(), "res_id in network order");
        let m = message(
            NFT_MSG_DELTABLE,
            NLM_F_REQUEST,
            1,
            NFPROTO_INET,
            0,
            &[(NFTA_TABLE_NAME, b"ab\0")],
        );
        assert_eq!(
            m.len(),
            NLMSG_HDRLEN + NFGENMSG_LEN + 8,
            "4 + 3 bytes padded to 8"
        );
        assert_eq!(
            u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize,
            m.len()
        );
        let attrs = attributes(&m[NLMSG_HDRLEN + NFGENMSG_LEN..]);
        assert_eq!(string(&attrs, NFTA_TABLE_NAME).as_deref(), Some("ab"));
    }
}
