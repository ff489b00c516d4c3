//! `x-qos` on a service or on one of its attachments (design.md): `egress` and `ingress`
//! shaping (`rate`, `ceil`, `burst`, in tc's units: see [`crate::spec::units`]) and the
//! faults `loss` (`"20%"`), `delay` and `jitter` (Compose durations: `100ms`).

use super::{ext::unknown, parse_duration, Decoder};
use crate::diag::ConfigError;
use crate::load::node::Node;
use crate::spec::units::{parse_rate, parse_size, RATE_UNITS, SIZE_UNITS};
use crate::spec::{Qos, Shape, Spanned};

const KEYS: &[&str] = &["egress", "ingress", "loss", "delay", "jitter"];
const SHAPE_KEYS: &[&str] = &["rate", "ceil", "burst"];

pub(super) fn qos(d: &mut Decoder, node: &Node) -> Option<Qos> {
    if node.is_null() {
        return None;
    }
    if node.as_map().is_none() {
        d.wrong_type(
            "x-qos",
            "a mapping with egress, ingress, loss, delay and/or jitter",
            node,
        );
        return None;
    }
    let mut q = Qos {
        span: node.span,
        ..Default::default()
    };
    for (key, value) in d.entries(Some(node), "x-qos") {
        match key.value.as_str() {
            "egress" => q.egress = shape(d, value, "x-qos.egress"),
            "ingress" => q.ingress = shape(d, value, "x-qos.ingress"),
            "loss" => q.loss = loss(d, value),
            "delay" => q.delay = duration(d, value, "delay"),
            "jitter" => q.jitter = duration(d, value, "jitter"),
            other => unknown(d, other, &key, KEYS, "x-qos"),
        }
    }
    if let (Some(jitter), None) = (&q.jitter, &q.delay) {
        d.diags.push(ConfigError::Invalid {
            message: "`jitter` varies a `delay`, and this x-qos has none".into(),
            hint: "add `delay: 50ms` (jitter varies it by up to its own amount)".into(),
            at: jitter.span,
        });
    }
    Some(q)
}

fn shape(d: &mut Decoder, node: &Node, place: &str) -> Option<Shape> {
    if node.as_map().is_none() {
        d.wrong_type(place, "a mapping with rate, ceil and/or burst", node);
        return None;
    }
    let mut rate = None;
    let mut ceil = None;
    let mut burst = None;
    for (key, value) in d.entries(Some(node), place) {
        match key.value.as_str() {
            "rate" => rate = bandwidth(d, value, "rate"),
            "ceil" => ceil = bandwidth(d, value, "ceil"),
            "burst" => burst = size(d, value),
            other => unknown(d, other, &key, SHAPE_KEYS, place),
        }
    }
    let Some(rate) = rate else {
        if node.get("rate").is_none() {
            d.diags.push(ConfigError::Invalid {
                message: format!("`{place}` has no `rate`"),
                hint: "add `rate: 10mbit` (ceil and burst are optional)".into(),
                at: node.span,
            });
        }
        return None;
    };
    if let Some(c) = ceil.as_ref().filter(|c| c.value < rate.value) {
        d.diags.push(ConfigError::InvalidValue {
            what: "ceil".into(),
            value: node
                .get("ceil")
                .and_then(Node::as_str)
                .unwrap_or_default()
                .to_string(),
            reason: format!(
                "it is below the rate ({})",
                crate::spec::units::format_rate(rate.value)
            ),
            hint: "ceil is the most the direction may take when there is room: at least the rate"
                .into(),
            at: c.span,
        });
    }
    Some(Shape {
        span: node.span,
        rate,
        ceil,
        burst,
    })
}

fn bandwidth(d: &mut Decoder, node: &Node, what: &str) -> Option<Spanned<u64>> {
    let s = d.string(node, what)?;
    match parse_rate(&s.value) {
        // Below one byte per second the kernel's rate (bytes per second) would be zero.
        Ok(bits) if bits >= 8 => Some(Spanned::new(bits, s.span)),
        Ok(_) => {
            d.invalid(what, node, "below 8bit (one byte per second)", RATE_UNITS);
            None
        }
        Err(e) => {
            d.invalid(
                what,
                node,
                e.to_string(),
                format!("write a rate such as 10mbit or 1gbit; units: {RATE_UNITS}"),
            );
            None
        }
    }
}

fn size(d: &mut Decoder, node: &Node) -> Option<Spanned<u64>> {
    let s = d.string(node, "burst")?;
    match parse_size(&s.value) {
        Ok(bytes) if bytes > 0 && bytes <= u64::from(u32::MAX) => Some(Spanned::new(bytes, s.span)),
        Ok(_) => {
            d.invalid("burst", node, "must be from 1 byte to 4gb", SIZE_UNITS);
            None
        }
        Err(e) => {
            d.invalid(
                "burst",
                node,
                e.to_string(),
                format!("write a size such as 64kb; units: {SIZE_UNITS}"),
            );
            None
        }
    }
}

