//! The thread that commits a run's nftables transactions, one after the other.
//!
//! A table write is one batch sent and its acknowledgement read: 30-50 us of CPU, most of it
//! the kernel's. Each used to be a task of tokio's blocking pool, which cost two thread
//! hand-offs besides: a scale's 202 writes woke up to eight threads on two cores, and one
//! write running alone took 240 us from start to end on this project's VM. Queued to one
//! thread that takes the next write as soon as one is done, a burst of writes costs little
//! more than its own CPU, while the namespace and link being made at the same time (under the
//! RTNL lock, one at a time machine-wide) keep the other core. A scale of bench/lb.sh's
//! project (perf stat, 16 cycles alternated): 414 -> 256 context switches, CPU 53.4 -> 51.5 ms
//! (medians); an `up` from scratch the same (609 / 611 ms of CPU).

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

type Job = Box<dyn FnOnce() + Send>;

/// A queue of writes and the thread that runs them, started with the first write.
#[derive(Default)]
pub struct Writer {
    queue: Mutex<Option<Sender<Job>>>,
}

impl Writer {
    /// Run `write` on the writer thread and wait, without blocking the caller's thread, for what
    /// it returns; a panic in it is resumed here. When the thread cannot be started, it runs
    /// on tokio's blocking pool instead. None if it was dropped unrun (a runtime shutting down
    /// drops the blocking pool's queue).
    pub async fn run<T: Send + 'static>(
        &self,
        write: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(catch_unwind(AssertUnwindSafe(write)));
        });
        let job = match self.sender() {
            Some(queue) => match queue.send(job) {
                Ok(()) => None,
                Err(refused) => Some(refused.0),
            },
            None => Some(job),
        };
        if let Some(job) = job {
            // The blocking pool runs it; its panic, caught by the job itself, comes back below.
            let _ = tokio::task::spawn_blocking(job).await;
        }
        match outcome.await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => None,
        }
    }

    /// The queue, with its thread started if this is the first write; None if the thread
    /// could not be started. The thread ends when the queue is dropped (with the [`Writer`],
    /// at the end of the run).
    fn sender(&self) -> Option<Sender<Job>> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.is_none() {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("nft-writer".into())
                .spawn(move || rx.into_iter().for_each(|job| job()))
                .ok()?;
            *queue = Some(tx);
        }
        queue.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_runs_once_and_returns_its_value() {
        let writer = Arc::new(Writer::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let writes = (0..50).map(|i| {
            let (writer, order) = (writer.clone(), order.clone());
            async move {
                writer
                    .run(move || {
                        order.lock().unwrap().push(i);
                        i * 2
                    })
                    .await
                    .unwrap()
            }
        });
        let values = futures::future::join_all(writes).await;
        assert_eq!(values, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        let mut order = order.lock().unwrap().clone();
        order.sort_unstable();
        assert_eq!(order, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_comes_back_to_the_caller_and_the_writer_goes_on() {
        let writer = Arc::new(Writer::default());
        let w = writer.clone();
        let panicked = tokio::spawn(async move { w.run(|| panic!("refused")).await }).await;
        assert!(panicked.is_err_and(|e| e.is_panic()));
        assert_eq!(writer.run(|| 7).await, Some(7));
    }
}
