//! Create, update and delete of each resource kind, through the kernel layer. Every create
//! first looks for an object of the same name: one of ours (left by a crashed run) is taken
//! over or rebuilt, one that is not ours is never touched and the apply stops.

use super::kernel::Kernel;
use super::ApplyError;
use crate::firewall::rule::kernel_chains;
use crate::ipam::mac::parse_mac;
use crate::kernel::netlink::{
    Link as KLink, MacvlanMode, MacvlanSpec, Netlink, VethSpec, LOOPBACK_INDEX,
};
use crate::kernel::{nfnl, nft, sysctl, KernelError};
use crate::model::resource::{
    Bridge, Firewall, Link, LinkType, Namespace, NetnsFiles, Resource, Route, Spec,
};
use ipnetwork::IpNetwork;
use std::os::fd::AsFd;

type Result<T> = std::result::Result<T, ApplyError>;

fn kernel_err(address: &str) -> impl Fn(KernelError) -> ApplyError + '_ {
    move |source| ApplyError::Kernel {
        address: address.to_string(),
        source,
    }
}

/// Refuse to go on when `link` exists and is not ours: ours carries our mark, or (made by a
/// run killed before it could set the mark) no alias and the MAC it was created with.
fn owned(k: &Kernel, address: &str, link: &KLink) -> Result<()> {
    owned_with_mac(k, address, link, k.owner_mac(&link.name))
}

/// [`owned`], where an unmarked link proves itself ours with `mac` (inside a replica's
/// namespace, the endpoint's own MAC: the namespace itself is ours).
fn owned_with_mac(k: &Kernel, address: &str, link: &KLink, mac: [u8; 6]) -> Result<()> {
    if link.alias.as_deref() == Some(k.mark(address).as_str()) {
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

pub async fn create(k: &Kernel, r: &Resource) -> Result<()> {
    let a = r.address.as_str();
    match &r.spec {
        Spec::Bridge(b) => create_bridge(k, a, b).await,
        Spec::Namespace(n) => create_namespace(k, a, n).await,
        Spec::Link(l) => create_link(k, a, l).await,
        Spec::Route(rt) => add_route(k, a, rt).await,
        Spec::Files(f) => write_files(k, a, f).await,
        Spec::Firewall(f) => load_firewall(k, a, None, f).await,
        Spec::Macvlan(m) => parent_exists(k, a, &m.parent).await,
        Spec::External(e) => parent_exists(k, a, &e.name).await,
        // Served by the project daemon and the replicas' rule sets, from the state.
        Spec::Vip(_) | Spec::Dns(_) => Ok(()),
    }
}

pub async fn update(k: &Kernel, old: &Resource, new: &Resource) -> Result<()> {
    let a = new.address.as_str();
    match (&old.spec, &new.spec) {
        (Spec::Bridge(o), Spec::Bridge(n)) => update_bridge(k, a, o, n).await,
        (Spec::Namespace(_), Spec::Namespace(n)) => set_sysctls(k, a, n).await,
        (Spec::Link(o), Spec::Link(n)) => update_link(k, a, o, n).await,
        (Spec::Firewall(o), Spec::Firewall(n)) => load_firewall(k, a, Some(o), n).await,
        _ => create(k, new).await,
    }
}

pub async fn delete(k: &Kernel, r: &Resource) -> Result<()> {
    let a = r.address.as_str();
    match &r.spec {
        Spec::Bridge(b) => delete_named_link(k, a, &b.name).await,
        Spec::Namespace(n) => delete_namespace(k, a, n).await,
        Spec::Link(l) => delete_link(k, a, l).await,
        Spec::Route(rt) => delete_route(k, a, rt).await,
        Spec::Files(f) => remove_files(k, a, f).await,
        Spec::Firewall(f) => {
            let (dir, ns, table) = (k.dir.clone(), f.namespace.clone(), f.table.clone());
            blocking(a, move || {
                nfnl::delete_table(&dir, ns.as_deref(), &table).map(|_| ())
            })
            .await
        }
        Spec::Macvlan(_) | Spec::External(_) | Spec::Vip(_) | Spec::Dns(_) => Ok(()),
    }
}

async fn blocking<T: Send + 'static>(
    address: &str,
    f: impl FnOnce() -> std::result::Result<T, KernelError> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(kernel_err(address)),
        Err(e) => Err(ApplyError::Internal {
            address: address.to_string(),
            message: e.to_string(),
        }),
    }
}

