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
