//! Each replica's own table, in its namespace: the VIP dispatch for every service it shares a
//! network with, and its `x-policy` (the service's, and each attached network's on that
//! network's interface). Enforced where the packets start and end, so a policy holds whatever
//! path a packet takes.
//!
//! The VIP part is the same for every replica on the same networks, so the resource names the
//! networks (and a digest of their VIPs) instead of spelling out the chains: a project of N
//! replicas would otherwise describe N × VIPs chains. The applier expands it, a table at a time
//! ([`Expander`]).
//! The VIPs that the service's policies make useless to the replica are named too: the
//! dispatch drops them ([`reach`]). Every replica of a service on the same networks has the
//! same VIP part, worked out once per [`VipKey`].

use super::reach;
use super::vip::{vip_chains, vip_maps, Dispatch};
use crate::firewall::rule::{rule, Chain, Map, Rule, RuleBuilder, Set};
use crate::model::endpoints::{Endpoint, EndpointIndex, Replica, Stack};
use crate::model::resource::{Firewall, RefusedVip, Resource, ResourceId, Spec, Vip};
use crate::model::shared::{Runs, Shared};
use crate::spec::{Peer, PolicyEntry, Project, Rules, Spanned};
use ahash::AHashMap;
use ipnetwork::IpNetwork;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// The name of the table inside every replica namespace.
pub const REPLICA_TABLE: &str = "netcompose";

/// VIPs by network, for expanding replica tables.
pub type VipIndex<'a> = HashMap<&'a str, Vec<&'a Vip>>;

/// What a replica table's VIP part depends on: its networks and the VIPs it drops.
pub type VipKey<'a> = (&'a [String], &'a [RefusedVip]);

/// The [`VipKey`] of a replica table.
pub fn vip_key(fw: &Firewall) -> VipKey<'_> {
    (&fw.vip_networks, &fw.vip_refused[..])
}

pub fn vip_index<'a>(vips: impl IntoIterator<Item = &'a Vip>) -> VipIndex<'a> {
    let mut index: VipIndex = HashMap::new();
    for v in vips {
        index.entry(v.network.as_str()).or_default().push(v);
    }
    index
}

/// The VIP part of a replica table of `key`: the dispatch chains and the VIPs' maps. It
/// depends on the key alone, so every replica of a service on the same networks has the same:
/// callers that expand many tables work it out once per key.
pub fn expand_vips(key: VipKey, vips: &VipIndex) -> (Vec<Chain>, Vec<Map>) {
    let dispatch = dispatch(key, vips);
    let mut chains = Vec::new();
    let dispatch_rules = dispatch.rules();
    if !dispatch_rules.is_empty() {
        chains.push(Chain::base("vip", "nat", "output", -100, dispatch_rules));
        chains.extend(vip_chains(&dispatch));
    }
    (chains, vip_maps(&dispatch))
}

/// The VIP dispatch of a replica table of `key`.
fn dispatch((networks, refused): VipKey, vips: &VipIndex) -> Dispatch {
    Dispatch::refusing(
        networks
            .iter()
            .flat_map(|n| vips.get(n.as_str()).into_iter().flatten().copied()),
        refused,
    )
}