async fn parent_exists(k: &Kernel, a: &str, name: &str) -> Result<()> {
    match k.host.link_by_name(name).await.map_err(kernel_err(a))? {
        Some(_) => Ok(()),
        None => Err(ApplyError::Missing {
            address: a.to_string(),
            object: format!("interface {name}"),
        }),
    }
}

// ------------------------------------------------------------------ bridges

async fn create_bridge(k: &Kernel, a: &str, b: &Bridge) -> Result<()> {
    if let Some(existing) = k.host.link_by_name(&b.name).await.map_err(kernel_err(a))? {
        owned(k, a, &existing)?;
        k.host
            .delete_link(existing.index)
            .await
            .map_err(kernel_err(a))?;
    }
    let index = k
        .host
        .create_bridge_with_mac(
            &b.name,
            Some(b.mtu),
            Some(k.owner_mac(&b.name)),
            Some(&k.mark(a)),
        )
        .await
        .map_err(kernel_err(a))?;
    // Up before the addresses: a run killed in between leaves a difference that the next
    // observe sees (missing addresses), never a complete-looking bridge that is down.
    k.host.set_up(index).await.map_err(kernel_err(a))?;
    for gw in &b.gateways {
        k.host
            .add_address(index, *gw)
            .await
            .map_err(kernel_err(a))?;
    }
    Ok(())
}

async fn update_bridge(k: &Kernel, a: &str, old: &Bridge, new: &Bridge) -> Result<()> {
    let Some(link) = k
        .host
        .link_by_name(&new.name)
        .await
        .map_err(kernel_err(a))?
    else {
        return create_bridge(k, a, new).await;
    };
    owned(k, a, &link)?;
    if link.alias.as_deref() != Some(k.mark(a).as_str()) {
        k.host
            .set_alias(link.index, Some(&k.mark(a)))
            .await
            .map_err(kernel_err(a))?;
    }
    if old.mtu != new.mtu {
        k.host
            .set_mtu(link.index, new.mtu)
            .await
            .map_err(kernel_err(a))?;
    }
    k.host.set_up(link.index).await.map_err(kernel_err(a))?;
    sync_addresses(k, a, &k.host, link.index, &old.gateways, &new.gateways).await
}

async fn sync_addresses(
    _k: &Kernel,
    a: &str,
    nl: &crate::kernel::netlink::Netlink,
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

async fn delete_named_link(k: &Kernel, a: &str, name: &str) -> Result<()> {
    let Some(link) = k.host.link_by_name(name).await.map_err(kernel_err(a))? else {
        return Ok(());
    };
    owned(k, a, &link)?;
    match k.host.delete_link(link.index).await {
        Err(e) if !e.is_not_found() => Err(kernel_err(a)(e)),
        _ => Ok(()),
    }
}

// ------------------------------------------------------------------ namespaces

async fn create_namespace(k: &Kernel, a: &str, n: &Namespace) -> Result<()> {
    if k.dir.exists(&n.name) {
        // Ours from an interrupted run (lo carries the mark), or somebody else's.
        namespace_owned(k, a, n).await?;
        let nl = k.netlink(&n.name).map_err(kernel_err(a))?;
        nl.lo_up().await.map_err(kernel_err(a))?;
    } else {
        // lo is marked and up before the namespace gets its name: a run killed at any point
        // leaves either no namespace (at most a stale pin file) or a marked one.
        let (dir, name, mark, rt) = (k.dir.clone(), n.name.clone(), k.mark(a), k.rt.clone());
        let nl = blocking(a, move || {
            dir.create_init(&name, || {
                // Interfaces made here start without IPv6 (see `ipv6_on`). lo keeps ::1.
                let _ = std::fs::write(IPV6_DEFAULT_OFF.0, IPV6_DEFAULT_OFF.1);
                let nl = Netlink::open_current(Some(&name), &rt)?;
                rt.block_on(async {
                    nl.set_alias(LOOPBACK_INDEX, Some(&mark)).await?;
                    nl.lo_up().await
                })?;
                Ok(nl)
            })
        })
        .await?;
        k.remember(&n.name, nl);
    }
    set_sysctls(k, a, n).await
}

async fn set_sysctls(k: &Kernel, a: &str, n: &Namespace) -> Result<()> {
    if n.sysctls.is_empty() {
        return Ok(());
    }
    let (dir, name, sysctls) = (k.dir.clone(), n.name.clone(), n.sysctls.clone());
    blocking(a, move || {
        sysctls
            .iter()
            .try_for_each(|(key, value)| sysctl::write_in(&dir, Some(&name), key, value))
    })
    .await
}

/// Refuse to go on when an existing namespace is not ours (its lo lacks our mark).
async fn namespace_owned(k: &Kernel, a: &str, n: &Namespace) -> Result<()> {
    let lo = k
        .netlink(&n.name)
        .map_err(kernel_err(a))?
        .link_by_index(LOOPBACK_INDEX)
        .await
        .map_err(kernel_err(a))?;
    if lo.and_then(|l| l.alias) == Some(k.mark(a)) {
        return Ok(());
    }
    Err(ApplyError::NotOurs {
        address: a.to_string(),
        object: format!("network namespace {}", n.name),
    })
}

async fn delete_namespace(k: &Kernel, a: &str, n: &Namespace) -> Result<()> {
    if !k.dir.exists(&n.name) {
        return Ok(());
    }
    namespace_owned(k, a, n).await?;
    k.forget(&n.name);
    let (dir, name, etc) = (k.dir.clone(), n.name.clone(), k.etc_dir(&n.name));
    // The files first: a run killed in between leaves the (marked) namespace, which the next
    // run finds and deletes, rather than files nothing points to any more.
    blocking(a, move || {
        match std::fs::remove_dir_all(&etc) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(crate::kernel::Ctx::new("remove", etc.display(), None).os(e))
            }
            _ => {}
        }
        dir.delete(&name).map(drop)
    })
    .await
}

