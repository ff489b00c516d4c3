//! The etcd store: [`KvStore`]'s layout and compare-and-swap over an etcd v3 cluster
//! (etcd-client, tested against Debian's etcd 3.4).
//!
//! The [`Store`](super::Store) trait is synchronous and etcd-client is async: the store owns a
//! small runtime (one worker thread) and every call is a task on it whose result comes back
//! over a channel, so a caller never blocks a runtime thread (and may be on any thread,
//! inside another runtime or not). The connection is made on first use.
//!
//! A member that dies or loses the leader answers Unavailable (or the connection fails);
//! such requests are retried, on whichever member the client balances to, for
//! [`RETRY_FOR`]: a leader election takes one to two seconds. A transaction retried after a
//! lost reply cannot apply twice: its guard then fails and the caller reads again.
//!
//! The lock is a key created only if absent, on a lease of [`LOCK_TTL`] kept alive by a task
//! while the lock is held and revoked when it is dropped: a holder that dies releases it
//! within the TTL.

mod cluster;

use super::kv::{Entry, Kv, KvStore, Op, Unchanged};
use super::url::EtcdUrl;
use super::StateError;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, PutOptions, TlsOptions, Txn,
    TxnOp, TxnOpResponse,
};
use std::any::Any;
use std::future::Future;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{oneshot, OnceCell};

/// How long a request is retried while no member can serve it.
pub const RETRY_FOR: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The lease of a project's lock, in seconds; kept alive every third of it.
pub const LOCK_TTL: i64 = 10;
/// How long dropping a lock waits for its lease to be revoked (it expires anyway).
const REVOKE_WAIT: Duration = Duration::from_secs(2);

/// A store in etcd.
pub type EtcdStore = KvStore<Etcd>;

#[derive(Debug, Error)]
pub enum EtcdError {
    #[error("cannot read {path} (TLS file of the store): {source}")]
    TlsFile {
        path: String,
        source: std::io::Error,
    },
    #[error("etcd user `{user}` needs a password in {}", super::url::PASSWORD_ENV)]
    NoPassword { user: String },
    #[error("cannot start the etcd client's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot reach etcd at {endpoints}: {source}")]
    Connect {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints}: {source}")]
    Request {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("etcd answered a transaction without its header")]
    NoHeader,
    #[error("the etcd client stopped before answering")]
    Stopped,
}

/// The etcd side of [`EtcdStore`].
pub struct Etcd {
    runtime: Option<tokio::runtime::Runtime>,
    conn: Arc<Conn>,
}

struct Conn {
    client: OnceCell<Client>,
    endpoints: Vec<String>,
    options: ConnectOptions,
}

impl EtcdStore {
    /// A store on the cluster `url` names; `password` is NETCOMPOSE_STORE_PASSWORD's, needed
    /// when the URL names a user. Nothing is contacted yet.
    pub fn open(url: &EtcdUrl, password: Option<String>) -> Result<EtcdStore, EtcdError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(2))
            .with_require_leader(true);
        if let Some(user) = &url.user {
            let Some(password) = password else {
                return Err(EtcdError::NoPassword { user: user.clone() });
            };
            options = options.with_user(user.clone(), password);
        }
        if let Some(tls) = &url.tls {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|source| EtcdError::TlsFile {
                    path: p.display().to_string(),
                    source,
                })
            };
            let mut config = TlsOptions::new();
            config = match &tls.ca {
                Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
                None => config.with_native_roots(),
            };
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(config);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netcompose-etcd")
            .enable_all()
            .build()
            .map_err(EtcdError::Runtime)?;
        Ok(KvStore::new(Etcd {
            runtime: Some(runtime),
            conn: Arc::new(Conn {
                client: OnceCell::new(),
                endpoints: url.grpc_endpoints(),
                options,
            }),
        }))
    }
}

impl EtcdStore {
    /// The members' client URLs, as the client dials them.
    pub fn endpoints(&self) -> &[String] {
        &self.kv().conn.endpoints
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Safe from any thread, also inside another runtime; pending tasks are dropped.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether a failed request may succeed on another try (a member down, no leader yet).
fn transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(s) => match s.code() {
            // Cancelled: the request outlived the client's timeout (a member that died with
            // the connection open).
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => true,
            Code::Ok
            | Code::Unknown
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::ResourceExhausted
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss
            | Code::Unauthenticated => false,
        },
        E::InvalidArgs(_)
        | E::InvalidUri(_)
        | E::WatchError(_)
        | E::Utf8Error(_)
        | E::LeaseKeepAliveError(_)
        | E::ElectError(_)
        | E::InvalidMetadataValue(_)
        | E::EndpointError(_)
        | E::EndpointsNotManaged
        | E::Internal(_) => false,
    }
}

impl Conn {
    fn shown(&self) -> String {
        self.endpoints.join(",")
    }

    async fn client(&self) -> Result<Client, etcd_client::Error> {
        self.client
            .get_or_try_init(|| Client::connect(&self.endpoints, Some(self.options.clone())))
            .await
            .cloned()
    }

    /// `op` on a client, retried while it fails transiently, for at most [`RETRY_FOR`].
    async fn retrying<T, F, Fut>(&self, op: F) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let connected = self.client().await;
            let result = match connected {
                Ok(c) => op(c).await.map_err(|source| EtcdError::Request {
                    endpoints: self.shown(),
                    source,
                }),
                Err(source) => Err(EtcdError::Connect {
                    endpoints: self.shown(),
                    source,
                }),
            };
            match result {
                Err(EtcdError::Request { source, .. } | EtcdError::Connect { source, .. })
                    if transient(&source) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }
}

