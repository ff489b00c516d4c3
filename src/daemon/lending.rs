//! One request and its reply on the control socket ([`request`], for every client), and the
//! descriptors that may cross it after the reply (`SCM_RIGHTS`), one way or the other:
//!
//! - lent by the daemon ([`request`] with [`Request::Surveys`]): its nfnetlink socket of each
//!   namespace whose survey it keeps, for the `up` that asked, which then writes tables without
//!   entering the namespaces to open its own. The client, once it has read the reply line,
//!   sends one byte; only then do the sockets follow, in batches of at most [`BATCH`] with one
//!   byte each: a buffered read of the reply line could otherwise consume a batch's byte, and
//!   the kernel would close the descriptors that came with it.
//! - handed to the daemon ([`hand_over`] with [`Request::Hold`]): the client's own nfnetlink
//!   sockets, which the daemon holds until the client closes the connection, and then closes
//!   itself. Closing the last descriptor of an nfnetlink socket runs nf_tables' release
//!   notifier, which waits for the transactions committed before it to be freed (seen on this
//!   machine's 6.18 kernel: `netlink_release` -> `nft_rcv_nl_event` -> `__flush_work` of the
//!   destroy work, which calls `synchronize_rcu`; net/netfilter/nf_tables_api.c): a grace
//!   period, 3-5 ms on a 2-CPU VM, that an `up` which wrote tables paid at its end. The
//!   batches follow the reply line here too, for the same reason.

use super::{socket_path, DaemonError, Reply, Request};
use crate::project_name::ProjectName;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Descriptors per message: the kernel takes at most 253 (`SCM_MAX_FD`).
const BATCH: usize = 250;

/// How long the daemon holds descriptors handed to it when the client neither closes the
/// connection nor exits: a hung client then pays the release itself, and no namespace stays
/// pinned by the daemon for longer.
const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// One request, its reply, and the sockets lent after it (as many as `reply.lent` says, or
/// an error).
pub fn request(
    project: &ProjectName,
    req: &Request,
    timeout: Duration,
) -> Result<(Reply, Vec<OwnedFd>), DaemonError> {
    ask(project, req, timeout)?.answer()
}

/// A request sent, whose reply (and the sockets lent after it) is read by [`Asked::answer`]:
/// the daemon works on it meanwhile. Dropped unanswered, it closes the connection, and the
/// daemon's reply goes nowhere (nothing is lent before the client asks for it).
pub struct Asked {
    project: ProjectName,
    stream: UnixStream,
}

/// Connect and send `req`; its reply is read by [`Asked::answer`].
pub fn ask(project: &ProjectName, req: &Request, timeout: Duration) -> Result<Asked, DaemonError> {
    let stream = send_request(project, req, timeout)?;
    Ok(Asked {
        project: project.clone(),
        stream,
    })
}

impl Asked {
    /// The reply, and the sockets lent after it (as many as `reply.lent` says, or an error).
    pub fn answer(self) -> Result<(Reply, Vec<OwnedFd>), DaemonError> {
        let Asked {
            project,
            stream: mut s,
        } = self;
        let no_answer = no_answer_from(&project);
        let reply = read_reply(&project, &s)?;
        if reply.lent.is_empty() {
            return Ok((reply, Vec::new()));
        }
        s.write_all(b"\n").map_err(|e| no_answer(e.to_string()))?;
        let mut fds = Vec::with_capacity(reply.lent.len());
        while fds.len() < reply.lent.len() {
            let got = receive(s.as_fd()).map_err(|e| no_answer(format!("lent sockets: {e}")))?;
            if got.is_empty() {
                return Err(no_answer("lent sockets: the daemon stopped sending".into()));
            }
            fds.extend(got);
        }
        Ok((reply, fds))
    }
}

