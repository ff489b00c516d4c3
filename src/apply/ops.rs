//! Create, update and delete of each resource kind, through the kernel layer. Every create
//! first looks for an object of the same name: one of ours (left by a crashed run) is taken
//! over or rebuilt, one that is not ours is never touched and the apply stops.

use super::ApplyError;
use crate::firewall::compile::CompileError;
use crate::firewall::rule::{kernel_table, Map, Set};
use crate::ipam::mac::parse_mac;
use crate::kernel::machine::{Links, NetnsInit, NewMacvlan, NewVeth};
use crate::kernel::netlink::{Link as KLink, MacvlanMode, LOOPBACK_INDEX};
use crate::kernel::nftables::{self, reshaped};
use crate::kernel::{Kernel, KernelError, Machine};
use crate::model::names::ownership_mark;
use crate::model::resource::{
    Bridge, Firewall, FirewallParts, Link, LinkType, Namespace, NetnsFiles, Resource, Route, Spec,
};
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Result<T> = std::result::Result<T, ApplyError>;

pub(super) fn kernel_err(address: &str) -> impl Fn(KernelError) -> ApplyError + '_ {
    move |source| ApplyError::Kernel {
        address: address.to_string(),
        source,
    }
}

/// The ifalias that marks an object as this project's.
pub(super) fn mark<M>(k: &Kernel<M>, address: &str) -> String {
    ownership_mark(&k.project, address)
}

/// Refuse to go on when `link` exists and is not ours: ours carries our mark, or (made by a
/// run killed before it could set the mark) no alias and the MAC it was created with.
pub(super) fn owned<M: Machine>(k: &Kernel<M>, address: &str, link: &KLink) -> Result<()> {
    owned_with_mac(k, address, link, k.owner_mac(&link.name))
}

/// [`owned`], where an unmarked link proves itself ours with `mac` (inside a replica's
/// namespace, the endpoint's own MAC: the namespace itself is ours).
fn owned_with_mac<M: Machine>(
    k: &Kernel<M>,
    address: &str,
    link: &KLink,
    mac: [u8; 6],
) -> Result<()> {
    if link.alias.as_deref() == Some(mark(k, address).as_str()) {
        return Ok(());
    }
    if link.alias.as_deref().is_none_or(str::is_empty) && link.mac == Some(mac) {
        return Ok(());
    }
    Err(ApplyError::NotOurs {
        address: address.to_string(),
        object: format!("interface {}", link.name),
    })
}

pub async fn create<M: Machine>(k: &Kernel<M>, r: &Resource, compiled: &Compiled) -> Result<()> {
    let a = &r.address.to_string();
    match &r.spec {
        Spec::Bridge(b) => create_bridge(k, a, b).await,
        Spec::Namespace(n) => create_namespace(k, a, n).await,
        Spec::Link(l) => create_link(k, a, l).await,
        Spec::Route(rt) => add_route(k, a, rt).await,
        Spec::Files(f) => write_files(k, a, f).await,
        Spec::Firewall(f) => load_firewall(k, a, None, f, compiled).await,
        Spec::Macvlan(m) => parent_exists(k, a, &m.parent).await,
        Spec::External(e) => parent_exists(k, a, &e.name).await,
        Spec::Vxlan(v) => super::overlay::create_vxlan(k, a, v).await,
        Spec::Remote(e) => super::overlay::set_remote(k, a, None, e).await,
        // Served by the project daemon and the replicas' rule sets, from the state.
        Spec::Vip(_) | Spec::Dns(_) => Ok(()),
    }
}

