//! `up --wait`: whether every `x-run` process is ready (healthy when it has a healthcheck,
//! else running; one that exited with status 0 has done its work), asked of the daemon until
//! it is, until one cannot become ready (unhealthy, failed, blocked by a dependency, exited
//! with a failure), or until the timeout.

use super::health::Health;
use super::runner::ProcStatus;
use super::{request, DaemonError, Request};
use crate::project_name::ProjectName;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How often the daemon is asked.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Error)]
pub enum WaitError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("not ready: {}", .0.join("; "))]
    Failed(Vec<String>),
    #[error("not ready after {} s: {}", .after.as_secs(), .pending.join("; "))]
    TimedOut {
        after: Duration,
        pending: Vec<String>,
    },
}

/// Where the processes stand, each one that is not ready named with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotYet(Vec<String>),
    /// Some cannot become ready (the others that are not ready yet are left out).
    Failed(Vec<String>),
}

pub fn readiness(processes: &[ProcStatus]) -> Readiness {
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for p in processes {
        let why = |what: &str| match p.detail.as_str() {
            "" => format!("{} {what}", p.name),
            d => format!("{} {what} ({d})", p.name),
        };
        match p.state.as_str() {
            "running" => match &p.health {
                None => {}
                Some(h) => match h.status {
                    Health::Healthy => {}
                    Health::Starting => pending.push(format!("{} is starting", p.name)),
                    Health::Unhealthy => failed.push(match h.last.as_str() {
                        "" => format!("{} is unhealthy", p.name),
                        last => format!("{} is unhealthy (last probe: {last})", p.name),
                    }),
                },
            },
            "exited" if p.exit_code == Some(0) => {}
            "exited" | "failed" | "blocked" => failed.push(why(&p.state)),
            _ => pending.push(why(&p.state)),
        }
    }
    match (failed.is_empty(), pending.is_empty()) {
        (false, _) => Readiness::Failed(failed),
        (true, false) => Readiness::NotYet(pending),
        (true, true) => Readiness::Ready,
    }
}

/// Ask the project's daemon until every process is ready; `timeout` None waits as long as it
/// takes (as Compose does without --wait-timeout). Blocking: for the CLI's thread.
pub fn wait(project: &ProjectName, timeout: Option<Duration>) -> Result<(), WaitError> {
    let start = Instant::now();
    loop {
        let reply = request(project, &Request::Status, Duration::from_secs(5))?;
        match readiness(&reply.processes) {
            Readiness::Ready => return Ok(()),
            Readiness::Failed(why) => return Err(WaitError::Failed(why)),
            Readiness::NotYet(pending) => {
                if let Some(after) = timeout.filter(|t| start.elapsed() >= *t) {
                    return Err(WaitError::TimedOut { after, pending });
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::health::HealthStatus;

    fn proc(name: &str, state: &str, health: Option<Health>, exit_code: Option<i32>) -> ProcStatus {
        ProcStatus {
            name: name.into(),
            service: name.into(),
            state: state.into(),
            pid: None,
            restarts: 0,
            detail: String::new(),
            health: health.map(|status| HealthStatus {
                status,
                failing_streak: 0,
                last: String::new(),
            }),
            exit_code,
        }
    }

    #[test]
    fn healthy_running_or_done_is_ready() {
        assert_eq!(readiness(&[]), Readiness::Ready);
        assert_eq!(
            readiness(&[
                proc("a-1", "running", None, None),
                proc("b-1", "running", Some(Health::Healthy), None),
                proc("c-1", "exited", None, Some(0)),
            ]),
            Readiness::Ready
        );
        assert_eq!(
            readiness(&[
                proc("a-1", "running", Some(Health::Starting), None),
                proc("b-1", "waiting", None, None),
            ]),
            Readiness::NotYet(vec!["a-1 is starting".into(), "b-1 waiting".into()])
        );
        assert_eq!(
            readiness(&[
                proc("a-1", "running", Some(Health::Starting), None),
                proc("b-1", "running", Some(Health::Unhealthy), None),
                proc("c-1", "exited", None, Some(3)),
            ]),
            Readiness::Failed(vec!["b-1 is unhealthy".into(), "c-1 exited".into()])
        );
    }
}
