//! A table of the project read back: the rules netcompose wrote that are still there (by
//! their tags), the tags of rules it did not write, and whether its VIP maps and policy sets
//! hold exactly their elements. A rule's tag is a hash of its text: the tags of a chain are
//! worked out once per run for each distinct chain (every replica of a service has the same
//! policy chains), and the VIP part of a table (its dispatch chains' tags, its maps'
//! elements) once per list of networks and of VIPs dropped (every replica of a service on the
//! same networks has the same).

use super::live::{read_sysctls, Templates};
use crate::firewall::compile::{backend_slots, peer_set};
use crate::firewall::rule::{rule_tag, Chain, Map, Set};
use crate::kernel::generations::{Digest, TableRead};
use crate::kernel::nftables::{Element, LiveTable, SetSpec};
use crate::kernel::{Kernel, KernelError, Machine};
use crate::model::resource::{self as r, FirewallParts, RefusedVip, Resource, ResourceId, Spec};
use crate::model::tables::replica::{expand_vips, vip_key, VipIndex, VipKey};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// A chain's rule tags, in order.
type ChainTags = Arc<Vec<String>>;

/// The rule tags of each distinct chain seen in a run, by chain name.
#[derive(Default)]
pub struct Tags(Mutex<HashMap<String, Vec<(Chain, ChainTags)>>>);

impl Tags {
    /// The tags of `chain`'s rules, in order.
    fn of(&self, chain: &Chain) -> ChainTags {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let variants = memo.entry(chain.name.clone()).or_default();
        if let Some((_, tags)) = variants.iter().find(|(c, _)| c == chain) {
            return tags.clone();
        }
        let tags = Arc::new(chain.rules.iter().map(rule_tag).collect::<Vec<_>>());
        variants.push((chain.clone(), tags.clone()));
        tags
    }
}

/// The VIP part of a replica table as a read compares it: each dispatch chain with its rule
/// tags, each VIP map with its elements, and their digest.
pub(super) struct VipPart {
    chains: Vec<(String, ChainTags)>,
    maps: Vec<SetSpec>,
    digest: Digest,
}

/// A [`VipKey`] held by the memo: the networks and the VIPs dropped.
type OwnedVipKey = (Vec<String>, Vec<RefusedVip>);

/// The VIP part of each distinct [`VipKey`] seen in a run, by the key's hash: a lookup
/// hashes the key it is given rather than copying it (some twenty strings a table of the
/// bench's project, for each of 200 tables read on the main thread).
#[derive(Default)]
pub struct VipParts {
    hasher: ahash::RandomState,
    memo: Mutex<HashMap<u64, Vec<KeptPart>>>,
}

/// A VIP part with the key it was worked out for.
type KeptPart = (OwnedVipKey, Arc<VipPart>);

impl VipParts {
    fn of(&self, key: VipKey, vips: &VipIndex, tags: &Tags) -> Arc<VipPart> {
        let hash = self.hasher.hash_one(key);
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        let same = memo.entry(hash).or_default();
        if let Some((_, part)) = same.iter().find(|((n, r), _)| (&n[..], &r[..]) == key) {
            return part.clone();
        }
        let (chains, maps) = expand_vips(key, vips);
        let chains: Vec<(String, ChainTags)> = chains
            .iter()
            .map(|c| (c.name.clone(), tags.of(c)))
            .collect();
        let maps: Vec<SetSpec> = maps.iter().map(backend_slots).collect();
        let mut digest = Digest::default();
        for (name, tags) in &chains {
            digest.add_chain(name, tags.iter().map(String::as_str));
        }
        for m in &maps {
            digest.add_set(&m.name, &m.elements);
        }
        let part = Arc::new(VipPart {
            chains,
            maps,
            digest,
        });
        same.push(((key.0.to_vec(), key.1.to_vec()), part.clone()));
        part
    }
}

/// The part of a table that its own resource spells out, as a read compares it: its chains
/// with their rule tags, and the digest of those chains and of its maps and policy sets.
pub(super) struct OwnPart {
    chains: Vec<(String, ChainTags)>,
    digest: Digest,
}

/// The own part of each distinct table seen in a run: the replica tables of a service hold
/// one copy of its chains, maps and sets, so their tags and the elements' hashes are worked
/// out once per service, not once per table.
#[derive(Default)]
pub struct OwnParts(Mutex<HashMap<FirewallParts, Arc<OwnPart>>>);

impl OwnParts {
    fn of(&self, fw: &r::Firewall, tags: &Tags) -> Arc<OwnPart> {
        let parts = FirewallParts::of(fw);
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(part) = memo.get(&parts) {
            return part.clone();
        }
        let chains: Vec<(String, ChainTags)> = fw
            .chains
            .iter()
            .map(|c| (c.name.clone(), tags.of(c)))
            .collect();
        let mut digest = Digest::default();
        for (name, tags) in &chains {
            digest.add_chain(name, tags.iter().map(String::as_str));
        }
        for s in fw
            .maps
            .iter()
            .map(backend_slots)
            .chain(fw.sets.iter().map(peer_set))
        {
            digest.add_set(&s.name, &s.elements);
        }
        let part = Arc::new(OwnPart { chains, digest });
        memo.insert(parts, part.clone());
        part
    }
}

