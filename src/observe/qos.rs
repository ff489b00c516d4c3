//! `x-qos` read back: the tc trees on a link of the project (its interface inside the replica,
//! its host-side peer) as the link's `qos` attribute, so that a tree changed or deleted by
//! hand shows as drift. Read only for links the state or the file gives x-qos: a project
//! without it costs no request.

use crate::kernel::machine::{Links, NetemShape, Shaper, TrafficControl, TreeState};
use crate::kernel::{Kernel, KernelError, Machine};
use crate::model::qos::{Delay, LinkQos, Rate, Shaping};
use crate::model::resource::Link;

/// Replace `link.qos` (the expected one) with what the kernel holds.
pub async fn read<M: Machine>(
    k: &Kernel<M>,
    inside: &M::Net,
    inside_index: u32,
    link: &mut Link,
) -> Result<(), KernelError> {
    let Some(expected) = link.qos.clone() else {
        return Ok(());
    };
    let egress_hint = expected.egress.map(|s| s.burst);
    let ingress_hint = expected.ingress.map(|s| s.burst);
    let egress = side(inside, inside_index, egress_hint).await?;
    let peer = match &link.host_ifname {
        Some(name) => k.host().link_by_name(name).await?,
        None => None,
    };
    let ingress = match peer {
        Some(p) => side(k.host(), p.index, ingress_hint).await?,
        None => None,
    };
    let qos = LinkQos {
        egress: egress.and_then(|s| s.htb).map(shaping),
        ingress: ingress.and_then(|s| s.htb).map(shaping),
        delay: egress.and_then(|s| s.netem).map(delay),
    };
    link.qos = (!qos.is_empty()).then_some(qos);
    Ok(())
}

/// The shaper of one link; None for the default qdisc or one that is not ours.
async fn side<N: Links + TrafficControl>(
    nl: &N,
    index: u32,
    burst_hint: Option<u32>,
) -> Result<Option<Shaper>, KernelError> {
    let (qdiscs, classes) = futures::try_join!(nl.qdiscs(index), nl.htb_classes(index))?;
    Ok(match Shaper::read(&qdiscs, &classes, burst_hint) {
        TreeState::Shaper(s) => Some(s),
        TreeState::Default | TreeState::Foreign => None,
    })
}

fn shaping(h: crate::kernel::machine::HtbShape) -> Shaping {
    Shaping {
        rate: Rate(h.rate),
        ceil: Rate(h.ceil),
        burst: h.burst,
    }
}

fn delay(n: NetemShape) -> Delay {
    Delay {
        delay_us: n.delay_ns / 1000,
        jitter_us: n.jitter_ns / 1000,
    }
}