/// A short digest of what one network's VIPs make of a replica table's chains: each VIP's
/// addresses, and which of them have a backend (a family without one gets no chain). The
/// backends themselves are elements of the VIP's map, which the VIP's own change carries: a
/// scale must not change every table that can reach the service.
fn network_digest(network: &str, vips: &VipIndex) -> String {
    let mut h = Sha256::new();
    for v in vips.get(network).into_iter().flatten() {
        h.update(v.service.as_bytes());
        for (address, backends) in v.families() {
            h.update(format!(" {address}:{}", !backends.is_empty()));
        }
        h.update(b"\n");
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Ingress,
    Egress,
}

pub fn resources(
    project: &Project,
    replicas: &[Replica],
    index: &EndpointIndex,
    vips: &[&Vip],
) -> Vec<Resource> {
    let by_network = vip_index(vips.iter().copied());
    // Computed once per network: every replica on it shares the digest.
    let digests: HashMap<&str, String> = by_network
        .keys()
        .map(|n| (*n, network_digest(n, &by_network)))
        .collect();
    // Only VIPs whose service may turn a client away can be dropped: far fewer to check.
    let strict: VipIndex = by_network
        .iter()
        .map(|(n, vips)| (*n, reach::strict(project, vips)))
        .filter(|(_, vips)| !vips.is_empty())
        .collect();
    // The VIPs each service's replicas on the same networks drop: the same for all of them.
    let mut refused: HashMap<(&str, Vec<String>), Shared<Vec<RefusedVip>>> = HashMap::new();
    // The replicas of a service come one after another, with equal chains and sets: held once.
    let (mut chain_runs, mut set_runs) = (Runs::default(), Runs::default());
    replicas
        .iter()
        .filter(|r| r.stack == Stack::Own)
        .filter_map(|rep| {
            let mine = index.replica(&rep.service, rep.index);
            let mut vip_networks: Vec<String> = mine
                .iter()
                .filter(|e| by_network.contains_key(e.network.as_str()))
                .map(|e| e.network.clone())
                .collect();
            vip_networks.sort();
            let vip_refused = refused
                .entry((rep.service.as_str(), vip_networks.clone()))
                .or_insert_with(|| {
                    Shared::new(reach::refused(
                        project,
                        &rep.service,
                        vip_networks
                            .iter()
                            .flat_map(|n| strict.get(n.as_str()).into_iter().flatten().copied()),
                    ))
                })
                .clone();
            let mut chains = Vec::new();
            let mut sets = PeerSets::new();
            for (dir, name, hook) in [
                (Direction::Ingress, "ingress", "input"),
                (Direction::Egress, "egress", "output"),
            ] {
                let rules = policy_rules(project, rep, mine, index, vips, dir, &mut sets);
                if !rules.is_empty() {
                    chains.push(Chain::base(name, "filter", hook, 0, rules));
                }
            }
            chains.extend(faults(project, rep, mine));
            if chains.is_empty() && vip_networks.is_empty() {
                return None;
            }
            let ns = rep.netns.clone().unwrap_or_default();
            let vip_digest = vip_networks
                .iter()
                .filter_map(|n| digests.get(n.as_str()).cloned())
                .collect::<Vec<_>>()
                .join("-");
            Some(Resource {
                address: ResourceId::ReplicaFirewall(rep.id()),
                spec: Spec::Firewall(Box::new(Firewall {
                    namespace: Some(ns),
                    table: REPLICA_TABLE.into(),
                    sysctls: BTreeMap::new(),
                    vip_networks,
                    vip_digest,
                    vip_refused,
                    chains: chain_runs.share(chains),
                    maps: Default::default(),
                    sets: set_runs.share(sets.into_values().collect()),
                    foreign_rules: vec![],
                })),
                // The namespace alone: rules name interfaces, which need not exist yet, so the
                // table is written as soon as its namespace exists, beside the links.
                depends_on: vec![rep.address()],
            })
        })
        .collect()
}

/// The `faults` chain: the x-qos loss of each of the replica's interfaces.
fn faults(project: &Project, rep: &Replica, mine: &[&Endpoint]) -> Option<Chain> {
    let svc = project.services.get(&rep.service)?;
    let losses: Vec<(String, u8)> = mine
        .iter()
        .filter_map(|e| {
            let q = svc.networks.get(&e.network)?.effective_qos(svc)?;
            Some((e.ifname.clone(), q.loss?.value))
        })
        .collect();
    crate::model::qos::faults_chain(&losses)
}

/// The service's policy, then each attached network's (limited to its interface). Denies
/// first, then allows, then catch-all denies (`0.0.0.0/0`, `::/0`), which act as the default:
/// deny wins over allow for the same match, and `deny: [0.0.0.0/0]` with allows is default-deny.
/// The services the rules name get their named sets in `sets`.
fn policy_rules(
    project: &Project,
    rep: &Replica,
    mine: &[&Endpoint],
    index: &EndpointIndex,
    vips: &[&Vip],
    dir: Direction,
    sets: &mut PeerSets,
) -> Vec<Rule> {
    let svc = &project.services[&rep.service];
    let pick = |p: &'_ crate::spec::Policy| -> Rules {
        if dir == Direction::Ingress {
            p.ingress.clone()
        } else {
            p.egress.clone()
        }
    };
    let mut scoped: Vec<(Option<&str>, Rules)> = Vec::new();
    if let Some(p) = &svc.policy {
        scoped.push((None, pick(p)));
    }
    for e in mine {
        if let Some(p) = project
            .networks
            .get(&e.network)
            .and_then(|n| n.policy.as_ref())
        {
            scoped.push((Some(e.ifname.as_str()), pick(p)));
        }
    }
    if scoped.iter().all(|(_, r)| r.is_empty()) {
        return Vec::new();
    }
    let lo = if dir == Direction::Ingress {
        rule().iif("lo")
    } else {
        rule().oif("lo")
    };
    let mut out = vec![rule().established().accept(), lo.accept()];
    let catch_all = |e: &Spanned<PolicyEntry>| {
        matches!(e.value.peer, Peer::Cidr(c) if c.prefix() == 0) && e.value.port.is_none()
    };
    let mut rules_of =
        |e: &PolicyEntry, iface: Option<&str>| entry(index, vips, iface, e, dir, sets);
    for (iface, rules) in &scoped {
        for e in rules.deny.iter().filter(|e| !catch_all(e)) {
            out.extend(
                rules_of(&e.value, *iface)
                    .into_iter()
                    .map(RuleBuilder::count_drop),
            );
        }
    }
    for (iface, rules) in &scoped {
        for e in &rules.allow {
            out.extend(
                rules_of(&e.value, *iface)
                    .into_iter()
                    .map(RuleBuilder::accept),
            );
        }
    }
    for (iface, rules) in &scoped {
        for e in rules.deny.iter().filter(|e| catch_all(e)) {
            out.extend(
                rules_of(&e.value, *iface)
                    .into_iter()
                    .map(RuleBuilder::count_drop),
            );
        }
    }
    out
}

