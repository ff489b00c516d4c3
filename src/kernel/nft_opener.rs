//! nfnetlink sockets opened in namespaces on demand, by two threads whose only work is that:
//! each enters the namespace, opens the socket and goes back to the namespace it started in
//! (so that it holds no namespace alive between two opens). A run that took its surveys from
//! the project daemon has no socket in a namespace whose table it then writes; a thread made
//! per socket cost more than the write.

use super::netns::NetnsDir;
use super::nftables::wire;
use super::{Ctx, KernelError};
use nix::sched::{setns, CloneFlags};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

const THREADS: usize = 2;

type Job = (
    String,
    tokio::sync::oneshot::Sender<Result<OwnedFd, KernelError>>,
);

/// The opening threads, started on the first request; they end when this is dropped.
pub struct NftOpener {
    dir: NetnsDir,
    jobs: Mutex<Option<Sender<Job>>>,
}

impl NftOpener {
    pub fn new(dir: NetnsDir) -> NftOpener {
        NftOpener {
            dir,
            jobs: Mutex::new(None),
        }
    }

    /// An nfnetlink socket inside namespace `ns`.
    pub async fn open(&self, ns: &str) -> Result<OwnedFd, KernelError> {
        let ctx = Ctx::new("open netlink socket", "NETLINK_NETFILTER", Some(ns));
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.sender()
            .and_then(|jobs| jobs.send((ns.to_string(), tx)).ok())
            .ok_or_else(|| ctx.protocol("no thread to enter the namespace"))?;
        rx.await
            .map_err(|_| ctx.protocol("the thread entering the namespace ended"))?
    }

    fn sender(&self) -> Option<Sender<Job>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.is_none() {
            let (tx, rx) = channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..THREADS {
                let (rx, dir) = (rx.clone(), self.dir.clone());
                std::thread::Builder::new()
                    .name("nft-opener".into())
                    .spawn(move || serve(&dir, &rx))
                    .ok()?;
            }
            *jobs = Some(tx);
        }
        jobs.clone()
    }
}

/// One opening thread: take jobs until the opener is dropped, or until it cannot go back to
/// its own namespace (it then ends rather than open anything from where it is).
fn serve(dir: &NetnsDir, jobs: &Mutex<Receiver<Job>>) {
    let Ok(home) = dir.open(None) else { return };
    loop {
        let next = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((ns, reply)) = next else { return };
        let ctx = Ctx::new("open netlink socket", "NETLINK_NETFILTER", Some(&ns));
        let opened = dir.open(Some(&ns)).and_then(|fd| {
            setns(&fd, CloneFlags::CLONE_NEWNET)
                .map_err(|e| Ctx::new("enter netns", &ns, None).errno(e))?;
            Ok(wire::open(&ctx))
        });
        let home_again = setns(&home, CloneFlags::CLONE_NEWNET);
        let _ = reply.send(opened.and_then(|socket| socket));
        if home_again.is_err() {
            return;
        }
    }
}
