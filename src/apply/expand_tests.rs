//! Replica tables expanded where a run writes them, checked against expanding every table, on
//! the quickstart example's model (here, not in model/, because it loads the example through
//! the pipeline).

use crate::firewall::rule::Map;
use crate::model::resource::{Resource, ResourceId, Spec};
use crate::model::tables::replica::{expand_all, expand_where, vip_maps_changed};
use std::borrow::Cow;
use std::collections::HashMap;

fn is_replica_table(r: &Resource) -> bool {
    matches!(&r.spec, Spec::Firewall(f) if !f.vip_networks.is_empty())
}

#[test]
fn only_the_picked_tables_are_expanded_as_expand_all_does() {
    let rs = crate::pipeline::quickstart_resources();
    let picked = rs
        .iter()
        .find(|r| is_replica_table(r))
        .unwrap()
        .address
        .clone();
    let all = expand_all(&rs);
    let some = expand_where(&rs, |r| r.address == picked);
    for ((r, full), got) in rs.iter().zip(&all).zip(&some) {
        match got {
            Cow::Owned(x) => {
                assert_eq!(r.address, picked);
                assert_eq!(x, full);
            }
            Cow::Borrowed(x) => assert_eq!(*x, r),
        }
    }
    assert!(some.iter().any(|r| matches!(r, Cow::Owned(_))));
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
    let old: HashMap<ResourceId, Vec<Map>> = old.iter().filter_map(maps).collect();
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
