//! The nfnetlink wire format of nf_tables (linux/netfilter/nf_tables.h): messages with nested
//! attributes, batches (one transaction), and the conversation on a socket: every message of a
//! batch asks for an acknowledgement, so the kernel's errno comes back per message.
//!
//! Each message is an `nlmsghdr` of type `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*`, an
//! `nfgenmsg` (family, version, resource id), then attributes padded to 4 bytes. Integers in
//! nf_tables attributes are big-endian; the netlink headers are in host order.

use super::super::{Ctx, KernelError};
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
pub const NFPROTO_INET: u8 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
const NLM_F_ECHO: u16 = 0x8;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLMSG_HDRLEN: usize = 16;
pub const NFGENMSG_LEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;
/// `NFT_MSG_NEWGEN`: the message that ends every committed transaction, with its generation.
pub const NFT_MSG_NEWGEN: u16 = NFNL_SUBSYS_NFTABLES << 8 | 15;
const NFTA_GEN_ID: u16 = 1;
/// `NFNL_BATCH_GENID` (linux/netfilter/nfnetlink.h): the begin message's attribute naming the
/// generation a batch was made for.
const NFNL_BATCH_GENID: u16 = 1;

/// nf_tables message types (`enum nf_tables_msg_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum MsgType {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    GetChain = 4,
    DelChain = 5,
    NewRule = 6,
    GetRule = 7,
    DelRule = 8,
    NewSet = 9,
    GetSet = 10,
    DelSet = 11,
    NewSetElem = 12,
    GetSetElem = 13,
    DelSetElem = 14,
    GetGen = 16,
}

/// A message under construction: attributes are appended, nests opened and closed.
pub struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    /// An nf_tables message of family inet.
    pub fn new(kind: MsgType, flags: u16, seq: u32) -> Msg {
        Msg::raw(
            NFNL_SUBSYS_NFTABLES << 8 | kind as u16,
            flags,
            seq,
            NFPROTO_INET,
            0,
        )
    }

    /// Any nfnetlink message (a batch delimiter carries the subsystem as its resource id).
    pub fn raw(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.push(family);
        buf.push(0);
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn pad(&mut self) {
        self.buf.resize((self.buf.len() + 3) & !3, 0);
    }

    pub fn bytes(&mut self, kind: u16, payload: &[u8]) -> &mut Msg {
        self.buf
            .extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, kind: u16, s: &str) -> &mut Msg {
        self.bytes(kind, &[s.as_bytes(), &[0]].concat())
    }

    pub fn u32(&mut self, kind: u16, v: u32) -> &mut Msg {
        self.bytes(kind, &v.to_be_bytes())
    }

    pub fn u64(&mut self, kind: u16, v: u64) -> &mut Msg {
        self.bytes(kind, &v.to_be_bytes())
    }

    pub fn begin(&mut self, kind: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end(&mut self) -> &mut Msg {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The message with its length filled in.
    pub fn finish(mut self) -> Vec<u8> {
        while !self.nests.is_empty() {
            self.end();
        }
        let len = (self.buf.len() as u32).to_ne_bytes();
        self.buf[..4].copy_from_slice(&len);
        self.buf
    }
}

/// Messages sent as one transaction: all of them take effect, or none.
///
/// Only the last message asks for an ack. nfnetlink reports a message's error whether or not
/// it asked for an ack, goes on through the rest of the batch, and acknowledges the last one
/// after the errors ([nfnetlink_rcv_batch](https://elixir.bootlin.com/linux/v6.12/C/ident/nfnetlink_rcv_batch)),
/// so that ack still ends the reading; an ack per message had cost the kernel a datagram
/// each, and the writer a receive each: some twenty for every table made.
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// The sequence number of the first message.
    first: u32,
    count: u32,
    /// Where the last message starts in `buf`.
    last_at: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            buf: batch_begin().finish(),
            seq: 2,
            first: 2,
            count: 0,
            last_at: 0,
        }
    }

    /// A message of the batch; `build` adds its attributes. The first one asks
    /// for an echo: the kernel then sends the transaction's NFT_MSG_NEWGEN to the writer too
    /// (`nf_tables_gen_notify` reports to the sender when the first message it commits, the
    /// one after the begin, has NLM_F_ECHO; that message's own notification comes back as
    /// well), so a writer learns the generation of its own commit without asking for it, and
    /// without a race with the next writer's.
    pub fn push(&mut self, kind: MsgType, flags: u16, build: impl FnOnce(&mut Msg)) {
        let echo = if self.count == 0 { NLM_F_ECHO } else { 0 };
        let mut m = Msg::new(kind, NLM_F_REQUEST | echo | flags, self.seq);
        build(&mut m);
        self.last_at = self.buf.len();
        self.buf.extend(m.finish());
        self.seq += 1;
        self.count += 1;
    }

    /// How many messages the batch holds.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes to send: begin, the messages (the last one asking for an ack), end.
    pub fn finish(mut self) -> Finished {
        if self.count > 0 {
            set_flags(&mut self.buf[self.last_at..], |f| f | NLM_F_ACK);
        }
        let end = Msg::raw(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        self.buf.extend(end.finish());
        Finished {
            bytes: self.buf,
            first: self.first,
            count: self.count,
        }
    }
}

