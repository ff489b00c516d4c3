//! Reading the project's objects back from the kernel: every bridge, veth, macvlan and
//! namespace netcompose makes carries the mark `netcompose:<project>:<address>` (as ifalias,
//! on lo for a namespace), and the host table is named after the project, so the live state
//! is found from the kernel alone, even without the state file. What the kernel cannot tell
//! (a bridge's network key, a VIP) is filled in from the state, else from the desired state.
//! An overlay's VXLAN port and its remote endpoints are read in `overlay.rs`.

use crate::firewall::host_table;
use crate::ipam::mac::format_mac;
use crate::kernel::generations::{Digest, TableRead};
use crate::kernel::machine::{Links, Survey};
use crate::kernel::netlink::{Link as KLink, LinkKind, LOOPBACK_INDEX};
use crate::kernel::{Kernel, KernelError, Machine};
use crate::model::names::parse_mark;
use crate::model::resource::{self as r, Resource, ResourceId, RouteFamily, Spec};
use crate::model::tables::replica::{vip_index, VipIndex, REPLICA_TABLE};
use futures::stream::{self, StreamExt};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How many surveyed namespaces are read further at once: enough to keep the kernel busy, few
/// enough that the blocking steps of each (sysctls, files, the table) stay within a modest
/// thread pool.
const PARALLEL: usize = 64;

/// Earlier knowledge of each resource, by address: the state's, else the desired one. Indexed
/// once, so that scanning a namespace costs what is in it, not what the project holds.
pub struct Templates<'a> {
    /// aHash rather than std's SipHash: the addresses are the project's own, and hashing a big
    /// project's hundred thousand with SipHash was a third of observing a machine without them.
    by_address: ahash::AHashMap<&'a ResourceId, &'a Resource>,
    /// Bridge name → the lowest address of a bridge of that name.
    bridges: HashMap<&'a str, &'a ResourceId>,
    pub(super) vips: VipIndex<'a>,
    /// The rule tags of the chains the tables are expected to hold.
    pub(super) tags: super::table::Tags,
    /// The VIP part of the replica tables, by list of networks.
    pub(super) vip_parts: super::table::VipParts,
    /// The part of each table its own resource spells out, by its chains, maps and sets.
    pub(super) own_parts: super::table::OwnParts,
}

impl<'a> Templates<'a> {
    pub fn new(state: &'a [Resource], desired: &'a [Resource]) -> Self {
        let mut by_address = ahash::AHashMap::with_capacity(desired.len().max(state.len()));
        by_address.extend(desired.iter().map(|r| (&r.address, r)));
        by_address.extend(state.iter().map(|r| (&r.address, r)));
        // Only bridges and VIPs are looked up by something other than their address: sorting
        // those alone keeps this linear in the project's size.
        let mut known: Vec<&Resource> = by_address
            .values()
            .copied()
            .filter(|r| matches!(r.spec, Spec::Bridge(_) | Spec::Vip(_)))
            .collect();
        known.sort_by(|a, b| a.address.cmp(&b.address));
        let mut bridges = HashMap::new();
        for r in &known {
            if let Spec::Bridge(b) = &r.spec {
                bridges.entry(b.name.as_str()).or_insert(&r.address);
            }
        }
        let vips = vip_index(known.iter().filter_map(|r| match &r.spec {
            Spec::Vip(v) => Some(v),
            _ => None,
        }));
        Templates {
            by_address,
            bridges,
            vips,
            tags: Default::default(),
            vip_parts: Default::default(),
            own_parts: Default::default(),
        }
    }

