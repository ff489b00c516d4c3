//! A global service on a cluster runs one replica per matching node, so a node that joins
//! gets a replica no `up` allocated for. The agent that places it allocates its addresses and
//! MACs here and writes them with the placement, in one transaction guarded by the
//! allocations it read: every host then builds, names and publishes the same ones, and a
//! concurrent `up` (guarded by the same key) reads them and keeps them. Pure.

use crate::ipam::{self, Allocations, IpamError, SubnetPools, Taken};
use crate::model::endpoints;
use crate::placement::{self, Placement, ReplicaKey};
use crate::spec::Project;

/// `stored` with the addresses and MACs of the replicas `placement` runs that it has none
/// for, on the networks it has a subnet for (IPAM's rules: the lowest free address, sticky
/// ones untouched); None when no replica is new. Nothing else of `stored` changes: its
/// subnets, VNIs and host ports are `up`'s, which knows the hosts' routes and other projects.
pub fn extended(
    project: &Project,
    stored: &Allocations,
    placement: &Placement,
) -> Result<Option<Allocations>, Vec<IpamError>> {
    // A replica the store still holds addresses for (one of a node that died) is numbered
    // too, so that IPAM keeps its addresses out of the new replicas' way.
    let mut numbered = placement.assignment.clone();
    for owner in stored.networks.values().flat_map(|n| n.addresses.keys()) {
        if let Ok(key) = owner.parse::<ReplicaKey>() {
            numbered.entry(key).or_default();
        }
    }
    let mut project = project.clone();
    placement::number_global(&mut project, &numbered);
    let replicas = endpoints::replicas(&project);
    let requests = endpoints::network_requests(&project, &replicas);
    let new = |owner: &String| {
        owner
            .parse::<ReplicaKey>()
            .is_ok_and(|k| placement.assignment.contains_key(&k))
    };
    let wanted = requests.iter().any(|r| {
        let held = stored.networks.get(&r.key);
        r.owners
            .iter()
            .any(|h| new(&h.owner) && held.is_some_and(|n| !n.addresses.contains_key(&h.owner)))
    });
    if !wanted {
        return Ok(None);
    }
    let built = ipam::allocate(
        &requests,
        stored,
        &Taken::default(),
        &SubnetPools::default(),
    )?;
    let mut out = stored.clone();
    for (net, held) in out.networks.iter_mut() {
        let Some(b) = built.networks.get(net) else {
            continue;
        };
        for (owner, addrs) in &b.addresses {
            if !new(owner) || held.addresses.contains_key(owner) {
                continue;
            }
            held.addresses.insert(owner.clone(), addrs.clone());
            if let Some(mac) = b.macs.get(owner) {
                held.macs.insert(owner.clone(), mac.clone());
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MON: &str = "name: g\nservices:\n  mon:\n    deploy: {mode: global}\n    networks: [ov]\nnetworks:\n  ov:\n    driver: overlay\n    ipam: {config: [{subnet: 10.80.0.0/24}]}\n";

    fn project() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, MON).unwrap();
        let opts = crate::load::LoadOptions {
            files: vec![file],
            environment: Some(Default::default()),
            ..Default::default()
        };
        crate::pipeline::checked_project(&opts).unwrap().project
    }

    fn placed(pairs: &[(u32, &str)]) -> Placement {
        Placement {
            assignment: pairs
                .iter()
                .map(|(i, n)| (ReplicaKey::new("mon", *i), n.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_replica_on_a_node_that_joined_gets_a_free_address_and_the_rest_stays() {
        let project = project();
        let mut two = project.clone();
        let first = placed(&[(1, "a"), (2, "b")]);
        placement::number_global(&mut two, &first.assignment);
        let requests = endpoints::network_requests(&two, &endpoints::replicas(&two));
        let mut stored = ipam::allocate(
            &requests,
            &Allocations::default(),
            &Taken::default(),
            &SubnetPools::default(),
        )
        .unwrap();
        stored.ports.insert("x/80/tcp".into(), 32768);
        assert_eq!(extended(&project, &stored, &first).unwrap(), None);

        let joined = placed(&[(1, "a"), (2, "b"), (3, "c")]);
        let out = extended(&project, &stored, &joined).unwrap().unwrap();
        let ov = &out.networks["ov"];
        let held = &stored.networks["ov"];
        for owner in ["mon[1]", "mon[2]"] {
            assert_eq!(ov.addresses[owner], held.addresses[owner], "{owner} kept");
            assert_eq!(ov.macs[owner], held.macs[owner], "{owner} kept");
        }
        let taken: Vec<_> = held.addresses.values().flatten().collect();
        let third = &ov.addresses["mon[3]"];
        assert!(!taken.contains(&&third[0]), "{third:?} is new: {taken:?}");
        assert!(ov.macs.contains_key("mon[3]"));
        assert_eq!(out.ports, stored.ports, "host ports are up's");
        assert_eq!(ov.subnets, held.subnets);

        // b died and d joined: d's replica takes mon[2]'s index, and keeps its address
        // (nothing to allocate); with another node, mon[4] gets none of the stored ones.
        let moved = placed(&[(1, "a"), (2, "d"), (3, "c")]);
        assert_eq!(extended(&project, &out, &moved).unwrap(), None);
        let gone = placed(&[(1, "a"), (3, "c"), (4, "e")]);
        let more = extended(&project, &out, &gone).unwrap().unwrap();
        let fourth = &more.networks["ov"].addresses["mon[4]"][0];
        let held: Vec<_> = out.networks["ov"].addresses.values().flatten().collect();
        assert!(!held.contains(&fourth), "{fourth} was mon[2]'s: {held:?}");
    }
}
