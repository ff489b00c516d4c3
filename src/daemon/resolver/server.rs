//! The resolver's sockets: 127.0.0.11:53 UDP and TCP in every replica namespace, and the
//! upstream sockets of each namespace.
//!
//! Sockets are created on one short-lived thread that `setns`'es into each namespace in turn
//! (a socket belongs to the namespace it was created in, forever); they are handed back and
//! served: UDP by the resolver's worker threads ([`udp`]), TCP and forwarded queries from the
//! async runtime. No serving thread ever changes namespace.
//!
//! On reload, the new [`Snapshot`] is swapped in with one pointer store: a query being answered
//! finishes with the records it started with; the next one sees the new records. Sockets of
//! namespaces that stay are untouched (no query is lost); new namespaces get sockets, removed
//! ones lose theirs, and a namespace that was deleted and made again under the same name
//! (another nsfs inode) gets fresh sockets.
//!
//! A DNS server run by `x-run` in a replica shares port 53 with the resolver: over UDP a
//! wildcard bind works when it sets SO_REUSEADDR (ours does too), but over TCP Linux refuses
//! a wildcard bind next to our listening 127.0.0.11:53. Such a server must bind its own
//! addresses (dnsmasq: `--bind-interfaces --listen-address=...`). Docker avoids this by
//! listening on a random port and DNAT-ing 127.0.0.11:53 to it; that would put rules in every
//! replica's nft table, for the sake of one rare case.

use super::answer::{self, Outcome, Transport};
use super::counters::QueryCounters;
use super::forward::{self, Route, UdpHandle, UdpUpstream};
use super::udp::{self, Registration, Workers};
use super::Snapshot;
use crate::kernel::NetnsDir;
use crate::model::daemon::{DaemonConfig, Upstream};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

/// The resolver's address in every replica namespace.
pub const RESOLVER_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 11), 53);
/// Concurrent forwarded queries per namespace; beyond, SERVFAIL at once.
const MAX_FORWARDS: usize = 256;
/// Concurrent TCP clients per namespace; beyond, new connections are closed.
const MAX_TCP: usize = 32;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// UDP sockets on [`RESOLVER_ADDR`] per namespace, one per UDP worker thread: joined with
/// SO_REUSEPORT, they split a namespace's clients between them by address and port, so that
/// one busy namespace keeps every worker answering instead of one (dnsperf from one replica
/// showed a single socket as the bound).
pub const UDP_SOCKETS: usize = udp::UDP_WORKERS;

/// The current records, swapped whole. Readers keep their own [`Reader`], which costs one
/// atomic load per batch of queries while the records stay the same.
#[derive(Default)]
pub struct Current {
    snap: RwLock<Arc<Snapshot>>,
    /// Bumped on every swap, inside the write lock.
    version: AtomicU64,
}

