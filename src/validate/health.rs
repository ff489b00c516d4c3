//! `depends_on` conditions that cannot hold: `service_healthy` on a service without a
//! healthcheck (Docker Compose refuses it when it starts the dependent), and conditions on a
//! service that has no `x-run` process to wait for.

use crate::diag::{ConfigError, Diagnostics};
use crate::spec::{Condition, Project};

pub(super) fn check(project: &Project, diags: &mut Diagnostics) {
    for (key, svc) in &project.services {
        for dep in &svc.depends_on {
            let name = &dep.service.value;
            let Some(target) = project.services.get(name) else {
                if !dep.required {
                    diags.warn(format!(
                        "service {key} depends on {name}, which is not in the project \
                         (required: false): ignored"
                    ));
                }
                continue;
            };
            match dep.condition.value {
                Condition::ServiceStarted => {}
                Condition::ServiceHealthy if target.healthcheck.is_none() => {
                    diags.push(ConfigError::Invalid {
                        message: format!(
                            "service {key} waits for {name} to be healthy, but {name} has no healthcheck"
                        ),
                        hint: format!(
                            "give {name} a `healthcheck` with a `test`, or use `condition: service_started`"
                        ),
                        at: dep.condition.span,
                    });
                }
                Condition::ServiceHealthy | Condition::ServiceCompletedSuccessfully => {
                    if svc.run.is_some() && target.run.is_none() {
                        diags.warn(format!(
                            "service {key} waits for {name} ({}), but {name} has no x-run \
                             process: the condition holds once the network is built",
                            dep.condition.value.as_str()
                        ));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    fn check(yaml: &str) -> crate::diag::Diagnostics {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut loaded = crate::load::load(&crate::load::LoadOptions {
            files: vec![file],
            environment: Some(Default::default()),
            ..Default::default()
        })
        .unwrap();
        crate::validate::check(&loaded.project, &mut loaded.diags);
        loaded.diags
    }

    #[test]
    fn conditions_that_cannot_hold() {
        let d = check(
            "services:\n  db:\n    x-run: [sleep, \"9\"]\n  \
             web:\n    x-run: [sleep, \"9\"]\n    depends_on:\n      \
             db: {condition: service_healthy}\n      ghost: {required: false}\n  \
             api:\n    x-run: [sleep, \"9\"]\n    depends_on: {net: {condition: service_completed_successfully}}\n  \
             net: {}\n",
        );
        let errors: Vec<String> = d.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errors,
            ["service web waits for db to be healthy, but db has no healthcheck"]
        );
        let at = d.errors[0].at();
        assert!(at.offset > 0 && at.len > 0, "{at:?}");
        assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
        assert!(d.warnings.iter().any(|w| w.contains("ghost")));
        assert!(d.warnings.iter().any(|w| w.contains("net has no x-run")));
    }

    #[test]
    fn unknown_services_and_cycles_in_long_form() {
        let d = check(
            "services:\n  a:\n    depends_on: {b: {condition: service_started}}\n  \
             b:\n    depends_on: {a: {condition: service_started}, nope: {condition: service_started}}\n",
        );
        let codes: Vec<String> = d.errors.iter().map(|e| e.code_str()).collect();
        assert!(
            codes.contains(&"netcompose::cycle".to_string()),
            "{codes:?}"
        );
        assert!(
            codes
                .iter()
                .any(|c| c.contains("unknown") || c.contains("service")),
            "{codes:?}"
        );
        assert_eq!(d.errors.len(), 2, "{:?}", d.errors);
    }
}
