//! The real [`Machine`]: an rtnetlink and an nfnetlink socket per namespace (opened together,
//! once, on a thread inside it, then reused from the runtime and the blocking pool; a survey
//! opens only the nfnetlink one, for the table read and write that follow it, and the project
//! daemon lends its own with the surveys it keeps), the
//! namespace directory, sysctls and /etc/netns. Whatever blocks (a thread entering a
//! namespace, a file, a table read) runs on tokio's blocking pool, so that many namespaces are
//! worked on at once; table writes go to the run's writer thread ([`super::writer`]).

use super::encoded::{Encoded, EncodedWrite};
use super::generations::{self, Digest, Generations, TableRead};
use super::machine::{
    Firewall, HtbClass, Links, Machine, Namespaces, NetnsInit, NewMacvlan, NewVeth, Overlay, Ports,
    Qdisc, ReplicaFiles, Sysctls, Table, TrafficControl,
};
use super::netlink::{
    BlockingNetlink, FdbEntry, Link, MacvlanSpec, Neighbour, Netlink, Route, VethSpec, VxlanSpec,
    LOOPBACK_INDEX,
};
use super::netns::{NetnsDir, NsIdentity, ETC_NETNS};
use super::nftables::{self, read, wire};
use super::survey::{self, Answer, Survey, SurveySource};
use super::writer::Writer;
use super::{sysctl, Ctx, KernelError};
use ipnetwork::IpNetwork;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

type Res<T> = Result<T, KernelError>;

/// The machine netcompose runs on.
pub struct System {
    dir: NetnsDir,
    etc: PathBuf,
    rt: tokio::runtime::Handle,
    host: Net,
    sockets: Mutex<HashMap<String, Net>>,
    /// The nfnetlink socket of each namespace known so far: those of [`System::sockets`], and
    /// those a survey opened in namespaces whose rtnetlink connection nothing needed.
    nft_sockets: Mutex<HashMap<String, Arc<Mutex<NftSocket>>>>,
    /// The namespaces of [`System::nft_sockets`] whose socket the daemon lent (it holds the
    /// socket itself too).
    lent: Mutex<HashSet<String>>,
    /// The tables known unchanged since a read or a write (see [`generations`]).
    generations: Arc<Mutex<Generations>>,
    /// Table writes, encoded once each.
    encoded: Encoded,
    /// The thread that commits them.
    writer: Writer,
    /// Each namespace's cookie and ruleset generation as the last survey read them, for the
    /// table read that follows it (taken by that read, so never used after a write).
    surveyed: Mutex<HashMap<String, (u64, u32)>>,
    /// The process that keeps full surveys between runs, if this run may ask it.
    source: Option<Arc<dyn SurveySource>>,
    /// The namespaces whose surveys [`System::ask_ahead`] asked for, and the answer to read.
    asked: Mutex<Option<(Vec<String>, Answer)>>,
    /// What the last survey took from [`System::source`]: surveys, and sockets lent.
    last_kept: Mutex<(usize, usize)>,
    /// Each namespace this run surveyed itself, held (see [`Held`]).
    held: Mutex<HashMap<String, Held>>,
    /// What this run held of the namespaces it deleted, until [`Namespaces::let_go`].
    parting: Mutex<Vec<Parting>>,
}

/// A deleted namespace's sockets and descriptor, kept a little longer.
type Parting = (Option<Net>, Option<Arc<Mutex<NftSocket>>>, Option<Held>);

/// A namespace a survey of this run read, held open so that no other namespace can take its
/// identity, with the mark its lo carried. While its pin shows that identity, the pin names
/// the very namespace the survey read, and [`Namespaces::netns_marks`] answers without
/// entering it again: lo's alias is written when the namespace is made, before it is pinned.
struct Held {
    _fd: OwnedFd,
    identity: NsIdentity,
    lo_alias: Option<String>,
}

