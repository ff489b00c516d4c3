//! `x-qos` that cannot be built: ingress shaping on a macvlan attachment (it has no host-side
//! peer to shape; netcompose refuses it rather than redirecting through an ifb, which would
//! add a device and a filter per attachment for one direction), x-qos on a service without
//! interfaces of its own, and `delay`/`jitter` where the kernel lacks netem.

use crate::diag::{ConfigError, Diagnostics};
use crate::spec::{Project, Qos};

/// What the running kernel offers `x-qos`, found by the caller (validate never reads the
/// machine): `observe::host::kernel_facts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelFacts {
    pub netem: Presence,
}

/// Whether a kernel module is there, and what says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Presence {
    /// Not looked for (tests, a caller without the facts): the apply finds out.
    #[default]
    Unknown,
    Present,
    /// Looked for and not found; the text says where.
    Missing(String),
}

/// The module `delay` and `jitter` need.
pub const NETEM_MODULE: &str = "sch_netem";

pub(super) fn check(project: &Project, diags: &mut Diagnostics) {
    for svc in project.services.values() {
        if svc.network_mode.is_some() && svc.networks.is_empty() {
            if let Some(q) = &svc.qos {
                diags.push(ConfigError::Invalid {
                    message: format!(
                        "service {} has x-qos but no interfaces of its own (network_mode)",
                        svc.key.value
                    ),
                    hint: "shape the service whose namespace it shares, or give it networks".into(),
                    at: q.span,
                });
            }
        }
        for (key, att) in &svc.networks {
            let Some(q) = att.effective_qos(svc) else {
                continue;
            };
            let macvlan = project
                .networks
                .get(key)
                .is_some_and(|n| n.driver_name() == "macvlan");
            if let Some(ingress) = q.ingress.as_ref().filter(|_| macvlan) {
                diags.push(ConfigError::Invalid {
                    message: format!(
                        "x-qos.ingress on {}'s attachment to the macvlan network {key}: a \
                         macvlan has no host-side peer to shape",
                        svc.key.value
                    ),
                    hint: "shape the sending service's egress instead, or attach through a bridge network".into(),
                    at: ingress.span,
                });
            }
        }
    }
}

/// `delay` and `jitter` where the kernel lacks netem, once per x-qos that asks. `facts` are
/// read only when some x-qos asks.
pub fn check_kernel(
    project: &Project,
    facts: impl FnOnce() -> KernelFacts,
    diags: &mut Diagnostics,
) {
    let asking: Vec<&Qos> = project
        .services
        .values()
        .flat_map(|svc| {
            svc.qos
                .iter()
                .chain(svc.networks.values().filter_map(|a| a.qos.as_ref()))
        })
        .filter(|q| netem_key(q).is_some())
        .collect();
    if asking.is_empty() {
        return;
    }
    let Presence::Missing(evidence) = facts().netem else {
        return;
    };
    for q in asking {
        if let Some(span) = netem_key(q) {
            diags.push(ConfigError::MissingModule {
                what: "x-qos delay/jitter".into(),
                module: NETEM_MODULE.into(),
                evidence: evidence.clone(),
                hint: format!(
                    "run on a kernel with CONFIG_NET_SCH_NETEM (or `modprobe {NETEM_MODULE}`), or remove delay and jitter; rate, ceil, burst and loss work without it"
                ),
                at: span,
            });
        }
    }
}

fn netem_key(q: &Qos) -> Option<crate::source::Span> {
    q.delay
        .as_ref()
        .map(|d| d.span)
        .or(q.jitter.as_ref().map(|j| j.span))
}