/// The named sets of a replica table's policy rules, by name: each service a policy names,
/// one set per family and direction ([`peer_set_name`]).
type PeerSets = BTreeMap<String, Set>;

/// The set that holds a service's addresses of one family for a policy: `from.<service>` (its
/// replicas, for ingress) or `to.<service>` (its replicas and VIPs, for egress; `from6.` and
/// `to6.` for IPv6). A policy names a service, whichever network it is reached on, so one set
/// per service holds what the rule matches; the family and direction are in the prefix, where
/// no service name can reach.
pub fn peer_set_name(service: &str, ipv6: bool, egress: bool) -> String {
    let prefix = match (egress, ipv6) {
        (false, false) => "from",
        (false, true) => "from6",
        (true, false) => "to",
        (true, true) => "to6",
    };
    format!("{prefix}.{service}")
}

/// The matches of one policy entry: one rule per address family of the peer. A service's
/// addresses go to a named set (recorded in `sets`), so that its scale changes set elements
/// only; a CIDR is written in the rule.
fn entry(
    index: &EndpointIndex,
    vips: &[&Vip],
    iface: Option<&str>,
    e: &PolicyEntry,
    dir: Direction,
    sets: &mut PeerSets,
) -> Vec<RuleBuilder> {
    let egress = dir == Direction::Egress;
    let peers: Vec<IpNetwork> = match &e.peer {
        Peer::Cidr(c) => vec![*c],
        Peer::Service(s) => {
            let mut v: Vec<IpNetwork> = index
                .service(s)
                .iter()
                .flat_map(|x| x.ips())
                .map(IpNetwork::from)
                .collect();
            if egress {
                v.extend(
                    vips.iter()
                        .filter(|x| &x.service == s)
                        .flat_map(|x| x.addresses.iter().map(|a| IpNetwork::from(*a))),
                );
            }
            v
        }
    };
    let (v4, v6): (Vec<IpNetwork>, Vec<IpNetwork>) = peers.into_iter().partition(|p| p.is_ipv4());
    [(v4, false), (v6, true)]
        .into_iter()
        .filter(|(set, _)| !set.is_empty())
        .map(|(set, ipv6)| {
            let mut r = rule();
            if let Some(i) = iface {
                r = if egress { r.oif(i) } else { r.iif(i) };
            }
            r = match &e.peer {
                Peer::Service(s) => {
                    let name = peer_set_name(s, ipv6, egress);
                    sets.insert(
                        name.clone(),
                        Set {
                            name: name.clone(),
                            elements: set,
                        },
                    );
                    if egress {
                        r.daddr_set(&name, ipv6)
                    } else {
                        r.saddr_set(&name, ipv6)
                    }
                }
                // One network: a prefix match, not an anonymous set of one element (the
                // kernel builds an interval set for that, a tree and its nodes per table).
                Peer::Cidr(c) if egress => r.daddr(*c),
                Peer::Cidr(c) => r.saddr(*c),
            };
            match (e.port, e.protocol) {
                (Some(p), Some(proto)) => r.dport(&proto.to_string(), p.start, p.end),
                _ => r,
            }
        })
        .collect()
}

/// The resources with every replica table's VIP part spelled out ([`Expander::expand`] of
/// each).
pub fn expand_all(resources: &[Resource]) -> Vec<Resource> {
    let expander = Expander::new(resources);
    resources
        .iter()
        .map(|r| expander.expand(r).into_owned())
        .collect()
}

/// The VIP dispatch chains and the VIPs' maps of a replica table ([`expand_vips`]), and the
/// full chains made with them of each list of a table's own chains seen, by its
/// [`Shared::id`]: the replicas of a service hold one list, and get one full list too.
struct VipPart {
    chains: Vec<Chain>,
    maps: Shared<Vec<Map>>,
    full: HashMap<usize, Shared<Vec<Chain>>>,
}