// ------------------------------------------------------------------ links

fn mac(a: &str, text: &str) -> Result<[u8; 6]> {
    parse_mac(text).ok_or_else(|| ApplyError::Internal {
        address: a.to_string(),
        message: format!("bad MAC {text}"),
    })
}

async fn create_link(k: &Kernel, a: &str, l: &Link) -> Result<()> {
    let inside = k.netlink(&l.namespace).map_err(kernel_err(a))?;
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
    let fd = k.dir.open(Some(&l.namespace)).map_err(kernel_err(a))?;
    match l.link_type {
        LinkType::Veth => {
            let bridge = l.bridge.as_deref().unwrap_or_default();
            let master = host_index(k, a, bridge, "bridge").await?;
            let spec = VethSpec {
                name: l.host_ifname.clone().unwrap_or_default(),
                alias: Some(k.mark(a)),
                mtu: Some(l.mtu),
                mac: Some(k.owner_mac(l.host_ifname.as_deref().unwrap_or_default())),
                master: Some(master),
                up: true,
                peer_name: l.ifname.clone(),
                peer_ns: Some(fd.as_fd()),
                peer_mac: Some(mac(a, &l.mac)?),
            };
            k.host.create_veth(&spec).await.map_err(kernel_err(a))?;
        }
        LinkType::Macvlan => {
            let parent_name = l.parent.as_deref().unwrap_or_default();
            let parent = host_index(k, a, parent_name, "parent interface").await?;
            let spec = MacvlanSpec {
                name: l.ifname.clone(),
                parent,
                mode: macvlan_mode(l.mode.as_deref()),
                ns: Some(fd.as_fd()),
                mac: Some(mac(a, &l.mac)?),
                mtu: Some(l.mtu),
                up: true,
            };
            k.host.create_macvlan(&spec).await.map_err(kernel_err(a))?;
        }
    }
    let index = inside
        .link_index(&l.ifname)
        .await
        .map_err(kernel_err(a))?
        .ok_or_else(|| ApplyError::Missing {
            address: a.into(),
            object: format!("{} in {}", l.ifname, l.namespace),
        })?;
    inside
        .set_alias(index, Some(&k.mark(a)))
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
    Ok(())
}

