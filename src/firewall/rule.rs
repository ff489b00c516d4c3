//! A small nftables rule builder: rules read as nft rules in plans (`Display`) and become nft
//! JSON for the kernel (`to_json`), from one description.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;

/// One match of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    Iif(String),
    NotIif(String),
    Oif(String),
    NotOif(String),
    Saddr(IpNetwork),
    NotSaddr(IpNetwork),
    Daddr(IpNetwork),
    /// `ct state` in the given states.
    CtState(Vec<String>),
    /// The connection was destination-NATed (a published port or a VIP).
    CtDnat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Drop,
    Masquerade,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

/// A base chain of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    /// `filter` or `nat`.
    #[serde(rename = "type")]
    pub chain_type: String,
    pub hook: String,
    pub priority: i32,
    pub rules: Vec<Rule>,
}

/// Start a rule: `rule().iif("br0").not_oif("br0").drop()`.
pub fn rule() -> RuleBuilder {
    RuleBuilder(Vec::new())
}

pub struct RuleBuilder(Vec<Match>);

impl RuleBuilder {
    pub fn iif(mut self, n: &str) -> Self {
        self.0.push(Match::Iif(n.into()));
        self
    }
    pub fn not_iif(mut self, n: &str) -> Self {
        self.0.push(Match::NotIif(n.into()));
        self
    }
    pub fn oif(mut self, n: &str) -> Self {
        self.0.push(Match::Oif(n.into()));
        self
    }
    pub fn not_oif(mut self, n: &str) -> Self {
        self.0.push(Match::NotOif(n.into()));
        self
    }
    pub fn saddr(mut self, n: IpNetwork) -> Self {
        self.0.push(Match::Saddr(n));
        self
    }
    pub fn not_saddr(mut self, n: IpNetwork) -> Self {
        self.0.push(Match::NotSaddr(n));
        self
    }
    pub fn daddr(mut self, n: IpNetwork) -> Self {
        self.0.push(Match::Daddr(n));
        self
    }
    pub fn established(mut self) -> Self {
        self.0
            .push(Match::CtState(vec!["established".into(), "related".into()]));
        self
    }
    pub fn dnat_ed(mut self) -> Self {
        self.0.push(Match::CtDnat);
        self
    }
    fn end(self, verdict: Verdict) -> Rule {
        Rule {
            matches: self.0,
            verdict,
        }
    }
    pub fn accept(self) -> Rule {
        self.end(Verdict::Accept)
    }
    pub fn drop(self) -> Rule {
        self.end(Verdict::Drop)
    }
    pub fn masquerade(self) -> Rule {
        self.end(Verdict::Masquerade)
    }
}

fn family(n: &IpNetwork) -> &'static str {
    if n.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Iif(n) => write!(f, "iifname \"{n}\""),
            Match::NotIif(n) => write!(f, "iifname != \"{n}\""),
            Match::Oif(n) => write!(f, "oifname \"{n}\""),
            Match::NotOif(n) => write!(f, "oifname != \"{n}\""),
            Match::Saddr(n) => write!(f, "{} saddr {n}", family(n)),
            Match::NotSaddr(n) => write!(f, "{} saddr != {n}", family(n)),
            Match::Daddr(n) => write!(f, "{} daddr {n}", family(n)),
            Match::CtState(s) => write!(f, "ct state {}", s.join(",")),
            Match::CtDnat => write!(f, "ct status dnat"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        f.write_str(match self.verdict {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
            Verdict::Masquerade => "masquerade",
        })
    }
}

fn prefix(n: &IpNetwork) -> Value {
    json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix()}})
}

fn cmp(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

impl Match {
    pub fn to_json(&self) -> Value {
        let meta = |k: &str| json!({"meta": {"key": k}});
        let addr = |n: &IpNetwork, field: &str| json!({"payload": {"protocol": family(n), "field": field}});
        match self {
            Match::Iif(n) => cmp("==", meta("iifname"), json!(n)),
            Match::NotIif(n) => cmp("!=", meta("iifname"), json!(n)),
            Match::Oif(n) => cmp("==", meta("oifname"), json!(n)),
            Match::NotOif(n) => cmp("!=", meta("oifname"), json!(n)),
            Match::Saddr(n) => cmp("==", addr(n, "saddr"), prefix(n)),
            Match::NotSaddr(n) => cmp("!=", addr(n, "saddr"), prefix(n)),
            Match::Daddr(n) => cmp("==", addr(n, "daddr"), prefix(n)),
            Match::CtState(s) => cmp("in", json!({"ct": {"key": "state"}}), json!({"set": s})),
            Match::CtDnat => cmp("in", json!({"ct": {"key": "status"}}), json!("dnat")),
        }
    }
}

impl Rule {
    /// The rule's expression list in nft's JSON schema (libnftables-json(5)).
    pub fn to_json(&self) -> Vec<Value> {
        let mut expr: Vec<Value> = self.matches.iter().map(Match::to_json).collect();
        expr.push(match self.verdict {
            Verdict::Accept => json!({"accept": null}),
            Verdict::Drop => json!({"drop": null}),
            Verdict::Masquerade => json!({"masquerade": null}),
        });
        expr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_nft() {
        let r = rule().iif("br0").not_oif("br0").drop();
        assert_eq!(r.to_string(), "iifname \"br0\" oifname != \"br0\" drop");
        let m = rule()
            .saddr("10.0.0.0/24".parse().unwrap())
            .not_oif("br0")
            .masquerade();
        assert_eq!(
            m.to_string(),
            "ip saddr 10.0.0.0/24 oifname != \"br0\" masquerade"
        );
        assert_eq!(
            rule().oif("b").established().accept().to_string(),
            "oifname \"b\" ct state established,related accept"
        );
    }

    #[test]
    fn json_shape() {
        let r = rule().saddr("10.0.0.0/24".parse().unwrap()).accept();
        let j = serde_json::to_string(&r.to_json()).unwrap();
        assert_eq!(
            j,
            r#"[{"match":{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"==","right":{"prefix":{"addr":"10.0.0.0","len":24}}}},{"accept":null}]"#
        );
    }
}
