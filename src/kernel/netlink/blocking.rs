//! rtnetlink dumps on a plain blocking socket, for a thread that reads a namespace in one go
//! (see [`crate::kernel::survey`]): no connection task, no runtime, no channel between the
//! request and its replies; the thread sends a dump, reads it to its end, sends the next.
//! The replies give what [`Netlink`]'s listings give; links are parsed only as far as they are
//! read ([`BlockingNetlink::links`]).

use super::addrs::{address_request, listed_address, listed_route, route_request, LISTED_FAMILIES};
use super::links::{links_request, parse_link_payload};
use super::*;
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily as SockFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use rtnetlink::packet_core::{NetlinkBuffer, NetlinkHeader};
use std::os::fd::OwnedFd;

/// The length of a netlink message's header (`struct nlmsghdr`).
const NLMSG_HEADER_LEN: usize = 16;
/// Message types below this one are netlink's own (`NLMSG_DONE`, `NLMSG_ERROR`, ...:
/// linux/netlink.h).
const NLMSG_MIN_TYPE: u16 = 0x10;
/// The largest datagram a dump sends (the kernel caps its dump buffers at 32 KiB), with room.
const RECV_LEN: usize = 64 * 1024;

/// A NETLINK_ROUTE socket of the namespace of the thread that opened it (a netlink socket
/// keeps its namespace), one dump at a time.
pub struct BlockingNetlink {
    fd: OwnedFd,
    seq: u32,
    label: Option<String>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for BlockingNetlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingNetlink")
            .field("fd", &self.fd)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl BlockingNetlink {
    /// A socket in the calling thread's namespace; `label` names the namespace in errors.
    pub fn open_current(label: Option<&str>) -> Result<Self, KernelError> {
        let ctx = Ctx::new("open netlink socket", "NETLINK_ROUTE", label);
        let fd = socket(
            SockFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| ctx.errno(e))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| ctx.errno(e))?;
        Ok(BlockingNetlink {
            fd,
            seq: 0,
            label: label.map(str::to_string),
            buf: vec![0; RECV_LEN],
        })
    }

    fn ctx(&self, what: &str) -> Ctx {
        Ctx::new("list", what, self.label.as_deref())
    }

    /// Every link, without statistics (as [`Netlink::links`]).
    pub fn links(&mut self) -> Result<Vec<Link>, KernelError> {
        self.dump_with("links", links_request(), |reply| {
            parse_link_payload(reply.payload())
        })
    }

    /// Every address (as [`Netlink::addresses`]).
    pub fn addresses(&mut self) -> Result<Vec<(u32, IpNetwork)>, KernelError> {
        let mut out = Vec::new();
        for family in LISTED_FAMILIES {
            let msg = RouteNetlinkMessage::GetAddress(address_request(family));
            let replies = self.dump("addresses", msg)?;
            out.extend(
                replies
                    .into_iter()
                    .filter_map(|m| listed_address(family, m)),
            );
        }
        Ok(out)
    }

    /// Unicast routes of the main table (as [`Netlink::routes`]). The kernel is asked for
    /// that table only (strict checking, Linux 4.20): a namespace's local table holds most of
    /// its routes, which would be sent and parsed to be dropped. A kernel that cannot filter
    /// sends every table, and the parse keeps the main one as before. A family whose main
    /// table was never made (no route of it yet) is answered ENOENT when it is asked for alone
    /// ([inet_dump_fib](https://elixir.bootlin.com/linux/v6.12/C/ident/inet_dump_fib)): none.
    pub fn routes(&mut self) -> Result<Vec<Route>, KernelError> {
        self.strict_checking();
        let mut out = Vec::new();
        for family in LISTED_FAMILIES {
            let mut msg = route_request(family);
            msg.header.table = RouteHeader::RT_TABLE_MAIN;
            let replies = match self.dump("routes", RouteNetlinkMessage::GetRoute(msg)) {
                Err(e) if e.errno() == Some(nix::libc::ENOENT) => Vec::new(),
                replies => replies?,
            };
            out.extend(replies.into_iter().filter_map(|m| listed_route(family, m)));
        }
        Ok(out)
    }

