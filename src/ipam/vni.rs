//! VXLAN network identifiers of overlay networks: the one the file gives
//! (`com.docker.network.driver.overlay.vxlanid_list`), else the one the network had, else the
//! lowest free in Docker's range [4096, 2^24 - 1], skipping every VNI another project of the
//! store holds. Stored with the allocations, never derived, so that a VNI does not change
//! under a running overlay.

use super::{Allocations, IpamError};
use std::collections::{BTreeMap, BTreeSet};

/// The driver option that fixes a network's VNI (Docker's name).
pub const VXLANID_LIST: &str = "com.docker.network.driver.overlay.vxlanid_list";
pub const VNI_MIN: u32 = 4096;
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// The VNI of the agents' VXLAN probe device (`netcompose nodes`): below Docker's range, where
/// overlays get theirs, and refused in `vxlanid_list`, since the probe's device and an
/// overlay's on one VXLAN port cannot share it.
pub const PROBE_VNI: u32 = 4095;

/// What a network asks of the VNI allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VniRequest {
    /// Not an overlay: no VNI.
    None,
    /// An overlay without a fixed VNI.
    Any,
    /// The VNI the file gives.
    Given(u32),
}

/// The VNIs of `vxlanid_list` (Docker takes one per subnet, comma-separated), each in 1 to
/// 2^24 - 1; Err with the offending item.
pub fn parse_list(list: &str) -> Result<Vec<u32>, String> {
    list.split(',')
        .map(str::trim)
        .map(|item| match item.parse::<u32>() {
            Ok(v) if (1..=VNI_MAX).contains(&v) => Ok(v),
            _ => Err(item.to_string()),
        })
        .collect()
}

/// One VNI per overlay network (by key): given ones first, then sticky ones, then the lowest
/// free. `taken` holds other projects' VNIs with who holds them.
pub fn allocate(
    requests: &[(String, VniRequest)],
    previous: &Allocations,
    taken: &BTreeMap<u32, String>,
) -> Result<BTreeMap<String, u32>, Vec<IpamError>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    let mut used: BTreeSet<u32> = taken.keys().copied().collect();
    for (key, req) in requests {
        let VniRequest::Given(vni) = req else {
            continue;
        };
        match taken.get(vni) {
            Some(what) => errors.push(IpamError::VniTaken {
                network: key.clone(),
                vni: *vni,
                what: what.clone(),
            }),
            None => {
                used.insert(*vni);
                out.insert(key.clone(), *vni);
            }
        }
    }
    let wanting: Vec<&String> = requests
        .iter()
        .filter(|(_, r)| *r == VniRequest::Any)
        .map(|(k, _)| k)
        .collect();
    let mut fresh = Vec::new();
    for key in wanting {
        let sticky = previous
            .networks
            .get(key)
            .and_then(|n| n.vni)
            .filter(|v| !used.contains(v));
        match sticky {
            Some(v) => {
                used.insert(v);
                out.insert(key.clone(), v);
            }
            None => fresh.push(key),
        }
    }
    for key in fresh {
        let Some(v) = (VNI_MIN..=VNI_MAX).find(|v| !used.contains(v)) else {
            errors.push(IpamError::VnisExhausted {
                network: key.clone(),
            });
            continue;
        };
        used.insert(v);
        out.insert(key.clone(), v);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::NetworkAllocation;

    fn reqs(list: &[(&str, VniRequest)]) -> Vec<(String, VniRequest)> {
        list.iter().map(|(k, r)| (k.to_string(), *r)).collect()
    }

    #[test]
    fn lowest_free_skipping_other_projects_and_given_ones() {
        let taken = BTreeMap::from([(4096, "network `n` of project `other`".to_string())]);
        let got = allocate(
            &reqs(&[
                ("a", VniRequest::Any),
                ("b", VniRequest::Given(4097)),
                ("c", VniRequest::Any),
                ("d", VniRequest::None),
            ]),
            &Allocations::default(),
            &taken,
        )
        .unwrap();
        assert_eq!(
            got,
            BTreeMap::from([("a".into(), 4098), ("b".into(), 4097), ("c".into(), 4099)])
        );
    }

    #[test]
    fn sticky_unless_someone_else_holds_it_now() {
        let mut previous = Allocations::default();
        for (key, vni) in [("a", 5000), ("b", 6000)] {
            previous.networks.insert(
                key.into(),
                NetworkAllocation {
                    vni: Some(vni),
                    ..Default::default()
                },
            );
        }
        let taken = BTreeMap::from([(6000, "network `x` of project `q`".to_string())]);
        let got = allocate(
            &reqs(&[("a", VniRequest::Any), ("b", VniRequest::Any)]),
            &previous,
            &taken,
        )
        .unwrap();
        assert_eq!(got["a"], 5000);
        assert_eq!(got["b"], VNI_MIN);
    }

    #[test]
    fn a_given_vni_another_project_holds_is_an_error() {
        let taken = BTreeMap::from([(4200, "network `n` of project `p`".to_string())]);
        let err = allocate(
            &reqs(&[("a", VniRequest::Given(4200))]),
            &Default::default(),
            &taken,
        )
        .unwrap_err();
        assert!(matches!(
            err.as_slice(),
            [IpamError::VniTaken { vni: 4200, .. }]
        ));
    }

    #[test]
    fn vxlanid_list_parsing() {
        assert_eq!(parse_list("4097"), Ok(vec![4097]));
        assert_eq!(parse_list("4097, 4098"), Ok(vec![4097, 4098]));
        assert_eq!(parse_list("0"), Err("0".into()));
        assert_eq!(parse_list("16777216"), Err("16777216".into()));
        assert_eq!(parse_list("x"), Err("x".into()));
    }
}
