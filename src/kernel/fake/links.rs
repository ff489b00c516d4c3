//! The fake's handle on one namespace: links, addresses and routes.

use super::{fake_link, lock, FakeLink, Space, World};
use crate::kernel::machine::{Links, NewMacvlan, NewVeth};
use crate::kernel::netlink::{Link, LinkKind, Route};
use crate::kernel::{Ctx, KernelError};
use ipnetwork::IpNetwork;
use nix::errno::Errno;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

type Res<T> = Result<T, KernelError>;

/// The handle of one namespace of a [`Fake`].
#[derive(Clone, Debug)]
pub struct FakeNet {
    pub(super) world: Arc<Mutex<World>>,
    pub(super) ns: Option<String>,
}

impl FakeNet {
    fn ns(&self) -> Option<&str> {
        self.ns.as_deref()
    }

    fn ctx(&self, op: &str, object: impl std::fmt::Display) -> Ctx {
        Ctx::new(op, object, self.ns())
    }

    /// Run `f` on this namespace; ENOENT when it is gone.
    fn on<R>(
        &self,
        op: &str,
        object: impl std::fmt::Display,
        f: impl FnOnce(&mut World, &Ctx) -> Res<R>,
    ) -> Res<R> {
        let ctx = self.ctx(op, object);
        let mut w = lock(&self.world);
        if w.space(self.ns()).is_none() {
            return Err(ctx.errno(Errno::ENOENT));
        }
        f(&mut w, &ctx)
    }

    fn read<R>(&self, f: impl FnOnce(&Space) -> R) -> Res<R> {
        self.on("list", "links", |w, _| {
            Ok(f(w.space(self.ns()).map(|s| &*s).expect("checked by on")))
        })
    }

    /// Change link `index` with `f`; ENODEV when it does not exist.
    fn change(&self, op: &str, index: u32, f: impl FnOnce(&mut FakeLink)) -> Res<()> {
        let ns = self.ns.clone();
        self.on(op, format!("ifindex {index}"), |w, ctx| {
            let link = w
                .space(ns.as_deref())
                .and_then(|s| s.links.get_mut(&index))
                .ok_or_else(|| ctx.errno(Errno::ENODEV))?;
            f(link);
            w.note(format!("{} {}", ctx.op, ctx.object));
            Ok(())
        })
    }

    fn taken(space: &Space, name: &str) -> bool {
        space.links.values().any(|l| l.link.name == name)
    }
}

impl Links for FakeNet {
    async fn links(&self) -> Res<Vec<Link>> {
        self.read(|s| s.links.values().map(|l| l.link.clone()).collect())
    }

    async fn link_by_name(&self, name: &str) -> Res<Option<Link>> {
        self.read(|s| {
            s.links
                .values()
                .find(|l| l.link.name == name)
                .map(|l| l.link.clone())
        })
    }

    async fn link_by_index(&self, index: u32) -> Res<Option<Link>> {
        self.read(|s| s.links.get(&index).map(|l| l.link.clone()))
    }

    async fn addresses(&self) -> Res<Vec<(u32, IpNetwork)>> {
        self.read(|s| {
            s.links
                .iter()
                .flat_map(|(i, l)| l.addresses.iter().map(move |a| (*i, *a)))
                .collect()
        })
    }

    async fn routes(&self) -> Res<Vec<Route>> {
        self.read(|s| s.routes.clone())
    }

