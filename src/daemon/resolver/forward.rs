//! Forwarding the names the project does not know.
//!
//! **Where from.** A query is forwarded from the asking replica's own network namespace, not
//! from the host's, because then the replica's routing, its `x-policy` egress rules and its
//! VIPs apply to its DNS traffic exactly as to everything else it sends: a `dns:` server that
//! is a service of the project (or its VIP) is reached over the project network as the replica
//! would reach it; a replica on internal networks only has no way out, and neither have its
//! queries; nothing on the host has to route to the project's private addresses. Docker's
//! embedded resolver does the same. The one exception is the host's own loopback resolvers
//! (127.0.0.53 of systemd-resolved, a local dnsmasq): they exist only in the host namespace,
//! so those upstreams are queried from the daemon's namespace (`Upstream::from_host`).
//!
//! **How.** Each namespace has one connected UDP socket per upstream, opened once on the
//! thread that entered the namespace (a socket keeps the namespace it was created in). A
//! connected socket reports ICMP port-unreachable as ECONNREFUSED, so a dead upstream fails
//! at once instead of after a timeout. Queries are sent under a fresh random ID, matched back
//! by ID, and returned with the client's ID. TCP upstream connections are made per query
//! (only for TCP clients), their socket created on a short-lived thread in the namespace.
//!
//! **Failover.** The first upstream is asked; if it has not answered within
//! [`TRY_AFTER`], or answers SERVFAIL or REFUSED, or is unreachable, the next is asked too,
//! while a late answer from an earlier one is still taken. The first answer that is neither
//! SERVFAIL nor REFUSED is passed through byte for byte (so NXDOMAIN stays NXDOMAIN, with the
//! upstream's flags and EDNS); if none comes, the last SERVFAIL or REFUSED received is, and
//! else our own SERVFAIL after at most [`BUDGET`].

use super::answer::servfail;
use crate::model::daemon::Upstream;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

/// Ask the next upstream when the current one has not answered within this.
pub const TRY_AFTER: Duration = Duration::from_millis(1000);
/// Give up (SERVFAIL) after this, whatever happens: below the 5 s clients wait by default.
pub const BUDGET: Duration = Duration::from_millis(3500);
/// At most this many queries in flight per upstream socket.
const MAX_PENDING: usize = 1024;

type Pending = Mutex<HashMap<u16, oneshot::Sender<Option<Vec<u8>>>>>;

/// A connected UDP socket to one upstream, shared by all queries of a namespace.
pub struct UdpUpstream {
    sock: UdpSocket,
    pending: Pending,
}

/// An upstream socket and the task reading its answers (aborted when dropped).
pub struct UdpHandle {
    pub upstream: Arc<UdpUpstream>,
    reader: AbortHandle,
}

impl Drop for UdpHandle {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl UdpUpstream {
    /// Wrap a connected, non-blocking socket and start its reader. Needs a runtime context.
    pub fn start(sock: std::net::UdpSocket) -> std::io::Result<UdpHandle> {
        let upstream = Arc::new(UdpUpstream {
            sock: UdpSocket::from_std(sock)?,
            pending: Mutex::new(HashMap::new()),
        });
        let u = upstream.clone();
        let reader = tokio::spawn(async move { u.read_loop().await }).abort_handle();
        Ok(UdpHandle { upstream, reader })
    }

