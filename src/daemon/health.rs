//! Healthchecks of `x-run` processes, as Docker runs them: a process starts `starting`; the
//! first probe runs one interval after it starts (`start_interval` while in its start period,
//! else `interval`); a probe that exits 0 makes it `healthy` and clears the failing streak; any
//! other exit, or a probe that outlives `timeout`, adds one to the streak, except during the
//! start period while still `starting`, and `retries` failures in a row make it `unhealthy`.
//!
//! This module keeps the state and decides; the runner (see [`super::runner`]) starts the probe
//! exactly as it starts the process (same namespaces, cgroup leaf, user, environment and
//! privileges) and feeds back what came of it ([`run_probe`] waits for it).

use crate::model::daemon::Probe;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Most bytes of a probe's output kept (Docker keeps as many).
pub const MAX_OUTPUT: usize = 4096;

/// Docker's health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// A process's health as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    pub status: Health,
    /// Failed probes in a row.
    pub failing_streak: u32,
    /// What the last probe said (exit status and the start of its output).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last: String,
}

/// What came of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed {
        output: String,
    },
    Failed {
        code: Option<i32>,
        output: String,
    },
    TimedOut {
        after: Duration,
    },
    /// It could not be started (a missing program, a namespace gone).
    NotRun {
        error: String,
    },
}

impl Outcome {
    fn describe(&self) -> String {
        let with = |head: String, output: &str| match output.trim() {
            "" => head,
            out => format!("{head}: {out}"),
        };
        match self {
            Outcome::Passed { output } => with("exit 0".into(), output),
            Outcome::Failed {
                code: Some(c),
                output,
            } => with(format!("exit {c}"), output),
            Outcome::Failed { code: None, output } => with("killed".into(), output),
            Outcome::TimedOut { after } => {
                format!("timed out after {} ms", after.as_millis())
            }
            Outcome::NotRun { error } => format!("cannot run: {error}"),
        }
    }
}

/// The health of one run of a process.
#[derive(Debug, Clone)]
pub struct Tracker {
    probe: Probe,
    started: Instant,
    status: HealthStatus,
}

impl Tracker {
    /// A process that started at `started`.
    pub fn new(probe: Probe, started: Instant) -> Tracker {
        Tracker {
            probe,
            started,
            status: HealthStatus {
                status: Health::Starting,
                failing_streak: 0,
                last: String::new(),
            },
        }
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    pub fn status(&self) -> &HealthStatus {
        &self.status
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.probe.timeout_ms)
    }

    fn in_start_period(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started)
            < Duration::from_millis(self.probe.start_period_ms)
    }

    /// How long until the next probe, counted from `now`.
    pub fn next_delay(&self, now: Instant) -> Duration {
        if self.status.status == Health::Starting && self.in_start_period(now) {
            Duration::from_millis(self.probe.start_interval_ms)
        } else {
            Duration::from_millis(self.probe.interval_ms)
        }
    }

    /// Take a probe's outcome (it ended at `now`); the new state when it changed.
    pub fn record(&mut self, outcome: &Outcome, now: Instant) -> Option<Health> {
        let before = self.status.status;
        self.status.last = outcome.describe();
        if matches!(outcome, Outcome::Passed { .. }) {
            self.status.failing_streak = 0;
            self.status.status = Health::Healthy;
        } else if !(before == Health::Starting && self.in_start_period(now)) {
            self.status.failing_streak += 1;
            if self.status.failing_streak >= self.probe.retries.max(1) {
                self.status.status = Health::Unhealthy;
            }
        }
        (self.status.status != before).then_some(self.status.status)
    }
}

/// Wait for a started probe: its exit status and output, or SIGKILL to its process group
/// (it leads one) once `timeout` is over.
pub async fn run_probe(mut child: tokio::process::Child, timeout: Duration) -> Outcome {
    let pid = child.id().map(|p| p as i32);
    let out = child.stdout.take();
    let err = child.stderr.take();
    let finished = async {
        let (out, err, status) = tokio::join!(drain(out), drain(err), child.wait());
        (out, err, status)
    };
    match tokio::time::timeout(timeout, finished).await {
        Ok((mut out, err, status)) => {
            out.extend_from_slice(&err);
            out.truncate(MAX_OUTPUT);
            let output = String::from_utf8_lossy(&out).into_owned();
            match status {
                Ok(s) if s.success() => Outcome::Passed { output },
                Ok(s) => Outcome::Failed {
                    code: s.code(),
                    output,
                },
                Err(e) => Outcome::NotRun {
                    error: e.to_string(),
                },
            }
        }
        Err(_) => {
            if let Some(pid) = pid {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Outcome::TimedOut { after: timeout }
        }
    }
}

/// Everything a pipe gives until it closes, keeping the first [`MAX_OUTPUT`] bytes.
async fn drain(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut stream) = stream else {
        return kept;
    };
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(retries: u32, start_period_ms: u64) -> Probe {
        Probe {
            argv: vec!["true".into()],
            interval_ms: 30_000,
            timeout_ms: 30_000,
            start_period_ms,
            start_interval_ms: 5_000,
            retries,
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            code: Some(1),
            output: "no".into(),
        }
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy() {
        let t0 = Instant::now();
        let mut t = Tracker::new(probe(3, 0), t0);
        assert_eq!(t.status().status, Health::Starting);
        assert_eq!(t.record(&failed(), t0), None);
        assert_eq!(t.record(&failed(), t0), None);
        assert_eq!(t.record(&failed(), t0), Some(Health::Unhealthy));
        assert_eq!(t.status().failing_streak, 3);
        assert_eq!(t.status().last, "exit 1: no");
        let passed = Outcome::Passed {
            output: String::new(),
        };
        assert_eq!(t.record(&passed, t0), Some(Health::Healthy));
        assert_eq!(t.status().failing_streak, 0);
        assert_eq!(t.record(&failed(), t0), None);
        assert_eq!(t.status().status, Health::Healthy);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_until_healthy() {
        let t0 = Instant::now();
        let mut t = Tracker::new(probe(1, 60_000), t0);
        assert_eq!(t.next_delay(t0), Duration::from_millis(5_000));
        assert_eq!(t.record(&failed(), t0), None);
        assert_eq!(t.status().failing_streak, 0);
        let late = t0 + Duration::from_secs(61);
        assert_eq!(t.next_delay(late), Duration::from_millis(30_000));
        assert_eq!(
            t.record(&Outcome::TimedOut { after: t.timeout() }, late),
            Some(Health::Unhealthy)
        );
        let mut h = Tracker::new(probe(1, 60_000), t0);
        let passed = Outcome::Passed {
            output: String::new(),
        };
        assert_eq!(h.record(&passed, t0), Some(Health::Healthy));
        assert_eq!(h.next_delay(t0), Duration::from_millis(30_000));
        assert_eq!(h.record(&failed(), t0), Some(Health::Unhealthy));
    }
}