/// An nfnetlink socket of the calling thread's namespace.
pub fn open(ctx: &Ctx) -> Result<OwnedFd, KernelError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| ctx.errno(e))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| ctx.errno(e))?;
    // A big batch is answered with one ack per message: room for all of them.
    setsockopt(&fd, sockopt::RcvBuf, &(4 << 20)).map_err(|e| ctx.errno(e))?;
    Ok(fd)
}

/// An nfnetlink socket inside the namespace behind `ns` (`label` names it in errors): it
/// stays in that namespace and may then be used from any thread, so a reader that samples a
/// namespace again and again (the daemon's stats) opens it once.
pub fn open_in(ns: BorrowedFd<'_>, label: Option<&str>) -> Result<OwnedFd, KernelError> {
    let ctx = Ctx::new("open netlink socket", "NETLINK_NETFILTER", label);
    super::super::netns::run_in_fd(ns, || open(&ctx)).map_err(|e| ctx.errno(e))?
}

/// The namespace of a socket as the kernel's cookie for it: unlike the namespace's inode
/// number, a cookie is never given to another namespace until the machine restarts, so a
/// namespace deleted and made again under the same name is told apart.
pub fn netns_cookie(ctx: &Ctx, fd: &OwnedFd) -> Result<u64, KernelError> {
    /// `SO_NETNS_COOKIE` (Linux 5.14), absent from the libc crate.
    const SO_NETNS_COOKIE: nix::libc::c_int = 71;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `cookie`, which is that large.
    let rc = unsafe {
        nix::libc::getsockopt(
            fd.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    match rc {
        0 => Ok(cookie),
        _ => Err(ctx.errno(nix::errno::Errno::last())),
    }
}

/// Read and drop whatever is queued on `fd`, without blocking: what a process killed in the
/// middle of a conversation left there would otherwise be taken for the next one's answers.
pub fn discard_pending(fd: &OwnedFd) -> Result<(), nix::errno::Errno> {
    with_recv_buffer(|buf| loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => return Ok(()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    })
}

/// Send a batch and wait for the ack of its last message: the generation of the committed
/// transaction when the kernel announced it (it does so before the ack). The first error
/// the kernel reports (with its errno and extended-ack text) is returned; the transaction was
/// then aborted.
pub fn commit(ctx: &Ctx, fd: &OwnedFd, batch: Batch) -> Result<Option<u32>, KernelError> {
    commit_finished(ctx, fd, &batch.finish())
}

/// A batch ready to send. Its bytes name no namespace and no socket (sequence numbers start
/// over in each batch, the kernel fills the port in), so one batch can be sent to many.
#[derive(Debug)]
pub struct Finished {
    pub(super) bytes: Vec<u8>,
    /// The first message's sequence number, and how many messages there are.
    first: u32,
    count: u32,
}

impl Finished {
    /// The batch made for a ruleset at `generation`: its begin message names that generation,
    /// and its first message no longer asks for an echo.
    fn checked(&self, generation: u32) -> Vec<u8> {
        let mut begin = batch_begin();
        begin.u32(NFNL_BATCH_GENID, generation);
        let mut out = begin.finish();
        let begin_len =
            u32::from_ne_bytes([self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]])
                as usize;
        let first_at = out.len();
        out.extend_from_slice(&self.bytes[begin_len..]);
        set_flags(&mut out[first_at..], |f| f & !NLM_F_ECHO);
        out
    }
}

/// The message that begins a batch of nf_tables messages (sequence number 1).
fn batch_begin() -> Msg {
    Msg::raw(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        1,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
}

/// Change the flags of the message at the start of `msg` (`nlmsg_flags`: the u16 after
/// `nlmsg_len` and `nlmsg_type`, in host order).
fn set_flags(msg: &mut [u8], change: impl FnOnce(u16) -> u16) {
    let flags = change(u16::from_ne_bytes([msg[6], msg[7]]));
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
}

/// The generation that follows `generation`: the kernel counts one per committed transaction
/// and skips 0 when it wraps (`nf_tables_commit`).
pub fn next_generation(generation: u32) -> u32 {
    generation.checked_add(1).unwrap_or(1)
}

/// [`commit_finished`] of a batch for a namespace whose ruleset the caller knows to be at
/// generation `at`. The batch is then sent checked against it (`NFNL_BATCH_GENID`) and
/// without its echo: the kernel commits it only if no other transaction came in between, and
/// its generation is then the next one, known without the NFT_MSG_NEWGEN that an echo costs
/// the kernel to build and the writer to receive (some 20% of a writer's time when a scale
/// updates a set element in 200 namespaces). A ruleset that moved on makes the kernel refuse
/// the batch whole (`nf_tables_valid_genid`: ERESTART), and it is sent again unchecked.
///
/// Only a batch that changes something moves the generation on: the caller passes `at` for
/// such a batch alone. A batch of one message is sent unchecked in any case: the table alone
/// that an update begins with changes nothing.
pub fn commit_at(
    ctx: &Ctx,
    fd: &OwnedFd,
    batch: &Finished,
    at: Option<u32>,
) -> Result<Option<u32>, KernelError> {
    if let Some(at) = at.filter(|g| *g != 0 && batch.count > 1) {
        let checked = batch.checked(at);
        match send_and_wait(ctx, fd, &checked, batch.first, batch.count) {
            Ok(_) => return Ok(Some(next_generation(at))),
            Err(e) if e.errno() == Some(nix::errno::Errno::ERESTART as i32) => {}
            Err(e) => return Err(e),
        }
    }
    commit_finished(ctx, fd, batch)
}

/// [`commit`] of a batch already finished.
pub fn commit_finished(
    ctx: &Ctx,
    fd: &OwnedFd,
    batch: &Finished,
) -> Result<Option<u32>, KernelError> {
    send_and_wait(ctx, fd, &batch.bytes, batch.first, batch.count)
}

/// Send a batch's `bytes` (its messages numbered from `first`, `count` of them) and wait for
/// the ack of the last one (see [`commit`]).
fn send_and_wait(
    ctx: &Ctx,
    fd: &OwnedFd,
    bytes: &[u8],
    first: u32,
    count: u32,
) -> Result<Option<u32>, KernelError> {
    if count == 0 {
        return Ok(None);
    }
    let mut sent = 0;
    while sent < bytes.len() {
        sent +=
            send(fd.as_raw_fd(), &bytes[sent..], MsgFlags::empty()).map_err(|e| ctx.errno(e))?;
    }
    let last = first + count - 1;
    let mut error: Option<KernelError> = None;
    let mut generation = None;
    with_recv_buffer(|buf| loop {
        let n = recv(fd.as_raw_fd(), buf, MsgFlags::empty()).map_err(|e| ctx.errno(e))?;
        if n == 0 {
            return Err(ctx.protocol("nfnetlink closed the socket"));
        }
        for (kind, seq, body) in messages(ctx, &buf[..n])? {
            if kind != NLMSG_ERROR {
                generation = generation.or(new_generation(kind, body));
                continue;
            }
            let code = error_code(ctx, body)?;
            if code != 0 && error.is_none() {
                error = Some(os_error(ctx, code, body));
            }
            // A batch refused whole is answered on the begin message's sequence number.
            if seq == last || (code != 0 && seq < first) {
                return error.take().map_or(Ok(generation), Err);
            }
        }
    })
}

/// The generation that a message announces, if it is an NFT_MSG_NEWGEN (a message `kind`
/// with its `body`).
fn new_generation(kind: u16, body: &[u8]) -> Option<u32> {
    if kind != NFT_MSG_NEWGEN {
        return None;
    }
    let attrs = attributes(body.get(NFGENMSG_LEN..)?);
    attr(&attrs, NFTA_GEN_ID)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
}

/// Bytes a receive may take: the kernel's largest netlink datagram for nf_tables.
const RECV_LEN: usize = 64 * 1024;

thread_local! {
    /// One receive buffer per thread, reused by every request and commit made on it: a table
    /// read makes some 25 requests, and a fresh zeroed 64 KiB buffer for each was one source
    /// of the malloc, free and memset at the top of a no-change `up`'s profile.
    static RECV: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Run `f` with this thread's receive buffer (a call made from inside `f` gets its own).
fn with_recv_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = RECV.with(std::cell::Cell::take);
    if buf.len() < RECV_LEN {
        buf = vec![0u8; RECV_LEN];
    }
    let out = f(&mut buf);
    RECV.with(|cell| cell.set(buf));
    out
}

fn error_code(ctx: &Ctx, body: &[u8]) -> Result<i32, KernelError> {
    body.get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| ctx.protocol("truncated nfnetlink error"))
}

/// The errno with the kernel's extended-ack message when it sent one (NLMSGERR_ATTR_MSG
/// after the echoed header).
fn os_error(ctx: &Ctx, code: i32, body: &[u8]) -> KernelError {
    let io = std::io::Error::from_raw_os_error(-code);
    let extack = body
        .get(4 + NLMSG_HDRLEN..)
        .map(attributes)
        .and_then(|attrs| attr(&attrs, 1).map(cstr));
    ctx.os_with_message(io, extack.filter(|m| !m.is_empty()))
}

/// A netlink message of a reply: (type, sequence number, body).
pub type Reply<'b> = (u16, u32, &'b [u8]);