/// A namespace's netlink sockets, with the directory that names the namespaces a veth peer or
/// a macvlan is created in.
#[derive(Clone, Debug)]
pub struct Net {
    nl: Netlink,
    /// nfnetlink, for the namespace's table: one transaction or read at a time.
    nft: Arc<Mutex<NftSocket>>,
    dir: NetnsDir,
    /// The kernel runs one dump at a time per socket (a second one is EBUSY): the dumps of
    /// the clones of this handle take turns.
    dumps: Arc<tokio::sync::Mutex<()>>,
    /// The host's links are listed on a blocking socket of their own, whose replies are
    /// parsed only as far as netcompose reads them ([`BlockingNetlink::links`]): the host has
    /// a veth end per replica, and the connection parses every attribute of every one.
    /// None for a replica's namespace, which its survey lists.
    link_dumps: Option<Arc<Mutex<BlockingNetlink>>>,
}

impl System {
    /// The system's namespaces (/run/netns) and files (/etc/netns). Opens the host's socket,
    /// whose connection task runs on `rt`.
    pub fn open(rt: tokio::runtime::Handle) -> Res<System> {
        // Two sockets stay open per namespace for the run.
        super::descriptors::raise_limit();
        let dir = NetnsDir::system();
        let nft =
            nftables::wire::open(&Ctx::new("open netlink socket", "NETLINK_NETFILTER", None))?;
        let mut host = Net::new(Netlink::open_in(&dir, None, &rt)?, nft, &dir);
        // Opened on this thread, like the connection above: in the namespace it runs in.
        host.link_dumps = Some(Arc::new(Mutex::new(BlockingNetlink::open_current(None)?)));
        Ok(System {
            dir,
            etc: PathBuf::from(ETC_NETNS),
            rt,
            host,
            sockets: Mutex::new(HashMap::new()),
            nft_sockets: Mutex::new(HashMap::new()),
            lent: Mutex::new(HashSet::new()),
            generations: Arc::new(Mutex::new(Generations::default())),
            encoded: Encoded::default(),
            writer: Writer::default(),
            surveyed: Mutex::new(HashMap::new()),
            source: None,
            asked: Mutex::new(None),
            last_kept: Mutex::new((0, 0)),
            held: Mutex::new(HashMap::new()),
            parting: Mutex::new(Vec::new()),
        })
    }

    /// Take full surveys from `source` where it keeps them (see [`SurveySource`]).
    pub fn take_surveys_from(&mut self, source: Arc<dyn SurveySource>) {
        self.source = Some(source);
    }

    /// Ask [`System::source`] now for the full surveys of the namespaces pinned with
    /// `prefix`, for the [`Machine::survey`] of the same namespaces that follows. Called by a
    /// run before it reads its state, on its own thread: the request leaves at once, where a
    /// survey asks only once its turn on the runtime's threads comes (3-4 ms after a run of
    /// 200 replicas started them, the state's decoding taking a CPU meanwhile), and the
    /// keeper's work on it overlaps the run's. A pin made or removed in between makes the
    /// survey's names differ: it then asks again.
    pub fn ask_ahead(&self, prefix: &str) {
        let Some(source) = &self.source else {
            return;
        };
        let Ok(names) = self.dir.list() else {
            return;
        };
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect();
        let answer = source.ask(&names);
        *self.asked.lock().unwrap_or_else(|p| p.into_inner()) = Some((names, answer));
    }

    /// Take what an earlier run recorded in `path` of its tables (see [`generations`]).
    pub fn load_generations(&self, path: &Path) {
        let loaded = Generations::load(path);
        *self.generations.lock().unwrap_or_else(|p| p.into_inner()) = loaded;
    }

    /// Record in `path` what this run read or left of its tables, for the next run.
    pub fn save_generations(&self, path: &Path) -> io::Result<()> {
        self.generations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .save(path)
    }

    /// Copies of the nfnetlink sockets this run opened itself (the host's, and those of the
    /// namespaces it made or surveyed), for a holder that outlives the run: the last close of
    /// such a socket waits for a grace period of RCU once tables were written (see
    /// `daemon::hand_over`). The daemon's lent sockets are not among them: it holds those.
    pub fn own_nft_sockets(&self) -> Vec<OwnedFd> {
        // The same order of locks as the survey's: the sockets, then the lent ones.
        let namespaces: Vec<Arc<Mutex<NftSocket>>> = self
            .nft_sockets
            .lock()
            .map(|m| {
                let lent = self.lent.lock().unwrap_or_else(|p| p.into_inner());
                m.iter()
                    .filter(|(name, _)| !lent.contains(*name))
                    .map(|(_, nft)| nft.clone())
                    .collect()
            })
            .unwrap_or_default();
        std::iter::once(&self.host.nft)
            .chain(&namespaces)
            .filter_map(|nft| {
                let socket = nft.lock().unwrap_or_else(|p| p.into_inner());
                socket.fd.try_clone().ok()
            })
            .collect()
    }