    pub(super) fn get(&self, address: &ResourceId) -> Option<&'a Resource> {
        self.by_address.get(address).copied()
    }

    /// The address of the known remote endpoint of `network` with MAC `mac`.
    pub(super) fn remote_with_mac(&self, network: &str, mac: &str) -> Option<&'a ResourceId> {
        self.by_address.values().find_map(|r| match &r.spec {
            Spec::Remote(e) if e.network == network && e.mac == mac => Some(&r.address),
            _ => None,
        })
    }

    pub(super) fn depends_on(&self, address: &ResourceId) -> Vec<ResourceId> {
        self.get(address)
            .map(|r| r.depends_on.clone())
            .unwrap_or_default()
    }

    /// The address of the bridge called `name`, if one is known.
    fn bridge_named(&self, name: &str) -> Option<&'a ResourceId> {
        self.bridges.get(name).copied()
    }

    fn by_kind<'s>(
        &'s self,
        pred: impl Fn(&Spec) -> bool + 's,
    ) -> impl Iterator<Item = &'a Resource> + 's {
        self.by_address
            .values()
            .copied()
            .filter(move |r| pred(&r.spec))
    }
}

/// A veth host end of the project: its name, its bridge, its MTU, whether it is up.
type HostEnd = (String, Option<String>, u32, bool);

/// How much of each namespace is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Everything, for a diff.
    Full,
    /// Only whether it is the project's and its links (whose host ends the kernel frees with
    /// it): enough to delete it. What else lives inside (routes, files, the table) goes with
    /// the namespace and is reported as the state records it, unread.
    Outline,
}

/// Everything of the project that exists now. VIPs and DNS zones, which live in the project
/// daemon rather than in kernel objects, are taken from `state`. The namespaces are read
/// concurrently; what blocks runs off the runtime (see [`crate::kernel::system`]).
pub async fn observe<M: Machine>(
    k: &Kernel<M>,
    state: &[Resource],
    desired: &[Resource],
) -> Result<Vec<Resource>, KernelError> {
    let read = read_ahead(k, Depth::Full).await?;
    observe_read(k, read, state, desired).await
}

/// The first round of an observation, which needs nothing of the state or the desired state:
/// the host's links and addresses, and every pinned namespace of the project surveyed. A run
/// reads it while it builds its model ([`read_ahead`]), then finishes with [`observe_read`].
pub struct ReadAhead {
    depth: Depth,
    started: std::time::Instant,
    host_links: Vec<KLink>,
    host_addrs: Vec<(u32, IpNetwork)>,
    pinned: Vec<String>,
    surveyed: Vec<Option<Survey>>,
}

/// Read the first round of an observation to `depth`: every namespace's links (and addresses
/// and routes) in one survey, while the host's links and addresses are dumped.
pub async fn read_ahead<M: Machine>(k: &Kernel<M>, depth: Depth) -> Result<ReadAhead, KernelError> {
    let started = std::time::Instant::now();
    let prefix = netns_prefix(&k.project);
    let namespaces = async {
        let pinned: Vec<String> = k
            .list_netns()
            .await?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        let surveyed = k.survey(&pinned, depth == Depth::Full).await?;
        Ok::<_, KernelError>((pinned, surveyed))
    };
    let ((host_links, host_addrs), (pinned, surveyed)) = futures::try_join!(
        async { futures::try_join!(k.host().links(), k.host().addresses()) },
        namespaces
    )?;
    Ok(ReadAhead {
        depth,
        started,
        host_links,
        host_addrs,
        pinned,
        surveyed,
    })
}

/// What the pin of each of `project`'s namespaces begins with.
pub fn netns_prefix(project: &str) -> String {
    format!("{project}-")
}

