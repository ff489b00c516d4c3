//! The fake's VXLAN devices and their FDB and neighbour entries, with the kernel's answers: a
//! device asked up on a UDP port another program holds is refused (EADDRINUSE) and not left
//! behind; entries are replaced by key (MAC, IP); deleting a missing entry is ENOENT.

use super::{fake_link, lock, FakeLink, FakeNet};
use crate::kernel::machine::{FdbEntry, Neighbour, Overlay, VxlanSpec};
use crate::kernel::netlink::{LinkKind, VxlanInfo};
use crate::kernel::{Ctx, KernelError};
use nix::errno::Errno;
use std::net::IpAddr;

type Res<T> = Result<T, KernelError>;

impl FakeNet {
    /// Run `f` on link `index`; ENODEV when it (or its namespace) is gone.
    fn on_entries<R>(
        &self,
        op: &str,
        index: u32,
        f: impl FnOnce(&mut FakeLink, &Ctx) -> Res<R>,
    ) -> Res<R> {
        let ctx = Ctx::new(op, format!("ifindex {index}"), self.ns.as_deref());
        let mut w = lock(&self.world);
        let link = w
            .space(self.ns.as_deref())
            .and_then(|s| s.links.get_mut(&index))
            .ok_or_else(|| ctx.errno(Errno::ENODEV))?;
        let out = f(link, &ctx)?;
        w.log.push(format!("{} {}", ctx.op, ctx.object));
        Ok(out)
    }

    /// A link's entries of one kind (none for a link the namespace lacks, as a dump filtered
    /// by ifindex answers); ENOENT when the namespace is gone.
    fn entries<T: Clone>(
        &self,
        op: &str,
        index: u32,
        pick: impl FnOnce(&FakeLink) -> &Vec<T>,
    ) -> Res<Vec<T>> {
        let ctx = Ctx::new(op, index, self.ns.as_deref());
        let mut w = lock(&self.world);
        let space = w
            .space(self.ns.as_deref())
            .ok_or_else(|| ctx.errno(Errno::ENOENT))?;
        Ok(space
            .links
            .get(&index)
            .map(pick)
            .cloned()
            .unwrap_or_default())
    }
}

impl Overlay for FakeNet {
    async fn create_vxlan(&self, spec: &VxlanSpec) -> Res<u32> {
        let ctx = Ctx::new("create vxlan", &spec.name, self.ns.as_deref());
        let mut w = lock(&self.world);
        if spec.up && w.udp_ports_taken.contains(&spec.port) {
            return Err(ctx.errno(Errno::EADDRINUSE));
        }
        let index = w.index();
        let space = w
            .space(self.ns.as_deref())
            .ok_or_else(|| ctx.errno(Errno::ENOENT))?;
        if space.links.values().any(|l| l.link.name == spec.name) {
            return Err(ctx.errno(Errno::EEXIST));
        }
        let mut l = fake_link(index, &spec.name, LinkKind::Vxlan, None);
        l.link.mtu = spec.mtu.or(l.link.mtu);
        l.link.alias = spec.alias.clone();
        l.link.master = spec.master;
        l.link.up = spec.up;
        l.link.vxlan = Some(VxlanInfo {
            vni: Some(spec.vni),
            local: spec.local,
            port: Some(spec.port),
            underlay: spec.underlay,
            learning: Some(spec.learning),
            proxy: Some(spec.proxy),
        });
        space.links.insert(index, l);
        w.log.push(format!("create vxlan {}", spec.name));
        Ok(index)
    }

    async fn fdb(&self, index: u32) -> Res<Vec<FdbEntry>> {
        self.entries("list fdb entries", index, |l| &l.fdb)
    }

    async fn set_fdb(&self, index: u32, mac: [u8; 6], dst: IpAddr) -> Res<()> {
        self.on_entries("replace fdb entry", index, |l, _| {
            l.fdb.retain(|e| e.mac != mac);
            l.fdb.push(FdbEntry {
                mac,
                dst: Some(dst),
                permanent: true,
            });
            Ok(())
        })
    }

    async fn delete_fdb(&self, index: u32, mac: [u8; 6], dst: Option<IpAddr>) -> Res<()> {
        self.on_entries("delete fdb entry", index, |l, ctx| {
            let before = l.fdb.len();
            l.fdb
                .retain(|e| !(e.mac == mac && (dst.is_none() || e.dst == dst)));
            if l.fdb.len() == before {
                return Err(ctx.errno(Errno::ENOENT));
            }
            Ok(())
        })
    }

    async fn neighbours(&self, index: u32) -> Res<Vec<Neighbour>> {
        self.entries("list neighbours", index, |l| &l.neighbours)
    }

    async fn set_neighbour(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Res<()> {
        self.on_entries("replace neighbour", index, |l, _| {
            l.neighbours.retain(|n| n.ip != ip);
            l.neighbours.push(Neighbour {
                ip,
                mac: Some(mac),
                permanent: true,
            });
            Ok(())
        })
    }

    async fn delete_neighbour(&self, index: u32, ip: IpAddr) -> Res<()> {
        self.on_entries("delete neighbour", index, |l, ctx| {
            let before = l.neighbours.len();
            l.neighbours.retain(|n| n.ip != ip);
            if l.neighbours.len() == before {
                return Err(ctx.errno(Errno::ENOENT));
            }
            Ok(())
        })
    }
}