pub async fn update<M: Machine>(
    k: &Kernel<M>,
    old: &Resource,
    new: &Resource,
    compiled: &Compiled,
) -> Result<()> {
    let a = &new.address.to_string();
    match (&old.spec, &new.spec) {
        (Spec::Bridge(o), Spec::Bridge(n)) => update_bridge(k, a, o, n).await,
        (Spec::Namespace(_), Spec::Namespace(n)) => set_sysctls(k, a, n).await,
        (Spec::Link(o), Spec::Link(n)) => update_link(k, a, o, n).await,
        (Spec::Firewall(o), Spec::Firewall(n)) => load_firewall(k, a, Some(o), n, compiled).await,
        (Spec::Vxlan(_), Spec::Vxlan(n)) => super::overlay::update_vxlan(k, a, n).await,
        (Spec::Remote(o), Spec::Remote(n)) => super::overlay::set_remote(k, a, Some(o), n).await,
        // Made again over the old one (routes are replaced, files rewritten, parents looked
        // up); VIPs and zones are the daemon's.
        (Spec::Route(_), Spec::Route(_))
        | (Spec::Files(_), Spec::Files(_))
        | (Spec::Macvlan(_), Spec::Macvlan(_))
        | (Spec::External(_), Spec::External(_))
        | (Spec::Vip(_), Spec::Vip(_))
        | (Spec::Dns(_), Spec::Dns(_)) => create(k, new, compiled).await,
        // A change of kind is a replacement (plan/diff.rs); every kind is listed so that a new
        // one cannot be forgotten here.
        (
            Spec::Bridge(_)
            | Spec::Macvlan(_)
            | Spec::External(_)
            | Spec::Vxlan(_)
            | Spec::Remote(_)
            | Spec::Namespace(_)
            | Spec::Link(_)
            | Spec::Route(_)
            | Spec::Files(_)
            | Spec::Vip(_)
            | Spec::Dns(_)
            | Spec::Firewall(_),
            _,
        ) => create(k, new, compiled).await,
    }
}

/// Delete `r`; a namespace's ownership is taken from `surveyed` when it holds the namespace
/// (see [`survey_namespaces`]), else read for it alone.
pub async fn delete<M: Machine>(k: &Kernel<M>, r: &Resource, surveyed: &Surveyed) -> Result<()> {
    let a = &r.address.to_string();
    match &r.spec {
        Spec::Bridge(b) => delete_named_link(k, a, &b.name).await,
        Spec::Vxlan(v) => delete_named_link(k, a, &v.name).await,
        Spec::Remote(e) => super::overlay::delete_remote(k, a, e).await,
        Spec::Namespace(n) => delete_namespace(k, a, n, surveyed).await,
        Spec::Link(l) => delete_link(k, a, l).await,
        Spec::Route(rt) => delete_route(k, a, rt).await,
        Spec::Files(f) => remove_files(k, a, f).await,
        Spec::Firewall(f) => k
            .delete_table(f.namespace.as_deref(), &f.table)
            .await
            .map_err(kernel_err(a)),
        Spec::Macvlan(_) | Spec::External(_) | Spec::Vip(_) | Spec::Dns(_) => Ok(()),
    }
}

async fn parent_exists<M: Machine>(k: &Kernel<M>, a: &str, name: &str) -> Result<()> {
    match k.host().link_by_name(name).await.map_err(kernel_err(a))? {
        Some(_) => Ok(()),
        None => Err(ApplyError::Missing {
            address: a.to_string(),
            object: format!("interface {name}"),
        }),
    }
}

// ------------------------------------------------------------------ bridges

async fn create_bridge<M: Machine>(k: &Kernel<M>, a: &str, b: &Bridge) -> Result<()> {
    if let Some(existing) = k
        .host()
        .link_by_name(&b.name)
        .await
        .map_err(kernel_err(a))?
    {
        owned(k, a, &existing)?;
        k.host()
            .delete_link(existing.index)
            .await
            .map_err(kernel_err(a))?;
    }
    let index = k
        .host()
        .create_bridge(
            &b.name,
            Some(b.mtu),
            Some(k.owner_mac(&b.name)),
            Some(&mark(k, a)),
        )
        .await
        .map_err(kernel_err(a))?;
    // Its link-local address comes with `up`: without DAD, as the replicas' (see [`ipv6_on`]).
    // A tentative one leaves the host no source for the neighbour solicitations of the packets
    // it routes onto the bridge (a published port reached from outside) for a second or two.
    if b.gateways.iter().any(IpNetwork::is_ipv6) {
        let key = format!("net/ipv6/conf/{}/accept_dad", b.name);
        k.write_sysctl(None, &key, "0")
            .await
            .map_err(kernel_err(a))?;
    }
    // Up before the addresses: a run killed in between leaves a difference that the next
    // observe sees (missing addresses), never a complete-looking bridge that is down.
    k.host().set_up(index).await.map_err(kernel_err(a))?;
    for gw in &b.gateways {
        k.host()
            .add_address(index, *gw)
            .await
            .map_err(kernel_err(a))?;
    }
    Ok(())
}