/// Whether each map holds, live, exactly the elements netcompose writes for it.
fn maps_intact(maps: &[Map], live: &[(String, Vec<Element>)]) -> bool {
    maps.iter().map(backend_slots).all(|m| intact(&m, live))
}

/// Whether each named set holds, live, exactly its elements.
fn sets_intact(sets: &[Set], live: &[(String, Vec<Element>)]) -> bool {
    sets.iter().map(peer_set).all(|s| intact(&s, live))
}

fn intact(want: &SetSpec, live: &[(String, Vec<Element>)]) -> bool {
    live.iter()
        .find(|(n, _)| *n == want.name)
        .is_some_and(|(_, got)| {
            got.len() == want.elements.len() && want.elements.iter().all(|e| got.contains(e))
        })
}

/// A table of the project: the known rules whose tags are present, in order, and the tags of
/// rules netcompose did not write, so that any change made outside shows as a difference.
pub(super) async fn table<M: Machine>(
    k: &Kernel<M>,
    t: &Templates<'_>,
    ns: Option<&str>,
    address: &ResourceId,
    name: &str,
) -> Result<Option<Resource>, KernelError> {
    let template = match t.get(address).map(|r| &r.spec) {
        Some(Spec::Firewall(f)) => Some((**f).clone()),
        _ => None,
    };
    let mut fw = template.unwrap_or(r::Firewall {
        namespace: ns.map(str::to_string),
        table: name.to_string(),
        sysctls: BTreeMap::new(),
        vip_networks: vec![],
        vip_digest: String::new(),
        vip_refused: Default::default(),
        chains: Default::default(),
        maps: Default::default(),
        sets: Default::default(),
        foreign_rules: vec![],
    });
    // What the table should hold, VIP chains and maps included, as the last apply wrote it.
    let vip = t.vip_parts.of(vip_key(&fw), &t.vips, &t.tags);
    let own = t.own_parts.of(&fw, &t.tags);
    match k.read_table(ns, name, vip.digest.plus(own.digest)).await? {
        TableRead::Missing => return Ok(None),
        // Exactly what the last apply wrote: every rule in place, nothing of anyone else's.
        TableRead::Unchanged => fw.foreign_rules.clear(),
        TableRead::Live(live) => compare(&mut fw, &live, &vip, &own, &t.tags),
    }
    read_sysctls(k, ns, &mut fw.sysctls).await?;
    Ok(Some(Resource {
        address: address.clone(),
        spec: Spec::Firewall(Box::new(fw)),
        depends_on: t.depends_on(address),
    }))
}

/// `fw` (the template) narrowed to what the live table holds: the rules whose tags are there,
/// the tags of rules netcompose did not write, and marks for VIP chains, maps or policy sets
/// changed outside.
fn compare(fw: &mut r::Firewall, live: &LiveTable, vip: &VipPart, own: &OwnPart, memo: &Tags) {
    let tag_sets: Vec<&(String, ChainTags)> = vip.chains.iter().chain(&own.chains).collect();
    let tags = &live.chains;
    let known: HashSet<&String> = tag_sets.iter().flat_map(|(_, t)| t.iter()).collect();
    fw.foreign_rules = tags
        .iter()
        .flat_map(|(_, live)| live.iter())
        .filter(|tag| !known.contains(tag))
        .cloned()
        .collect();
    let live_of = |chain: &str| {
        tags.iter()
            .find(|(n, _)| n == chain)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    };
    let vip_intact = tag_sets
        .iter()
        .filter(|(n, _)| !own.chains.iter().any(|(o, _)| o == n))
        .all(|(n, want)| live_of(n) == **want);
    if !vip_intact || !vip.maps.iter().all(|m| intact(m, &live.sets)) {
        fw.vip_digest = String::new();
    }
    // The host table spells its maps out: one changed outside makes it reloaded whole.
    if !maps_intact(&fw.maps, &live.sets) {
        fw.foreign_rules
            .push("vip maps changed outside netcompose".into());
    }
    // A policy's set changed outside: reloaded whole too, since which elements it lacks or
    // holds beyond the template's is not worth telling apart.
    if !sets_intact(&fw.sets, &live.sets) {
        fw.foreign_rules
            .push("policy sets changed outside netcompose".into());
    }
    let chains = fw.chains.make_mut();
    for chain in chains.iter_mut() {
        let live = live_of(&chain.name);
        let tags = memo.of(chain);
        let mut kept = tags.iter().map(|tag| live.contains(tag));
        chain.rules.retain(|_| kept.next().unwrap_or(false));
    }
    chains.retain(|c| tags.iter().any(|(n, _)| n == &c.name));
}