impl Etcd {
    /// One guarded transaction: `ops` apply only if no guarded key changed after its revision;
    /// puts go on `lease` when one is given (the agents' keys). Some(revision) when it applied.
    pub(super) fn commit_leased(
        &self,
        lease: Option<i64>,
        guards: &[Unchanged],
        ops: &[Op],
    ) -> Result<Option<i64>, StateError> {
        let compares: Vec<Compare> = guards
            .iter()
            .map(|g| Compare::mod_revision(g.key.as_str(), CompareOp::Less, g.since + 1))
            .collect();
        let put = lease.map(|l| PutOptions::new().with_lease(l));
        let ops: Vec<TxnOp> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(key.as_str(), value.clone(), put.clone()),
                Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        Ok(self.call(move |conn| async move {
            let resp = conn
                .retrying(|mut c| {
                    let txn = Txn::new().when(compares.clone()).and_then(ops.clone());
                    async move { c.txn(txn).await }
                })
                .await?;
            let rev = revision(resp.header())?;
            Ok(resp.succeeded().then_some(rev))
        })?)
    }

    /// Run `job` on the store's runtime and wait for its answer on this thread.
    fn call<T, F, Fut>(&self, job: F) -> Result<T, EtcdError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Conn>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, EtcdError>> + Send + 'static,
    {
        let Some(rt) = &self.runtime else {
            return Err(EtcdError::Stopped);
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let conn = self.conn.clone();
        rt.spawn(async move {
            let _ = tx.send(job(conn).await);
        });
        rx.recv().map_err(|_| EtcdError::Stopped)?
    }
}

fn revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64, EtcdError> {
    header.map(|h| h.revision()).ok_or(EtcdError::NoHeader)
}

impl Kv for Etcd {
    fn range(&self, prefix: &str) -> Result<(i64, Vec<Entry>), StateError> {
        let prefix = prefix.to_string();
        Ok(self.call(move |conn| async move {
            let resp = conn
                .retrying(|mut c| {
                    let prefix = prefix.clone();
                    async move {
                        c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                            .await
                    }
                })
                .await?;
            let rev = revision(resp.header())?;
            let entries = resp
                .kvs()
                .iter()
                .map(|kv| Entry {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: kv.value().to_vec(),
                })
                .collect();
            Ok((rev, entries))
        })?)
    }

    fn commit(&self, guards: &[Unchanged], ops: &[Op]) -> Result<Option<i64>, StateError> {
        self.commit_leased(None, guards, ops)
    }

    fn hold(&self, key: &str) -> Result<Result<Box<dyn Any + Send>, String>, StateError> {
        let key = key.to_string();
        let token = format!(
            "{} pid {} ({:016x})",
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id(),
            fastrand::u64(..)
        );
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::sync_channel::<()>(1);
        let held = self.call(move |conn| async move {
            let lease = conn
                .retrying(|mut c| async move { c.lease_grant(LOCK_TTL, None).await })
                .await?
                .id();
            let resp = conn
                .retrying(|mut c| {
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(
                            key.as_str(),
                            token.as_str(),
                            Some(PutOptions::new().with_lease(lease)),
                        )])
                        .or_else([TxnOp::get(key.as_str(), None)]);
                    async move { c.txn(txn).await }
                })
                .await?;
            let holder = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                TxnOpResponse::Put(_) | TxnOpResponse::Delete(_) | TxnOpResponse::Txn(_) => None,
            });
            // A retried transaction whose first try created the key finds our own token.
            let ours = resp.succeeded() || holder.as_deref() == Some(token.as_str());
            if !ours {
                let _ = conn
                    .retrying(|mut c| async move { c.lease_revoke(lease).await })
                    .await;
                return Ok(Err(holder.unwrap_or_else(|| "another netcompose".into())));
            }
            tokio::spawn(keep_alive(conn, lease, stop_rx, done_tx));
            Ok(Ok(()))
        })?;
        Ok(held.map(|()| {
            Box::new(LeaseHold {
                stop: Some(stop_tx),
                done: done_rx,
            }) as Box<dyn Any + Send>
        }))
    }
}

/// Keep `lease` alive until `stop` fires (or its sender is dropped), then revoke it.
async fn keep_alive(
    conn: Arc<Conn>,
    lease: i64,
    mut stop: oneshot::Receiver<()>,
    done: mpsc::SyncSender<()>,
) {
    let every = Duration::from_secs((LOCK_TTL / 3).max(1) as u64);
    let mut keeper = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(every) => {}
        }
        if keeper.is_none() {
            keeper = conn
                .retrying(|mut c| async move { c.lease_keep_alive(lease).await })
                .await
                .ok();
        }
        // A failed keep-alive opens a new stream next time; the lease outlives a few misses.
        if let Some((k, s)) = keeper.as_mut() {
            if k.keep_alive().await.is_err() || s.message().await.is_err() {
                keeper = None;
            }
        }
    }
    let _ = conn
        .retrying(|mut c| async move { c.lease_revoke(lease).await })
        .await;
    let _ = done.send(());
}

/// A held lock: dropping it stops the keep-alive and waits (briefly) for the revoke.
struct LeaseHold {
    stop: Option<oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.done.recv_timeout(REVOKE_WAIT);
    }
}