    fn cached(&self, ns: &str) -> Option<Net> {
        self.sockets.lock().ok().and_then(|m| m.get(ns).cloned())
    }

    fn remember(&self, ns: &str, (socket, nft): (Netlink, OwnedFd)) -> Net {
        let net = Net::new(socket, nft, &self.dir);
        if let Ok(mut m) = self.sockets.lock() {
            m.insert(ns.to_string(), net.clone());
        }
        if let Ok(mut m) = self.nft_sockets.lock() {
            m.insert(ns.to_string(), net.nft.clone());
        }
        net
    }

    /// Take this process's sockets and descriptor in `ns`: each holds its namespace alive.
    fn forget(&self, ns: &str) -> Parting {
        let net = self.sockets.lock().ok().and_then(|mut m| m.remove(ns));
        let nft = self.nft_sockets.lock().ok().and_then(|mut m| m.remove(ns));
        self.lent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ns);
        let held = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ns);
        (net, nft, held)
    }

    fn etc_dir(&self, ns: &str) -> PathBuf {
        self.etc.join(ns)
    }

    /// The nfnetlink socket of namespace `ns` (None: the host's).
    async fn nft(&self, ns: Option<&str>) -> Res<Arc<Mutex<NftSocket>>> {
        let Some(ns) = ns else {
            return Ok(self.host.nft.clone());
        };
        let surveyed = self
            .nft_sockets
            .lock()
            .ok()
            .and_then(|m| m.get(ns).cloned());
        match surveyed {
            Some(nft) => Ok(nft),
            None => Ok(self.netns(ns).await?.nft),
        }
    }
}

/// Both sockets of the calling thread's namespace: rtnetlink (its connection task on `rt`)
/// and nfnetlink.
fn open_sockets(label: Option<&str>, rt: &tokio::runtime::Handle) -> Res<(Netlink, OwnedFd)> {
    let nl = Netlink::open_current(label, rt)?;
    let nft = nftables::wire::open(&Ctx::new("open netlink socket", "NETLINK_NETFILTER", label))?;
    Ok((nl, nft))
}

/// A namespace's nfnetlink socket, with the namespace's cookie once asked: a socket stays in
/// the namespace it was opened in, so a run asks once per socket rather than once per table
/// read or write (a scale of 200 replicas writes 202 tables).
#[derive(Debug)]
struct NftSocket {
    fd: OwnedFd,
    cookie: Option<u64>,
}

impl NftSocket {
    fn new(fd: OwnedFd, cookie: Option<u64>) -> NftSocket {
        NftSocket { fd, cookie }
    }

    /// The socket, with its namespace's cookie.
    fn with_cookie(&mut self, ctx: &Ctx) -> Res<(&OwnedFd, u64)> {
        let cookie = match self.cookie {
            Some(cookie) => cookie,
            None => *self.cookie.insert(wire::netns_cookie(ctx, &self.fd)?),
        };
        Ok((&self.fd, cookie))
    }
}

/// Run `f` with the socket, on the calling (blocking) thread. A panic of an earlier holder
/// left the socket as good as it was.
fn with_nft<T>(nft: &Mutex<NftSocket>, f: impl FnOnce(&mut NftSocket) -> Res<T>) -> Res<T> {
    let mut socket = nft.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut socket)
}

/// A namespace's descriptor (a copy of the survey's) and identity, taken as the survey enters.
fn hold(name: &str, ns: &OwnedFd) -> Res<(OwnedFd, NsIdentity)> {
    let ctx = || Ctx::new("hold netns", name, None);
    let identity = NsIdentity::of(ns.as_fd()).map_err(|e| ctx().errno(e))?;
    let fd = ns.try_clone().map_err(|e| ctx().os(e))?;
    Ok((fd, identity))
}

/// Run `f` on the blocking pool. A panic there is carried over to the caller.
async fn blocking<T: Send + 'static>(
    ctx: Ctx,
    f: impl FnOnce() -> Res<T> + Send + 'static,
) -> Res<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(ctx.errno(nix::errno::Errno::ECANCELED)),
    }
}