/// The netlink messages of one datagram.
pub fn messages<'b>(ctx: &Ctx, mut rest: &'b [u8]) -> Result<Vec<Reply<'b>>, KernelError> {
    let mut out = Vec::new();
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(ctx.protocol("truncated nfnetlink message"));
        }
        out.push((kind, seq, &rest[NLMSG_HDRLEN..len]));
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    Ok(out)
}

/// A message's attributes: (type, payload).
pub type Attributes = Vec<(u16, Vec<u8>)>;

/// Send one request (a get, or a dump when `flags` has NLM_F_DUMP) and collect the attributes
/// of each inet object in the replies until the end of the dump or the request's ack.
pub fn request(
    ctx: &Ctx,
    fd: &OwnedFd,
    msg: Msg,
    seq: u32,
) -> Result<Vec<Attributes>, KernelError> {
    request_family(ctx, fd, msg, seq, Some(NFPROTO_INET))
}

/// One request that the kernel answers with one message (a GET of one object), sent without
/// asking for an ack: the answer's attributes, or the error the kernel sent instead. An ack
/// would be a second message to build and a second receive, for nothing the answer does not
/// say already (the daemon asks each namespace's ruleset generation at every survey it
/// answers: hundreds of requests).
pub fn request_one(ctx: &Ctx, fd: &OwnedFd, msg: Msg, seq: u32) -> Result<Attributes, KernelError> {
    converse(ctx, fd, msg, seq, |kind, body| match kind {
        NLMSG_ERROR => match error_code(ctx, body)? {
            0 => Err(ctx.protocol("an ack instead of an answer")),
            code => Err(os_error(ctx, code, body)),
        },
        NLMSG_DONE => Err(ctx.protocol("no answer")),
        _ => body
            .get(NFGENMSG_LEN..)
            .map(|attrs| Some(attributes(attrs)))
            .ok_or_else(|| ctx.protocol("truncated nfnetlink answer")),
    })
}