async fn update_bridge<M: Machine>(
    k: &Kernel<M>,
    a: &str,
    old: &Bridge,
    new: &Bridge,
) -> Result<()> {
    let Some(link) = k
        .host()
        .link_by_name(&new.name)
        .await
        .map_err(kernel_err(a))?
    else {
        return create_bridge(k, a, new).await;
    };
    owned(k, a, &link)?;
    if link.alias.as_deref() != Some(mark(k, a).as_str()) {
        k.host()
            .set_alias(link.index, Some(&mark(k, a)))
            .await
            .map_err(kernel_err(a))?;
    }
    if old.mtu != new.mtu {
        k.host()
            .set_mtu(link.index, new.mtu)
            .await
            .map_err(kernel_err(a))?;
    }
    k.host().set_up(link.index).await.map_err(kernel_err(a))?;
    sync_addresses(a, k.host(), link.index, &old.gateways, &new.gateways).await
}

async fn sync_addresses(
    a: &str,
    nl: &impl Links,
    index: u32,
    old: &[IpNetwork],
    new: &[IpNetwork],
) -> Result<()> {
    for gone in old.iter().filter(|x| !new.contains(x)) {
        if let Err(e) = nl.delete_address(index, *gone).await {
            if !e.is_not_found() {
                return Err(kernel_err(a)(e));
            }
        }
    }
    for added in new.iter().filter(|x| !old.contains(x)) {
        nl.add_address(index, *added).await.map_err(kernel_err(a))?;
    }
    Ok(())
}

async fn delete_named_link<M: Machine>(k: &Kernel<M>, a: &str, name: &str) -> Result<()> {
    let Some(link) = k.host().link_by_name(name).await.map_err(kernel_err(a))? else {
        return Ok(());
    };
    owned(k, a, &link)?;
    match k.host().delete_link(link.index).await {
        Err(e) if !e.is_not_found() => Err(kernel_err(a)(e)),
        _ => Ok(()),
    }
}

// ------------------------------------------------------------------ namespaces

async fn create_namespace<M: Machine>(k: &Kernel<M>, a: &str, n: &Namespace) -> Result<()> {
    if k.netns_exists(&n.name).await {
        // Ours from an interrupted run (lo carries the mark), or somebody else's.
        namespace_owned(k, a, n).await?;
        let nl = k.netns(&n.name).await.map_err(kernel_err(a))?;
        nl.set_up(LOOPBACK_INDEX).await.map_err(kernel_err(a))?;
    } else {
        // lo is marked and up before the namespace gets its name: a run killed at any point
        // leaves either no namespace (at most a stale pin file) or a marked one. Interfaces
        // made in it start without IPv6 (see `ipv6_on`); lo keeps ::1.
        let init = NetnsInit {
            lo_alias: mark(k, a),
            sysctls: vec![(IPV6_DEFAULT_OFF.0.into(), IPV6_DEFAULT_OFF.1.into())],
        };
        k.create_netns(&n.name, &init)
            .await
            .map_err(kernel_err(a))?;
    }
    set_sysctls(k, a, n).await
}

async fn set_sysctls<M: Machine>(k: &Kernel<M>, a: &str, n: &Namespace) -> Result<()> {
    for (key, value) in &n.sysctls {
        k.write_sysctl(Some(&n.name), key, value)
            .await
            .map_err(kernel_err(a))?;
    }
    Ok(())
}

/// Refuse to go on when an existing namespace is not ours (its lo lacks our mark). The mark is
/// asked of the machine rather than through the namespace's handle: a namespace about to be
/// deleted needs no connection of its own.
async fn namespace_owned<M: Machine>(k: &Kernel<M>, a: &str, n: &Namespace) -> Result<()> {
    let marks = k
        .netns_marks(std::slice::from_ref(&n.name))
        .await
        .map_err(kernel_err(a))?;
    owner_verdict(k, a, n, marks.into_iter().next().flatten())
}

/// The alias of each namespace's lo, by namespace name, as the machine told them just before
/// the namespaces are deleted (None: no live namespace pinned under that name). Empty when
/// asking failed: each namespace is then asked alone.
pub type Surveyed = HashMap<String, Option<Option<String>>>;

/// The marks of the namespaces among `rs`, asked in one go, so that each is checked to be ours
/// just before it goes without a read of its own: one read per namespace (a thread each, with
/// fresh pages of the allocator) cost more than one of all of them.
pub async fn survey_namespaces<M: Machine>(k: &Kernel<M>, rs: &[&Resource]) -> Surveyed {
    let names: Vec<String> = rs
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Namespace(n) => Some(n.name.clone()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Surveyed::new();
    }
    let Ok(marks) = k.netns_marks(&names).await else {
        return Surveyed::new();
    };
    names.into_iter().zip(marks).collect()
}

