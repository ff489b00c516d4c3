//! Replica tables spelled out one at a time, as a run writes them, checked against expanding
//! every table, on the quickstart example's model (here, not in model/, because it loads the
//! example through the pipeline).

use crate::firewall::rule::Map;
use crate::model::resource::{Resource, ResourceId, Spec};
use crate::model::shared::Shared;
use crate::model::tables::replica::{expand_all, vip_maps_changed, Expander};
use std::borrow::Cow;
use std::collections::HashMap;

fn is_replica_table(r: &Resource) -> bool {
    matches!(&r.spec, Spec::Firewall(f) if !f.vip_networks.is_empty())
}

#[test]
fn a_table_spelled_out_alone_is_what_expanding_every_table_gives() {
    let rs = crate::pipeline::quickstart_resources();
    let all = expand_all(&rs);
    let expander = Expander::new(&rs);
    for (r, full) in rs.iter().zip(&all) {
        match expander.expand(r) {
            Cow::Owned(x) => {
                assert!(is_replica_table(r), "{} copied", r.address);
                assert_eq!(&x, full);
                assert!(matches!(&x.spec, Spec::Firewall(f) if f.vip_networks.is_empty()));
            }
            Cow::Borrowed(x) => {
                assert!(!is_replica_table(r), "{} left as it is", r.address);
                assert_eq!(x, full);
            }
        }
    }
    assert!(rs.iter().any(is_replica_table));
}

#[test]
fn a_vip_with_one_more_backend_changes_the_maps_of_the_tables_that_dispatch_it() {
    let before = crate::pipeline::quickstart_resources();
    let mut after = before.clone();
    let vip = after
        .iter_mut()
        .find_map(|r| match &mut r.spec {
            Spec::Vip(v) => Some(v),
            _ => None,
        })
        .unwrap();
    vip.backends.push("172.31.255.254".parse().unwrap());
    // What comparing every table's expanded maps finds.
    let (old, new) = (expand_all(&before), expand_all(&after));
    let maps = |r: &Resource| match &r.spec {
        Spec::Firewall(f) if f.namespace.is_some() => Some((r.address.clone(), f.maps.clone())),
        _ => None,
    };
    let old: HashMap<ResourceId, Shared<Vec<Map>>> = old.iter().filter_map(maps).collect();
    let mut expected: Vec<&ResourceId> = new
        .iter()
        .filter_map(maps)
        .filter(|(a, m)| old.get(a).is_some_and(|o| o != m))
        .filter_map(|(a, _)| after.iter().map(|r| &r.address).find(|x| **x == a))
        .collect();
    let mut got = vip_maps_changed(&before, &after);
    expected.sort();
    got.sort();
    assert!(!got.is_empty());
    assert_eq!(got, expected);
    assert!(vip_maps_changed(&before, &before).is_empty());
}