/// Replica tables of one list of resources with their VIP part spelled out, one table at a
/// time: the VIP part of each [`VipKey`] is worked out once, and a table is copied when it is
/// asked for, so that the applier holds a table's full chains only while it writes them.
pub struct Expander<'a> {
    vips: VipIndex<'a>,
    /// aHash: a key holds every VIP the table drops (some twenty strings in the bench's
    /// project), hashed once per table expanded.
    parts: Mutex<AHashMap<VipKey<'a>, VipPart>>,
}

impl<'a> Expander<'a> {
    pub fn new(resources: &'a [Resource]) -> Expander<'a> {
        Expander {
            vips: vips_of(resources),
            parts: Mutex::default(),
        }
    }

    /// `r` as the kernel takes it: a replica table with its VIP chains and maps, marked for a
    /// full reload if its live VIP chains were found damaged (empty digest); anything else
    /// as it is.
    pub fn expand(&self, r: &'a Resource) -> Cow<'a, Resource> {
        let Spec::Firewall(f) = &r.spec else {
            return Cow::Borrowed(r);
        };
        if f.vip_networks.is_empty() {
            return Cow::Borrowed(r);
        }
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        let part = parts.entry(vip_key(f)).or_insert_with(|| {
            let (chains, maps) = expand_vips(vip_key(f), &self.vips);
            VipPart {
                chains,
                maps: maps.into(),
                full: HashMap::new(),
            }
        });
        // Keyed by id: valid while `self` lives, since it borrows the resources holding them.
        let chains = part
            .full
            .entry(f.chains.id())
            .or_insert_with(|| {
                let full: Vec<Chain> = part.chains.iter().chain(f.chains.iter()).cloned().collect();
                full.into()
            })
            .clone();
        let mut foreign_rules = f.foreign_rules.clone();
        if f.vip_digest.is_empty() {
            foreign_rules.push("vip chains changed outside netcompose".into());
        }
        // Field by field: a copy of the whole table (and of the whole resource) would copy
        // chains and maps only to drop them.
        let full = Firewall {
            namespace: f.namespace.clone(),
            table: f.table.clone(),
            sysctls: f.sysctls.clone(),
            vip_networks: Vec::new(),
            vip_digest: f.vip_digest.clone(),
            vip_refused: Default::default(),
            chains,
            maps: part.maps.clone(),
            sets: f.sets.clone(),
            foreign_rules,
        };
        Cow::Owned(Resource {
            address: r.address.clone(),
            spec: Spec::Firewall(Box::new(full)),
            depends_on: r.depends_on.clone(),
        })
    }
}

/// The VIPs among `resources`, by network.
fn vips_of(resources: &[Resource]) -> VipIndex<'_> {
    vip_index(resources.iter().filter_map(|r| match &r.spec {
        Spec::Vip(v) => Some(v),
        _ => None,
    }))
}

/// Replica tables (of two lists before [`expand_all`]) that the plan leaves unchanged but
/// whose VIP maps, once expanded, differ: a VIP's backends are elements of its map in every
/// namespace that dispatches it, so the VIP's change is applied there, element by element.
/// The maps are worked out once per [`VipKey`] on each side, not copied into every table.
pub fn vip_maps_changed<'a>(observed: &[Resource], desired: &'a [Resource]) -> Vec<&'a ResourceId> {
    fn replica_table(r: &Resource) -> Option<(&ResourceId, &Firewall)> {
        let Spec::Firewall(f) = &r.spec else {
            return None;
        };
        f.namespace.is_some().then_some((&r.address, f))
    }
    let old: AHashMap<&ResourceId, &Firewall> = observed.iter().filter_map(replica_table).collect();
    let (mut before, mut after) = (Maps::new(observed), Maps::new(desired));
    desired
        .iter()
        .filter_map(replica_table)
        .filter(|(address, f)| {
            old.get(address)
                .is_some_and(|o| before.of(o) != after.of(f))
        })
        .map(|(address, _)| address)
        .collect()
}

/// The VIP maps that [`Expander`] gives the replica tables of one list of resources,
/// worked out once per [`VipKey`].
struct Maps<'r> {
    vips: VipIndex<'r>,
    by_key: AHashMap<VipKey<'r>, Vec<Map>>,
}

impl<'r> Maps<'r> {
    fn new(resources: &'r [Resource]) -> Self {
        Self {
            vips: vips_of(resources),
            by_key: AHashMap::new(),
        }
    }

    /// The maps of `f` once expanded: its own when it names no networks.
    fn of(&mut self, f: &'r Firewall) -> &[Map] {
        if f.vip_networks.is_empty() {
            return &f.maps;
        }
        let vips = &self.vips;
        self.by_key
            .entry(vip_key(f))
            .or_insert_with(|| vip_maps(&dispatch(vip_key(f), vips)))
    }
}
