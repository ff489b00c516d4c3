//! Reading the project's objects back from the kernel: every bridge, veth, macvlan and
//! namespace netcompose makes carries the mark `netcompose:<project>:<address>` (as ifalias,
//! on lo for a namespace), and the host table is named after the project, so the live state
//! is found from the kernel alone, even without the state file. What the kernel cannot tell
//! (a bridge's network key, a VIP) is filled in from the state, else from the desired state.

use crate::apply::{Kernel, ETC_NETNS};
use crate::firewall::host_table;
use crate::firewall::rule::rule_tag;
use crate::ipam::mac::format_mac;
use crate::kernel::netlink::{Link as KLink, LinkKind, Netlink, LOOPBACK_INDEX};
use crate::kernel::{nfnl, sysctl, KernelError};
use crate::model::names::parse_mark;
use crate::model::resource::{self as r, Resource, Spec};
use crate::model::tables::replica::{expand, vip_index, REPLICA_TABLE};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, HashMap};

/// Earlier knowledge of each resource, by address: the state's, else the desired one.
pub struct Templates<'a>(HashMap<&'a str, &'a Resource>);

impl<'a> Templates<'a> {
    pub fn new(state: &'a [Resource], desired: &'a [Resource]) -> Self {
        let mut m: HashMap<&str, &Resource> =
            desired.iter().map(|r| (r.address.as_str(), r)).collect();
        m.extend(state.iter().map(|r| (r.address.as_str(), r)));
        Templates(m)
    }