/// [`request`] for objects of `family` (None: of any family, as a conntrack dump of both).
pub fn request_family(
    ctx: &Ctx,
    fd: &OwnedFd,
    msg: Msg,
    seq: u32,
    family: Option<u8>,
) -> Result<Vec<Attributes>, KernelError> {
    let mut out = Vec::new();
    converse(ctx, fd, msg, seq, |kind, body| match kind {
        NLMSG_ERROR => match error_code(ctx, body)? {
            0 => Ok(Some(std::mem::take(&mut out))),
            code => Err(os_error(ctx, code, body)),
        },
        NLMSG_DONE => Ok(Some(std::mem::take(&mut out))),
        _ if body.len() >= NFGENMSG_LEN && family.is_none_or(|f| body[0] == f) => {
            out.push(attributes(&body[NFGENMSG_LEN..]));
            Ok(None)
        }
        _ => Ok(None),
    })
}

/// Send `msg` and read the replies numbered `seq`, each given to `take` (its type and body),
/// until `take` has what it waited for.
fn converse<T>(
    ctx: &Ctx,
    fd: &OwnedFd,
    msg: Msg,
    seq: u32,
    mut take: impl FnMut(u16, &[u8]) -> Result<Option<T>, KernelError>,
) -> Result<T, KernelError> {
    send(fd.as_raw_fd(), &msg.finish(), MsgFlags::empty()).map_err(|e| ctx.errno(e))?;
    with_recv_buffer(|buf| loop {
        let n = recv(fd.as_raw_fd(), buf, MsgFlags::empty()).map_err(|e| ctx.errno(e))?;
        if n == 0 {
            return Err(ctx.protocol("nfnetlink closed the socket"));
        }
        for (kind, got_seq, body) in messages(ctx, &buf[..n])? {
            if got_seq != seq {
                continue;
            }
            if let Some(done) = take(kind, body)? {
                return Ok(done);
            }
        }
    })
}

