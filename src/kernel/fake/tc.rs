//! The fake's traffic control: each link keeps its qdiscs and htb classes, with the kernel's
//! answers (a parent holds one qdisc; deleting the root takes everything under it; a kind the
//! kernel lacks cannot be added).

use super::{lock, FakeLink, FakeNet};
use crate::kernel::machine::{HtbClass, Qdisc, QdiscKind, TrafficControl};
use crate::kernel::netlink::tc::ROOT;
use crate::kernel::{Ctx, KernelError};
use nix::errno::Errno;

type Res<T> = Result<T, KernelError>;

impl FakeNet {
    /// Run `f` on link `index`; ENODEV when it (or its namespace) is gone.
    fn on_link<R>(
        &self,
        op: &str,
        index: u32,
        f: impl FnOnce(&mut FakeLink, &Ctx, &std::collections::BTreeSet<String>) -> Res<R>,
    ) -> Res<R> {
        let ctx = Ctx::new(op, format!("ifindex {index}"), self.ns.as_deref());
        let mut w = lock(&self.world);
        let lacking = w.lacking_qdiscs.clone();
        let link = w
            .space(self.ns.as_deref())
            .and_then(|s| s.links.get_mut(&index))
            .ok_or_else(|| ctx.errno(Errno::ENODEV))?;
        let out = f(link, &ctx, &lacking)?;
        w.log.push(format!("{} {}", ctx.op, ctx.object));
        Ok(out)
    }
}

fn kind_name(k: &QdiscKind) -> &str {
    match k {
        QdiscKind::Htb { .. } => "htb",
        QdiscKind::Netem { .. } => "netem",
        QdiscKind::Other(name) => name,
    }
}

impl TrafficControl for FakeNet {
    async fn qdiscs(&self, index: u32) -> Res<Vec<Qdisc>> {
        self.read_link("list qdiscs", index, |l| l.qdiscs.clone())
    }

    async fn htb_classes(&self, index: u32) -> Res<Vec<HtbClass>> {
        self.read_link("list classes", index, |l| l.classes.clone())
    }

    async fn add_qdisc(&self, index: u32, q: &Qdisc) -> Res<()> {
        self.on_link("add qdisc", index, |link, ctx, lacking| {
            let kind = kind_name(&q.kind);
            if lacking.contains(kind) {
                return Err(ctx.unsupported_kind(
                    kind,
                    std::io::Error::from_raw_os_error(Errno::ENOENT as i32),
                ));
            }
            let parent_known =
                q.parent == ROOT || link.classes.iter().any(|c| c.handle == q.parent);
            if !parent_known {
                return Err(ctx.errno(Errno::ENOENT));
            }
            if link.qdiscs.iter().any(|x| x.parent == q.parent) {
                return Err(ctx.errno(Errno::EEXIST));
            }
            link.qdiscs.push(q.clone());
            Ok(())
        })
    }

    async fn delete_root_qdisc(&self, index: u32) -> Res<()> {
        self.on_link("delete root qdisc", index, |link, ctx, _| {
            if link.qdiscs.is_empty() {
                return Err(ctx.errno(Errno::ENOENT));
            }
            link.qdiscs.clear();
            link.classes.clear();
            Ok(())
        })
    }

    async fn set_htb_class(&self, index: u32, c: &HtbClass) -> Res<()> {
        self.on_link("set htb class", index, |link, ctx, _| {
            let major = c.handle & 0xffff_0000;
            let htb_root = link
                .qdiscs
                .iter()
                .any(|q| q.handle == major && matches!(q.kind, QdiscKind::Htb { .. }));
            if !htb_root {
                return Err(ctx.errno(Errno::EINVAL));
            }
            link.classes.retain(|x| x.handle != c.handle);
            link.classes.push(*c);
            Ok(())
        })
    }
}

impl FakeNet {
    /// What `read` takes from link `index` (nothing when there is no such link); ENOENT when
    /// the namespace is gone.
    fn read_link<T: Default>(
        &self,
        op: &str,
        index: u32,
        read: impl FnOnce(&FakeLink) -> T,
    ) -> Res<T> {
        let ctx = Ctx::new(op, index, self.ns.as_deref());
        let mut w = lock(&self.world);
        let space = w
            .space(self.ns.as_deref())
            .ok_or_else(|| ctx.errno(Errno::ENOENT))?;
        Ok(space.links.get(&index).map(read).unwrap_or_default())
    }
}