impl Net {
    fn new(nl: Netlink, nft: OwnedFd, dir: &NetnsDir) -> Net {
        Net {
            nl,
            nft: Arc::new(Mutex::new(NftSocket::new(nft, None))),
            dir: dir.clone(),
            dumps: Arc::new(tokio::sync::Mutex::new(())),
            link_dumps: None,
        }
    }

    /// The descriptor of namespace `ns`, opened off the runtime.
    async fn open_ns(&self, ns: &str) -> Res<OwnedFd> {
        let (dir, name) = (self.dir.clone(), ns.to_string());
        blocking(Ctx::new("open netns", ns, None), move || {
            dir.open(Some(&name))
        })
        .await
    }
}

impl TrafficControl for Net {
    async fn qdiscs(&self, index: u32) -> Res<Vec<Qdisc>> {
        let _turn = self.dumps.lock().await;
        self.nl.qdiscs(index).await
    }

    async fn htb_classes(&self, index: u32) -> Res<Vec<HtbClass>> {
        let _turn = self.dumps.lock().await;
        self.nl.htb_classes(index).await
    }

    async fn add_qdisc(&self, index: u32, q: &Qdisc) -> Res<()> {
        self.nl.add_qdisc(index, q).await
    }

    async fn delete_root_qdisc(&self, index: u32) -> Res<()> {
        self.nl.delete_root_qdisc(index).await
    }

    async fn set_htb_class(&self, index: u32, c: &HtbClass) -> Res<()> {
        self.nl.set_htb_class(index, c).await
    }
}

impl Links for Net {
    async fn links(&self) -> Res<Vec<Link>> {
        let Some(socket) = self.link_dumps.clone() else {
            let _turn = self.dumps.lock().await;
            return self.nl.links().await;
        };
        blocking(Ctx::new("list", "links", None), move || {
            socket.lock().unwrap_or_else(|p| p.into_inner()).links()
        })
        .await
    }

    async fn link_by_name(&self, name: &str) -> Res<Option<Link>> {
        self.nl.link_by_name(name).await
    }

    async fn link_by_index(&self, index: u32) -> Res<Option<Link>> {
        self.nl.link_by_index(index).await
    }

    async fn addresses(&self) -> Res<Vec<(u32, IpNetwork)>> {
        let _turn = self.dumps.lock().await;
        self.nl.addresses().await
    }

    async fn routes(&self) -> Res<Vec<Route>> {
        let _turn = self.dumps.lock().await;
        self.nl.routes().await
    }