    async fn read_loop(&self) {
        let mut buf = vec![0u8; 65535];
        loop {
            match self.sock.recv(&mut buf).await {
                Ok(n) if n >= 12 => {
                    let id = u16::from_be_bytes([buf[0], buf[1]]);
                    let tx = self
                        .pending
                        .lock()
                        .map(|mut p| p.remove(&id))
                        .ok()
                        .flatten();
                    if let Some(tx) = tx {
                        let _ = tx.send(Some(buf[..n].to_vec()));
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // Nothing listens there: fail every query waiting on it now.
                    if let Ok(mut p) = self.pending.lock() {
                        for (_, tx) in p.drain() {
                            let _ = tx.send(None);
                        }
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// One exchange; `None` when the upstream is unreachable or busy, or on timeout.
    async fn query(&self, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut p = self.pending.lock().ok()?;
            if p.len() >= MAX_PENDING {
                return None;
            }
            let mut id = fastrand::u16(..);
            while p.contains_key(&id) {
                id = fastrand::u16(..);
            }
            p.insert(id, tx);
            id
        };
        let mut out = packet.to_vec();
        out[..2].copy_from_slice(&id.to_be_bytes());
        let result = match self.sock.send(&out).await {
            Ok(_) => tokio::time::timeout(timeout, rx)
                .await
                .ok()
                .and_then(|r| r.ok())
                .flatten(),
            Err(_) => None,
        };
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        result
    }
}

/// How a namespace reaches its upstreams.
pub struct Route {
    /// The namespace (None: the daemon's own), for TCP sockets.
    pub netns: Option<Arc<OwnedFd>>,
    pub udp: Option<Arc<UdpUpstream>>,
}

/// Forward `packet` to `upstreams` (each with its route); the answer to send to the client.
pub async fn forward(packet: &[u8], upstreams: &[(Upstream, Route)], tcp: bool) -> Vec<u8> {
    let mut attempts = FuturesUnordered::new();
    let deadline = tokio::time::Instant::now() + BUDGET;
    let mut next = 0;
    let mut last_bad: Option<Vec<u8>> = None;
    let attempt = |i: usize| {
        let (up, route) = &upstreams[i];
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        async move {
            if tcp {
                tcp_query(up.addr, route.netns.clone(), packet, remaining).await
            } else {
                match &route.udp {
                    Some(u) => u.query(packet, remaining).await,
                    None => None,
                }
            }
        }
    };
    if upstreams.is_empty() {
        return servfail(packet);
    }
    attempts.push(attempt(0));
    next += 1;
    let tick = tokio::time::sleep(TRY_AFTER);
    tokio::pin!(tick);
    let overall = tokio::time::sleep_until(deadline);
    tokio::pin!(overall);
    loop {
        tokio::select! {
            Some(res) = attempts.next() => {
                match res {
                    Some(mut r) if r.len() >= 12 => {
                        r[..2].copy_from_slice(&packet[..2]);
                        let rcode = r[3] & 0x0f;
                        if rcode != 2 && rcode != 5 {
                            return r;
                        }
                        last_bad = Some(r);
                    }
                    _ => {}
                }
                if next < upstreams.len() {
                    attempts.push(attempt(next));
                    next += 1;
                    tick.as_mut().reset(tokio::time::Instant::now() + TRY_AFTER);
                } else if attempts.is_empty() {
                    break;
                }
            }
            _ = &mut tick, if next < upstreams.len() => {
                attempts.push(attempt(next));
                next += 1;
                tick.as_mut().reset(tokio::time::Instant::now() + TRY_AFTER);
            }
            _ = &mut overall => break,
        }
    }
    last_bad.unwrap_or_else(|| servfail(packet))
}

/// One query over TCP, from namespace `netns` (None: the daemon's own).
async fn tcp_query(
    addr: SocketAddr,
    netns: Option<Arc<OwnedFd>>,
    packet: &[u8],
    timeout: Duration,
) -> Option<Vec<u8>> {
    let exchange = async {
        let socket = match netns {
            None => {
                if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4().ok()?
                } else {
                    tokio::net::TcpSocket::new_v6().ok()?
                }
            }
            Some(fd) => {
                let std = tokio::task::spawn_blocking(move || {
                    crate::kernel::netns::run_in_fd(fd.as_fd(), || stream_socket(addr))
                })
                .await
                .ok()?
                .ok()?
                .ok()?;
                tokio::net::TcpSocket::from_std_stream(std)
            }
        };
        let mut stream = socket.connect(addr).await.ok()?;
        let len = u16::try_from(packet.len()).ok()?;
        let mut out = Vec::with_capacity(packet.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(packet);
        stream.write_all(&out).await.ok()?;
        let n = stream.read_u16().await.ok()?;
        let mut resp = vec![0u8; usize::from(n)];
        stream.read_exact(&mut resp).await.ok()?;
        Some(resp)
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// A non-blocking TCP socket of the calling thread's namespace, not connected yet.
fn stream_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    Ok(std::net::TcpStream::from(fd))
}

/// A UDP socket of the calling thread's namespace connected to `addr` (non-blocking).
pub fn connected_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let any: std::net::IpAddr = if addr.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let bind = SocketAddr::new(any, 0);
    let s = std::net::UdpSocket::bind(bind)?;
    s.connect(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}