/// Ours when lo carries our mark for `a`; `lo` is None for a pin file with no namespace.
fn owner_verdict<M>(
    k: &Kernel<M>,
    a: &str,
    n: &Namespace,
    lo: Option<Option<String>>,
) -> Result<()> {
    let object = format!("network namespace {}", n.name);
    match lo {
        None => Err(ApplyError::Missing {
            address: a.to_string(),
            object,
        }),
        Some(alias) if alias == Some(mark(k, a)) => Ok(()),
        Some(_) => Err(ApplyError::NotOurs {
            address: a.to_string(),
            object,
        }),
    }
}

async fn delete_namespace<M: Machine>(
    k: &Kernel<M>,
    a: &str,
    n: &Namespace,
    surveyed: &Surveyed,
) -> Result<()> {
    match surveyed.get(&n.name) {
        // Told live a moment ago: no need to ask whether it exists.
        Some(Some(lo)) => owner_verdict(k, a, n, Some(lo.clone()))?,
        Some(None) | None if !k.netns_exists(&n.name).await => return Ok(()),
        Some(None) | None => namespace_owned(k, a, n).await?,
    }
    // The files first: a run killed in between leaves the (marked) namespace, which the next
    // run finds and deletes, rather than files nothing points to any more.
    k.remove_dir(&n.name).await.map_err(kernel_err(a))?;
    k.delete_netns(&n.name)
        .await
        .map(drop)
        .map_err(kernel_err(a))
}

// ------------------------------------------------------------------ links

pub(super) fn mac(a: &str, text: &str) -> Result<[u8; 6]> {
    parse_mac(text).ok_or_else(|| ApplyError::Internal {
        address: a.to_string(),
        message: format!("bad MAC {text}"),
    })
}

async fn create_link<M: Machine>(k: &Kernel<M>, a: &str, l: &Link) -> Result<()> {
    let inside = k.netns(&l.namespace).await.map_err(kernel_err(a))?;
    // Leftovers of an interrupted run: take them away and build the link again.
    if let Some(host) = &l.host_ifname {
        delete_named_link(k, a, host).await?;
    }
    if let Some(old) = inside
        .link_by_name(&l.ifname)
        .await
        .map_err(kernel_err(a))?
    {
        owned_with_mac(k, a, &old, mac(a, &l.mac)?)?;
        inside.delete_link(old.index).await.map_err(kernel_err(a))?;
    }
    let mut host_end = None;
    match l.link_type {
        LinkType::Veth => {
            let bridge = l.bridge.as_deref().unwrap_or_default();
            let master = host_index(k, a, bridge, "bridge").await?;
            let spec = NewVeth {
                name: l.host_ifname.clone().unwrap_or_default(),
                alias: Some(mark(k, a)),
                mtu: Some(l.mtu),
                mac: Some(k.owner_mac(l.host_ifname.as_deref().unwrap_or_default())),
                master: Some(master),
                up: true,
                peer_name: l.ifname.clone(),
                peer_ns: l.namespace.clone(),
                peer_mac: Some(mac(a, &l.mac)?),
            };
            host_end = Some(k.host().create_veth(&spec).await.map_err(kernel_err(a))?);
        }
        LinkType::Macvlan => {
            let parent_name = l.parent.as_deref().unwrap_or_default();
            let parent = host_index(k, a, parent_name, "parent interface").await?;
            let spec = NewMacvlan {
                name: l.ifname.clone(),
                parent,
                mode: macvlan_mode(l.mode.as_deref()),
                ns: l.namespace.clone(),
                mac: Some(mac(a, &l.mac)?),
                mtu: Some(l.mtu),
                up: true,
            };
            k.host()
                .create_macvlan(&spec)
                .await
                .map_err(kernel_err(a))?;
        }
    }
    let index = inside
        .link_by_name(&l.ifname)
        .await
        .map_err(kernel_err(a))?
        .map(|l| l.index)
        .ok_or_else(|| ApplyError::Missing {
            address: a.into(),
            object: format!("{} in {}", l.ifname, l.namespace),
        })?;
    inside
        .set_alias(index, Some(&mark(k, a)))
        .await
        .map_err(kernel_err(a))?;
    ipv6_on(k, a, l).await?;
    // Up before the addresses, as for bridges: a complete-looking link is never down.
    inside.set_up(index).await.map_err(kernel_err(a))?;
    for addr in &l.addresses {
        inside
            .add_address(index, *addr)
            .await
            .map_err(kernel_err(a))?;
    }
    if l.qos.is_some() {
        super::qos::build(k, a, l, index, host_end).await?;
    }
    Ok(())
}