impl Current {
    pub fn get(&self) -> Arc<Snapshot> {
        self.snap
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set(&self, s: Arc<Snapshot>) {
        let mut g = match self.snap.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = s;
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A reader of the current records for one serving loop.
    pub fn reader(self: &Arc<Self>) -> Reader {
        let seen = self.version.load(Ordering::Acquire);
        Reader {
            cur: self.clone(),
            seen,
            snap: self.get(),
        }
    }
}

/// One serving loop's view of [`Current`]: the records it last saw, taken again only when a
/// swap happened. A query is answered from one snapshot, whole: old or new, never a mix.
pub struct Reader {
    cur: Arc<Current>,
    seen: u64,
    snap: Arc<Snapshot>,
}

impl Reader {
    /// The current records (checked with one atomic load).
    pub fn get(&mut self) -> &Arc<Snapshot> {
        let v = self.cur.version.load(Ordering::Acquire);
        if v != self.seen {
            self.snap = self.cur.get();
            self.seen = v;
        }
        &self.snap
    }
}

/// What one namespace's tasks share.
pub(super) struct Space {
    pub(super) name: String,
    fd: Arc<OwnedFd>,
    /// Upstream sockets of this namespace, by upstream.
    upstreams: RwLock<Arc<HashMap<Upstream, Arc<UdpUpstream>>>>,
    pub(super) forwards: Arc<Semaphore>,
    tcp_clients: Arc<Semaphore>,
    pub(super) counters: Arc<QueryCounters>,
}

struct SpaceHandle {
    ino: u64,
    space: Arc<Space>,
    /// Upstream sockets (kept alive here; dropping one stops its reader).
    udp: HashMap<Upstream, UdpHandle>,
    /// The listening UDP sockets, each served by a worker until its registration drops.
    _listening: Vec<Registration>,
    tasks: Vec<AbortHandle>,
}

impl Drop for SpaceHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The resolver of one project: its records and its sockets in every namespace.
pub struct Resolver {
    current: Arc<Current>,
    spaces: HashMap<String, SpaceHandle>,
    /// Upstreams queried from the daemon's own namespace, shared by all namespaces.
    host: HashMap<Upstream, UdpHandle>,
    /// The UDP workers, started by the first reload (on the runtime their forwards use).
    workers: Option<Workers>,
}

/// What a reload did.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    pub opened: Vec<String>,
    pub closed: Vec<String>,
    pub serving: usize,
    pub errors: Vec<String>,
}

/// Sockets opened inside one namespace.
struct Opened {
    name: String,
    ino: u64,
    fd: OwnedFd,
    listeners: Option<(Vec<std::net::UdpSocket>, std::net::TcpListener)>,
    udp: Vec<(Upstream, std::io::Result<std::net::UdpSocket>)>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new()
    }
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver {
            current: Arc::new(Current::default()),
            spaces: HashMap::new(),
            host: HashMap::new(),
            workers: None,
        }
    }

    /// The records being served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.get()
    }

    /// Each namespace served: a handle on it and its query counters, for `stats`.
    pub fn stats_sources(&self) -> HashMap<String, (Arc<OwnedFd>, Arc<QueryCounters>)> {
        self.spaces
            .iter()
            .map(|(name, h)| (name.clone(), (h.space.fd.clone(), h.space.counters.clone())))
            .collect()
    }

    /// Namespaces with sockets.
    pub fn serving(&self) -> Vec<String> {
        let mut v: Vec<String> = self.spaces.keys().cloned().collect();
        v.sort();
        v
    }

    /// Serve `cfg`: swap the records, open and close sockets. Must run inside the runtime.
    pub async fn apply(&mut self, cfg: &DaemonConfig, generation: u64) -> ReloadReport {
        let mut report = ReloadReport::default();
        if self.workers.is_none() {
            match Workers::start(self.current.clone(), tokio::runtime::Handle::current()) {
                Ok(w) => self.workers = Some(w),
                Err(e) => {
                    report.errors.push(format!("resolver workers: {e}"));
                    return report;
                }
            }
        }
        let dir = NetnsDir::new(&cfg.netns_dir);
        let snap = Arc::new(Snapshot::compile(cfg, generation));

        // Host-side upstreams.
        let host_wanted: HashSet<Upstream> = cfg
            .namespaces
            .values()
            .flat_map(|n| n.upstreams.iter().copied())
            .filter(|u| u.from_host)
            .collect();
        for u in &host_wanted {
            if !self.host.contains_key(u) {
                match forward::connected_udp(u.addr).and_then(UdpUpstream::start) {
                    Ok(h) => {
                        self.host.insert(*u, h);
                    }
                    Err(e) => report.errors.push(format!("upstream {}: {e}", u.addr)),
                }
            }
        }

        // What has to be opened, and where: new namespaces, namespaces made again (another
        // inode), and new upstreams of kept namespaces.
        let mut work: Vec<(String, bool, Vec<Upstream>)> = Vec::new();
        let (names, pins) = (
            cfg.namespaces.keys().cloned().collect::<Vec<_>>(),
            dir.clone(),
        );
        let pinned =
            tokio::task::spawn_blocking(move || pins.pinned_each(names.iter().map(String::as_str)))
                .await
                .unwrap_or_default();
        for (i, (name, view)) in cfg.namespaces.iter().enumerate() {
            let ino = pinned.get(i).copied().flatten().map(|p| p.ino());
            let existing = self.spaces.get(name).filter(|h| Some(h.ino) == ino);
            let wanted: Vec<Upstream> = view
                .upstreams
                .iter()
                .copied()
                .filter(|u| !u.from_host)
                .collect();
            match existing {
                None => work.push((name.clone(), true, wanted)),
                Some(h) => {
                    let missing: Vec<Upstream> = wanted
                        .into_iter()
                        .filter(|u| !h.udp.contains_key(u))
                        .collect();
                    if !missing.is_empty() {
                        work.push((name.clone(), false, missing));
                    }
                }
            }
        }
        let netns_dir = dir.clone();
        let opened = tokio::task::spawn_blocking(move || open_all(&netns_dir, work))
            .await
            .unwrap_or_default();

        // Install new upstream sockets before the swap, so that the new records never name an
        // upstream without a socket.
        let mut fresh: Vec<Opened> = Vec::new();
        for o in opened {
            match o {
                Err(e) => report.errors.push(e),
                Ok(o) if o.listeners.is_none() => {
                    if let Some(h) = self.spaces.get_mut(&o.name) {
                        install_upstreams(h, o.udp, &mut report);
                    }
                }
                Ok(o) => fresh.push(o),
            }
        }
        // Host upstreams go into every namespace's table.
        self.current.set(snap.clone());
        for o in fresh {
            let name = o.name.clone();
            match self.start_space(o, &mut report) {
                Ok(h) => {
                    if self.spaces.insert(name.clone(), h).is_some() {
                        report.closed.push(name.clone());
                    }
                    report.opened.push(name);
                }
                Err(e) => report.errors.push(format!("{name}: {e}")),
            }
        }
        // Close what is gone; prune upstream sockets no longer used.
        let gone: Vec<String> = self
            .spaces
            .keys()
            .filter(|n| !cfg.namespaces.contains_key(*n))
            .cloned()
            .collect();
        for n in gone {
            self.spaces.remove(&n);
            report.closed.push(n);
        }
        for (name, h) in self.spaces.iter_mut() {
            let Some(view) = cfg.namespaces.get(name) else {
                continue;
            };
            let keep: HashSet<&Upstream> = view.upstreams.iter().collect();
            h.udp.retain(|u, _| keep.contains(u));
            let mut table: HashMap<Upstream, Arc<UdpUpstream>> = h
                .udp
                .iter()
                .map(|(u, s)| (*u, s.upstream.clone()))
                .collect();
            for u in view.upstreams.iter().filter(|u| u.from_host) {
                if let Some(s) = self.host.get(u) {
                    table.insert(*u, s.upstream.clone());
                }
            }
            if let Ok(mut t) = h.space.upstreams.write() {
                *t = Arc::new(table);
            }
        }
        self.host.retain(|u, _| host_wanted.contains(u));
        report.serving = self.spaces.len();
        report
    }

    fn start_space(&self, o: Opened, report: &mut ReloadReport) -> std::io::Result<SpaceHandle> {
        let (udp, tcp) = o
            .listeners
            .ok_or_else(|| std::io::Error::other("a new namespace without its listeners"))?;
        let workers = self
            .workers
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the resolver's workers are not running"))?;
        let tcp = TcpListener::from_std(tcp)?;
        let space = Arc::new(Space {
            name: o.name.clone(),
            fd: Arc::new(o.fd),
            upstreams: RwLock::new(Arc::new(HashMap::new())),
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            tcp_clients: Arc::new(Semaphore::new(MAX_TCP)),
            counters: Arc::new(QueryCounters::default()),
        });
        let mut h = SpaceHandle {
            ino: o.ino,
            space: space.clone(),
            udp: HashMap::new(),
            _listening: udp
                .into_iter()
                .enumerate()
                .map(|(i, sock)| workers.add(i, sock, space.clone()))
                .collect(),
            tasks: Vec::new(),
        };
        install_upstreams(&mut h, o.udp, report);
        let cur = self.current.clone();
        h.tasks
            .push(tokio::spawn(serve_tcp(tcp, space, cur)).abort_handle());
        Ok(h)
    }
}

