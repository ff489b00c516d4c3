//! `deploy.mode` and `deploy.placement` (constraints in Swarm's grammar, max_replicas_per_node):
//! checked here so that a bad constraint stops every command at its line, though only a cluster
//! acts on them (placement/ places; one host runs Compose's count, as docker compose does).

use super::Decoder;
use crate::load::node::{Node, Value};
use crate::spec::{DeployMode, NodeField, Placement, Service, Spanned};

pub(super) fn mode(d: &mut Decoder, deploy: &Node) -> Option<Spanned<DeployMode>> {
    let m = d.opt_string(deploy, "mode")?;
    let mode = match m.value.as_str() {
        "replicated" => DeployMode::Replicated,
        "global" => DeployMode::Global,
        other => {
            let hint = if other.ends_with("-job") {
                "jobs (replicated-job, global-job) run to completion in Swarm; netcompose runs \
                 `replicated` (the default) or `global` services"
            } else {
                "use `replicated` (the default: `replicas` of them) or `global` (one on every node)"
            };
            if let Some(node) = deploy.get("mode") {
                d.invalid("deploy.mode", node, "unknown mode", hint);
            }
            return None;
        }
    };
    Some(Spanned::new(mode, m.span))
}

pub(super) fn placement(d: &mut Decoder, node: Option<&Node>) -> Placement {
    let Some(node) = node.filter(|n| !n.is_null()) else {
        return Placement::default();
    };
    if node.as_map().is_none() {
        d.wrong_type("placement", "a mapping", node);
        return Placement::default();
    }
    let mut out = Placement::default();
    if let Some(list) = node.get("constraints").filter(|n| !n.is_null()) {
        let items: &[Node] = match &list.value {
            Value::Seq(items) => items,
            _ => {
                d.wrong_type("constraints", "a list of strings", list);
                &[]
            }
        };
        for item in items {
            let Some(text) = d.string(item, "constraints") else {
                continue;
            };
            match crate::placement::parse(&text.value) {
                Ok(c) => out.constraints.push(Spanned::new(c, text.span)),
                Err(e) => d.invalid("placement constraint", item, e.to_string(), e.hint()),
            }
        }
    }
    out.max_replicas_per_node = node
        .get("max_replicas_per_node")
        .filter(|n| !n.is_null())
        .and_then(|n| d.count(n, "max_replicas_per_node"));
    out
}