/// The index of a host interface that must exist (a bridge, a macvlan parent).
async fn host_index<M: Machine>(k: &Kernel<M>, a: &str, name: &str, what: &str) -> Result<u32> {
    k.host()
        .link_by_name(name)
        .await
        .map_err(kernel_err(a))?
        .map(|l| l.index)
        .ok_or_else(|| ApplyError::Missing {
            address: a.into(),
            object: format!("{what} {name}"),
        })
}

fn macvlan_mode(mode: Option<&str>) -> MacvlanMode {
    match mode {
        Some("vepa") => MacvlanMode::Vepa,
        Some("private") => MacvlanMode::Private,
        Some("passthru") => MacvlanMode::Passthru,
        _ => MacvlanMode::Bridge,
    }
}

async fn update_link<M: Machine>(k: &Kernel<M>, a: &str, old: &Link, new: &Link) -> Result<()> {
    let inside = k.netns(&new.namespace).await.map_err(kernel_err(a))?;
    let Some(link) = inside
        .link_by_name(&new.ifname)
        .await
        .map_err(kernel_err(a))?
    else {
        return create_link(k, a, new).await;
    };
    owned_with_mac(k, a, &link, mac(a, &new.mac)?)?;
    if link.alias.as_deref() != Some(mark(k, a).as_str()) {
        inside
            .set_alias(link.index, Some(&mark(k, a)))
            .await
            .map_err(kernel_err(a))?;
    }
    if old.mtu != new.mtu {
        inside
            .set_mtu(link.index, new.mtu)
            .await
            .map_err(kernel_err(a))?;
        if let Some(host) = k
            .host()
            .link_by_name(new.host_ifname.as_deref().unwrap_or_default())
            .await
            .map_err(kernel_err(a))?
        {
            k.host()
                .set_mtu(host.index, new.mtu)
                .await
                .map_err(kernel_err(a))?;
        }
    }
    if old.mac != new.mac {
        inside
            .set_mac(link.index, mac(a, &new.mac)?)
            .await
            .map_err(kernel_err(a))?;
    }
    ipv6_on(k, a, new).await?;
    inside.set_up(link.index).await.map_err(kernel_err(a))?;
    if old.down {
        // Back from a drill: the host end of a veth was taken down, and routes through a
        // macvlan went with it (they are routes of their own, restored as such).
        if let Some(host) = k
            .host()
            .link_by_name(new.host_ifname.as_deref().unwrap_or_default())
            .await
            .map_err(kernel_err(a))?
        {
            k.host().set_up(host.index).await.map_err(kernel_err(a))?;
        }
    }
    sync_addresses(a, &inside, link.index, &old.addresses, &new.addresses).await?;
    if old.qos.is_some() || new.qos.is_some() {
        super::qos::sync(k, a, new).await?;
    }
    Ok(())
}

/// `net.ipv6.conf.default.disable_ipv6=1`, written in every new replica namespace before any
/// link is made in it. An interface with IPv6 sends router solicitations, duplicate address
/// detection and MLD reports as soon as it is up, all multicast, which a bridge floods to every
/// port: N endpoints joining one network cost O(N²) packets, each handled in a namespace
/// (measured: most of the kernel time of `up` with hundreds of replicas). An endpoint without
/// IPv6 addresses does not need any of it, as Docker also decides; one with IPv6 addresses gets
/// IPv6 turned back on for its interface by [`ipv6_on`].
const IPV6_DEFAULT_OFF: (&str, &str) = ("net.ipv6.conf.default.disable_ipv6", "1");

/// Turn IPv6 on for a link that has IPv6 addresses (before they are added), without duplicate
/// address detection: IPAM made its addresses unique (they are also added with IFA_F_NODAD),
/// and DAD would hold its link-local address tentative for a second after `up`, as Docker
/// avoids by turning DAD off in containers.
async fn ipv6_on<M: Machine>(k: &Kernel<M>, a: &str, l: &Link) -> Result<()> {
    if !l.addresses.iter().any(IpNetwork::is_ipv6) {
        return Ok(());
    }
    for (key, value) in [("accept_dad", "0"), ("disable_ipv6", "0")] {
        let key = format!("net/ipv6/conf/{}/{key}", l.ifname);
        k.write_sysctl(Some(&l.namespace), &key, value)
            .await
            .map_err(kernel_err(a))?;
    }
    Ok(())
}

