//! A rule whose sets changed, shown once with the elements that come and go. A policy that
//! admits a service lists every replica's address in one set, so one more replica would
//! otherwise print the whole rule twice, before and after; so would a VIP's dispatch map.

use regex::Regex;
use std::sync::LazyLock;

/// Rules added and removed in one chain: pairs (removed, added) alike but for the elements of
/// their sets, then the added and the removed rules left over.
pub(super) fn pair<'r>(
    added: &[&'r str],
    removed: &[&'r str],
) -> (Vec<(&'r str, &'r str)>, Vec<&'r str>, Vec<&'r str>) {
    let mut left: Vec<&str> = removed.to_vec();
    let mut pairs = Vec::new();
    let mut unpaired = Vec::new();
    for &new in added {
        let twin = shape(new).and_then(|shape| {
            left.iter()
                .position(|old| self::shape(old).is_some_and(|o| o == shape))
        });
        match twin {
            Some(i) => pairs.push((left.remove(i), new)),
            None => unpaired.push(new),
        }
    }
    (pairs, unpaired, left)
}

/// The added rule with each changed set shown as its elements added and removed and a count
/// of the rest: `ip saddr { + 10.0.0.8/32, (6 unchanged) } accept`.
pub(super) fn changed(old: &str, new: &str) -> String {
    let (Some((outside, new_sets)), Some((_, old_sets))) = (split(new), split(old)) else {
        return new.to_string();
    };
    let mut out = String::new();
    for (i, text) in outside.iter().enumerate() {
        out.push_str(text);
        let (Some(now), Some(before)) = (new_sets.get(i), old_sets.get(i)) else {
            continue;
        };
        let mut items: Vec<String> = now
            .iter()
            .filter(|e| !before.contains(e))
            .map(|e| format!("+ {e}"))
            .collect();
        items.extend(
            before
                .iter()
                .filter(|e| !now.contains(e))
                .map(|e| format!("- {e}")),
        );
        let kept = now.iter().filter(|e| before.contains(e)).count();
        if items.is_empty() {
            items = now.iter().map(|e| e.to_string()).collect();
        } else if kept > 0 {
            items.push(format!("({kept} unchanged)"));
        }
        out.push_str(&format!("{{ {} }}", items.join(", ")));
    }
    out
}

/// What two rules must share to be shown as one changed rule: the text around their sets,
/// where a VIP's `numgen random mod N map { ... }` counts its map's elements (N is theirs).
fn shape(rule: &str) -> Option<Vec<String>> {
    static MOD: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"mod (\d+) map $").expect("a valid pattern"));
    let (outside, sets) = split(rule)?;
    Some(
        outside
            .iter()
            .enumerate()
            .map(|(i, text)| match (MOD.captures(text), sets.get(i)) {
                (Some(c), Some(set)) if c[1].parse() == Ok(set.len()) => {
                    MOD.replace(text, "mod N map ").into_owned()
                }
                _ => text.to_string(),
            })
            .collect(),
    )
}

/// A rule as the text around its sets (one more piece than sets) and the sets' elements;
/// None for a rule without sets or with braces that do not pair up.
fn split(rule: &str) -> Option<(Vec<&str>, Vec<Vec<&str>>)> {
    let mut outside = Vec::new();
    let mut sets = Vec::new();
    let mut rest = rule;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}')?;
        if rest[open + 1..close].contains('{') {
            return None;
        }
        outside.push(&rest[..open]);
        sets.push(
            rest[open + 1..close]
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect(),
        );
        rest = &rest[close + 1..];
    }
    if rest.contains('}') || sets.is_empty() {
        return None;
    }
    outside.push(rest);
    Some((outside, sets))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "ip saddr { 10.0.0.3/32, 10.0.0.4/32 } tcp dport 5432 accept";
    const NEW: &str = "ip saddr { 10.0.0.3/32, 10.0.0.4/32, 10.0.0.8/32 } tcp dport 5432 accept";

    #[test]
    fn a_rule_whose_set_grew_is_one_line_with_the_new_element() {
        let (pairs, added, removed) = pair(&[NEW, "drop"], &[OLD, "accept"]);
        assert_eq!(pairs, [(OLD, NEW)]);
        assert_eq!((added, removed), (vec!["drop"], vec!["accept"]));
        assert_eq!(
            changed(OLD, NEW),
            "ip saddr { + 10.0.0.8/32, (2 unchanged) } tcp dport 5432 accept"
        );
    }

    #[test]
    fn rules_that_differ_outside_their_sets_are_not_paired() {
        let other = "ip saddr { 10.0.0.3/32 } tcp dport 80 accept";
        let (pairs, added, removed) = pair(&[other], &[OLD]);
        assert!(pairs.is_empty());
        assert_eq!((added, removed), (vec![other], vec![OLD]));
        assert_eq!(split("a { b } }"), None);
        assert_eq!(split("no sets"), None);
    }

    #[test]
    fn a_vip_map_with_one_more_replica_is_one_line() {
        let old = "dnat ip to numgen random mod 2 map { 0 : 10.0.0.3, 1 : 10.0.0.4 }";
        let new = "dnat ip to numgen random mod 3 map { 0 : 10.0.0.3, 1 : 10.0.0.4, 2 : 10.0.0.8 }";
        let (pairs, _, _) = pair(&[new], &[old]);
        assert_eq!(pairs, [(old, new)]);
        assert_eq!(
            changed(old, new),
            "dnat ip to numgen random mod 3 map { + 2 : 10.0.0.8, (2 unchanged) }"
        );
        // A modulus that is not its map's size is text like any other.
        let odd = "dnat ip to numgen random mod 5 map { 0 : 10.0.0.3, 1 : 10.0.0.4 }";
        assert!(pair(&[odd], &[old]).0.is_empty());
    }

    #[test]
    fn every_set_of_a_rule_is_diffed_and_an_emptied_one_shows_what_went() {
        assert_eq!(
            changed("x { a, b } y { c } z", "x { a } y { c } z"),
            "x { - b, (1 unchanged) } y { c } z"
        );
        assert_eq!(changed("x { a } y", "x {  } y"), "x { - a } y");
    }
}
