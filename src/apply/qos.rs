//! `x-qos` on a link: egress shaping (and the netem delay) on the replica's interface, inside
//! its namespace; ingress shaping on the host-side veth peer, since what leaves the peer
//! enters the replica (no ifb needed). Each side is read back and rebuilt only when it
//! differs, so an `up` that changes nothing sends nothing and a tree deleted by hand comes
//! back.
//!
//! htb rather than tbf: htb has a guaranteed rate and a ceiling to borrow up to (tbf has one
//! rate), and its leaf class is where netem hangs when a link is both shaped and delayed.

use super::ops::kernel_err;
use super::ApplyError;
use crate::kernel::machine::{HtbShape, Links, NetemShape, Shaper, TrafficControl, TreeState};
use crate::kernel::{Kernel, Machine};
use crate::model::qos::{Delay, LinkQos, Shaping};
use crate::model::resource::Link;

type Result<T> = std::result::Result<T, ApplyError>;

fn htb(s: &Shaping) -> HtbShape {
    HtbShape {
        rate: s.rate.0,
        ceil: s.ceil.0,
        burst: s.burst,
    }
}

fn netem(d: &Delay) -> NetemShape {
    NetemShape {
        delay_ns: d.delay_us.saturating_mul(1000),
        jitter_ns: d.jitter_us.saturating_mul(1000),
    }
}

/// What the replica's interface should hold.
pub fn egress(q: Option<&LinkQos>) -> Option<Shaper> {
    let q = q?;
    let s = Shaper {
        htb: q.egress.as_ref().map(htb),
        netem: q.delay.as_ref().map(netem),
    };
    (s.htb.is_some() || s.netem.is_some()).then_some(s)
}

/// What the host-side peer should hold.
pub fn ingress(q: Option<&LinkQos>) -> Option<Shaper> {
    q?.ingress.as_ref().map(|s| Shaper {
        htb: Some(htb(s)),
        netem: None,
    })
}

/// Make both sides of link `l` hold what its x-qos asks for.
pub async fn sync<M: Machine>(k: &Kernel<M>, a: &str, l: &Link) -> Result<()> {
    let inside = k.netns(&l.namespace).await.map_err(kernel_err(a))?;
    if let Some(link) = inside
        .link_by_name(&l.ifname)
        .await
        .map_err(kernel_err(a))?
    {
        sync_side(&inside, a, link.index, egress(l.qos.as_ref())).await?;
    }
    if let Some(host) = &l.host_ifname {
        if let Some(peer) = k.host().link_by_name(host).await.map_err(kernel_err(a))? {
            sync_side(k.host(), a, peer.index, ingress(l.qos.as_ref())).await?;
        }
    }
    Ok(())
}

/// Give a link just made (interface `inside_index`, host end `host_index`) its trees: both
/// ends hold only their default qdisc, so nothing is read first.
pub async fn build<M: Machine>(
    k: &Kernel<M>,
    a: &str,
    l: &Link,
    inside_index: u32,
    host_index: Option<u32>,
) -> Result<()> {
    if let Some(want) = egress(l.qos.as_ref()) {
        let inside = k.netns(&l.namespace).await.map_err(kernel_err(a))?;
        add_tree(&inside, a, inside_index, want).await?;
    }
    if let (Some(index), Some(want)) = (host_index, ingress(l.qos.as_ref())) {
        add_tree(k.host(), a, index, want).await?;
    }
    Ok(())
}

/// Rebuild the tree of link `index` when it is not `want`. With nothing wanted, only a tree
/// of ours is taken away: a qdisc somebody else added stays.
async fn sync_side<N: Links + TrafficControl>(
    nl: &N,
    a: &str,
    index: u32,
    want: Option<Shaper>,
) -> Result<()> {
    let hint = want.and_then(|w| w.htb).map(|h| h.burst);
    let (qdiscs, classes) =
        futures::try_join!(nl.qdiscs(index), nl.htb_classes(index)).map_err(kernel_err(a))?;
    let live = Shaper::read(&qdiscs, &classes, hint);
    let rebuild = match (&live, &want) {
        (TreeState::Shaper(have), Some(w)) => have != w,
        (TreeState::Shaper(_), None) => true,
        (TreeState::Foreign, Some(_)) => true,
        (TreeState::Default, Some(_)) => false,
        (TreeState::Default | TreeState::Foreign, None) => false,
    };
    if rebuild {
        if let Err(e) = nl.delete_root_qdisc(index).await {
            if !e.is_not_found() {
                return Err(kernel_err(a)(e));
            }
        }
    }
    match want {
        Some(w) if live != TreeState::Shaper(w) => add_tree(nl, a, index, w).await,
        Some(_) | None => Ok(()),
    }
}

async fn add_tree<N: TrafficControl>(nl: &N, a: &str, index: u32, want: Shaper) -> Result<()> {
    let (qdiscs, classes, leaf) = want.tree();
    for q in &qdiscs {
        nl.add_qdisc(index, q).await.map_err(kernel_err(a))?;
    }
    for c in &classes {
        nl.set_htb_class(index, c).await.map_err(kernel_err(a))?;
    }
    if let Some(q) = leaf {
        nl.add_qdisc(index, &q).await.map_err(kernel_err(a))?;
    }
    Ok(())
}
