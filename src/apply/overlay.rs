//! An overlay network's share on this host: its VXLAN port (made up and enslaved to the
//! network's bridge in one request, so that a UDP port taken by another socket fails before
//! anything is left) and, per endpoint on another host, the FDB entry (MAC → VTEP) and the
//! neighbour entries (address → MAC) on it, always written with replace: an endpoint whose
//! address moved to another host moves its entries in place.

use super::ops::{kernel_err, mac, mark, owned};
use super::ApplyError;
use crate::kernel::machine::{Links, Overlay, VxlanSpec};
use crate::kernel::{ErrorKind, Kernel, Machine};
use crate::model::resource::{RemoteEndpoint, Vxlan};

type Result<T> = std::result::Result<T, ApplyError>;

pub async fn create_vxlan<M: Machine>(k: &Kernel<M>, a: &str, v: &Vxlan) -> Result<()> {
    let host = k.host();
    if let Some(existing) = host.link_by_name(&v.name).await.map_err(kernel_err(a))? {
        owned(k, a, &existing)?;
        host.delete_link(existing.index)
            .await
            .map_err(kernel_err(a))?;
    }
    let Some(bridge) = host.link_by_name(&v.bridge).await.map_err(kernel_err(a))? else {
        return Err(ApplyError::Missing {
            address: a.to_string(),
            object: format!("bridge {}", v.bridge),
        });
    };
    let spec = VxlanSpec {
        name: v.name.clone(),
        vni: v.vni,
        local: v.local,
        port: v.port,
        underlay: None,
        learning: false,
        proxy: v.proxy,
        mtu: Some(v.mtu),
        alias: Some(mark(k, a)),
        master: Some(bridge.index),
        up: true,
    };
    match host.create_vxlan(&spec).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AddressInUse => Err(ApplyError::VxlanPortInUse {
            address: a.to_string(),
            port: v.port,
        }),
        Err(e) => Err(kernel_err(a)(e)),
    }
}

/// Only the MTU changes in place (every other attribute forces a replacement).
pub async fn update_vxlan<M: Machine>(k: &Kernel<M>, a: &str, v: &Vxlan) -> Result<()> {
    let host = k.host();
    let Some(link) = host.link_by_name(&v.name).await.map_err(kernel_err(a))? else {
        return create_vxlan(k, a, v).await;
    };
    owned(k, a, &link)?;
    if link.mtu != Some(v.mtu) {
        host.set_mtu(link.index, v.mtu)
            .await
            .map_err(kernel_err(a))?;
    }
    host.set_up(link.index).await.map_err(kernel_err(a))
}

/// The device's index; `Missing` when the VXLAN port is not there.
async fn device<M: Machine>(k: &Kernel<M>, a: &str, name: &str) -> Result<Option<u32>> {
    Ok(k.host()
        .link_by_name(name)
        .await
        .map_err(kernel_err(a))?
        .map(|l| l.index))
}

/// Write `new`'s entries (replacing what is there for its MAC and addresses) and remove what
/// `old` had that `new` has not.
pub async fn set_remote<M: Machine>(
    k: &Kernel<M>,
    a: &str,
    old: Option<&RemoteEndpoint>,
    new: &RemoteEndpoint,
) -> Result<()> {
    let Some(index) = device(k, a, &new.device).await? else {
        return Err(ApplyError::Missing {
            address: a.to_string(),
            object: format!("VXLAN device {}", new.device),
        });
    };
    let host = k.host();
    let new_mac = mac(a, &new.mac)?;
    if let Some(old) = old.filter(|o| o.device == new.device) {
        let old_mac = mac(a, &old.mac)?;
        if old_mac != new_mac {
            gone_ok(a, host.delete_fdb(index, old_mac, None).await)?;
        }
        for ip in old
            .addresses
            .iter()
            .filter(|ip| !new.addresses.contains(ip))
        {
            gone_ok(a, host.delete_neighbour(index, *ip).await)?;
        }
    }
    host.set_fdb(index, new_mac, new.vtep)
        .await
        .map_err(kernel_err(a))?;
    for ip in &new.addresses {
        host.set_neighbour(index, *ip, new_mac)
            .await
            .map_err(kernel_err(a))?;
    }
    Ok(())
}

pub async fn delete_remote<M: Machine>(k: &Kernel<M>, a: &str, e: &RemoteEndpoint) -> Result<()> {
    let Some(index) = device(k, a, &e.device).await? else {
        return Ok(());
    };
    let host = k.host();
    for ip in &e.addresses {
        gone_ok(a, host.delete_neighbour(index, *ip).await)?;
    }
    gone_ok(a, host.delete_fdb(index, mac(a, &e.mac)?, None).await)
}

fn gone_ok(a: &str, r: std::result::Result<(), crate::kernel::KernelError>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(kernel_err(a)(e)),
        _ => Ok(()),
    }
}