    async fn create_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        alias: Option<&str>,
    ) -> Res<u32> {
        self.nl.create_bridge_with_mac(name, mtu, mac, alias).await
    }

    async fn create_veth(&self, spec: &NewVeth) -> Res<u32> {
        let fd = self.open_ns(&spec.peer_ns).await?;
        let spec = VethSpec {
            name: spec.name.clone(),
            alias: spec.alias.clone(),
            mtu: spec.mtu,
            mac: spec.mac,
            master: spec.master,
            up: spec.up,
            peer_name: spec.peer_name.clone(),
            peer_ns: Some(fd.as_fd()),
            peer_mac: spec.peer_mac,
        };
        self.nl.create_veth(&spec).await
    }

    async fn create_macvlan(&self, spec: &NewMacvlan) -> Res<()> {
        let fd = self.open_ns(&spec.ns).await?;
        let spec = MacvlanSpec {
            name: spec.name.clone(),
            parent: spec.parent,
            mode: spec.mode,
            ns: Some(fd.as_fd()),
            mac: spec.mac,
            mtu: spec.mtu,
            up: spec.up,
        };
        self.nl.create_macvlan(&spec).await.map(drop)
    }

    async fn set_up(&self, index: u32) -> Res<()> {
        self.nl.set_up(index).await
    }

    async fn set_down(&self, index: u32) -> Res<()> {
        self.nl.set_down(index).await
    }

    async fn set_mtu(&self, index: u32, mtu: u32) -> Res<()> {
        self.nl.set_mtu(index, mtu).await
    }

    async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Res<()> {
        self.nl.set_mac(index, mac).await
    }

    async fn set_alias(&self, index: u32, alias: Option<&str>) -> Res<()> {
        self.nl.set_alias(index, alias).await
    }

    async fn delete_link(&self, index: u32) -> Res<()> {
        self.nl.delete_link(index).await
    }

    async fn add_address(&self, index: u32, addr: IpNetwork) -> Res<()> {
        self.nl.add_address(index, addr).await
    }

    async fn delete_address(&self, index: u32, addr: IpNetwork) -> Res<()> {
        self.nl.delete_address(index, addr).await
    }

    async fn add_route(
        &self,
        dst: IpNetwork,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> Res<()> {
        self.nl.add_route(dst, gateway, oif).await
    }

    async fn delete_route(
        &self,
        dst: IpNetwork,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> Res<()> {
        self.nl.delete_route(dst, gateway, oif).await
    }
}

impl Overlay for Net {
    async fn create_vxlan(&self, spec: &VxlanSpec) -> Res<u32> {
        self.nl.create_vxlan(spec).await
    }

    async fn fdb(&self, index: u32) -> Res<Vec<FdbEntry>> {
        let _turn = self.dumps.lock().await;
        self.nl.fdb(index).await
    }

    async fn set_fdb(&self, index: u32, mac: [u8; 6], dst: IpAddr) -> Res<()> {
        self.nl.add_fdb(index, mac, dst).await
    }

    async fn delete_fdb(&self, index: u32, mac: [u8; 6], dst: Option<IpAddr>) -> Res<()> {
        self.nl.delete_fdb(index, mac, dst).await
    }

    async fn neighbours(&self, index: u32) -> Res<Vec<Neighbour>> {
        let _turn = self.dumps.lock().await;
        self.nl.neighbours(index).await
    }

    async fn set_neighbour(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Res<()> {
        self.nl.add_neighbour(index, ip, mac).await
    }

    async fn delete_neighbour(&self, index: u32, ip: IpAddr) -> Res<()> {
        self.nl.delete_neighbour(index, ip).await
    }
}

impl Ports for System {
    /// A probe socket on the wildcard address: a VXLAN device binds its port there, so any
    /// socket on that port (on any address) keeps the device from coming up. This process
    /// runs in the host namespace.
    async fn udp_port_free(&self, port: u16) -> Res<bool> {
        let ctx = Ctx::new("probe udp port", port, None);
        match tokio::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(false),
            Err(e) => Err(ctx.os(e)),
        }
    }
}

impl Namespaces for System {
    async fn create_netns(&self, name: &str, init: &NetnsInit) -> Res<()> {
        let ctx = Ctx::new("create netns", name, None);
        let (dir, owned, init, rt) = (
            self.dir.clone(),
            name.to_string(),
            init.clone(),
            self.rt.clone(),
        );
        let sockets = blocking(ctx, move || {
            dir.create_init(&owned, || {
                for (key, value) in &init.sysctls {
                    // This thread is inside the new namespace: no namespace to name.
                    match sysctl::write_in(&dir, None, key, value) {
                        Err(e) if e.is_not_found() => {}
                        other => other?,
                    }
                }
                let sockets = open_sockets(Some(&owned), &rt)?;
                rt.block_on(async {
                    sockets
                        .0
                        .set_alias(LOOPBACK_INDEX, Some(&init.lo_alias))
                        .await?;
                    sockets.0.lo_up().await
                })?;
                Ok(sockets)
            })
        })
        .await?;
        self.remember(name, sockets);
        Ok(())
    }

    async fn netns_exists(&self, name: &str) -> bool {
        let (dir, name) = (self.dir.clone(), name.to_string());
        blocking(Ctx::new("stat netns", &name, None), move || {
            Ok(dir.exists(&name))
        })
        .await
        .unwrap_or(false)
    }

    async fn list_netns(&self) -> Res<Vec<String>> {
        let dir = self.dir.clone();
        blocking(
            Ctx::new("list netns", dir.root().display(), None),
            move || dir.list(),
        )
        .await
    }

    async fn list_netns_live(&self) -> Res<Vec<(String, bool)>> {
        let dir = self.dir.clone();
        blocking(
            Ctx::new("list netns", dir.root().display(), None),
            move || {
                let names = dir.list()?;
                Ok(names
                    .into_iter()
                    .map(|n| {
                        let live = dir.exists(&n);
                        (n, live)
                    })
                    .collect())
            },
        )
        .await
    }

    async fn delete_netns(&self, name: &str) -> Res<bool> {
        let parting = self.forget(name);
        self.parting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(parting);
        let (dir, owned) = (self.dir.clone(), name.to_string());
        blocking(Ctx::new("delete netns", name, None), move || {
            dir.delete(&owned)
        })
        .await
    }

    fn let_go(&self) {
        let parting = std::mem::take(&mut *self.parting.lock().unwrap_or_else(|p| p.into_inner()));
        drop(parting);
    }

    async fn netns_marks(&self, names: &[String]) -> Res<Vec<Option<Option<String>>>> {
        let (dir, owned) = (self.dir.clone(), names.to_vec());
        let pinned: Vec<Option<NsIdentity>> =
            blocking(Ctx::new("stat netns", "namespaces", None), move || {
                Ok(owned.iter().map(|n| dir.pinned(n)).collect())
            })
            .await?;
        let mut out = Vec::with_capacity(names.len());
        let (mut unread, mut slots) = (Vec::new(), Vec::new());
        {
            let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            for (i, (name, now)) in names.iter().zip(pinned).enumerate() {
                match held.get(name).filter(|h| Some(h.identity) == now) {
                    Some(h) => out.push(Some(h.lo_alias.clone())),
                    None => {
                        unread.push(name.clone());
                        slots.push(i);
                        out.push(None);
                    }
                }
            }
        }
        if !unread.is_empty() {
            let read = self.survey(&unread, false).await?;
            for (i, found) in slots.into_iter().zip(read) {
                out[i] = found.map(|found| lo_alias(&found));
            }
        }
        Ok(out)
    }
}

fn lo_alias(found: &Survey) -> Option<String> {
    found
        .links
        .iter()
        .find(|l| l.index == LOOPBACK_INDEX)
        .and_then(|l| l.alias.clone())
}

impl System {
    /// Send `write` (encoded once, [`Encoded`]) to table `table` of namespace `ns`, and record
    /// what the table holds after it ([`generations::write`]).
    async fn send_write(
        &self,
        ctx: Ctx,
        ns: Option<&str>,
        table: &str,
        write: Arc<impl EncodedWrite>,
    ) -> Res<()> {
        let nft = self.nft(ns).await?;
        let gens = self.generations.clone();
        let (ns, table) = (ns.map(str::to_string), table.to_string());
        let unrun = ctx.clone();
        self.writer
            .run(move || {
                with_nft(&nft, |socket| {
                    let (fd, cookie) = socket.with_cookie(&ctx)?;
                    generations::write(
                        &gens,
                        (fd, cookie),
                        ns.as_deref(),
                        &table,
                        write.how(),
                        |at| wire::commit_at(&ctx, fd, write.batch(), at),
                    )
                })
            })
            .await
            .unwrap_or_else(|| Err(unrun.errno(nix::errno::Errno::ECANCELED)))
    }
}

impl Firewall for System {
    async fn replace_table(&self, ns: Option<&str>, table: &str, contents: &Arc<Table>) -> Res<()> {
        let ctx = Ctx::new("load rules", table, ns);
        let write = self
            .encoded
            .replacement(table, contents)
            .map_err(|e| ctx.invalid(e.to_string()))?;
        self.send_write(ctx, ns, table, write).await
    }

    async fn update_table(
        &self,
        ns: Option<&str>,
        table: &str,
        old: &Table,
        new: &Table,
    ) -> Res<()> {
        let ctx = Ctx::new("update rules", table, ns);
        let write = self
            .encoded
            .update(table, old, new)
            .map_err(|e| ctx.invalid(e.to_string()))?;
        self.send_write(ctx, ns, table, write).await
    }

    async fn delete_table(&self, ns: Option<&str>, table: &str) -> Res<()> {
        let nft = self.nft(ns).await?;
        let (ns, table) = (ns.map(str::to_string), table.to_string());
        blocking(Ctx::new("delete table", &table, ns.as_deref()), move || {
            with_nft(&nft, |socket| {
                read::delete_table_on(&socket.fd, ns.as_deref(), &table).map(drop)
            })
        })
        .await
    }

    async fn read_table(&self, ns: Option<&str>, table: &str, expected: Digest) -> Res<TableRead> {
        let surveyed = ns.and_then(|ns| {
            self.surveyed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(ns)
        });
        if let Some((cookie, generation)) = surveyed {
            // Known from the survey's read of the generation: no request, no blocking.
            if generations::known(&self.generations, ns, cookie, generation, expected) {
                return Ok(TableRead::Unchanged);
            }
        }
        let nft = self.nft(ns).await?;
        let gens = self.generations.clone();
        let (ns, table) = (ns.map(str::to_string), table.to_string());
        let ctx = Ctx::new("list table", &table, ns.as_deref());
        blocking(ctx.clone(), move || {
            with_nft(&nft, |socket| {
                let socket = socket.with_cookie(&ctx)?;
                generations::read(&gens, socket, ns.as_deref(), &table, expected)
            })
        })
        .await
    }
}

impl Sysctls for System {
    async fn read_sysctl(&self, ns: Option<&str>, key: &str) -> Res<String> {
        let (dir, ns, key) = (self.dir.clone(), ns.map(str::to_string), key.to_string());
        blocking(Ctx::new("read sysctl", &key, ns.as_deref()), move || {
            sysctl::read_in(&dir, ns.as_deref(), &key)
        })
        .await
    }

    async fn write_sysctl(&self, ns: Option<&str>, key: &str, value: &str) -> Res<()> {
        let (dir, ns, key, value) = (
            self.dir.clone(),
            ns.map(str::to_string),
            key.to_string(),
            value.to_string(),
        );
        blocking(Ctx::new("write sysctl", &key, ns.as_deref()), move || {
            sysctl::write_in(&dir, ns.as_deref(), &key, &value)
        })
        .await
    }
}

/// Not found is no error for a removal.
fn absent_ok(r: io::Result<()>, ctx: &Ctx) -> Res<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| ctx.os(e)),
    }
}