/// What one host ignores, as docker compose does, but a cluster would not: a replica count in
/// global mode (Swarm refuses it: "replicas can only be used with replicated mode"; a cluster
/// runs one replica per node) and constraints on Swarm fields no netcompose node has.
pub(super) fn warnings(d: &mut Decoder, name: &str, svc: &Service) {
    for c in &svc.deploy.placement.constraints {
        if let NodeField::Swarm(field) = &c.value.field {
            d.diags.warn(format!(
                "service `{name}`: placement constraint `{}` reads `{field}`, which netcompose \
                 nodes do not have: one host ignores it, as docker compose does; on a cluster \
                 no node matches it (use node.hostname, node.id or node.labels.KEY)",
                c.value
            ));
        }
    }
    let global = svc.deploy.mode.as_ref().map(|m| m.value) == Some(DeployMode::Global);
    if global && (svc.deploy.replicas.is_some() || svc.scale.is_some()) {
        d.diags.warn(format!(
            "service `{name}`: a replica count in global mode is ignored on a cluster (one \
             replica per node; Swarm refuses it: replicas can only be used with replicated \
             mode); on one host {} replicas run, as with docker compose",
            svc.replicas()
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::diag::ConfigError;
    use crate::spec::{ConstraintOp, DeployMode, NodeField};

    fn load(yaml: &str) -> crate::load::Loaded {
        super::super::load_for_test(yaml, &[])
    }

    #[test]
    fn decodes_mode_constraints_and_the_maximum() {
        let l = load(
            "services:\n  web:\n    deploy:\n      mode: replicated\n      replicas: 4\n      \
             placement:\n        constraints: [\"node.labels.zone == eu\", node.hostname!=db1]\n        \
             max_replicas_per_node: \"2\"\n  mon:\n    deploy: {mode: global}\n",
        );
        assert!(!l.diags.has_errors(), "{:?}", l.diags.errors);
        let web = &l.project.services["web"].deploy;
        assert_eq!(web.mode.as_ref().unwrap().value, DeployMode::Replicated);
        let cs: Vec<_> = web.placement.constraints.iter().map(|c| &c.value).collect();
        assert_eq!(cs[0].field, NodeField::Label("zone".into()));
        assert_eq!(cs[0].value, "eu");
        assert_eq!(cs[1].op, ConstraintOp::Ne);
        assert_eq!(
            web.placement.max_replicas_per_node.as_ref().unwrap().value,
            2
        );
        let mon = &l.project.services["mon"].deploy;
        assert_eq!(mon.mode.as_ref().unwrap().value, DeployMode::Global);
        assert!(l.diags.warnings.is_empty());
    }

    #[test]
    fn a_bad_constraint_or_mode_is_an_error_at_its_value_with_a_hint() {
        let yaml = "services:\n  web:\n    deploy:\n      mode: replicated-job\n      placement:\n        \
                    constraints:\n          - node.name==manager\n          - node.hostname=h1\n          \
                    - node.labels.a==b>c\n";
        let l = load(yaml);
        let errors: Vec<(String, String, usize)> = l
            .diags
            .errors
            .iter()
            .map(|e| match e {
                ConfigError::InvalidValue {
                    what,
                    reason,
                    hint,
                    at,
                    ..
                } => (
                    what.clone(),
                    format!("{reason} / {hint}"),
                    at.offset as usize,
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert_eq!(errors[0].0, "deploy.mode");
        assert!(errors[0].1.starts_with("unknown mode / jobs"));
        assert_eq!(errors[0].2, yaml.find("replicated-job").unwrap());
        assert!(errors[1]
            .1
            .starts_with("unknown node field `node.name` / netcompose places on `node.hostname`"));
        assert_eq!(errors[1].2, yaml.find("node.name").unwrap());
        assert!(errors[2]
            .1
            .starts_with("constraint expected one operator from ==, != / write FIELD==VALUE"));
        assert_eq!(errors[2].2, yaml.find("node.hostname=h1").unwrap());
        assert!(errors[3].1.starts_with("value 'b>c' is invalid"));
    }

    #[test]
    fn a_count_in_global_mode_is_a_warning_and_still_runs_on_one_host() {
        let l = load("services:\n  mon:\n    deploy: {mode: global, replicas: 3}\n");
        assert!(!l.diags.has_errors());
        assert_eq!(l.project.services["mon"].replicas(), 3);
        assert_eq!(l.diags.warnings.len(), 1);
        assert!(l.diags.warnings[0].contains("replicas can only be used with replicated mode"));
    }

    #[test]
    fn a_swarm_field_loads_with_a_warning_as_docker_compose_ignores_it() {
        let l = load(
            "services:\n  web:\n    deploy:\n      placement:\n        \
             constraints: [node.role == manager]\n",
        );
        assert!(!l.diags.has_errors(), "{:?}", l.diags.errors);
        let c = &l.project.services["web"].deploy.placement.constraints[0].value;
        assert_eq!(c.field, NodeField::Swarm("node.role".into()));
        assert_eq!(l.diags.warnings.len(), 1);
        assert!(
            l.diags.warnings[0].contains("`node.role==manager` reads `node.role`"),
            "{}",
            l.diags.warnings[0]
        );
    }

    #[test]
    fn constraints_must_be_a_list_of_strings() {
        let l =
            load("services:\n  web:\n    deploy:\n      placement: {constraints: node.id==a}\n");
        assert!(matches!(
            l.diags.errors.as_slice(),
            [ConfigError::WrongType { key, .. }] if key == "constraints"
        ));
    }
}
