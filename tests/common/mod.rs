//! Shared helpers for integration tests. Each test crate includes this with `mod common;` and
//! uses what it needs (hence the `dead_code` allowance).
#![allow(dead_code)]

pub mod agents;
pub mod cluster;
pub mod project;
pub mod sandbox;

#[allow(unused_imports)]
pub use sandbox::{require_root, Sandbox};

/// A benchmark's size from the environment (`BENCH_ROUNDS=5`), or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Poll `f` until it is true or `timeout` passes; whether it became true.
pub fn wait_for(timeout: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Processes a test started (echo servers, iperf3), killed and reaped when the guard is
/// dropped, panic included.
pub struct Servers(pub Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