/// Hand copies of `fds` to the daemon, which holds them until the returned connection is
/// closed (or [`HOLD_LIMIT`]): the caller closes its own copies first, so that none of its
/// closes is the last.
pub fn hand_over(
    project: &ProjectName,
    fds: &[OwnedFd],
    timeout: Duration,
) -> Result<UnixStream, DaemonError> {
    let no_answer = no_answer_from(project);
    let req = Request::Hold { sockets: fds.len() };
    let (reply, s) = exchange(project, &req, timeout)?;
    if !reply.ok {
        return Err(DaemonError::Refused {
            project: project.to_string(),
            reason: reply.errors.join("; "),
        });
    }
    for batch in fds.chunks(BATCH) {
        send_batch(s.as_fd(), batch)
            .map_err(|e| no_answer(format!("handing sockets over: {e}")))?;
    }
    Ok(s)
}

/// Connect, send `req` and read the reply line; the connection stays open for what follows.
fn exchange(
    project: &ProjectName,
    req: &Request,
    timeout: Duration,
) -> Result<(Reply, UnixStream), DaemonError> {
    let s = send_request(project, req, timeout)?;
    Ok((read_reply(project, &s)?, s))
}

/// Connect and send `req`.
fn send_request(
    project: &ProjectName,
    req: &Request,
    timeout: Duration,
) -> Result<UnixStream, DaemonError> {
    let no_answer = no_answer_from(project);
    let mut s = UnixStream::connect(socket_path(project)).map_err(|e| no_answer(e.to_string()))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let mut line = serde_json::to_string(req).map_err(|e| no_answer(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| no_answer(e.to_string()))?;
    Ok(s)
}

/// The reply line to the request sent on `s`.
fn read_reply(project: &ProjectName, s: &UnixStream) -> Result<Reply, DaemonError> {
    let no_answer = no_answer_from(project);
    let mut text = String::new();
    BufReader::new(s)
        .read_line(&mut text)
        .map_err(|e| no_answer(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| no_answer(format!("{e} in {text:?}")))
}

/// The error of a request to `project`'s daemon that got no (usable) answer, and why.
fn no_answer_from(project: &ProjectName) -> impl Fn(String) -> DaemonError + '_ {
    move |reason| DaemonError::NoAnswer {
        project: project.to_string(),
        reason,
    }
}

/// The descriptors of one batch (none at the end of the stream).
fn receive(s: BorrowedFd<'_>) -> nix::Result<Vec<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; BATCH]);
    let msg = recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut out = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these descriptors for this process; nothing
            // else owns them.
            out.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(out)
}

/// One batch of descriptors (at most [`BATCH`]), with the byte that carries them.
fn send_batch(s: BorrowedFd<'_>, batch: &[OwnedFd]) -> nix::Result<()> {
    let raw: Vec<RawFd> = batch.iter().map(AsRawFd::as_raw_fd).collect();
    sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(b"s")],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
}

/// Send `fds` on `stream` after the client's byte, in batches (the daemon's side).
pub async fn send(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
    stream: &tokio::net::UnixStream,
    fds: Vec<OwnedFd>,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    reader.read_exact(&mut byte).await?;
    for batch in fds.chunks(BATCH) {
        loop {
            stream.writable().await?;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                send_batch(stream.as_fd(), batch).map_err(std::io::Error::from)
            });
            match sent {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Take the `count` descriptors a client hands over after the reply ([`hand_over`]), and hold
/// them until it closes the connection: they are closed then, on the blocking pool (each
/// close may wait for a grace period; see the module's comment). Returns once they are taken.
pub async fn hold(
    mut reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    stream: tokio::net::unix::OwnedWriteHalf,
    count: usize,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    // The count is the client's word: room for one batch, more as they come.
    let mut fds = Vec::with_capacity(count.min(BATCH));
    while fds.len() < count {
        let got = stream
            .as_ref()
            .async_io(tokio::io::Interest::READABLE, || {
                receive(stream.as_ref().as_fd()).map_err(std::io::Error::from)
            })
            .await?;
        if got.is_empty() {
            break;
        }
        fds.extend(got);
    }
    tokio::spawn(async move {
        let mut rest = [0u8; 1];
        // Any byte or none (the end): the client has closed its copies by then.
        let _ = tokio::time::timeout(HOLD_LIMIT, reader.read(&mut rest)).await;
        drop(stream);
        let _ = tokio::task::spawn_blocking(move || drop(fds)).await;
    });
    Ok(())
}