    async fn create_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        alias: Option<&str>,
    ) -> Res<u32> {
        let ns = self.ns.clone();
        self.on("create bridge", name, |w, ctx| {
            let index = w.index();
            let space = w.space(ns.as_deref()).expect("checked by on");
            if Self::taken(space, name) {
                return Err(ctx.errno(Errno::EEXIST));
            }
            let mut l = fake_link(index, name, LinkKind::Bridge, mac);
            l.link.mtu = mtu.or(l.link.mtu);
            l.link.alias = alias.map(str::to_string);
            space.links.insert(index, l);
            w.note(format!("create bridge {name}"));
            Ok(index)
        })
    }

    async fn create_veth(&self, spec: &NewVeth) -> Res<u32> {
        let ns = self.ns.clone();
        self.on("create veth", &spec.name, |w, ctx| {
            let peer_space = w
                .namespaces
                .get(&spec.peer_ns)
                .ok_or_else(|| ctx.errno(Errno::ENOENT))?;
            if Self::taken(peer_space, &spec.peer_name) {
                return Err(ctx.errno(Errno::EEXIST));
            }
            let space = w.space(ns.as_deref()).expect("checked by on");
            if Self::taken(space, &spec.name) {
                return Err(ctx.errno(Errno::EEXIST));
            }
            if spec.master.is_some_and(|m| !space.links.contains_key(&m)) {
                return Err(ctx.errno(Errno::ENODEV));
            }
            let (index, peer_index) = (w.index(), w.index());
            let mut end = fake_link(index, &spec.name, LinkKind::Veth, spec.mac);
            end.link.mtu = spec.mtu.or(end.link.mtu);
            end.link.alias = spec.alias.clone();
            end.link.master = spec.master;
            end.link.up = spec.up;
            end.peer = Some((Some(spec.peer_ns.clone()), peer_index));
            let mut peer = fake_link(peer_index, &spec.peer_name, LinkKind::Veth, spec.peer_mac);
            peer.link.mtu = spec.mtu.or(peer.link.mtu);
            peer.peer = Some((ns.clone(), index));
            w.space(ns.as_deref())
                .expect("checked by on")
                .links
                .insert(index, end);
            if let Some(s) = w.space(Some(&spec.peer_ns)) {
                s.links.insert(peer_index, peer);
            }
            w.note(format!(
                "create veth {} {}/{}",
                spec.name, spec.peer_ns, spec.peer_name
            ));
            Ok(index)
        })
    }

    async fn create_macvlan(&self, spec: &NewMacvlan) -> Res<()> {
        let ns = self.ns.clone();
        self.on("create macvlan", &spec.name, |w, ctx| {
            let space = w.space(ns.as_deref()).expect("checked by on");
            if !space.links.contains_key(&spec.parent) {
                return Err(ctx.errno(Errno::ENODEV));
            }
            let target = w
                .namespaces
                .get(&spec.ns)
                .ok_or_else(|| ctx.errno(Errno::ENOENT))?;
            if Self::taken(target, &spec.name) {
                return Err(ctx.errno(Errno::EEXIST));
            }
            let index = w.index();
            let mut l = fake_link(index, &spec.name, LinkKind::Macvlan, spec.mac);
            l.link.mtu = spec.mtu.or(l.link.mtu);
            l.link.up = spec.up;
            l.link.macvlan_mode = Some(spec.mode);
            if let Some(s) = w.space(Some(&spec.ns)) {
                s.links.insert(index, l);
            }
            w.note(format!("create macvlan {}/{}", spec.ns, spec.name));
            Ok(())
        })
    }

    async fn set_up(&self, index: u32) -> Res<()> {
        self.change("set up", index, |l| {
            l.link.up = true;
            l.link.lower_up = true;
        })
    }

    async fn set_down(&self, index: u32) -> Res<()> {
        self.change("set down", index, |l| {
            l.link.up = false;
            l.link.lower_up = false;
        })
    }

    async fn set_mtu(&self, index: u32, mtu: u32) -> Res<()> {
        self.change("set mtu of", index, |l| l.link.mtu = Some(mtu))
    }

    async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Res<()> {
        self.change("set mac of", index, |l| l.link.mac = Some(mac))
    }

    async fn set_alias(&self, index: u32, alias: Option<&str>) -> Res<()> {
        self.change("set alias of", index, |l| {
            l.link.alias = alias.map(str::to_string)
        })
    }

    async fn delete_link(&self, index: u32) -> Res<()> {
        let ns = self.ns.clone();
        self.on("delete link", format!("ifindex {index}"), |w, ctx| {
            let name = w
                .space(ns.as_deref())
                .and_then(|s| s.links.get(&index))
                .map(|l| l.link.name.clone())
                .ok_or_else(|| ctx.errno(Errno::ENODEV))?;
            w.remove_link(ns.as_deref(), index);
            let place = ns.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
            w.note(format!("delete link {place}{name}"));
            Ok(())
        })
    }

    async fn add_address(&self, index: u32, addr: IpNetwork) -> Res<()> {
        self.change("add address", index, |l| {
            if !l.addresses.contains(&addr) {
                l.addresses.push(addr);
            }
        })
    }

    async fn delete_address(&self, index: u32, addr: IpNetwork) -> Res<()> {
        let ns = self.ns.clone();
        self.on(
            "delete address",
            format!("{addr} from ifindex {index}"),
            |w, ctx| {
                let link = w
                    .space(ns.as_deref())
                    .and_then(|s| s.links.get_mut(&index))
                    .ok_or_else(|| ctx.errno(Errno::ENODEV))?;
                let before = link.addresses.len();
                link.addresses.retain(|a| *a != addr);
                if link.addresses.len() == before {
                    return Err(ctx.errno(Errno::EADDRNOTAVAIL));
                }
                w.note(format!("delete address {addr}"));
                Ok(())
            },
        )
    }

    async fn add_route(
        &self,
        dst: IpNetwork,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> Res<()> {
        let ns = self.ns.clone();
        self.on("add route", dst, |w, ctx| {
            let space = w.space(ns.as_deref()).expect("checked by on");
            if oif.is_some_and(|i| !space.links.contains_key(&i)) {
                return Err(ctx.errno(Errno::ENODEV));
            }
            space.routes.retain(|r| r.dst != dst);
            space.routes.push(Route {
                dst,
                gateway,
                oif,
                protocol: 4,
                scope: 0,
                metric: None,
            });
            w.note(format!("add route {dst}"));
            Ok(())
        })
    }

    async fn delete_route(
        &self,
        dst: IpNetwork,
        gateway: Option<IpAddr>,
        oif: Option<u32>,
    ) -> Res<()> {
        let ns = self.ns.clone();
        self.on("delete route", dst, |w, ctx| {
            let space = w.space(ns.as_deref()).expect("checked by on");
            let matches = |r: &Route| {
                r.dst == dst
                    && gateway.is_none_or(|g| r.gateway == Some(g))
                    && oif.is_none_or(|i| r.oif == Some(i))
            };
            let before = space.routes.len();
            space.routes.retain(|r| !matches(r));
            if space.routes.len() == before {
                return Err(ctx.errno(Errno::ESRCH));
            }
            w.note(format!("delete route {dst}"));
            Ok(())
        })
    }
}