    fn get(&self, address: &str) -> Option<&'a Resource> {
        self.0.get(address).copied()
    }

    /// The address of the bridge called `name`, if one is known.
    fn bridge_named(&self, name: &str) -> Option<&'a str> {
        let mut found: Vec<&str> = self
            .0
            .values()
            .filter(|r| matches!(&r.spec, Spec::Bridge(b) if b.name == name))
            .map(|r| r.address.as_str())
            .collect();
        found.sort();
        found.first().copied()
    }

    /// Every VIP known to the templates.
    fn vips(&self) -> Vec<&'a r::Vip> {
        self.0
            .values()
            .filter_map(|r| match &r.spec {
                Spec::Vip(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    fn by_kind<'s>(
        &'s self,
        pred: impl Fn(&Spec) -> bool + 's,
    ) -> impl Iterator<Item = &'a Resource> + 's {
        self.0.values().copied().filter(move |r| pred(&r.spec))
    }
}

/// Everything of the project that exists now. VIPs and DNS zones, which live in the project
/// daemon rather than in kernel objects, are taken from `state`.
pub async fn observe(
    k: &Kernel,
    state: &[Resource],
    desired: &[Resource],
) -> Result<Vec<Resource>, KernelError> {
    let started = std::time::Instant::now();
    let t = Templates::new(state, desired);
    let host_links = k.host.links().await?;
    let host_addrs = k.host.addresses().await?;
    let mut out = Vec::new();
    let ours = |l: &KLink| match l.alias.as_deref().filter(|a| !a.is_empty()) {
        Some(alias) => parse_mark(alias)
            .filter(|(p, _)| *p == k.project)
            .map(|(_, a)| a.to_string()),
        // A bridge made by a run killed before it set the mark: its MAC proves it ours (see
        // Kernel::owner_mac). Unmarked veth host ends need no such care: they go with their
        // peer, which lives in one of the project's namespaces.
        None if l.kind == LinkKind::Bridge && l.mac == Some(k.owner_mac(&l.name)) => Some(
            t.bridge_named(&l.name)
                .map_or_else(|| format!("network.{}", l.name), str::to_string),
        ),
        None => None,
    };
    let mut host_ends: HashMap<String, (String, Option<String>, u32)> = HashMap::new();
    for l in &host_links {
        let Some(address) = ours(l) else { continue };
        match l.kind {
            LinkKind::Bridge => out.push(bridge(&t, &address, l, &host_addrs)),
            LinkKind::Veth => {
                let master = l
                    .master
                    .and_then(|m| host_links.iter().find(|x| x.index == m))
                    .map(|m| m.name.clone());
                host_ends.insert(address, (l.name.clone(), master, l.mtu.unwrap_or(0)));
            }
            _ => {}
        }
    }
    for r in t.by_kind(|s| matches!(s, Spec::Macvlan(_) | Spec::External(_))) {
        out.push(r.clone());
    }
    let prefix = format!("{}-", k.project);
    let names: Vec<String> = k
        .dir
        .list()?
        .into_iter()
        // A pin file with nothing mounted on it (a run killed half-way) is no namespace.
        .filter(|n| n.starts_with(&prefix) && k.dir.exists(n))
        .collect();
    let scans = futures::future::join_all(names.iter().map(|ns| namespace(k, &t, ns, &host_ends)));
    for scanned in scans.await {
        out.extend(scanned?);
    }
    out.extend(orphan_host_ends(&t, &out, &host_ends));
    out.extend(firewall(k, &t).await?);
    out.extend(
        state
            .iter()
            .filter(|r| matches!(r.spec, Spec::Vip(_) | Spec::Dns(_)))
            .cloned(),
    );
    out.sort_by(|a, b| a.address.cmp(&b.address));
    if std::env::var_os("NETCOMPOSE_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!(
            "timing: observe: {} namespaces, {} resources in {:.1} ms",
            names.len(),
            out.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(out)
}

/// Veth host ends of the project whose other end no scanned namespace holds: the namespace was
/// deleted (the kernel frees it, and the pair, asynchronously; a process inside may keep it
/// alive) or the other end lacks its mark (a run killed between marking the two ends). They
/// are reported under their own address, with nothing known inside, so that `down` deletes
/// them and `up` rebuilds or completes the link.
fn orphan_host_ends(
    t: &Templates,
    found: &[Resource],
    host_ends: &HashMap<String, (String, Option<String>, u32)>,
) -> Vec<Resource> {
    let mut orphans: Vec<Resource> = host_ends
        .iter()
        .filter(|(address, _)| !found.iter().any(|r| &r.address == *address))
        .map(|(address, (name, master, mtu))| {
            let template = t.get(address);
            let mut link = match template.map(|r| &r.spec) {
                Some(Spec::Link(x)) => x.clone(),
                _ => unknown_link(address, r::LinkType::Veth, ""),
            };
            link.host_ifname = Some(name.clone());
            link.bridge = master.clone();
            link.mtu = *mtu;
            link.mac = String::new();
            link.addresses = vec![];
            Resource {
                address: address.clone(),
                spec: Spec::Link(link),
                depends_on: template.map(|r| r.depends_on.clone()).unwrap_or_default(),
            }
        })
        .collect();
    orphans.sort_by(|a, b| a.address.cmp(&b.address));
    orphans
}

fn bridge(t: &Templates, address: &str, l: &KLink, addrs: &[(u32, IpNetwork)]) -> Resource {
    let gateways: Vec<IpNetwork> = addrs
        .iter()
        .filter(|(i, a)| *i == l.index && !link_local(a))
        .map(|(_, a)| *a)
        .collect();
    let network = address.trim_start_matches("network.").to_string();
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
        address: address.to_string(),
        spec: Spec::Bridge(b),
        depends_on: t
            .get(address)
            .map(|r| r.depends_on.clone())
            .unwrap_or_default(),
    }
}

fn link_local(a: &IpNetwork) -> bool {
    matches!(a, IpNetwork::V6(v6) if v6.ip().segments()[0] & 0xffc0 == 0xfe80)
}

/// One of the project's namespaces: itself, its marked links, default routes and files.
async fn namespace(
    k: &Kernel,
    t: &Templates<'_>,
    ns: &str,
    host_ends: &HashMap<String, (String, Option<String>, u32)>,
) -> Result<Vec<Resource>, KernelError> {
    let nl: Netlink = k.netlink(ns)?;
    let links = nl.links().await?;
    let Some(ns_address) = links
        .iter()
        .find(|l| l.index == LOOPBACK_INDEX)
        .and_then(|l| l.alias.as_deref())
        .and_then(parse_mark)
        .filter(|(p, _)| *p == k.project)
        .map(|(_, a)| a.to_string())
    else {
        return Ok(Vec::new());
    };
    let addrs = nl.addresses().await?;
    let mut out = vec![namespace_resource(k, t, ns, &ns_address)?];
    for l in links.iter().filter(|l| l.index != LOOPBACK_INDEX) {
        let Some((_, address)) = l
            .alias
            .as_deref()
            .and_then(parse_mark)
            .filter(|(p, _)| *p == k.project)
        else {
            continue;
        };
        out.push(link(t, ns, address, l, &addrs, host_ends.get(address)));
    }
    for route in nl
        .routes()
        .await?
        .into_iter()
        .filter(|r| r.dst.prefix() == 0)
    {
        let (Some(gateway), Some(oif)) = (route.gateway, route.oif) else {
            continue;
        };
        let suffix = if route.dst.is_ipv4() {
            "default"
        } else {
            "default6"
        };
        let address = format!("{ns_address}.route.{suffix}");
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
        let depends_on = t
            .get(&address)
            .map(|r| r.depends_on.clone())
            .unwrap_or_default();
        out.push(Resource {
            address,
            spec,
            depends_on,
        });
    }
    out.extend(files(t, ns, &ns_address)?);
    out.extend(
        table(
            k,
            t,
            Some(ns),
            &format!("{ns_address}.firewall"),
            REPLICA_TABLE,
        )
        .await?,
    );
    Ok(out)
}

fn namespace_resource(
    k: &Kernel,
    t: &Templates,
    ns: &str,
    address: &str,
) -> Result<Resource, KernelError> {
    let template = t.get(address);
    let mut n = match template.map(|r| &r.spec) {
        Some(Spec::Namespace(n)) => n.clone(),
        _ => r::Namespace {
            name: ns.to_string(),
            service: String::new(),
            replica: 0,
            sysctls: BTreeMap::new(),
        },
    };
    n.name = ns.to_string();
    for (key, value) in n.sysctls.iter_mut() {
        *value = read_sysctl(k, Some(ns), key)?;
    }
    Ok(Resource {
        address: address.to_string(),
        spec: Spec::Namespace(n),
        depends_on: template.map(|r| r.depends_on.clone()).unwrap_or_default(),
    })
}

/// A sysctl's live value; empty when the kernel has no such key (its interface is gone), so
/// that it shows as a difference. Any other failure is an error, not a value.
fn read_sysctl(k: &Kernel, ns: Option<&str>, key: &str) -> Result<String, KernelError> {
    match sysctl::read_in(&k.dir, ns, key) {
        Ok(v) => Ok(v.trim().to_string()),
        Err(e) if e.is_not_found() => Ok(String::new()),
        Err(e) => Err(e),
    }
}

fn link(
    t: &Templates,
    ns: &str,
    address: &str,
    l: &KLink,
    addrs: &[(u32, IpNetwork)],
    host_end: Option<&(String, Option<String>, u32)>,
) -> Resource {
    let template = t.get(address);
    let mut link = match template.map(|r| &r.spec) {
        Some(Spec::Link(x)) => x.clone(),
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
    if link.link_type == r::LinkType::Veth {
        link.host_ifname = host_end.map(|h| h.0.clone());
        link.bridge = host_end.and_then(|h| h.1.clone());
    }
    Resource {
        address: address.to_string(),
        spec: Spec::Link(link),
        depends_on: template.map(|r| r.depends_on.clone()).unwrap_or_default(),
    }
}

/// A link of ours that neither the state nor the file knows: what its address tells.
fn unknown_link(address: &str, link_type: r::LinkType, ns: &str) -> r::Link {
    r::Link {
        link_type,
        network: address.rsplit('.').next().unwrap_or_default().to_string(),
        namespace: ns.to_string(),
        ifname: String::new(),
        host_ifname: None,
        bridge: None,
        parent: None,
        mode: None,
        mac: String::new(),
        addresses: vec![],
        mtu: 0,
    }
}

/// The replica's files under /etc/netns; None when neither is there. A file that is there but
/// cannot be read is an error, not a missing file.
fn files(t: &Templates, ns: &str, ns_address: &str) -> Result<Option<Resource>, KernelError> {
    let dir = std::path::Path::new(ETC_NETNS).join(ns);
    let read = |name: &str| {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.lines().map(String::from).collect::<Vec<_>>())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::kernel::Ctx::new("read", path.display(), Some(ns)).os(e)),
        }
    };
    let (hosts, resolv_conf) = (read("hosts")?, read("resolv.conf")?);
    if hosts.is_none() && resolv_conf.is_none() {
        return Ok(None);
    }
    let address = format!("{ns_address}.files");
    let spec = Spec::Files(r::NetnsFiles {
        namespace: ns.to_string(),
        hosts: hosts.unwrap_or_default(),
        resolv_conf: resolv_conf.unwrap_or_default(),
    });
    let depends_on = t
        .get(&address)
        .map(|r| r.depends_on.clone())
        .unwrap_or_default();
    Ok(Some(Resource {
        address,
        spec,
        depends_on,
    }))
}

