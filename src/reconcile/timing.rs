//! `NETCOMPOSE_TIMINGS=1`: how long each stage of a run took, one line on stderr at the end
//! (`timing: up: load 4.1 ms, plan 2.0 ms, observe 9.8 ms, ...`), to see where a run spends
//! its time without a profiler. Off, it records nothing.

use std::cell::RefCell;
use std::time::Instant;

pub(super) struct Stages {
    run: &'static str,
    on: bool,
    last: RefCell<Instant>,
    done: RefCell<Vec<(&'static str, f64)>>,
}

impl Stages {
    pub(super) fn from_env(run: &'static str) -> Stages {
        Stages {
            run,
            on: std::env::var_os("NETCOMPOSE_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0"),
            last: RefCell::new(Instant::now()),
            done: RefCell::new(Vec::new()),
        }
    }

    /// The stage that ends now (it began where the previous one ended).
    pub(super) fn stage(&self, name: &'static str) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        let took = now.duration_since(self.last.replace(now));
        self.done
            .borrow_mut()
            .push((name, took.as_secs_f64() * 1e3));
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        if !self.on {
            return;
        }
        let stages: Vec<String> = self
            .done
            .borrow()
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.1} ms"))
            .collect();
        eprintln!("timing: {}: {}", self.run, stages.join(", "));
    }
}
