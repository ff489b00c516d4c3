//! A table changed between two typed specs, shown as [`super::body`] shows any change from
//! the JSON of its sides, but with its chains, maps and sets compared and shown as they are
//! typed: the host table of a big project is megabytes of JSON (a chain and a map per VIP),
//! and writing both sides out as JSON objects to find the one map that changed, then reading
//! chains and maps back from them, was most of the time of a plan against a saved baseline.

use super::{collections, maps, typed_chains, Style};
use crate::model::resource::Firewall;
use crate::model::Spec;
use serde_json::{Map, Value};

/// The attributes that change from `old` to `new`, then the count of those that do not.
pub(super) fn update(out: &mut String, old: &Firewall, new: &Firewall, st: &Style) {
    let (before, after) = (light(old), light(new));
    let mut unchanged = 0;
    for (key, value) in after.iter().filter(|(k, _)| *k != "kind") {
        if key == "chains" {
            // Chains, maps and sets follow each other in that order, the last two only when
            // the table has some (as its JSON has them).
            match old.chains == new.chains {
                true => unchanged += 1,
                false => typed_chains(out, Some(&old.chains), &new.chains, st),
            }
            if !new.maps.is_empty() {
                match old.maps == new.maps {
                    true => unchanged += 1,
                    false => maps::typed_maps(out, &old.maps, &new.maps, st),
                }
            }
            if !new.sets.is_empty() {
                match old.sets == new.sets {
                    true => unchanged += 1,
                    false => maps::typed_sets(out, &old.sets, &new.sets, st),
                }
            }
            continue;
        }
        let was = before.get(key);
        if was == Some(value) {
            unchanged += 1;
        } else {
            collections::attribute(out, key, was, Some(value), st);
        }
    }
    // What the old table has and the new one has not, in the order of the old one's JSON.
    for (key, value) in before.iter() {
        if key == "chains" {
            gone(out, "maps", &old.maps, &new.maps, st);
            gone(out, "sets", &old.sets, &new.sets, st);
        } else if !after.contains_key(key) {
            collections::attribute(out, key, Some(value), None, st);
        }
    }
    if let Some(line) = collections::hidden(unchanged, "attribute", st) {
        out.push_str("      ");
        out.push_str(&line);
        out.push('\n');
    }
}

/// Maps or sets that the old table has and the new one has none of: shown as any attribute
/// gone is.
fn gone<T: serde::Serialize>(out: &mut String, key: &str, old: &[T], new: &[T], st: &Style) {
    if old.is_empty() || !new.is_empty() {
        return;
    }
    if let Ok(value) = serde_json::to_value(old) {
        collections::attribute(out, key, Some(&value), None, st);
    }
}

/// The table's JSON without its chains' rules, maps and sets: the attributes shown as any
/// other change's are. Its chains are there, empty, to keep their place.
fn light(table: &Firewall) -> Map<String, Value> {
    let Firewall {
        namespace,
        table,
        sysctls,
        vip_networks,
        vip_digest,
        vip_refused,
        chains: _,
        maps: _,
        sets: _,
        foreign_rules,
    } = table;
    let light = Firewall {
        namespace: namespace.clone(),
        table: table.clone(),
        sysctls: sysctls.clone(),
        vip_networks: vip_networks.clone(),
        vip_digest: vip_digest.clone(),
        vip_refused: vip_refused.clone(),
        chains: Default::default(),
        maps: Default::default(),
        sets: Default::default(),
        foreign_rules: foreign_rules.clone(),
    };
    match serde_json::to_value(Spec::Firewall(Box::new(light))) {
        Ok(Value::Object(map)) => map,
        Ok(_) | Err(_) => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{body, Style};
    use crate::firewall::rule::{rule, Chain, Map, Set};
    use crate::model::resource::Firewall;
    use crate::model::{ResourceId, Spec};
    use crate::plan::{Action, Attributes, Change};

    fn table(chains: Vec<Chain>, maps: &[(&str, &[&str])], sets: &[(&str, &[&str])]) -> Firewall {
        Firewall {
            namespace: None,
            table: "t".into(),
            sysctls: Default::default(),
            vip_networks: Vec::new(),
            vip_digest: String::new(),
            vip_refused: Default::default(),
            chains: chains.into(),
            maps: maps
                .iter()
                .map(|(name, backends)| Map {
                    name: name.to_string(),
                    backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
                })
                .collect::<Vec<_>>()
                .into(),
            sets: sets
                .iter()
                .map(|(name, elements)| Set {
                    name: name.to_string(),
                    elements: elements.iter().map(|e| e.parse().unwrap()).collect(),
                })
                .collect::<Vec<_>>()
                .into(),
            foreign_rules: Vec::new(),
        }
    }

    /// The change shown from typed sides and from their JSON.
    fn both(old: &Firewall, new: &Firewall) -> (String, String) {
        let spec = |f: &Firewall| Spec::Firewall(Box::new(f.clone()));
        let change = |before: Attributes, after: Attributes| Change {
            address: ResourceId::HostFirewall,
            kind: "firewall".into(),
            actions: vec![Action::Update],
            before: Some(before),
            after: Some(after),
            reason: None,
        };
        let typed = change(
            Attributes::Spec(Box::new(spec(old))),
            Attributes::Spec(Box::new(spec(new))),
        );
        let json = |f: &Firewall| Attributes::Value(serde_json::to_value(spec(f)).unwrap());
        let read = change(json(old), json(new));
        let st = Style { color: false };
        (body(&typed, &st), body(&read, &st))
    }

    #[test]
    fn a_typed_update_shows_what_its_json_shows() {
        let chain = |name: &str, iif: &str| Chain::regular(name, vec![rule().iif(iif).accept()]);
        let base = table(
            vec![chain("a", "x"), chain("b", "y")],
            &[
                ("vip.web", &["10.0.0.2", "10.0.0.3"]),
                ("vip.db", &["10.0.0.9"]),
            ],
            &[("from.web", &["10.0.0.2/32"])],
        );
        let mut variants = Vec::new();
        let mut scaled = base.clone();
        scaled.maps.make_mut()[0]
            .backends
            .push("10.0.0.4".parse().unwrap());
        scaled.sets.make_mut()[0]
            .elements
            .push("10.0.1.0/24".parse().unwrap());
        variants.push(scaled);
        let mut rechained = base.clone();
        rechained.chains.make_mut()[1] = chain("b", "z");
        rechained.chains.make_mut().push(chain("c", "x"));
        variants.push(rechained);
        variants.push(table(vec![chain("a", "x")], &[], &[]));
        let mut other = table(Vec::new(), &[("vip.api", &["10.0.0.5"])], &[]);
        other.namespace = Some("ns".into());
        other
            .sysctls
            .insert("net.ipv4.ip_forward".into(), "1".into());
        other.vip_networks = vec!["front".into()];
        other.foreign_rules = vec!["tag".into()];
        variants.push(other);
        for new in &variants {
            for (old, new) in [(&base, new), (new, &base)] {
                let (typed, read) = both(old, new);
                assert_eq!(typed, read);
                assert!(typed.lines().count() > 1, "{typed}");
            }
        }
    }
}