fn loss(d: &mut Decoder, node: &Node) -> Option<Spanned<u8>> {
    let s = d.string(node, "loss")?;
    let text = s.value.trim();
    let number = text.strip_suffix('%').unwrap_or(text).trim();
    match number.parse::<u8>() {
        Ok(p) if p <= 100 => Some(Spanned::new(p, s.span)),
        Ok(_) => {
            d.invalid(
                "loss",
                node,
                "outside 0–100%",
                "a whole percentage of the packets leaving the replica, e.g. \"20%\"",
            );
            None
        }
        Err(_) => {
            let reason = match number.parse::<f64>() {
                Ok(_) => "not a whole percentage from 0 to 100",
                Err(_) => "not a percentage",
            };
            d.invalid(
                "loss",
                node,
                reason,
                "a whole percentage of the packets leaving the replica, e.g. \"20%\"",
            );
            None
        }
    }
}

fn duration(d: &mut Decoder, node: &Node, what: &str) -> Option<Spanned<std::time::Duration>> {
    let s = d.string(node, what)?;
    match parse_duration(&s.value) {
        Ok(t) => Some(Spanned::new(t, s.span)),
        Err(e) => {
            d.invalid(
                what,
                node,
                e.to_string(),
                "a duration such as 100ms, 1.5s or 500us",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_for_test;
    use crate::diag::ConfigError;
    use std::time::Duration;

    const FILE: &str = r#"
services:
  web:
    x-qos:
      egress: {rate: 10mbit, ceil: 20mbit, burst: 64kb}
      loss: "20%"
    networks:
      front:
        x-qos:
          ingress: {rate: 1gbit}
          delay: 100ms
          jitter: 10ms
      back:
networks:
  front:
  back:
"#;

    #[test]
    fn decodes_and_the_attachment_overrides_the_service() {
        let loaded = load_for_test(FILE, &[]);
        assert!(!loaded.diags.has_errors(), "{:?}", loaded.diags.errors);
        let web = &loaded.project.services["web"];
        let q = web.qos.as_ref().unwrap();
        let egress = q.egress.as_ref().unwrap();
        assert_eq!(egress.rate.value, 10_000_000);
        assert_eq!(egress.ceil.as_ref().unwrap().value, 20_000_000);
        assert_eq!(egress.burst.as_ref().unwrap().value, 65536);
        assert_eq!(q.loss.as_ref().unwrap().value, 20);
        let front = web.networks["front"].effective_qos(web).unwrap();
        assert_eq!(front.ingress.unwrap().rate.value, 1_000_000_000);
        assert_eq!(front.egress.unwrap().rate.value, 10_000_000);
        assert_eq!(front.delay.unwrap().value, Duration::from_millis(100));
        assert_eq!(front.loss.unwrap().value, 20);
        let back = web.networks["back"].effective_qos(web).unwrap();
        assert!(back.delay.is_none() && back.ingress.is_none());
    }

    fn errors(yaml_qos: &str) -> Vec<ConfigError> {
        let file = format!("services:\n  web:\n    x-qos: {yaml_qos}\n");
        load_for_test(&file, &[]).diags.errors
    }

    #[test]
    fn bad_values_point_at_themselves() {
        let e = errors("{egress: {rate: 10mb}}");
        assert!(
            matches!(&e[..], [ConfigError::InvalidValue { what, reason, .. }] if what == "rate" && reason.contains("unknown unit `mb`")),
            "{e:?}"
        );
        let e = errors("{egress: {rate: 10mbit, ceil: 5mbit}}");
        assert!(
            matches!(&e[..], [ConfigError::InvalidValue { what, value, .. }] if what == "ceil" && value == "5mbit"),
            "{e:?}"
        );
        let e = errors("{loss: 120%}");
        assert!(
            matches!(&e[..], [ConfigError::InvalidValue { what, reason, .. }] if what == "loss" && reason.contains("0–100")),
            "{e:?}"
        );
        let e = errors("{jitter: 5ms}");
        assert!(matches!(&e[..], [ConfigError::Invalid { .. }]), "{e:?}");
        let e = errors("{egress: {ceil: 5mbit}}");
        assert!(matches!(&e[..], [ConfigError::Invalid { .. }]), "{e:?}");
        let e = errors("{egres: {rate: 1mbit}}");
        assert!(
            matches!(&e[..], [ConfigError::UnknownKey { hint, .. }] if hint.contains("egress")),
            "{e:?}"
        );
        let file = "services:\n  web:\n    x-qos:\n      delay: soon\n";
        let e = load_for_test(file, &[]).diags.errors;
        let at = e[0].at();
        assert_eq!(
            &file[at.offset as usize..(at.offset + at.len) as usize],
            "soon"
        );
    }
}
