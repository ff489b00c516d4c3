//! `x-qos` as the tc setup of one endpoint's link: the shaping of each direction and the
//! netem delay, attributes of the link resource (changed in place, observed back from the
//! qdiscs), and the loss rule of the replica's table. The attachment's keys override the
//! service's (`spec::Attachment::effective_qos`).

use crate::firewall::rule::{rule, Chain, Rule};
use crate::spec::units::{format_rate, parse_rate};
use crate::spec::{Attachment, Service, Shape};
use serde::{Deserialize, Serialize};

/// What tc holds for one endpoint's link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkQos {
    /// On the replica's interface: what leaves the replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Shaping>,
    /// On the host-side veth peer: what leaves the peer enters the replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Shaping>,
    /// netem on the replica's interface (under the egress class when it is shaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
}

impl LinkQos {
    /// Nothing for tc to hold on the replica's interface or on its peer.
    pub fn is_empty(&self) -> bool {
        self.egress.is_none() && self.ingress.is_none() && self.delay.is_none()
    }
}

/// An htb class: `rate` guaranteed, `ceil` at most, in bursts of `burst` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shaping {
    pub rate: Rate,
    pub ceil: Rate,
    pub burst: u32,
}

/// A netem delay, with its jitter, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    pub delay_us: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter_us: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Bytes per second, as the kernel keeps a rate; written as tc writes it (`10mbit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate(pub u64);

impl Rate {
    pub fn from_bits(bits: u64) -> Rate {
        Rate(bits / 8)
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rate(self.0.saturating_mul(8)))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let text = String::deserialize(d)?;
        parse_rate(&text)
            .map(Rate::from_bits)
            .map_err(serde::de::Error::custom)
    }
}

/// The burst when none is given: what the ceiling sends in 10 ms, and at least four
/// full-size Ethernet frames, so that a slow class can still send whole packets.
pub fn default_burst(ceil: Rate) -> u32 {
    let tenth = ceil.0 / 100;
    u32::try_from(tenth.max(4 * 1514)).unwrap_or(u32::MAX)
}

fn shaping(shape: &Shape) -> Shaping {
    let rate = Rate::from_bits(shape.rate.value);
    let ceil = shape
        .ceil
        .as_ref()
        .map_or(rate, |c| Rate::from_bits(c.value));
    let burst = shape
        .burst
        .as_ref()
        .and_then(|b| u32::try_from(b.value).ok())
        .unwrap_or_else(|| default_burst(ceil));
    Shaping { rate, ceil, burst }
}

/// The link's tc setup for an attachment of `service`; None without shaping or delay.
pub fn link_qos(service: &Service, attachment: &Attachment) -> Option<LinkQos> {
    let q = attachment.effective_qos(service)?;
    let out = LinkQos {
        egress: q.egress.as_ref().map(shaping),
        ingress: q.ingress.as_ref().map(shaping),
        delay: q.delay.as_ref().map(|d| Delay {
            delay_us: u64::try_from(d.value.as_micros()).unwrap_or(u64::MAX),
            jitter_us: q.jitter.as_ref().map_or(0, |j| {
                u64::try_from(j.value.as_micros()).unwrap_or(u64::MAX)
            }),
        }),
    };
    (!out.is_empty()).then_some(out)
}

/// The loss of each interface of a replica (`(ifname, percent)`) as the `faults` chain of
/// its table: a drop of that share of what leaves through it, after every other hook.
pub fn faults_chain(losses: &[(String, u8)]) -> Option<Chain> {
    let rules: Vec<Rule> = losses
        .iter()
        .filter(|(_, p)| *p > 0)
        .map(|(ifname, percent)| rule().oif(ifname).chance(*percent).drop())
        .collect();
    (!rules.is_empty()).then(|| Chain::base("faults", "filter", "postrouting", 0, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_serialize_as_tc_writes_them() {
        let s = Shaping {
            rate: Rate::from_bits(10_000_000),
            ceil: Rate::from_bits(20_000_000),
            burst: 65536,
        };
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["rate"], "10mbit");
        assert_eq!(json["ceil"], "20mbit");
        let back: Shaping = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn default_burst_covers_ten_milliseconds_and_four_frames() {
        assert_eq!(default_burst(Rate::from_bits(10_000_000)), 12_500);
        assert_eq!(default_burst(Rate::from_bits(1_000_000)), 6056);
    }

    #[test]
    fn loss_becomes_a_numgen_drop_per_interface() {
        let chain = faults_chain(&[("eth0".into(), 20), ("eth1".into(), 0)]).unwrap();
        assert_eq!(chain.hook, "postrouting");
        let texts: Vec<String> = chain.rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(texts, ["oifname \"eth0\" numgen random mod 100 < 20 drop"]);
        assert!(faults_chain(&[("eth0".into(), 0)]).is_none());
    }
}
