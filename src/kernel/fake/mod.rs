//! An in-memory [`Machine`] for unit tests of `apply` and `observe`, without root. It keeps
//! what the applier relies on the kernel for: a namespace takes its links, routes, tables and
//! sysctls with it, and the peers of its veths; deleting a link deletes its veth peer, its
//! routes and its per-device sysctls; deleting a bridge releases its ports; a name taken is
//! `Exists`, a missing object `NotFound`, as [`KernelError`] kinds. Every change is written to
//! [`World::log`], so that tests can assert on the order of operations.

mod links;

pub use links::FakeNet;
mod overlay;
mod tc;
pub mod wireguard;

use super::generations::{Digest, TableRead};
use super::machine::{
    Firewall, Machine, Namespaces, NetnsInit, Ports, ReplicaFiles, Survey, Sysctls, Table,
};
use super::netlink::{Link, LinkKind, Route, LOOPBACK_INDEX};
use super::nftables::{ChainTags, LiveTable};
use super::{Ctx, KernelError};
use ipnetwork::IpNetwork;
use nix::errno::Errno;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

type Res<T> = Result<T, KernelError>;

/// One network namespace.
#[derive(Debug, Clone, Default)]
pub struct Space {
    pub links: BTreeMap<u32, FakeLink>,
    pub routes: Vec<Route>,
    pub tables: BTreeMap<String, LiveTable>,
    /// By dotted key.
    pub sysctls: BTreeMap<String, String>,
}

/// A link with its addresses and, for a veth, where its peer is (namespace, index).
#[derive(Debug, Clone)]
pub struct FakeLink {
    pub link: Link,
    pub addresses: Vec<IpNetwork>,
    pub peer: Option<(Option<String>, u32)>,
    /// Its qdiscs (none: the default) and htb classes.
    pub qdiscs: Vec<crate::kernel::machine::Qdisc>,
    pub classes: Vec<crate::kernel::machine::HtbClass>,
    /// A VXLAN device's static entries.
    pub fdb: Vec<crate::kernel::machine::FdbEntry>,
    pub neighbours: Vec<crate::kernel::machine::Neighbour>,
}

/// The whole machine.
#[derive(Debug, Default)]
pub struct World {
    pub host: Space,
    pub namespaces: BTreeMap<String, Space>,
    /// Pin files with no namespace mounted on them.
    pub stale_pins: BTreeSet<String>,
    /// /etc/netns: namespace → file name → contents.
    pub files: BTreeMap<String, BTreeMap<String, String>>,
    /// Every change, in order: `<operation> <object>`.
    pub log: Vec<String>,
    /// Qdisc kinds this kernel lacks (`netem`): adding one is `Unsupported`.
    pub lacking_qdiscs: BTreeSet<String>,
    /// UDP ports another program has bound in the host namespace.
    pub udp_ports_taken: BTreeSet<u16>,
    next_index: u32,
}

impl World {
    pub fn space(&mut self, ns: Option<&str>) -> Option<&mut Space> {
        match ns {
            None => Some(&mut self.host),
            Some(n) => self.namespaces.get_mut(n),
        }
    }

    /// The link called `name` in namespace `ns`.
    pub fn link_named(&mut self, ns: Option<&str>, name: &str) -> Option<&mut FakeLink> {
        self.space(ns)?
            .links
            .values_mut()
            .find(|l| l.link.name == name)
    }

    /// Make a link as another program would (no mark of ours), e.g. to collide with a name.
    pub fn add_foreign_link(&mut self, ns: Option<&str>, name: &str, kind: LinkKind) -> u32 {
        let index = self.index();
        if let Some(space) = self.space(ns) {
            space
                .links
                .insert(index, fake_link(index, name, kind, None));
        }
        index
    }

    fn index(&mut self) -> u32 {
        self.next_index = self.next_index.max(LOOPBACK_INDEX) + 1;
        self.next_index
    }

    fn note(&mut self, what: String) {
        self.log.push(what);
    }

    /// Remove a link and what the kernel removes with it; false when it was not there.
    pub fn remove_link(&mut self, ns: Option<&str>, index: u32) -> bool {
        let Some(space) = self.space(ns) else {
            return false;
        };
        let Some(gone) = space.links.remove(&index) else {
            return false;
        };
        space.routes.retain(|r| r.oif != Some(index));
        let device = format!("conf.{}.", gone.link.name);
        space.sysctls.retain(|k, _| !k.contains(&device));
        for port in space.links.values_mut() {
            if port.link.master == Some(index) {
                port.link.master = None;
            }
        }
        if let Some((peer_ns, peer)) = gone.peer {
            self.remove_link(peer_ns.as_deref(), peer);
        }
        true
    }
}