/// The index of a host interface that must exist (a bridge, a macvlan parent).
async fn host_index(k: &Kernel, a: &str, name: &str, what: &str) -> Result<u32> {
    k.host
        .link_index(name)
        .await
        .map_err(kernel_err(a))?
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

async fn update_link(k: &Kernel, a: &str, old: &Link, new: &Link) -> Result<()> {
    let inside = k.netlink(&new.namespace).map_err(kernel_err(a))?;
    let Some(link) = inside
        .link_by_name(&new.ifname)
        .await
        .map_err(kernel_err(a))?
    else {
        return create_link(k, a, new).await;
    };
    owned_with_mac(k, a, &link, mac(a, &new.mac)?)?;
    if link.alias.as_deref() != Some(k.mark(a).as_str()) {
        inside
            .set_alias(link.index, Some(&k.mark(a)))
            .await
            .map_err(kernel_err(a))?;
    }
    if old.mtu != new.mtu {
        inside
            .set_mtu(link.index, new.mtu)
            .await
            .map_err(kernel_err(a))?;
        if let Some(host) = k
            .host
            .link_by_name(new.host_ifname.as_deref().unwrap_or_default())
            .await
            .map_err(kernel_err(a))?
        {
            k.host
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
    sync_addresses(k, a, &inside, link.index, &old.addresses, &new.addresses).await
}

/// `net.ipv6.conf.default.disable_ipv6=1`, written in every new replica namespace before any
/// link is made in it. An interface with IPv6 sends router solicitations, duplicate address
/// detection and MLD reports as soon as it is up, all multicast, which a bridge floods to every
/// port: N endpoints joining one network cost O(N²) packets, each handled in a namespace
/// (measured: most of the kernel time of `up` with hundreds of replicas). An endpoint without
/// IPv6 addresses does not need any of it, as Docker also decides; one with IPv6 addresses gets
/// IPv6 turned back on for its interface by [`ipv6_on`].
const IPV6_DEFAULT_OFF: (&str, &str) = ("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");

/// Turn IPv6 on for a link that has IPv6 addresses (before they are added).
async fn ipv6_on(k: &Kernel, a: &str, l: &Link) -> Result<()> {
    if !l.addresses.iter().any(IpNetwork::is_ipv6) {
        return Ok(());
    }
    let (dir, ns, key) = (
        k.dir.clone(),
        l.namespace.clone(),
        format!("net/ipv6/conf/{}/disable_ipv6", l.ifname),
    );
    blocking(a, move || sysctl::write_in(&dir, Some(&ns), &key, "0")).await
}

async fn delete_link(k: &Kernel, a: &str, l: &Link) -> Result<()> {
    if let Some(host) = &l.host_ifname {
        return delete_named_link(k, a, host).await;
    }
    if !k.dir.exists(&l.namespace) {
        return Ok(());
    }
    let inside = k.netlink(&l.namespace).map_err(kernel_err(a))?;
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

async fn add_route(k: &Kernel, a: &str, r: &Route) -> Result<()> {
    let inside = k.netlink(&r.namespace).map_err(kernel_err(a))?;
    let oif = inside.link_index(&r.ifname).await.map_err(kernel_err(a))?;
    inside
        .add_route(r.destination, Some(r.gateway), oif)
        .await
        .map_err(kernel_err(a))
}

async fn delete_route(k: &Kernel, a: &str, r: &Route) -> Result<()> {
    if !k.dir.exists(&r.namespace) {
        return Ok(());
    }
    let inside = k.netlink(&r.namespace).map_err(kernel_err(a))?;
    match inside
        .delete_route(r.destination, Some(r.gateway), None)
        .await
    {
        Err(e) if !e.is_not_found() => Err(kernel_err(a)(e)),
        _ => Ok(()),
    }
}

async fn write_files(k: &Kernel, a: &str, f: &NetnsFiles) -> Result<()> {
    let dir = k.etc_dir(&f.namespace);
    let files = [
        ("hosts", f.hosts.join("\n") + "\n"),
        ("resolv.conf", f.resolv_conf.join("\n") + "\n"),
    ];
    blocking(a, move || {
        let ctx = crate::kernel::Ctx::new("write", dir.display(), None);
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

async fn remove_files(k: &Kernel, a: &str, f: &NetnsFiles) -> Result<()> {
    let dir = k.etc_dir(&f.namespace);
    blocking(a, move || {
        for name in ["hosts", "resolv.conf"] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    })
    .await
}

async fn load_firewall(k: &Kernel, a: &str, old: Option<&Firewall>, f: &Firewall) -> Result<()> {
    let (dir, ns, table, chains, sysctls) = (
        k.dir.clone(),
        f.namespace.clone(),
        f.table.clone(),
        kernel_chains(&f.chains),
        f.sysctls.clone(),
    );
    // A table holding rules we did not write is reloaded whole; else only changed chains.
    let old_chains = old
        .filter(|o| o.foreign_rules.is_empty())
        .map(|o| kernel_chains(&o.chains));
    blocking(a, move || {
        for (key, value) in &sysctls {
            sysctl::write_in(&dir, ns.as_deref(), key, value)?;
        }
        match old_chains {
            Some(old) => nft::update_table(&dir, ns.as_deref(), &table, &old, &chains),
            None => nft::replace_table(&dir, ns.as_deref(), &table, &chains),
        }
    })
    .await
}