fn install_upstreams(
    h: &mut SpaceHandle,
    sockets: Vec<(Upstream, std::io::Result<std::net::UdpSocket>)>,
    report: &mut ReloadReport,
) {
    let mut table: HashMap<Upstream, Arc<UdpUpstream>> = h
        .space
        .upstreams
        .read()
        .map(|t| (**t).clone())
        .unwrap_or_default();
    for (u, s) in sockets {
        // An unreachable upstream (no route yet) is reported and retried on the next reload.
        match s.and_then(UdpUpstream::start) {
            Ok(handle) => {
                table.insert(u, handle.upstream.clone());
                h.udp.insert(u, handle);
            }
            Err(e) => report
                .errors
                .push(format!("{}: upstream {}: {e}", h.space.name, u.addr)),
        }
    }
    if let Ok(mut t) = h.space.upstreams.write() {
        *t = Arc::new(table);
    }
}

/// Open sockets in each namespace of `work` (name, listeners too?, upstreams) from one thread.
fn open_all(
    dir: &NetnsDir,
    work: Vec<(String, bool, Vec<Upstream>)>,
) -> Vec<Result<Opened, String>> {
    if work.is_empty() {
        return Vec::new();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            work.into_iter()
                .map(|(name, listeners, ups)| open_one(dir, &name, listeners, &ups))
                .collect()
        })
        .join()
        .unwrap_or_default()
    })
}