/// The project's live objects from the first round `read` and what else each namespace
/// holds, read concurrently now.
pub async fn observe_read<M: Machine>(
    k: &Kernel<M>,
    read: ReadAhead,
    state: &[Resource],
    desired: &[Resource],
) -> Result<Vec<Resource>, KernelError> {
    let ReadAhead {
        depth,
        started,
        host_links,
        host_addrs,
        pinned,
        surveyed,
    } = read;
    // Nothing of the project's on the machine, as before a first `up`: no namespace, no link,
    // no host table. The templates (every desired resource indexed by address) and the digest
    // of the host table's rules are then not worked out: on a big project that was most of
    // observing. A host table alone is read again below, as any other.
    let marked = |l: &KLink| match l.alias.as_deref().filter(|a| !a.is_empty()) {
        Some(alias) => parse_mark(alias).is_some_and(|(p, _)| p == k.project),
        None => l.kind == LinkKind::Bridge && l.mac == Some(k.owner_mac(&l.name)),
    };
    if pinned.is_empty() && !host_links.iter().any(marked) {
        let host = k
            .read_table(None, &host_table(&k.project), Digest::default())
            .await?;
        if matches!(host, TableRead::Missing) {
            let out = none_live(state, desired);
            timed(started, 0, (0, 0), &out);
            return Ok(out);
        }
    }
    let t = Templates::new(state, desired);
    let mut out = Vec::new();
    let ours = |l: &KLink| match l.alias.as_deref().filter(|a| !a.is_empty()) {
        Some(alias) => parse_mark(alias)
            .filter(|(p, _)| *p == k.project)
            .map(|(_, a)| a),
        // A bridge made by a run killed before it set the mark: its MAC proves it ours (see
        // Kernel::owner_mac). Unmarked veth host ends need no such care: they go with their
        // peer, which lives in one of the project's namespaces.
        None if l.kind == LinkKind::Bridge && l.mac == Some(k.owner_mac(&l.name)) => Some(
            t.bridge_named(&l.name)
                .map_or_else(|| ResourceId::network(&l.name), Clone::clone),
        ),
        None => None,
    };
    let names_by_index: HashMap<u32, &str> = host_links
        .iter()
        .map(|l| (l.index, l.name.as_str()))
        .collect();
    let mut host_ends: HashMap<ResourceId, HostEnd> = HashMap::new();
    let mut vxlans = Vec::new();
    for l in &host_links {
        let Some(address) = ours(l) else { continue };
        match l.kind {
            LinkKind::Bridge => out.push(bridge(&t, &address, l, &host_addrs)),
            LinkKind::Veth => {
                let master = l
                    .master
                    .and_then(|m| names_by_index.get(&m))
                    .map(|m| m.to_string());
                host_ends.insert(address, (l.name.clone(), master, l.mtu.unwrap_or(0), l.up));
            }
            LinkKind::Vxlan => vxlans.push((address, l)),
            LinkKind::Macvlan | LinkKind::Device | LinkKind::Other(_) => {}
        }
    }
    for (address, l) in vxlans {
        out.extend(super::overlay::read(k, &t, &address, l, &names_by_index).await?);
    }
    for r in t.by_kind(|s| matches!(s, Spec::Macvlan(_) | Spec::External(_))) {
        out.push(r.clone());
    }
    let scans: Vec<_> = stream::iter(pinned.iter().zip(surveyed))
        .map(|(ns, found)| namespace(k, &t, ns, found, &host_ends, depth))
        .buffered(PARALLEL)
        .collect()
        .await;
    let mut namespaces = Vec::with_capacity(scans.len());
    for scanned in scans {
        if let Some(mut found) = scanned? {
            found.sort_by(|a, b| a.address.cmp(&b.address));
            namespaces.push(found);
        }
    }
    // A namespace's resources are one run of the address order. Put in that order (their pins'
    // names are not: `p-web-10` sorts before `p-web-2`), they leave the sort of all that is
    // observed a few runs to merge instead of a thousand resources to sort.
    namespaces.sort_by(|a, b| first_address(a).cmp(&first_address(b)));
    let live = namespaces.len();
    out.extend(namespaces.into_iter().flatten());
    out.extend(orphan_host_ends(&t, &out, &host_ends));
    out.extend(
        super::table::table(
            k,
            &t,
            None,
            &ResourceId::HostFirewall,
            &host_table(&k.project),
        )
        .await?,
    );
    with_vips_and_zones(&mut out, state);
    timed(started, live, k.kept_by_source(), &out);
    Ok(out)
}

