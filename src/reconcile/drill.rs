//! Failure drills: `netcompose link SERVICE[:N] NETWORK down|up` takes one attachment down and
//! up again, and records it nowhere: `observe` sees the link administratively down, so `plan`
//! shows it as drift and `up` repairs it (as it would after anyone's `ip link set down`).
//!
//! Which end: a veth's host end, on the bridge. Taking it down cuts the replica off the
//! network (its interface loses carrier) while the replica keeps its address and its routes,
//! as a pulled cable would. A macvlan has no peer, so its own end goes down inside the
//! replica; the kernel then drops the routes through it, which `up` makes again.

use super::session::Session;
use super::ReconcileError;
use crate::model::resource::{LinkType, ReplicaId, ResourceId, Spec};
use crate::project_name::ProjectName;
use crate::state::Store;

/// Which end a drill changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrillEnd {
    /// The host end of a veth, by name.
    HostVeth(String),
    /// A macvlan, by namespace and name.
    Macvlan { namespace: String, ifname: String },
}

/// Take the attachment of replica `replica` to `network` down (`up`: false) or up, as the
/// project's state records it. Nothing else changes.
pub fn set_link(
    store: &dyn Store,
    project: &ProjectName,
    replica: &ReplicaId,
    network: &str,
    up: bool,
) -> Result<DrillEnd, ReconcileError> {
    let resources = store
        .load(project)?
        .map(|s| s.resources)
        .unwrap_or_default();
    let address = ResourceId::Link(replica.clone(), network.to_string());
    let link = resources
        .iter()
        .find_map(|r| match &r.spec {
            Spec::Link(l) if r.address == address => Some(l),
            _ => None,
        })
        .ok_or_else(|| ReconcileError::NoSuchLink {
            address: address.to_string(),
            known: resources
                .iter()
                .filter(|r| matches!(r.spec, Spec::Link(_)))
                .map(|r| r.address.to_string())
                .collect(),
        })?;
    let end = match link.link_type {
        LinkType::Veth => DrillEnd::HostVeth(link.host_ifname.clone().unwrap_or_default()),
        LinkType::Macvlan => DrillEnd::Macvlan {
            namespace: link.namespace.clone(),
            ifname: link.ifname.clone(),
        },
    };
    Session::open(project)?.set_link(&end, up)?;
    Ok(end)
}
