//! `NETCOMPOSE_TIMINGS=1`: how long each stage of a run took, and the process's resident and
//! peak memory when it ended, one line on stderr at the end (`timing: up: load 4.1 ms (9/9 MB),
//! plan 2.0 ms (10/11 MB), ...`), to see where a run spends its time and memory without a
//! profiler. Off, it records nothing.

use std::cell::RefCell;
use std::time::Instant;

pub(super) struct Stages {
    run: &'static str,
    on: bool,
    last: RefCell<Instant>,
    done: RefCell<Vec<(&'static str, f64, Option<Memory>)>>,
    notes: RefCell<Vec<String>>,
}

impl Stages {
    pub(super) fn from_env(run: &'static str) -> Stages {
        Stages {
            run,
            on: std::env::var_os("NETCOMPOSE_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0"),
            last: RefCell::new(Instant::now()),
            done: RefCell::new(Vec::new()),
            notes: RefCell::new(Vec::new()),
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
            .push((name, took.as_secs_f64() * 1e3, memory()));
    }

    /// A fact of the run worth a line of its own after the stages (`timing: up: <note>`).
    pub(super) fn note(&self, note: impl FnOnce() -> String) {
        if self.on {
            self.notes.borrow_mut().push(note());
        }
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
            .map(|(name, ms, memory)| match memory {
                Some(m) => format!("{name} {ms:.1} ms ({}/{} MB)", m.resident, m.peak),
                None => format!("{name} {ms:.1} ms"),
            })
            .collect();
        eprintln!("timing: {}: {}", self.run, stages.join(", "));
        for note in self.notes.borrow().iter() {
            eprintln!("timing: {}: {note}", self.run);
        }
    }
}

/// The process's resident memory now and at its peak so far, in MiB.
struct Memory {
    resident: u64,
    peak: u64,
}

/// [`Memory`] as /proc tells it (`VmRSS`, `VmHWM`), if it does.
fn memory() -> Option<Memory> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mib = |key: &str| -> Option<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib / 1024)
    };
    Some(Memory {
        resident: mib("VmRSS:")?,
        peak: mib("VmHWM:")?,
    })
}