async fn delete_link<M: Machine>(k: &Kernel<M>, a: &str, l: &Link) -> Result<()> {
    if let Some(host) = &l.host_ifname {
        return delete_named_link(k, a, host).await;
    }
    if !k.netns_exists(&l.namespace).await {
        return Ok(());
    }
    let inside = k.netns(&l.namespace).await.map_err(kernel_err(a))?;
    if let Some(link) = inside
        .link_by_name(&l.ifname)
        .await
        .map_err(kernel_err(a))?
    {
        owned(k, a, &link)?;
        inside
            .delete_link(link.index)
            .await
            .map_err(kernel_err(a))?;
    }
    Ok(())
}

// ------------------------------------------------------------------ routes, files, rules

async fn add_route<M: Machine>(k: &Kernel<M>, a: &str, r: &Route) -> Result<()> {
    let inside = k.netns(&r.namespace).await.map_err(kernel_err(a))?;
    let oif = inside
        .link_by_name(&r.ifname)
        .await
        .map_err(kernel_err(a))?
        .map(|l| l.index);
    inside
        .add_route(r.destination, Some(r.gateway), oif)
        .await
        .map_err(kernel_err(a))
}

async fn delete_route<M: Machine>(k: &Kernel<M>, a: &str, r: &Route) -> Result<()> {
    if !k.netns_exists(&r.namespace).await {
        return Ok(());
    }
    let inside = k.netns(&r.namespace).await.map_err(kernel_err(a))?;
    match inside
        .delete_route(r.destination, Some(r.gateway), None)
        .await
    {
        Err(e) if !e.is_not_found() => Err(kernel_err(a)(e)),
        _ => Ok(()),
    }
}

async fn write_files<M: Machine>(k: &Kernel<M>, a: &str, f: &NetnsFiles) -> Result<()> {
    let files = [
        ("hosts", f.hosts.join("\n") + "\n"),
        ("resolv.conf", f.resolv_conf.join("\n") + "\n"),
    ];
    k.write_files(&f.namespace, &files)
        .await
        .map_err(kernel_err(a))
}

async fn remove_files<M: Machine>(k: &Kernel<M>, a: &str, f: &NetnsFiles) -> Result<()> {
    k.remove_files(&f.namespace, &["hosts", "resolv.conf"])
        .await
        .map_err(kernel_err(a))
}

async fn load_firewall<M: Machine>(
    k: &Kernel<M>,
    a: &str,
    old: Option<&Firewall>,
    f: &Firewall,
    compiled: &Compiled,
) -> Result<()> {
    let ns = f.namespace.as_deref();
    for (key, value) in &f.sysctls {
        k.write_sysctl(ns, key, value)
            .await
            .map_err(kernel_err(a))?;
    }
    let internal = |e: CompileError| ApplyError::Internal {
        address: a.to_string(),
        message: e.to_string(),
    };
    // A table holding rules we did not write is reloaded whole; else only changed chains and
    // map elements.
    match old.filter(|o| o.foreign_rules.is_empty()) {
        Some(o) => {
            let update = compiled.update(o, f).map_err(internal)?;
            k.update_table(ns, &f.table, &update.0, &update.1).await
        }
        None => {
            let contents = compiled.table(f).map_err(internal)?;
            k.replace_table(ns, &f.table, &contents).await
        }
    }
    .map_err(kernel_err(a))
}

/// Tables compiled for the kernel layer, once per distinct set of parts. The replicas of a
/// service hold the same chains, maps and sets ([`Shared`]), so their tables are one table:
/// compiled, compared with the tables already encoded and dropped once per replica, it cost
/// the thread that drives the apply about 20 us a table: compiled once, the user CPU of that
/// thread in bench/lb.sh's up with VIPs (200 replica tables, 20 distinct) fell by 4.6 ms
/// (perf record -e cpu-clock:u, five ups each). An update's two sides likewise, once per
/// distinct pair of tables: a scale updates every table that can reach the service, and
/// comparing each pair's chains, maps and sets (the old ones read back, the new ones built,
/// so never the same copies) was a tenth of the apply's instructions.
#[derive(Default)]
pub(super) struct Compiled {
    tables: Mutex<HashMap<FirewallParts, Arc<nftables::Table>>>,
    updates: Mutex<HashMap<(FirewallParts, FirewallParts), Arc<Update>>>,
}

/// An update's old and new sides ([`changed_parts`]).
type Update = (nftables::Table, nftables::Table);

