//! `depends_on` conditions between `x-run` processes: whether a dependent may start, must wait,
//! or will never start because its dependency failed, decided from what the runner knows of the
//! dependency's processes. As in Docker Compose, a condition is about every replica of the
//! dependency; a service without `x-run` processes has nothing to wait for.

use super::health::Health;
use crate::model::daemon::Wait;
use crate::spec::Condition;

/// Where a dependency's process is, as far as its dependents care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet: waiting for its own dependencies.
    Pending,
    /// Will not start: its own dependencies failed.
    Blocked,
    Running {
        health: Option<Health>,
    },
    /// Exited and waiting to be restarted by its policy.
    Restarting,
    Stopping,
    Exited {
        success: bool,
    },
    /// Could not be started.
    Failed,
}

/// What a condition says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    /// Not yet; why.
    Waits(String),
    /// Never (until the next `up`); why.
    Fails(String),
}

/// A process of the project as the ordering sees it.
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    pub name: &'a str,
    pub service: &'a str,
    pub phase: Phase,
}

/// What a process's `depends_on` entries say, given every process of the project: the first
/// condition that does not hold decides; a failed condition that is not required counts as
/// holding, with a note to log.
pub fn decide(waits: &[Wait], all: &[Seen]) -> (Verdict, Vec<String>) {
    let mut notes = Vec::new();
    for wait in waits {
        let mut deps: Vec<(&str, Phase)> = all
            .iter()
            .filter(|s| s.service == wait.service)
            .map(|s| (s.name, s.phase.clone()))
            .collect();
        deps.sort_by(|a, b| a.0.cmp(b.0));
        let condition = wait.condition.as_str();
        let service = &wait.service;
        match verdict(wait, &deps) {
            Verdict::Holds => {}
            Verdict::Waits(why) => {
                let v = Verdict::Waits(format!("waiting for {service} ({condition}): {why}"));
                return (v, notes);
            }
            Verdict::Fails(why) if !wait.required => notes.push(format!(
                "dependency {service} failed ({condition}: {why}); starting anyway (required: false)"
            )),
            Verdict::Fails(why) => {
                let v = Verdict::Fails(format!("dependency {service} failed ({condition}): {why}"));
                return (v, notes);
            }
        }
    }
    (Verdict::Holds, notes)
}

/// Decide `wait` from the dependency's processes (name and phase).
pub fn verdict(wait: &Wait, processes: &[(&str, Phase)]) -> Verdict {
    for (name, phase) in processes {
        let v = one(wait.condition, name, phase);
        if v != Verdict::Holds {
            return v;
        }
    }
    Verdict::Holds
}

fn one(condition: Condition, name: &str, phase: &Phase) -> Verdict {
    let waits = |why: &str| Verdict::Waits(format!("{name} {why}"));
    let fails = |why: &str| Verdict::Fails(format!("{name} {why}"));
    match (condition, phase) {
        (_, Phase::Pending) => waits("is not started yet"),
        (_, Phase::Blocked) => fails("was not started"),
        (_, Phase::Failed) => fails("could not be started"),
        (Condition::ServiceStarted, _) => Verdict::Holds,
        (Condition::ServiceHealthy, Phase::Running { health }) => match health {
            None | Some(Health::Healthy) => Verdict::Holds,
            Some(Health::Starting) => waits("is starting"),
            Some(Health::Unhealthy) => fails("is unhealthy"),
        },
        (Condition::ServiceHealthy, Phase::Restarting | Phase::Stopping) => waits("is restarting"),
        (Condition::ServiceHealthy, Phase::Exited { .. }) => fails("exited"),
        (Condition::ServiceCompletedSuccessfully, Phase::Exited { success: true }) => {
            Verdict::Holds
        }
        (Condition::ServiceCompletedSuccessfully, Phase::Exited { success: false }) => {
            fails("exited with a failure")
        }
        (
            Condition::ServiceCompletedSuccessfully,
            Phase::Running { .. } | Phase::Restarting | Phase::Stopping,
        ) => waits("has not completed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(condition: Condition) -> Wait {
        Wait {
            service: "db".into(),
            condition,
            required: true,
        }
    }

    fn running(health: Option<Health>) -> Phase {
        Phase::Running { health }
    }

    #[test]
    fn every_replica_must_meet_the_condition() {
        let healthy = wait(Condition::ServiceHealthy);
        assert_eq!(verdict(&healthy, &[]), Verdict::Holds);
        assert_eq!(
            verdict(
                &healthy,
                &[
                    ("db-1", running(Some(Health::Healthy))),
                    ("db-2", running(Some(Health::Starting)))
                ]
            ),
            Verdict::Waits("db-2 is starting".into())
        );
        assert_eq!(
            verdict(&healthy, &[("db-1", running(Some(Health::Unhealthy)))]),
            Verdict::Fails("db-1 is unhealthy".into())
        );
        assert_eq!(
            verdict(&healthy, &[("db-1", running(Some(Health::Healthy)))]),
            Verdict::Holds
        );
    }

    #[test]
    fn the_first_condition_that_does_not_hold_decides() {
        let seen = |name, service, phase| Seen {
            name,
            service,
            phase,
        };
        let all = [
            seen("db-1", "db", running(Some(Health::Unhealthy))),
            seen("cache-1", "cache", Phase::Exited { success: false }),
            seen("init-1", "init", running(None)),
        ];
        let optional = Wait {
            service: "cache".into(),
            condition: Condition::ServiceCompletedSuccessfully,
            required: false,
        };
        let healthy = wait(Condition::ServiceHealthy);
        let (v, notes) = decide(&[optional.clone(), healthy], &all);
        assert_eq!(
            v,
            Verdict::Fails("dependency db failed (service_healthy): db-1 is unhealthy".into())
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        let done = Wait {
            service: "init".into(),
            ..wait(Condition::ServiceCompletedSuccessfully)
        };
        assert_eq!(
            decide(&[optional, done], &all).0,
            Verdict::Waits(
                "waiting for init (service_completed_successfully): init-1 has not completed"
                    .into()
            )
        );
        assert_eq!(decide(&[], &all), (Verdict::Holds, vec![]));
    }

    #[test]
    fn started_and_completed() {
        let started = wait(Condition::ServiceStarted);
        assert_eq!(
            verdict(&started, &[("db-1", running(Some(Health::Starting)))]),
            Verdict::Holds
        );
        assert_eq!(
            verdict(&started, &[("db-1", Phase::Pending)]),
            Verdict::Waits("db-1 is not started yet".into())
        );
        assert_eq!(
            verdict(&started, &[("db-1", Phase::Blocked)]),
            Verdict::Fails("db-1 was not started".into())
        );
        let done = wait(Condition::ServiceCompletedSuccessfully);
        assert_eq!(
            verdict(&done, &[("db-1", running(None))]),
            Verdict::Waits("db-1 has not completed".into())
        );
        assert_eq!(
            verdict(&done, &[("db-1", Phase::Exited { success: true })]),
            Verdict::Holds
        );
        assert_eq!(
            verdict(&done, &[("db-1", Phase::Exited { success: false })]),
            Verdict::Fails("db-1 exited with a failure".into())
        );
    }
}