    /// Ask the kernel to honour the filters of the dump requests that follow
    /// (`NETLINK_GET_STRICT_CHK`). Best effort: without it a dump is only wider.
    fn strict_checking(&self) {
        /// From linux/netlink.h, not in the libc crate for every target.
        const NETLINK_GET_STRICT_CHK: nix::libc::c_int = 12;
        let on: nix::libc::c_int = 1;
        // SAFETY: the kernel reads an int from `on`, which is one and outlives the call.
        let _ = unsafe {
            nix::libc::setsockopt(
                self.fd.as_raw_fd(),
                nix::libc::SOL_NETLINK,
                NETLINK_GET_STRICT_CHK,
                (&on as *const nix::libc::c_int).cast(),
                std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
            )
        };
    }

    /// One dump, taken again when a concurrent change interrupted it (`NLM_F_DUMP_INTR`),
    /// its replies parsed whole.
    fn dump(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
        self.dump_with(what, msg, |reply| {
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(reply.buffer)
                .ok()?
                .payload
            {
                NetlinkPayload::InnerMessage(m) => Some(m),
                _ => None,
            }
        })
    }

    /// [`BlockingNetlink::dump`], each reply given to `parse` as it came: what it returns is
    /// kept. A reply it cannot read is skipped, as the connection's codec
    /// skips a message it does not know for the asynchronous listings.
    fn dump_with<T>(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        parse: impl Fn(&NetlinkBuffer<&[u8]>) -> Option<T>,
    ) -> Result<Vec<T>, KernelError> {
        let ctx = self.ctx(what);
        for _ in 0..8 {
            let (out, interrupted) = self.dump_once(&ctx, msg.clone(), &parse)?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(ctx.protocol("the dump kept being interrupted by concurrent changes"))
    }

    fn dump_once<T>(
        &mut self,
        ctx: &Ctx,
        msg: RouteNetlinkMessage,
        parse: &impl Fn(&NetlinkBuffer<&[u8]>) -> Option<T>,
    ) -> Result<(Vec<T>, bool), KernelError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut bytes = vec![0u8; req.buffer_len()];
        req.serialize(&mut bytes);
        send(self.fd.as_raw_fd(), &bytes, MsgFlags::empty()).map_err(|e| ctx.errno(e))?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty())
                .map_err(|e| ctx.errno(e))?;
            if n == 0 {
                return Err(ctx.protocol("the kernel closed the dump"));
            }
            let mut rest = &self.buf[..n];
            while rest.len() >= NLMSG_HEADER_LEN {
                let Ok(len) = NetlinkBuffer::new_checked(rest).map(|h| h.length() as usize) else {
                    return Err(ctx.protocol("truncated netlink message"));
                };
                let reply = NetlinkBuffer::new(&rest[..len]);
                rest = &rest[((len + 3) & !3).min(rest.len())..];
                if reply.sequence_number() != seq {
                    continue;
                }
                interrupted |= reply.flags() & NLM_F_DUMP_INTR != 0;
                if reply.message_type() >= NLMSG_MIN_TYPE {
                    out.extend(parse(&reply));
                    continue;
                }
                let Ok(control) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(reply.buffer)
                else {
                    continue;
                };
                match control.payload {
                    NetlinkPayload::Done(d) if d.code == 0 => return Ok((out, interrupted)),
                    NetlinkPayload::Done(d) => {
                        return Err(ctx.os(std::io::Error::from_raw_os_error(d.code.abs())))
                    }
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok((out, interrupted)),
                    NetlinkPayload::Error(e) => return Err(nl_error(ctx, &e)),
                    NetlinkPayload::Overrun(_) => {
                        return Err(ctx.protocol("overrun: the kernel dropped replies"))
                    }
                    // Noop, and whatever kinds the (non-exhaustive) payload gains.
                    _ => {}
                }
            }
        }
    }
}