/// The host table.
async fn firewall(k: &Kernel, t: &Templates<'_>) -> Result<Option<Resource>, KernelError> {
    table(k, t, None, "firewall.host", &host_table(&k.project)).await
}

/// A table of the project: the known rules whose tags are present, in order, and the tags of
/// rules netcompose did not write, so that any change made outside shows as a difference.
async fn table(
    k: &Kernel,
    t: &Templates<'_>,
    ns: Option<&str>,
    address: &str,
    name: &str,
) -> Result<Option<Resource>, KernelError> {
    let (dir, owned_ns, owned_name) = (k.dir.clone(), ns.map(str::to_string), name.to_string());
    let tags = tokio::task::spawn_blocking(move || {
        nfnl::table_tags(&dir, owned_ns.as_deref(), &owned_name)
    })
    .await
    .map_err(|e| crate::kernel::Ctx::new("list table", name, ns).invalid(e.to_string()))??;
    let Some(tags) = tags else { return Ok(None) };
    let template = match t.get(address).map(|r| &r.spec) {
        Some(Spec::Firewall(f)) => Some(f.clone()),
        _ => None,
    };
    let mut fw = template.clone().unwrap_or(r::Firewall {
        namespace: ns.map(str::to_string),
        table: name.to_string(),
        sysctls: BTreeMap::new(),
        vip_networks: vec![],
        vip_digest: String::new(),
        chains: vec![],
        foreign_rules: vec![],
    });
    // What the table should hold, VIP chains included, as the last apply wrote it.
    let vips = t.vips();
    let expected = expand(&fw, &vip_index(vips.iter().copied()));
    let tag_sets: Vec<(&str, Vec<String>)> = expected
        .iter()
        .map(|c| (c.name.as_str(), c.rules.iter().map(rule_tag).collect()))
        .collect();
    let known: Vec<&String> = tag_sets.iter().flat_map(|(_, t)| t).collect();
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
    let own: Vec<String> = fw.chains.iter().map(|c| c.name.clone()).collect();
    let vip_intact = tag_sets
        .iter()
        .filter(|(n, _)| !own.iter().any(|o| o == n))
        .all(|(n, want)| &live_of(n) == want);
    if !vip_intact {
        fw.vip_digest = String::new();
    }
    for chain in fw.chains.iter_mut() {
        let live = live_of(&chain.name);
        chain.rules.retain(|r| live.contains(&rule_tag(r)));
    }
    fw.chains.retain(|c| tags.iter().any(|(n, _)| n == &c.name));
    for (key, value) in fw.sysctls.iter_mut() {
        *value = read_sysctl(k, ns, key)?;
    }
    let depends_on = t
        .get(address)
        .map(|r| r.depends_on.clone())
        .unwrap_or_default();
    Ok(Some(Resource {
        address: address.to_string(),
        spec: Spec::Firewall(fw),
        depends_on,
    }))
}