fn fake_link(index: u32, name: &str, kind: LinkKind, mac: Option<[u8; 6]>) -> FakeLink {
    let [_, _, hi, lo] = index.to_be_bytes();
    FakeLink {
        link: Link {
            index,
            name: name.to_string(),
            kind,
            alias: None,
            mac: Some(mac.unwrap_or([0x02, 0xfa, 0x4e, 0, hi, lo])),
            mtu: Some(1500),
            master: None,
            up: false,
            lower_up: false,
            link: None,
            link_netnsid: None,
            macvlan_mode: None,
            vxlan: None,
            bridge_port: None,
        },
        addresses: Vec::new(),
        peer: None,
        qdiscs: Vec::new(),
        classes: Vec::new(),
        fdb: Vec::new(),
        neighbours: Vec::new(),
    }
}

fn dotted(key: &str) -> String {
    key.trim_start_matches('/').replace('/', ".")
}

/// The machine.
#[derive(Clone, Debug)]
pub struct Fake {
    world: Arc<Mutex<World>>,
    host: FakeNet,
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Fake {
    fn default() -> Fake {
        Fake::new()
    }
}

impl Fake {
    pub fn new() -> Fake {
        let world = Arc::new(Mutex::new(World::default()));
        let host = FakeNet {
            world: world.clone(),
            ns: None,
        };
        let fake = Fake { world, host };
        fake.with(|w| {
            w.host.links.insert(
                LOOPBACK_INDEX,
                fake_link(LOOPBACK_INDEX, "lo", LinkKind::Device, None),
            )
        });
        fake
    }

    /// Look at or change the world directly (what another program, or drift, would do).
    pub fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut lock(&self.world))
    }

    /// The log of changes so far, emptied.
    pub fn take_log(&self) -> Vec<String> {
        self.with(|w| std::mem::take(&mut w.log))
    }
}

impl Namespaces for Fake {
    async fn create_netns(&self, name: &str, init: &NetnsInit) -> Res<()> {
        let ctx = Ctx::new("create netns", name, None);
        let mut w = lock(&self.world);
        if w.namespaces.contains_key(name) {
            return Err(ctx.errno(Errno::EEXIST));
        }
        w.stale_pins.remove(name);
        let mut lo = fake_link(LOOPBACK_INDEX, "lo", LinkKind::Device, Some([0; 6]));
        lo.link.alias = Some(init.lo_alias.clone());
        lo.link.up = true;
        let mut space = Space::default();
        space.links.insert(LOOPBACK_INDEX, lo);
        space.sysctls = init
            .sysctls
            .iter()
            .map(|(k, v)| (dotted(k), v.clone()))
            .collect();
        w.namespaces.insert(name.to_string(), space);
        w.note(format!("create netns {name}"));
        Ok(())
    }

    async fn netns_exists(&self, name: &str) -> bool {
        lock(&self.world).namespaces.contains_key(name)
    }

    async fn list_netns(&self) -> Res<Vec<String>> {
        let w = lock(&self.world);
        let names: BTreeSet<&String> = w.namespaces.keys().chain(&w.stale_pins).collect();
        Ok(names.into_iter().cloned().collect())
    }

    async fn list_netns_live(&self) -> Res<Vec<(String, bool)>> {
        let w = lock(&self.world);
        let names: BTreeSet<&String> = w.namespaces.keys().chain(&w.stale_pins).collect();
        Ok(names
            .into_iter()
            .map(|n| (n.clone(), w.namespaces.contains_key(n)))
            .collect())
    }

    fn let_go(&self) {}

    async fn netns_marks(&self, names: &[String]) -> Res<Vec<Option<Option<String>>>> {
        let w = lock(&self.world);
        Ok(names
            .iter()
            .map(|n| {
                w.namespaces.get(n).map(|space| {
                    let lo = space.links.get(&LOOPBACK_INDEX);
                    lo.and_then(|l| l.link.alias.clone())
                })
            })
            .collect())
    }

    async fn delete_netns(&self, name: &str) -> Res<bool> {
        let mut w = lock(&self.world);
        if w.stale_pins.remove(name) {
            w.note(format!("delete netns {name}"));
            return Ok(true);
        }
        let Some(space) = w.namespaces.remove(name) else {
            return Ok(false);
        };
        for (peer_ns, peer) in space.links.values().filter_map(|l| l.peer.clone()) {
            w.remove_link(peer_ns.as_deref(), peer);
        }
        w.note(format!("delete netns {name}"));
        Ok(true)
    }
}

fn live(contents: &Table) -> LiveTable {
    LiveTable {
        chains: tags(contents),
        sets: contents
            .sets
            .iter()
            .map(|s| (s.name.clone(), s.elements.clone()))
            .collect(),
    }
}

