//! The [::1] relays ([`crate::model::relay`] says why they exist): a TCP listener or a UDP
//! socket on [::1]:PORT in the host namespace per relay, each connection or UDP flow sent on
//! to a random backend. A reload keeps the sockets of relays that stay (their backends are
//! swapped in place, so established connections live on, as conntrack keeps DNATed ones),
//! opens new ones and closes those that went.

use crate::model::daemon::{DaemonConfig, LoopbackRelay, RelayProtocol};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// A UDP flow without traffic for this long is forgotten (as conntrack's UDP stream timeout).
const UDP_IDLE: Duration = Duration::from_secs(120);
/// Pause after a failed accept (out of file descriptors, say) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The backends of one relay, swapped on reload.
type Backends = Arc<Mutex<Vec<SocketAddr>>>;

struct Running {
    backends: Backends,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub struct Relays {
    running: HashMap<(RelayProtocol, u16), Running>,
}

impl Relays {
    /// Serve the relays of `cfg`; returns one message per relay that could not be opened.
    pub async fn apply(&mut self, cfg: &DaemonConfig) -> Vec<String> {
        let wanted: HashMap<(RelayProtocol, u16), &LoopbackRelay> = cfg
            .relays
            .iter()
            .map(|r| ((r.protocol, r.port), r))
            .collect();
        let gone: Vec<_> = self
            .running
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(r) = self.running.remove(&key) {
                r.task.abort();
                // Awaited so that the socket is closed before a relay of the same port opens.
                let _ = r.task.await;
            }
        }
        let mut errors = Vec::new();
        for (key, relay) in wanted {
            let backends = targets(relay);
            if let Some(r) = self.running.get(&key) {
                if let Ok(mut b) = r.backends.lock() {
                    *b = backends;
                }
                continue;
            }
            let backends: Backends = Arc::new(Mutex::new(backends));
            match open(relay, backends.clone()).await {
                Ok(task) => {
                    self.running.insert(key, Running { backends, task });
                }
                Err(e) => errors.push(format!(
                    "cannot relay [::1]:{}/{:?}: {e}",
                    relay.port, relay.protocol
                )),
            }
        }
        errors
    }
}

fn targets(r: &LoopbackRelay) -> Vec<SocketAddr> {
    r.backends
        .iter()
        .map(|ip| SocketAddr::new(*ip, r.target))
        .collect()
}

fn pick(backends: &Backends) -> Option<SocketAddr> {
    let b = backends.lock().ok()?;
    (!b.is_empty()).then(|| b[fastrand::usize(..b.len())])
}

async fn open(relay: &LoopbackRelay, backends: Backends) -> std::io::Result<JoinHandle<()>> {
    let at = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), relay.port);
    Ok(match relay.protocol {
        RelayProtocol::Tcp => {
            let listener = TcpListener::bind(at).await?;
            tokio::spawn(serve_tcp(listener, backends))
        }
        RelayProtocol::Udp => {
            let socket = Arc::new(UdpSocket::bind(at).await?);
            tokio::spawn(serve_udp(socket, backends))
        }
    })
}

async fn serve_tcp(listener: TcpListener, backends: Backends) {
    loop {
        let mut client = match listener.accept().await {
            Ok((c, _)) => c,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(to) = pick(&backends) else {
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut upstream) = TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}

/// One upstream socket per client address: replies go back from [::1]:PORT to that client.
async fn serve_udp(socket: Arc<UdpSocket>, backends: Backends) {
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let known = flows.lock().ok().and_then(|f| f.get(&client).cloned());
        let upstream = match known {
            Some(u) => u,
            None => {
                let Some(to) = pick(&backends) else {
                    continue;
                };
                let Ok(u) = connect_udp(to).await else {
                    continue;
                };
                let u = Arc::new(u);
                if let Ok(mut f) = flows.lock() {
                    f.insert(client, u.clone());
                }
                tokio::spawn(replies(socket.clone(), u.clone(), client, flows.clone()));
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

async fn connect_udp(to: SocketAddr) -> std::io::Result<UdpSocket> {
    let any = if to.is_ipv6() {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0)
    };
    let u = UdpSocket::bind(any).await?;
    u.connect(to).await?;
    Ok(u)
}

/// Send a flow's answers back to its client until it goes idle, then forget the flow.
async fn replies(
    socket: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
) {
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)).await {
        let _ = socket.send_to(&buf[..n], client).await;
    }
    if let Ok(mut f) = flows.lock() {
        f.remove(&client);
    }
}