/// The attributes of a message body or of a nest: (type without flags, payload).
pub fn attributes(mut b: &[u8]) -> Attributes {
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

pub fn attr(attrs: &[(u16, Vec<u8>)], kind: u16) -> Option<&[u8]> {
    attrs
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v.as_slice())
}

/// A NUL-terminated string attribute.
pub fn string(attrs: &[(u16, Vec<u8>)], kind: u16) -> Option<String> {
    attr(attrs, kind).map(cstr)
}

/// A big-endian integer attribute.
pub fn be64(attrs: &[(u16, Vec<u8>)], kind: u16) -> Option<u64> {
    let b: [u8; 8] = attr(attrs, kind)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

pub fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_padded_and_nests_measured() {
        let mut m = Msg::new(MsgType::DelTable, NLM_F_REQUEST, 1);
        m.str(1, "ab");
        m.begin(4).u32(1, 3).end();
        let b = m.finish();
        assert_eq!(b.len(), NLMSG_HDRLEN + NFGENMSG_LEN + 8 + 12);
        assert_eq!(
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize,
            b.len()
        );
        let attrs = attributes(&b[NLMSG_HDRLEN + NFGENMSG_LEN..]);
        assert_eq!(string(&attrs, 1).as_deref(), Some("ab"));
        let inner = attributes(attr(&attrs, 4).unwrap());
        assert_eq!(attr(&inner, 1), Some(&3u32.to_be_bytes()[..]));
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end() {
        let mut batch = Batch::new();
        batch.push(MsgType::NewTable, NLM_F_CREATE, |m| {
            m.str(1, "t");
        });
        assert_eq!(batch.len(), 1);
        let Finished {
            bytes,
            first,
            count,
        } = batch.finish();
        assert_eq!((first, count), (2, 1));
        let ctx = Ctx::new("t", "t", None);
        let msgs = messages(&ctx, &bytes).unwrap();
        let kinds: Vec<u16> = msgs.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                NFNL_MSG_BATCH_BEGIN,
                NFNL_SUBSYS_NFTABLES << 8,
                NFNL_MSG_BATCH_END
            ]
        );
        assert_eq!(&msgs[0].2[2..4], &NFNL_SUBSYS_NFTABLES.to_be_bytes());
    }

    #[test]
    fn only_the_last_message_of_a_batch_asks_for_an_ack() {
        let mut batch = Batch::new();
        for name in ["a", "b", "c"] {
            batch.push(MsgType::NewTable, NLM_F_CREATE, |m| {
                m.str(1, name);
            });
        }
        let Finished {
            bytes,
            first,
            count,
        } = batch.finish();
        assert_eq!((first, count), (2, 3));
        let flags: Vec<(u32, u16)> = {
            let mut rest = &bytes[..];
            let mut out = Vec::new();
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let flags = u16::from_ne_bytes([rest[6], rest[7]]);
                let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                out.push((seq, flags & (NLM_F_ACK | NLM_F_ECHO)));
                rest = &rest[len..];
            }
            out
        };
        assert_eq!(
            flags,
            [(1, 0), (2, NLM_F_ECHO), (3, 0), (4, NLM_F_ACK), (5, 0)],
            "begin, the echoed first, a plain one, the acked last, end"
        );
    }
}
