//! Property tests of the model and IPAM over generated projects: no address twice, every
//! address inside its subnet, statics honoured, reserved addresses never handed out, and an
//! edit against a baseline (add or remove a service or a replica) renumbers nobody else.

use netcompose::load::LoadOptions;
use netcompose::model::{self, Context, Desired, Spec};
use netcompose::pipeline::checked_project;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

#[derive(Debug, Clone)]
struct Svc {
    /// Names stay stable across edits: `s<id>`.
    id: usize,
    replicas: u32,
    networks: Vec<usize>,
    /// A static host number on the first network (only with one replica).
    static_host: Option<u8>,
    dnsrr: bool,
}

#[derive(Debug, Clone)]
struct Proj {
    /// Per network: an explicit /24 (10.N.0.0/24) or an automatic subnet.
    explicit: Vec<bool>,
    services: Vec<Svc>,
}

#[derive(Debug, Clone, Copy)]
enum Edit {
    AddService,
    RemoveService,
    ChangeReplicas,
}

fn svc(nets: usize) -> impl Strategy<Value = Svc> {
    (
        1u32..4,
        proptest::collection::btree_set(0..nets, 1..=nets.min(3)),
        proptest::option::of(10u8..250),
        any::<bool>(),
    )
        .prop_map(|(replicas, networks, static_host, dnsrr)| Svc {
            id: 0,
            replicas,
            networks: networks.into_iter().collect(),
            static_host: static_host.filter(|_| replicas == 1),
            dnsrr,
        })
}

fn proj() -> impl Strategy<Value = Proj> {
    (1usize..5)
        .prop_flat_map(|nets| {
            (
                proptest::collection::vec(any::<bool>(), nets),
                proptest::collection::vec(svc(nets), 1..8),
            )
        })
        .prop_map(|(explicit, mut services)| {
            for (i, s) in services.iter_mut().enumerate() {
                s.id = i;
            }
            Proj { explicit, services }
        })
}

fn yaml(p: &Proj) -> String {
    let mut out = String::from("services:\n");
    let mut used_statics: HashSet<(usize, u8)> = HashSet::new();
    for s in &p.services {
        let i = s.id;
        out.push_str(&format!(
            "  s{i}:\n    deploy: {{replicas: {}, endpoint_mode: {}}}\n    networks:\n",
            s.replicas,
            if s.dnsrr { "dnsrr" } else { "vip" }
        ));
        for (j, n) in s.networks.iter().enumerate() {
            let fixed = s
                .static_host
                .filter(|h| j == 0 && p.explicit[*n] && used_statics.insert((*n, *h)));
            match fixed {
                Some(h) => out.push_str(&format!("      n{n}: {{ipv4_address: 10.{n}.0.{h}}}\n")),
                None => out.push_str(&format!("      n{n}: {{}}\n")),
            }
        }
    }
    out.push_str("networks:\n");
    for (n, explicit) in p.explicit.iter().enumerate() {
        if *explicit {
            out.push_str(&format!(
                "  n{n}:\n    ipam: {{config: [{{subnet: 10.{n}.0.0/24}}]}}\n"
            ));
        } else {
            out.push_str(&format!("  n{n}: {{}}\n"));
        }
    }
    out
}

fn desired(text: &str, previous: &netcompose::ipam::Allocations) -> Desired {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, text).unwrap();
    let opts = LoadOptions {
        files: vec![file],
        project_name: Some("prop".into()),
        environment: Some(HashMap::new()),
        ..Default::default()
    };
    let checked = checked_project(&opts)
        .unwrap_or_else(|_| panic!("generated project must validate:\n{text}"));
    let ctx = Context {
        previous: previous.clone(),
        ..Default::default()
    };
    model::build(&checked.project, &ctx).unwrap()
}

/// Endpoint owner → (addresses, mac) for every link.
fn endpoints(d: &Desired) -> BTreeMap<String, (Vec<String>, String)> {
    d.resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Link(l) => Some((
                r.address.to_string(),
                (
                    l.addresses.iter().map(|a| a.to_string()).collect(),
                    l.mac.clone(),
                ),
            )),
            _ => None,
        })
        .collect()
}

fn check_invariants(p: &Proj, d: &Desired) {
    for (net, a) in &d.allocations.networks {
        let mut seen: HashSet<IpAddr> = HashSet::new();
        for ip in a.addresses.values().flatten() {
            assert!(seen.insert(*ip), "{ip} handed out twice on {net}");
            let subnet = a
                .subnets
                .iter()
                .find(|s| s.contains(*ip))
                .unwrap_or_else(|| panic!("{ip} outside {net}'s subnets"));
            assert!(!a.gateways.contains(ip), "gateway {ip} handed out");
            assert_ne!(*ip, subnet.network(), "network address handed out");
            if let ipnetwork::IpNetwork::V4(v4) = subnet {
                assert_ne!(*ip, IpAddr::V4(v4.broadcast()), "broadcast handed out");
            }
        }
        let macs: HashSet<&String> = a.macs.values().collect();
        assert_eq!(macs.len(), a.macs.len(), "a MAC twice on {net}");
    }
    for (pos, s) in p.services.iter().enumerate() {
        let i = s.id;
        let Some(h) = s.static_host else { continue };
        let n = s.networks[0];
        if !p.explicit[n] {
            continue;
        }
        let got = &d.allocations.networks[&format!("n{n}")].addresses[&format!("s{i}[1]")];
        let want: IpAddr = format!("10.{n}.0.{h}").parse().unwrap();
        // Only the first service asking for a host number gets it; the generator skips repeats.
        if got[0] != want {
            let earlier = p.services[..pos]
                .iter()
                .any(|o| o.static_host == Some(h) && o.networks.first() == Some(&n));
            assert!(earlier, "static {want} not honoured: {got:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn allocation_invariants(p in proj()) {
        let d = desired(&yaml(&p), &Default::default());
        check_invariants(&p, &d);
        prop_assert_eq!(&d, &desired(&yaml(&p), &Default::default()), "not deterministic");
    }

    #[test]
    fn edits_renumber_nobody_else(p in proj(), mut extra in svc(1), which in any::<prop::sample::Index>(), edit in prop_oneof![Just(Edit::AddService), Just(Edit::RemoveService), Just(Edit::ChangeReplicas)]) {
        let before = desired(&yaml(&p), &Default::default());
        let mut edited = p.clone();
        let i = which.index(edited.services.len());
        match edit {
            Edit::AddService => {
                extra.id = edited.services.len();
                extra.static_host = None;
                edited.services.push(extra);
            }
            Edit::RemoveService if edited.services.len() > 1 => {
                edited.services.remove(i);
            }
            _ if edited.services[i].static_host.is_none() => edited.services[i].replicas = edited.services[i].replicas % 3 + 1,
            _ => {}
        }
        let after = desired(&yaml(&edited), &before.allocations);
        check_invariants(&edited, &after);
        let (old, new) = (endpoints(&before), endpoints(&after));
        for (addr, v) in &old {
            if let Some(now) = new.get(addr) {
                prop_assert_eq!(v, now, "{} was renumbered by {:?}", addr, edit);
            }
        }
    }
}