fn first_address(found: &[Resource]) -> Option<&ResourceId> {
    found.first().map(|r| &r.address)
}

/// The state's VIPs and DNS zones, taken as recorded, added to `out`, which is then put in
/// address order.
fn with_vips_and_zones(out: &mut Vec<Resource>, state: &[Resource]) {
    out.extend(
        state
            .iter()
            .filter(|r| matches!(r.spec, Spec::Vip(_) | Spec::Dns(_)))
            .cloned(),
    );
    out.sort_by(|a, b| a.address.cmp(&b.address));
}

/// `NETCOMPOSE_TIMINGS`: how many namespaces and resources an observation found (and how
/// many namespaces' surveys, and sockets, the project daemon gave), and how long it took
/// since `started`.
fn timed(
    started: std::time::Instant,
    namespaces: usize,
    (kept, lent): (usize, usize),
    out: &[Resource],
) {
    if std::env::var_os("NETCOMPOSE_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!(
            "timing: observe: {} namespaces ({} kept by the daemon, {} sockets lent), {} resources in {:.1} ms",
            namespaces,
            kept,
            lent,
            out.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// What [`observe_read`] finds where nothing of the project exists: what it takes from the
/// templates alone (macvlan and external networks, which are not the project's to make; the
/// state's, else the desired ones), and the state's VIPs and zones, in address order.
fn none_live(state: &[Resource], desired: &[Resource]) -> Vec<Resource> {
    let outside = |r: &&Resource| matches!(r.spec, Spec::Macvlan(_) | Spec::External(_));
    // As in the templates, a resource of the state stands for the desired one of its address.
    let mut known: BTreeMap<&ResourceId, &Resource> = desired
        .iter()
        .filter(outside)
        .map(|r| (&r.address, r))
        .collect();
    for r in state {
        if outside(&r) {
            known.insert(&r.address, r);
        } else if !known.is_empty() {
            known.remove(&r.address);
        }
    }
    let mut out: Vec<Resource> = known.into_values().cloned().collect();
    with_vips_and_zones(&mut out, state);
    out
}

/// Veth host ends of the project whose other end no scanned namespace holds: the namespace was
/// deleted (the kernel frees it, and the pair, asynchronously; a process inside may keep it
/// alive) or the other end lacks its mark (a run killed between marking the two ends). They
/// are reported under their own address, with nothing known inside, so that `down` deletes
/// them and `up` rebuilds or completes the link.
fn orphan_host_ends(
    t: &Templates,
    found: &[Resource],
    host_ends: &HashMap<ResourceId, HostEnd>,
) -> Vec<Resource> {
    let found: HashSet<&ResourceId> = found.iter().map(|r| &r.address).collect();
    let mut orphans: Vec<Resource> = host_ends
        .iter()
        .filter(|(address, _)| !found.contains(address))
        .map(|(address, (name, master, mtu, _))| {
            let mut link = match t.get(address).map(|r| &r.spec) {
                Some(Spec::Link(x)) => (**x).clone(),
                _ => unknown_link(address, r::LinkType::Veth, ""),
            };
            link.host_ifname = Some(name.clone());
            link.bridge = master.clone();
            link.mtu = *mtu;
            link.mac = String::new();
            link.addresses = vec![];
            Resource {
                address: address.clone(),
                spec: Spec::Link(Box::new(link)),
                depends_on: t.depends_on(address),
            }
        })
        .collect();
    orphans.sort_by(|a, b| a.address.cmp(&b.address));
    orphans
}

fn bridge(t: &Templates, address: &ResourceId, l: &KLink, addrs: &[(u32, IpNetwork)]) -> Resource {
    let gateways: Vec<IpNetwork> = addrs
        .iter()
        .filter(|(i, a)| *i == l.index && !link_local(a))
        .map(|(_, a)| *a)
        .collect();
    let network = match address {
        ResourceId::Network(key) => key.clone(),
        other => other.to_string(),
    };
    let mut b = match t.get(address).map(|r| &r.spec) {
        Some(Spec::Bridge(b)) => b.clone(),
        _ => r::Bridge {
            network,
            name: String::new(),
            subnets: vec![],
            gateways: vec![],
            mtu: 0,
            internal: false,
            icc: true,
            masquerade: false,
        },
    };
    b.name = l.name.clone();
    b.mtu = l.mtu.unwrap_or(0);
    b.subnets = gateways
        .iter()
        .filter_map(|g| IpNetwork::new(g.network(), g.prefix()).ok())
        .collect();
    b.gateways = gateways;
    Resource {
        address: address.clone(),
        spec: Spec::Bridge(b),
        depends_on: t.depends_on(address),
    }
}

fn link_local(a: &IpNetwork) -> bool {
    matches!(a, IpNetwork::V6(v6) if v6.ip().segments()[0] & 0xffc0 == 0xfe80)
}

/// One of the project's namespaces, from what the survey `found` in it: itself, its marked
/// links, default routes, files and table; None for a pin file with nothing mounted on it (a
/// run killed half-way), which is no namespace.
async fn namespace<M: Machine>(
    k: &Kernel<M>,
    t: &Templates<'_>,
    ns: &str,
    found: Option<Survey>,
    host_ends: &HashMap<ResourceId, HostEnd>,
    depth: Depth,
) -> Result<Option<Vec<Resource>>, KernelError> {
    let Some(Survey {
        links,
        addresses: addrs,
        routes,
        files: found_files,
    }) = found
    else {
        return Ok(None);
    };
    let Some((_, ResourceId::Replica(replica))) = links
        .iter()
        .find(|l| l.index == LOOPBACK_INDEX)
        .and_then(|l| l.alias.as_deref())
        .and_then(parse_mark)
        .filter(|(p, _)| *p == k.project)
    else {
        return Ok(Some(Vec::new()));
    };
    let ns_address = ResourceId::Replica(replica.clone());
    let table_address = ResourceId::ReplicaFirewall(replica.clone());
    if depth == Depth::Outline {
        return Ok(Some(outline(k, t, ns, &replica, &links, host_ends)));
    }
    let files = files(t, ns, ResourceId::Files(replica.clone()), found_files);
    let (itself, table) = futures::try_join!(
        namespace_resource(k, t, ns, &ns_address),
        super::table::table(k, t, Some(ns), &table_address, REPLICA_TABLE),
    )?;
    let mut out = vec![itself];
    for l in links.iter().filter(|l| l.index != LOOPBACK_INDEX) {
        let Some((_, address)) = l
            .alias
            .as_deref()
            .and_then(parse_mark)
            .filter(|(p, _)| *p == k.project)
        else {
            continue;
        };
        let mut found = link(t, ns, &address, l, &addrs, host_ends.get(&address));
        if let Spec::Link(spec) = &mut found.spec {
            if spec.qos.is_some() {
                super::qos::read(k, &k.netns(ns).await?, l.index, spec).await?;
            }
        }
        out.push(found);
    }
    for route in routes.into_iter().filter(|r| r.dst.prefix() == 0) {
        let (Some(gateway), Some(oif)) = (route.gateway, route.oif) else {
            continue;
        };
        let family = if route.dst.is_ipv4() {
            RouteFamily::V4
        } else {
            RouteFamily::V6
        };
        let address = ResourceId::Route(replica.clone(), family);
        let ifname = links
            .iter()
            .find(|l| l.index == oif)
            .map(|l| l.name.clone())
            .unwrap_or_default();
        let spec = Spec::Route(r::Route {
            namespace: ns.to_string(),
            destination: route.dst,
            gateway,
            ifname,
        });
        let depends_on = t.depends_on(&address);
        out.push(Resource {
            address,
            spec,
            depends_on,
        });
    }
    out.extend(files);
    out.extend(table);
    Ok(Some(out))
}

/// A namespace of the project to [`Depth::Outline`]: itself and its marked links as read,
/// and what else the state records inside it, unread.
fn outline<M: Machine>(
    k: &Kernel<M>,
    t: &Templates<'_>,
    ns: &str,
    replica: &r::ReplicaId,
    links: &[KLink],
    host_ends: &HashMap<ResourceId, HostEnd>,
) -> Vec<Resource> {
    let ns_address = ResourceId::Replica(replica.clone());
    let itself = match t.get(&ns_address) {
        Some(r) => r.clone(),
        None => Resource {
            spec: Spec::Namespace(r::Namespace {
                name: ns.to_string(),
                service: String::new(),
                replica: 0,
                sysctls: BTreeMap::new(),
            }),
            depends_on: Vec::new(),
            address: ns_address,
        },
    };
    let mut out = vec![itself];
    for l in links.iter().filter(|l| l.index != LOOPBACK_INDEX) {
        let Some((_, address)) = l
            .alias
            .as_deref()
            .and_then(parse_mark)
            .filter(|(p, _)| *p == k.project)
        else {
            continue;
        };
        out.push(link(t, ns, &address, l, &[], host_ends.get(&address)));
    }
    let inside = [
        ResourceId::Route(replica.clone(), RouteFamily::V4),
        ResourceId::Route(replica.clone(), RouteFamily::V6),
        ResourceId::Files(replica.clone()),
        ResourceId::ReplicaFirewall(replica.clone()),
    ];
    out.extend(inside.iter().filter_map(|a| t.get(a)).cloned());
    out
}

/// The live values of `sysctls`' keys; a key the kernel does not have (its device is gone)
/// reads as empty, so that it shows as a difference.
pub(super) async fn read_sysctls<M: Machine>(
    k: &Kernel<M>,
    ns: Option<&str>,
    sysctls: &mut BTreeMap<String, String>,
) -> Result<(), KernelError> {
    for (key, value) in sysctls.iter_mut() {
        *value = match k.read_sysctl(ns, key).await {
            Ok(v) => v.trim().to_string(),
            Err(e) if e.is_not_found() => String::new(),
            Err(e) => return Err(e),
        };
    }
    Ok(())
}

async fn namespace_resource<M: Machine>(
    k: &Kernel<M>,
    t: &Templates<'_>,
    ns: &str,
    address: &ResourceId,
) -> Result<Resource, KernelError> {
    let mut n = match t.get(address).map(|r| &r.spec) {
        Some(Spec::Namespace(n)) => n.clone(),
        _ => r::Namespace {
            name: ns.to_string(),
            service: String::new(),
            replica: 0,
            sysctls: BTreeMap::new(),
        },
    };
    n.name = ns.to_string();
    read_sysctls(k, Some(ns), &mut n.sysctls).await?;
    Ok(Resource {
        address: address.clone(),
        spec: Spec::Namespace(n),
        depends_on: t.depends_on(address),
    })
}

fn link(
    t: &Templates,
    ns: &str,
    address: &ResourceId,
    l: &KLink,
    addrs: &[(u32, IpNetwork)],
    host_end: Option<&HostEnd>,
) -> Resource {
    let mut link = match t.get(address).map(|r| &r.spec) {
        Some(Spec::Link(x)) => (**x).clone(),
        _ => unknown_link(
            address,
            if l.kind == LinkKind::Macvlan {
                r::LinkType::Macvlan
            } else {
                r::LinkType::Veth
            },
            ns,
        ),
    };
    link.namespace = ns.to_string();
    link.ifname = l.name.clone();
    link.mac = l.mac.as_ref().map(format_mac).unwrap_or_default();
    link.mtu = l.mtu.unwrap_or(0);
    link.addresses = addrs
        .iter()
        .filter(|(i, a)| *i == l.index && !link_local(a))
        .map(|(_, a)| *a)
        .collect();
    // A drill takes down the host end of a veth (a macvlan has no peer: its own end).
    link.down = !l.up;
    if link.link_type == r::LinkType::Veth {
        link.host_ifname = host_end.map(|h| h.0.clone());
        link.bridge = host_end.and_then(|h| h.1.clone());
        link.down |= host_end.is_some_and(|h| !h.3);
    }
    Resource {
        address: address.clone(),
        spec: Spec::Link(Box::new(link)),
        depends_on: t.depends_on(address),
    }
}

/// A link of ours that neither the state nor the file knows: what its address tells.
fn unknown_link(address: &ResourceId, link_type: r::LinkType, ns: &str) -> r::Link {
    let network = match address {
        ResourceId::Link(_, network) => network.clone(),
        other => other
            .to_string()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    r::Link {
        link_type,
        network,
        namespace: ns.to_string(),
        ifname: String::new(),
        host_ifname: None,
        bridge: None,
        parent: None,
        mode: None,
        mac: String::new(),
        addresses: vec![],
        mtu: 0,
        qos: None,
        down: false,
    }
}

/// The namespace's hosts and resolv.conf, from the files the survey found in its directory.
fn files(
    t: &Templates<'_>,
    ns: &str,
    address: ResourceId,
    found: Vec<(String, String)>,
) -> Option<Resource> {
    let mut hosts = None;
    let mut resolv_conf = None;
    for (name, text) in found {
        match name.as_str() {
            "hosts" => hosts = Some(text),
            "resolv.conf" => resolv_conf = Some(text),
            // Not netcompose's: what else lives there is left alone.
            _ => {}
        }
    }
    if hosts.is_none() && resolv_conf.is_none() {
        return None;
    }
    let lines = |text: Option<String>| {
        text.map(|s| s.lines().map(String::from).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let spec = Spec::Files(r::NetnsFiles {
        namespace: ns.to_string(),
        hosts: lines(hosts),
        resolv_conf: lines(resolv_conf),
    });
    let depends_on = t.depends_on(&address);
    Some(Resource {
        address,
        spec,
        depends_on,
    })
}

#[cfg(test)]
mod tests {
    use super::none_live;
    use crate::model::resource::{ExternalNetwork, Resource, ResourceId, Spec, Vip};

    fn external(key: &str, name: &str) -> Resource {
        Resource {
            address: ResourceId::network(key),
            spec: Spec::External(ExternalNetwork {
                network: key.into(),
                name: name.into(),
            }),
            depends_on: vec![],
        }
    }

    fn vip(service: &str, network: &str) -> Resource {
        Resource {
            address: ResourceId::vip(service, network),
            spec: Spec::Vip(Vip {
                service: service.into(),
                network: network.into(),
                addresses: vec![],
                backends: vec![],
            }),
            depends_on: vec![],
        }
    }

    /// Where nothing exists, the networks not the project's to make are found as the state,
    /// else the desired state, knows them, with the state's VIPs; a network the state knows
    /// as another kind is not one of them (as the templates index it: by address, the state's
    /// last).
    #[test]
    fn nothing_live_keeps_outside_networks_and_the_state_vips() {
        let desired = [
            external("a", "desired"),
            external("b", "desired"),
            external("c", "desired"),
            vip("web", "a"),
        ];
        let state = [
            vip("web", "b"),
            external("b", "state"),
            Resource {
                address: ResourceId::network("c"),
                ..vip("web", "c")
            },
        ];
        let found: Vec<(String, &str)> = none_live(&state, &desired)
            .iter()
            .map(|r| {
                let what = match &r.spec {
                    Spec::External(n) if n.name == "state" => "state",
                    Spec::External(_) => "desired",
                    _ => "vip",
                };
                (r.address.to_string(), what)
            })
            .collect();
        let expected = [
            ("network.a", "desired"),
            ("network.b", "state"),
            // The state's VIPs are all found, whatever their address.
            ("network.c", "vip"),
            ("service.web.vip.b", "vip"),
        ];
        assert_eq!(found, expected.map(|(a, w)| (a.to_string(), w)).to_vec());
    }
}