impl Compiled {
    /// `f`'s table, compiled the first time its parts are asked for.
    fn table(&self, f: &Firewall) -> std::result::Result<Arc<nftables::Table>, CompileError> {
        let parts = FirewallParts::of(f);
        let lock = || self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = lock().get(&parts) {
            return Ok(t.clone());
        }
        // Compiled outside the lock: two replicas that miss at once both compile, harmlessly.
        let table = Arc::new(kernel_table(&f.chains, &f.maps, &f.sets)?);
        lock().insert(parts, table.clone());
        Ok(table)
    }

    /// The two sides of the update from `old` to `new`, worked out the first time the pair of
    /// their parts is asked for.
    fn update(
        &self,
        old: &Firewall,
        new: &Firewall,
    ) -> std::result::Result<Arc<Update>, CompileError> {
        let parts = (FirewallParts::of(old), FirewallParts::of(new));
        let lock = || self.updates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = lock().get(&parts) {
            return Ok(u.clone());
        }
        let update = Arc::new(changed_parts(old, new)?);
        lock().insert(parts, update.clone());
        Ok(update)
    }
}

/// `old` and `new` as the kernel layer's tables for an update. When their chains are the
/// same and no set changes shape, the chains are left out of both, and so are the maps and sets
/// that are the same in both: the update then writes the elements of the changed ones only,
/// and no rule is compiled (a scale changes one service's map and sets in every table that can
/// reach it; compiling every table's chains and sets twice cost more than the write).
fn changed_parts(
    old: &Firewall,
    new: &Firewall,
) -> std::result::Result<(nftables::Table, nftables::Table), CompileError> {
    let full = |fw: &Firewall| kernel_table(&fw.chains, &fw.maps, &fw.sets);
    if old.chains != new.chains {
        return Ok((full(old)?, full(new)?));
    }
    let only = |a: &Firewall, b: &Firewall| {
        let maps: Vec<Map> = a
            .maps
            .iter()
            .filter(|m| !b.maps.contains(m))
            .cloned()
            .collect();
        let sets: Vec<Set> = a
            .sets
            .iter()
            .filter(|s| !b.sets.contains(s))
            .cloned()
            .collect();
        kernel_table(&[], &maps, &sets)
    };
    let (before, after) = (only(old, new)?, only(new, old)?);
    if reshaped(&before.sets, &after.sets) {
        return Ok((full(old)?, full(new)?));
    }
    Ok((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::rule::{rule, Chain};
    use std::collections::BTreeMap;

    /// A replica table with two VIP maps of one backend each and one peer set.
    fn fw(peers: &[&str]) -> Firewall {
        Firewall {
            namespace: Some("p-web-1".into()),
            table: "netcompose".into(),
            sysctls: BTreeMap::new(),
            vip_networks: vec![],
            vip_digest: String::new(),
            vip_refused: Default::default(),
            chains: vec![Chain::base(
                "ingress",
                "filter",
                "input",
                0,
                vec![rule().saddr_set("from.db", false).accept()],
            )]
            .into(),
            maps: ["vip.web.front", "vip.db.front"]
                .into_iter()
                .map(|name| Map {
                    name: name.into(),
                    backends: vec!["10.0.0.2".parse().unwrap()],
                })
                .collect::<Vec<_>>()
                .into(),
            sets: vec![Set {
                name: "from.db".into(),
                elements: peers.iter().map(|a| a.parse().unwrap()).collect(),
            }]
            .into(),
            foreign_rules: vec![],
        }
    }

    #[test]
    fn tables_holding_the_same_parts_are_compiled_once_equal_ones_apart() {
        let one = fw(&["10.0.0.5/32"]);
        let mut replica = fw(&["10.0.0.5/32"]);
        replica.namespace = Some("p-web-2".into());
        let compiled = Compiled::default();
        let first = compiled.table(&one).unwrap();
        // Equal parts held apart: compiled again (the encoder then finds the tables equal).
        let apart = compiled.table(&replica).unwrap();
        assert!(!Arc::ptr_eq(&first, &apart));
        assert_eq!(first, apart);
        // The same parts, as a service's replicas hold them: the table compiled before.
        (replica.chains, replica.maps, replica.sets) =
            (one.chains.clone(), one.maps.clone(), one.sets.clone());
        assert!(Arc::ptr_eq(&first, &compiled.table(&replica).unwrap()));
    }

    /// A replica table, and the same after its first VIP gained a backend (a scale).
    fn scaled() -> (Firewall, Firewall) {
        let old = fw(&["10.0.0.5/32"]);
        let mut new = old.clone();
        new.maps.make_mut()[0]
            .backends
            .push("10.0.0.3".parse().unwrap());
        (old, new)
    }

    #[test]
    fn the_updates_of_tables_holding_the_same_parts_are_worked_out_once() {
        let (old, new) = scaled();
        let compiled = Compiled::default();
        let first = compiled.update(&old, &new).unwrap();
        assert_eq!(*first, changed_parts(&old, &new).unwrap());
        // Another replica's table: other names, the same parts on both sides.
        let (mut old2, mut new2) = (old.clone(), new.clone());
        old2.namespace = Some("p-web-2".into());
        new2.namespace = Some("p-web-2".into());
        assert!(Arc::ptr_eq(&first, &compiled.update(&old2, &new2).unwrap()));
        // A new side whose sets are other (equal) copies is worked out on its own.
        new2.sets = new2.sets.to_vec().into();
        let apart = compiled.update(&old2, &new2).unwrap();
        assert!(!Arc::ptr_eq(&first, &apart));
        assert_eq!(first, apart);
    }

    #[test]
    fn an_update_carries_only_the_maps_and_sets_that_changed() {
        let (old, new) = scaled();
        let (before, after) = changed_parts(&old, &new).unwrap();
        let names = |t: &nftables::Table| t.sets.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&before), ["vip.web.front"]);
        assert_eq!(names(&after), ["vip.web.front"]);
        assert!(before.chains.is_empty() && after.chains.is_empty());
        // A map dropped is named by the old side only; a changed set by both.
        let mut fewer = fw(&["10.0.0.5/32", "10.0.0.6/32"]);
        fewer.maps.make_mut().truncate(1);
        let (before, after) = changed_parts(&old, &fewer).unwrap();
        assert_eq!(names(&before), ["vip.db.front", "from.db"]);
        assert_eq!(names(&after), ["from.db"]);
    }

    #[test]
    fn an_update_whose_chains_change_carries_the_whole_tables() {
        let old = fw(&["10.0.0.5/32"]);
        let mut new = old.clone();
        new.chains.make_mut()[0].rules.push(rule().count_drop());
        let (before, after) = changed_parts(&old, &new).unwrap();
        assert_eq!((before.sets.len(), after.sets.len()), (3, 3));
        assert_eq!(after.chains[0].rules.len(), 2);
    }

    /// One survey gives each namespace its verdict: ours, somebody else's, or only a pin
    /// file; a namespace it did not cover is read alone.
    #[tokio::test]
    async fn a_survey_of_the_doomed_namespaces_gives_each_its_verdict() {
        use crate::kernel::fake::Fake;
        use crate::kernel::machine::Namespaces;
        use crate::model::{ReplicaId, ResourceId};
        let k = Kernel::new("p", Fake::new());
        let ns = |i: u32| Resource {
            address: ResourceId::Replica(ReplicaId::new("web", i)),
            spec: Spec::Namespace(Namespace {
                name: format!("p-web-{i}"),
                service: "web".into(),
                replica: i,
                sysctls: BTreeMap::new(),
            }),
            depends_on: vec![],
        };
        let (ours, foreign, left) = (ns(1), ns(2), ns(3));
        for (r, alias) in [(&ours, mark(&k, "service.web[1]")), (&foreign, "x".into())] {
            let Spec::Namespace(n) = &r.spec else {
                unreachable!()
            };
            let init = NetnsInit {
                lo_alias: alias,
                sysctls: vec![],
            };
            k.create_netns(&n.name, &init).await.unwrap();
        }
        let surveyed = survey_namespaces(&k, &[&ours, &foreign]).await;
        assert_eq!(surveyed.len(), 2);
        assert!(delete(&k, &ours, &surveyed).await.is_ok());
        assert!(matches!(
            delete(&k, &foreign, &surveyed).await,
            Err(ApplyError::NotOurs { .. })
        ));
        let object = |r: &Resource| match &r.spec {
            Spec::Namespace(n) => n.clone(),
            _ => unreachable!(),
        };
        assert!(matches!(
            owner_verdict(&k, "service.web[3]", &object(&left), None),
            Err(ApplyError::Missing { .. })
        ));
        k.with(|w| {
            let names: Vec<&String> = w.namespaces.keys().collect();
            assert_eq!(names, ["p-web-2"]);
        });
    }
}