/// The names in a directory (none when it does not exist).
fn entries(dir: &std::path::Path, ctx: &Ctx) -> Res<Vec<String>> {
    let list = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ctx.os(e)),
    };
    let mut names = Vec::new();
    for entry in list {
        let entry = entry.map_err(|e| ctx.os(e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

impl ReplicaFiles for System {
    async fn read_file(&self, ns: &str, name: &str) -> Res<Option<String>> {
        let path = self.etc_dir(ns).join(name);
        let ctx = Ctx::new("read", path.display(), None);
        blocking(ctx.clone(), move || match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ctx.os(e)),
        })
        .await
    }

    async fn write_files(&self, ns: &str, files: &[(&str, String)]) -> Res<()> {
        let dir = self.etc_dir(ns);
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(n, b)| (n.to_string(), b.clone()))
            .collect();
        let ctx = Ctx::new("write", dir.display(), None);
        blocking(ctx.clone(), move || {
            std::fs::create_dir_all(&dir).map_err(|e| ctx.os(e))?;
            for (name, body) in files {
                let tmp = dir.join(format!(".{name}.tmp"));
                std::fs::write(&tmp, body)
                    .and_then(|_| std::fs::rename(&tmp, dir.join(name)))
                    .map_err(|e| ctx.os(e))?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_files(&self, ns: &str, names: &[&str]) -> Res<()> {
        let dir = self.etc_dir(ns);
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let ctx = Ctx::new("remove", dir.display(), None);
        blocking(ctx.clone(), move || {
            for name in names {
                absent_ok(std::fs::remove_file(dir.join(name)), &ctx)?;
            }
            match std::fs::remove_dir(&dir) {
                // Something else lives there: the directory stays.
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(()),
                other => absent_ok(other, &ctx),
            }
        })
        .await
    }

    async fn remove_dir(&self, ns: &str) -> Res<()> {
        let dir = self.etc_dir(ns);
        let ctx = Ctx::new("remove", dir.display(), None);
        blocking(ctx.clone(), move || {
            absent_ok(std::fs::remove_dir_all(&dir), &ctx)
        })
        .await
    }

    async fn file_dirs(&self) -> Res<Vec<String>> {
        let etc = self.etc.clone();
        let ctx = Ctx::new("list", etc.display(), None);
        blocking(ctx.clone(), move || entries(&etc, &ctx)).await
    }

    async fn file_names(&self, ns: &str) -> Res<Vec<String>> {
        let dir = self.etc_dir(ns);
        let ctx = Ctx::new("list", dir.display(), None);
        blocking(ctx.clone(), move || entries(&dir, &ctx)).await
    }
}

impl Machine for System {
    type Net = Net;

    fn host(&self) -> &Net {
        &self.host
    }

    async fn netns(&self, ns: &str) -> Res<Net> {
        if let Some(net) = self.cached(ns) {
            return Ok(net);
        }
        let (dir, name, rt) = (self.dir.clone(), ns.to_string(), self.rt.clone());
        let sockets = blocking(Ctx::new("open netlink socket", ns, None), move || {
            dir.run_in(Some(&name), || open_sockets(Some(&name), &rt))?
        })
        .await?;
        Ok(self.remember(ns, sockets))
    }

    fn kept_by_source(&self) -> (usize, usize) {
        *self.last_kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn survey(&self, names: &[String], full: bool) -> Res<Vec<Option<Survey>>> {
        let mut kept = match (&self.source, full) {
            (Some(source), true) => {
                let asked = self.asked.lock().unwrap_or_else(|p| p.into_inner()).take();
                let ahead = asked.filter(|(asked, _)| asked == names).map(|(_, a)| a);
                let (source, owned) = (source.clone(), names.to_vec());
                blocking(Ctx::new("ask for surveys", "namespaces", None), move || {
                    Ok(ahead.unwrap_or_else(|| source.ask(&owned))())
                })
                .await?
            }
            _ => Vec::new(),
        };
        kept.resize_with(names.len(), || None);
        let missing: Vec<String> = names
            .iter()
            .zip(&kept)
            .filter(|(_, k)| k.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        let (dir, etc) = (self.dir.clone(), self.etc.clone());
        let mut found = match missing.is_empty() {
            true => Vec::new(),
            false => {
                blocking(Ctx::new("survey", "namespaces", None), move || {
                    Ok(survey::survey_after(&dir, &etc, &missing, full, hold))
                })
                .await?
            }
        }
        .into_iter();
        let mut out = Vec::with_capacity(names.len());
        let mut surveyed = self.surveyed.lock().unwrap_or_else(|p| p.into_inner());
        surveyed.clear();
        let counts = (
            kept.iter().flatten().count(),
            kept.iter().flatten().filter(|(_, s)| s.is_some()).count(),
        );
        *self.last_kept.lock().unwrap_or_else(|p| p.into_inner()) = counts;
        for (name, kept) in names.iter().zip(kept) {
            if let Some((kept, socket)) = kept {
                if let Some(generation) = kept.generation {
                    surveyed.insert(name.clone(), generation);
                }
                if let (Some(socket), Ok(mut m)) = (socket, self.nft_sockets.lock()) {
                    if let Entry::Vacant(e) = m.entry(name.clone()) {
                        // The daemon read the cookie through the socket it lent a copy of.
                        let cookie = kept.generation.map(|(cookie, _)| cookie);
                        e.insert(Arc::new(Mutex::new(NftSocket::new(socket, cookie))));
                        self.lent
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(name.clone());
                    }
                }
                out.push(Some(kept.survey));
                continue;
            }
            let answer = found.next().unwrap_or_else(|| {
                Err(Ctx::new("survey netns", name, None).protocol("not surveyed"))
            });
            let Some(((fd, identity), found, nft)) = answer? else {
                out.push(None);
                continue;
            };
            let held = Held {
                _fd: fd,
                identity,
                lo_alias: lo_alias(&found),
            };
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone(), held);
            if let Some(nft) = nft {
                if let Some(generation) = nft.generation {
                    surveyed.insert(name.clone(), generation);
                }
                // The survey read the cookie through this very socket.
                let cookie = nft.generation.map(|(cookie, _)| cookie);
                if let Ok(mut m) = self.nft_sockets.lock() {
                    m.entry(name.clone()).or_insert_with(|| {
                        Arc::new(Mutex::new(NftSocket::new(nft.socket, cookie)))
                    });
                }
            }
            out.push(Some(found));
        }
        Ok(out)
    }
}