/// On the opening thread: enter `name` and open its sockets.
fn open_one(
    dir: &NetnsDir,
    name: &str,
    listeners: bool,
    ups: &[Upstream],
) -> Result<Opened, String> {
    use nix::sched::{setns, CloneFlags};
    let fd = dir.open(Some(name)).map_err(|e| e.to_string())?;
    let ino = nix::sys::stat::fstat(fd.as_fd())
        .map(|s| s.st_ino)
        .map_err(|e| format!("{name}: {e}"))?;
    setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| format!("enter {name}: {e}"))?;
    let listeners = if listeners {
        Some(listen().map_err(|e| format!("{name}: listen on {RESOLVER_ADDR}: {e}"))?)
    } else {
        None
    };
    let udp = ups
        .iter()
        .map(|u| (*u, forward::connected_udp(u.addr)))
        .collect();
    Ok(Opened {
        name: name.to_string(),
        ino,
        fd,
        listeners,
        udp,
    })
}

/// 127.0.0.11:53: [`UDP_SOCKETS`] UDP sockets (SO_REUSEADDR, so that a server of the replica
/// may bind 0.0.0.0:53/udp with SO_REUSEADDR too; SO_REUSEPORT, which groups ours) and TCP.
fn listen() -> std::io::Result<(Vec<std::net::UdpSocket>, std::net::TcpListener)> {
    use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag};
    use nix::sys::socket::{SockType, SockaddrIn};
    let mut udp = Vec::with_capacity(UDP_SOCKETS);
    for _ in 0..UDP_SOCKETS {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        setsockopt(&fd, sockopt::ReusePort, &true)?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::from(RESOLVER_ADDR),
        )?;
        udp.push(std::net::UdpSocket::from(fd));
    }
    let tcp = std::net::TcpListener::bind(SocketAddr::V4(RESOLVER_ADDR))?;
    tcp.set_nonblocking(true)?;
    Ok((udp, tcp))
}

/// The routes of the namespace's upstreams, in order.
pub(super) fn routes(space: &Space, ups: &[Upstream]) -> Vec<(Upstream, Route)> {
    let table = space
        .upstreams
        .read()
        .map(|t| t.clone())
        .unwrap_or_default();
    ups.iter()
        .map(|u| {
            (
                *u,
                Route {
                    netns: (!u.from_host).then(|| space.fd.clone()),
                    udp: table.get(u).cloned(),
                },
            )
        })
        .collect()
}

async fn serve_tcp(listener: TcpListener, space: Arc<Space>, cur: Arc<Current>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let Ok(permit) = space.tcp_clients.clone().try_acquire_owned() else {
            continue; // dropped: closed
        };
        let space = space.clone();
        let cur = cur.clone();
        tokio::spawn(async move {
            let _ = tcp_client(stream, &space, &cur).await;
            drop(permit);
        });
    }
}

/// Serve one TCP client: length-prefixed queries, answered in order, until it goes quiet.
async fn tcp_client(mut stream: TcpStream, space: &Space, cur: &Current) -> Option<()> {
    loop {
        let len = tokio::time::timeout(TCP_IDLE, stream.read_u16())
            .await
            .ok()?
            .ok()?;
        let mut packet = vec![0u8; usize::from(len)];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet))
            .await
            .ok()?
            .ok()?;
        let snap = cur.get();
        let reply = match answer::handle(&snap, &space.name, &packet, Transport::Tcp) {
            Outcome::Reply(r) => {
                space.counters.add_answered(1);
                r
            }
            Outcome::Drop => return None,
            Outcome::Forward => {
                let ups = snap
                    .namespaces
                    .get(&space.name)
                    .map(|v| routes(space, &v.upstreams))
                    .unwrap_or_default();
                let r = forward::forward(&packet, &ups, true).await;
                space.counters.add_forwarded(Some(&r));
                r
            }
        };
        let n = u16::try_from(reply.len()).ok()?;
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&reply);
        stream.write_all(&out).await.ok()?;
    }
}