fn tags(contents: &Table) -> ChainTags {
    contents
        .chains
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.rules.iter().map(|r| r.tag.clone()).collect(),
            )
        })
        .collect()
}

impl Fake {
    /// Run `f` on the tables of namespace `ns`; ENOENT when it is gone.
    fn tables_of<R>(
        &self,
        ctx: Ctx,
        f: impl FnOnce(&mut BTreeMap<String, LiveTable>, &Ctx) -> Res<R>,
    ) -> Res<R> {
        let mut w = lock(&self.world);
        let space = w
            .space(ctx.netns.as_deref())
            .ok_or_else(|| ctx.errno(Errno::ENOENT))?;
        let r = f(&mut space.tables, &ctx)?;
        w.note(format!("{} {}", ctx.op, ctx.object));
        Ok(r)
    }
}

impl Firewall for Fake {
    async fn replace_table(&self, ns: Option<&str>, table: &str, contents: &Arc<Table>) -> Res<()> {
        self.tables_of(Ctx::new("load table", table, ns), |t, _| {
            t.insert(table.to_string(), live(contents));
            Ok(())
        })
    }

    async fn update_table(
        &self,
        ns: Option<&str>,
        table: &str,
        old: &Table,
        new: &Table,
    ) -> Res<()> {
        // Chains in `old` with the same rules are left as they are, as the kernel's update
        // does; the sets `new` names take its elements, those only `old` names go, the others
        // stay.
        self.tables_of(Ctx::new("update table", table, ns), |t, ctx| {
            let entry = t.entry(table.to_string()).or_default();
            let sets = &mut entry.sets;
            sets.retain(|(name, _)| !old.sets.iter().any(|s| s.name == *name));
            sets.extend(live(new).sets);
            let live = &mut entry.chains;
            let (old, new) = (&old.chains, &new.chains);
            let before = |name: &str| old.iter().find(|c| c.name == name).map(|c| &c.rules);
            for c in new {
                let prev = before(&c.name);
                if prev == Some(&c.rules) {
                    continue;
                }
                let rules: Vec<String> = c.rules.iter().map(|r| r.tag.clone()).collect();
                match live.iter_mut().find(|(n, _)| *n == c.name) {
                    Some(chain) => chain.1 = rules,
                    None if prev.is_none() => live.push((c.name.clone(), rules)),
                    None => return Err(ctx.errno(Errno::ENOENT)),
                }
            }
            for c in old.iter().filter(|c| !new.iter().any(|n| n.name == c.name)) {
                let count = live.len();
                live.retain(|(n, _)| *n != c.name);
                if live.len() == count {
                    return Err(ctx.errno(Errno::ENOENT));
                }
            }
            Ok(())
        })
    }

    async fn delete_table(&self, ns: Option<&str>, table: &str) -> Res<()> {
        self.tables_of(Ctx::new("delete table", table, ns), |t, _| {
            t.remove(table);
            Ok(())
        })
    }

    async fn read_table(&self, ns: Option<&str>, table: &str, _expected: Digest) -> Res<TableRead> {
        let ctx = Ctx::new("list table", table, ns);
        let mut w = lock(&self.world);
        let space = w.space(ns).ok_or_else(|| ctx.errno(Errno::ENOENT))?;
        Ok(space
            .tables
            .get(table)
            .cloned()
            .map_or(TableRead::Missing, TableRead::Live))
    }
}

impl Sysctls for Fake {
    async fn read_sysctl(&self, ns: Option<&str>, key: &str) -> Res<String> {
        let ctx = Ctx::new("read sysctl", key, ns);
        let mut w = lock(&self.world);
        let space = w.space(ns).ok_or_else(|| ctx.errno(Errno::ENOENT))?;
        space
            .sysctls
            .get(&dotted(key))
            .cloned()
            .ok_or_else(|| ctx.errno(Errno::ENOENT))
    }

    async fn write_sysctl(&self, ns: Option<&str>, key: &str, value: &str) -> Res<()> {
        let ctx = Ctx::new("write sysctl", format!("{key}={value}"), ns);
        let mut w = lock(&self.world);
        let space = w.space(ns).ok_or_else(|| ctx.errno(Errno::ENOENT))?;
        space.sysctls.insert(dotted(key), value.to_string());
        w.note(format!("write sysctl {key}={value}"));
        Ok(())
    }
}

impl ReplicaFiles for Fake {
    async fn read_file(&self, ns: &str, name: &str) -> Res<Option<String>> {
        Ok(lock(&self.world)
            .files
            .get(ns)
            .and_then(|d| d.get(name))
            .cloned())
    }

