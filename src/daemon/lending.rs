//! One request and its reply on the control socket ([`request`], for every client), and the
//! sockets the daemon may lend after the reply (`SCM_RIGHTS`): its nfnetlink socket of each
//! namespace whose survey it keeps, for the `up` that asked, which then writes tables without
//! entering the namespaces to open its own.
//!
//! The reply line comes first. The client, once it has read it, sends one byte; only then do
//! the sockets follow, in batches of at most [`BATCH`] with one byte each: a buffered read
//! of the reply line could otherwise consume a batch's byte, and the kernel would close the
//! descriptors that came with it.

use super::{socket_path, DaemonError, Reply, Request};
use crate::project_name::ProjectName;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Descriptors per message: the kernel takes at most 253 (`SCM_MAX_FD`).
const BATCH: usize = 250;

/// One request, its reply, and the sockets lent after it (as many as `reply.lent` says, or
/// an error).
pub fn request(
    project: &ProjectName,
    req: &Request,
    timeout: Duration,
) -> Result<(Reply, Vec<OwnedFd>), DaemonError> {
    let no_answer = |reason: String| DaemonError::NoAnswer {
        project: project.to_string(),
        reason,
    };
    let mut s = UnixStream::connect(socket_path(project)).map_err(|e| no_answer(e.to_string()))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let mut line = serde_json::to_string(req).map_err(|e| no_answer(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| no_answer(e.to_string()))?;
    let mut text = String::new();
    BufReader::new(&s)
        .read_line(&mut text)
        .map_err(|e| no_answer(e.to_string()))?;
    let reply: Reply =
        serde_json::from_str(&text).map_err(|e| no_answer(format!("{e} in {text:?}")))?;
    if reply.lent.is_empty() {
        return Ok((reply, Vec::new()));
    }
    s.write_all(b"\n").map_err(|e| no_answer(e.to_string()))?;
    let mut fds = Vec::with_capacity(reply.lent.len());
    while fds.len() < reply.lent.len() {
        let got = receive(&s).map_err(|e| no_answer(format!("lent sockets: {e}")))?;
        if got.is_empty() {
            return Err(no_answer("lent sockets: the daemon stopped sending".into()));
        }
        fds.extend(got);
    }
    Ok((reply, fds))
}

/// The descriptors of one batch (none at the end of the stream).
fn receive(s: &UnixStream) -> nix::Result<Vec<OwnedFd>> {
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
        let raw: Vec<RawFd> = batch.iter().map(AsRawFd::as_raw_fd).collect();
        loop {
            stream.writable().await?;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                sendmsg::<()>(
                    stream.as_raw_fd(),
                    &[IoSlice::new(b"s")],
                    &[ControlMessage::ScmRights(&raw)],
                    MsgFlags::empty(),
                    None,
                )
                .map_err(std::io::Error::from)
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
