//! Taking a [`Sample`]: in every replica namespace the daemon serves, one rtnetlink dump of
//! the links with their counters, one nfnetlink dump of the table's rules with their counters
//! and the tracked connections as a [`ctnl::Mirror`] follows them (its events, the count of
//! entries, a ctnetlink dump only when they disagree: a dump walks the host's whole conntrack
//! table, 1,000 of them took seconds), many namespaces at a time.
//!
//! The sockets are opened once per namespace (a thread enters it for that) and kept until the
//! namespace is no longer served, or is served under a new handle (made again by an `up`).
//! The nfnetlink reads block, so they run on the blocking pool.

use super::{replica_sample, vip_connections, DnsCounts, Sample};
use crate::daemon::resolver::counters::QueryCounters;
use crate::kernel::{ctnl, nftables, KernelError, Netlink};
use crate::model::resource::Vip;
use crate::model::tables::replica::REPLICA_TABLE;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, RwLock};

/// Namespaces read at once: each read is a few netlink round trips, mostly kernel time.
const PARALLEL: usize = 32;

/// What a sample covers, as the daemon's last reload set it.
#[derive(Debug, Default)]
pub struct Inputs {
    pub project: String,
    /// Each replica namespace: its service and replica number.
    pub namespaces: BTreeMap<String, (String, u32)>,
    /// The resolver's handle on each namespace it serves, and its query counters there.
    pub sources: HashMap<String, (Arc<OwnedFd>, Arc<QueryCounters>)>,
    pub vips: Vec<Vip>,
}

/// The sockets of one namespace.
struct Sockets {
    /// The namespace handle they were opened through: a new one means a new namespace.
    ns: Arc<OwnedFd>,
    route: Netlink,
    /// The nfnetlink socket and the conntrack mirror read through it, used together.
    netfilter: Mutex<(OwnedFd, ctnl::Mirror)>,
}

/// Takes samples; shared by the control socket and the metrics listener.
pub struct Collector {
    inputs: RwLock<Arc<Inputs>>,
    sockets: Mutex<HashMap<String, Arc<Sockets>>>,
    rt: tokio::runtime::Handle,
}

/// What one namespace said.
struct Read {
    stats: super::ReplicaStats,
    tracked: Vec<ctnl::Tracked>,
}

impl Collector {
    pub fn new(rt: tokio::runtime::Handle) -> Collector {
        Collector {
            inputs: RwLock::default(),
            sockets: Mutex::default(),
            rt,
        }
    }

    /// Cover `inputs` from now on; sockets of namespaces no longer served are closed.
    pub fn set_inputs(&self, inputs: Inputs) {
        let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        sockets.retain(|ns, s| {
            inputs
                .sources
                .get(ns)
                .is_some_and(|(fd, _)| Arc::ptr_eq(fd, &s.ns))
        });
        match self.inputs.write() {
            Ok(mut g) => *g = Arc::new(inputs),
            Err(p) => *p.into_inner() = Arc::new(inputs),
        }
    }

    fn inputs(&self) -> Arc<Inputs> {
        self.inputs
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Every figure, now.
    pub async fn sample(&self) -> Sample {
        let inputs = self.inputs();
        // Owned items: a future borrowing from the map's iterator trips the compiler's
        // higher-ranked lifetime check once it is spawned (the metrics listener does).
        let replicas: Vec<(String, String, u32)> = inputs
            .namespaces
            .iter()
            .map(|(ns, (service, replica))| (ns.clone(), service.clone(), *replica))
            .collect();
        let inputs = &inputs;
        let reads: Vec<Result<Read, String>> =
            stream::iter(replicas)
                .map(|(ns, service, replica)| async move {
                    self.read(inputs, &ns, &service, replica).await
                })
                .buffer_unordered(PARALLEL)
                .collect()
                .await;
        let mut sample = Sample {
            taken_ms: now_ms(),
            ..Sample::default()
        };
        let mut tracked = Vec::new();
        for r in reads {
            match r {
                Ok(read) => {
                    sample.replicas.push(read.stats);
                    tracked.extend(read.tracked);
                }
                Err(e) => sample.errors.push(e),
            }
        }
        sample
            .replicas
            .sort_by(|a, b| (&a.service, a.replica).cmp(&(&b.service, b.replica)));
        sample.errors.sort();
        sample.vips = vip_connections(&inputs.vips, &tracked);
        sample
    }

    async fn read(
        &self,
        inputs: &Inputs,
        ns: &str,
        service: &str,
        replica: u32,
    ) -> Result<Read, String> {
        let Some((fd, queries)) = inputs.sources.get(ns) else {
            return Err(format!("{ns}: not served by the daemon"));
        };
        let sockets = self.sockets(ns, fd).await.map_err(|e| e.to_string())?;
        let links = sockets
            .route
            .link_stats()
            .await
            .map_err(|e| e.to_string())?;
        let label = ns.to_string();
        let s = sockets.clone();
        let (tracked, counters) = tokio::task::spawn_blocking(move || {
            let mut nf = s.netfilter.lock().unwrap_or_else(|p| p.into_inner());
            let (fd, mirror) = &mut *nf;
            mirror.refresh(fd, Some(&label))?;
            Ok::<_, KernelError>((
                mirror.tracked().copied().collect::<Vec<_>>(),
                nftables::read::counters_on(fd, Some(&label), REPLICA_TABLE)?,
            ))
        })
        .await
        .map_err(|e| format!("{ns}: {e}"))?
        .map_err(|e| e.to_string())?;
        let q = queries.read();
        let dns = DnsCounts {
            answered: q.answered,
            forwarded: q.forwarded,
        };
        Ok(Read {
            stats: replica_sample(
                &inputs.project,
                (service, replica, ns),
                &links,
                &counters,
                dns,
            ),
            tracked,
        })
    }

    /// The namespace's sockets, opened on first use.
    async fn sockets(&self, ns: &str, fd: &Arc<OwnedFd>) -> Result<Arc<Sockets>, KernelError> {
        let known = self
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns)
            .filter(|s| Arc::ptr_eq(&s.ns, fd))
            .cloned();
        if let Some(s) = known {
            return Ok(s);
        }
        let (fd2, label, rt) = (fd.clone(), ns.to_string(), self.rt.clone());
        let opened = tokio::task::spawn_blocking(move || {
            let route = Netlink::open_fd(fd2.as_fd(), Some(&label), &rt)?;
            let netfilter = nftables::wire::open_in(fd2.as_fd(), Some(&label))?;
            let mirror = ctnl::Mirror::open_in(fd2.as_fd(), Some(&label))?;
            Ok::<_, KernelError>(Sockets {
                ns: fd2,
                route,
                netfilter: Mutex::new((netfilter, mirror)),
            })
        })
        .await
        .map_err(|e| {
            crate::kernel::Ctx::new("open sockets", ns, Some(ns)).protocol(e.to_string())
        })??;
        let s = Arc::new(opened);
        self.sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.to_string(), s.clone());
        Ok(s)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