    async fn write_files(&self, ns: &str, files: &[(&str, String)]) -> Res<()> {
        let mut w = lock(&self.world);
        let dir = w.files.entry(ns.to_string()).or_default();
        for (name, body) in files {
            dir.insert(name.to_string(), body.clone());
        }
        w.note(format!("write files {ns}"));
        Ok(())
    }

    async fn remove_files(&self, ns: &str, names: &[&str]) -> Res<()> {
        let mut w = lock(&self.world);
        if let Some(dir) = w.files.get_mut(ns) {
            dir.retain(|n, _| !names.contains(&n.as_str()));
            if dir.is_empty() {
                w.files.remove(ns);
            }
        }
        w.note(format!("remove files {ns}"));
        Ok(())
    }

    async fn remove_dir(&self, ns: &str) -> Res<()> {
        let mut w = lock(&self.world);
        w.files.remove(ns);
        w.note(format!("remove files {ns}"));
        Ok(())
    }

    async fn file_dirs(&self) -> Res<Vec<String>> {
        Ok(lock(&self.world).files.keys().cloned().collect())
    }

    async fn file_names(&self, ns: &str) -> Res<Vec<String>> {
        Ok(lock(&self.world)
            .files
            .get(ns)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default())
    }
}

impl Ports for Fake {
    async fn udp_port_free(&self, port: u16) -> Res<bool> {
        Ok(!lock(&self.world).udp_ports_taken.contains(&port))
    }
}

impl Machine for Fake {
    type Net = FakeNet;

    fn host(&self) -> &FakeNet {
        &self.host
    }

    async fn netns(&self, ns: &str) -> Res<FakeNet> {
        if !lock(&self.world).namespaces.contains_key(ns) {
            return Err(Ctx::new("open netns", ns, None).errno(Errno::ENOENT));
        }
        Ok(FakeNet {
            world: self.world.clone(),
            ns: Some(ns.to_string()),
        })
    }

    async fn survey(&self, names: &[String], full: bool) -> Res<Vec<Option<Survey>>> {
        let w = lock(&self.world);
        let one = |ns: &str, space: &Space| Survey {
            links: space.links.values().map(|l| l.link.clone()).collect(),
            addresses: match full {
                true => space
                    .links
                    .iter()
                    .flat_map(|(i, l)| l.addresses.iter().map(move |a| (*i, *a)))
                    .collect(),
                false => Vec::new(),
            },
            routes: match full {
                true => space.routes.clone(),
                false => Vec::new(),
            },
            files: match (full, w.files.get(ns)) {
                (true, Some(dir)) => dir.iter().map(|(n, t)| (n.clone(), t.clone())).collect(),
                (true, None) | (false, _) => Vec::new(),
            },
        };
        Ok(names
            .iter()
            .map(|ns| w.namespaces.get(ns).map(|space| one(ns, space)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::machine::{Links, NewVeth};

    fn veth(peer_ns: &str) -> NewVeth {
        NewVeth {
            name: "vh0".into(),
            peer_name: "eth0".into(),
            peer_ns: peer_ns.into(),
            ..NewVeth::default()
        }
    }

    #[tokio::test]
    async fn kernel_facts() {
        let m = Fake::new();
        m.create_netns("a", &NetnsInit::default()).await.unwrap();
        let again = m.create_netns("a", &NetnsInit::default()).await;
        assert!(again.unwrap_err().is_exists());
        let host = m.host();
        let br = host.create_bridge("br0", None, None, None).await.unwrap();
        let mut spec = veth("a");
        spec.master = Some(br);
        host.create_veth(&spec).await.unwrap();
        assert!(host.create_veth(&spec).await.unwrap_err().is_exists());
        assert!(host
            .create_veth(&veth("b"))
            .await
            .unwrap_err()
            .is_not_found());
        let inside = m.netns("a").await.unwrap();
        let eth0 = inside.link_by_name("eth0").await.unwrap().unwrap();
        let addr: IpNetwork = "10.0.0.2/24".parse().unwrap();
        assert!(inside
            .delete_address(eth0.index, addr)
            .await
            .unwrap_err()
            .is_not_found());
        // A bridge's deletion releases its ports; a namespace's takes its veths' peers along.
        host.delete_link(br).await.unwrap();
        let vh0 = host.link_by_name("vh0").await.unwrap().unwrap();
        assert_eq!(vh0.master, None);
        assert!(m.delete_netns("a").await.unwrap());
        assert!(host.link_by_name("vh0").await.unwrap().is_none());
        assert!(m.netns("a").await.unwrap_err().is_not_found());
        assert!(!m.delete_netns("a").await.unwrap());
    }
}
