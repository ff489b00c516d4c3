//! The cluster's keys on etcd: listings with each key's revision and lease, transactions on
//! a lease, leases granted, renewed and revoked, and watches from an explicit revision (a
//! watch opened "now" on a follower can start before it applied a put another member acked).
//! Every call runs on the store's runtime like the store's own; a watch is a task that
//! forwards what it sees to a channel the caller reads on its own thread.

use super::{revision, Etcd};
use crate::state::cluster::{ClusterKv, Record, Watched};
use crate::state::kv::{Op, Unchanged};
use crate::state::StateError;
use etcd_client::{GetOptions, WatchOptions};
use std::sync::mpsc;

impl ClusterKv for Etcd {
    fn list(&self, prefix: &str) -> Result<(i64, Vec<Record>), StateError> {
        let prefix = prefix.to_string();
        Ok(self.call(move |conn| async move {
            let resp = conn
                .retrying(|mut c| {
                    let prefix = prefix.clone();
                    async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
                })
                .await?;
            let rev = revision(resp.header())?;
            let records = resp
                .kvs()
                .iter()
                .map(|kv| Record {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                    lease: kv.lease(),
                })
                .collect();
            Ok((rev, records))
        })?)
    }

    fn commit_on(
        &self,
        lease: Option<i64>,
        guards: &[Unchanged],
        ops: &[Op],
    ) -> Result<Option<i64>, StateError> {
        self.commit_leased(lease, guards, ops)
    }

    fn grant(&self, ttl: i64) -> Result<i64, StateError> {
        Ok(self.call(move |conn| async move {
            Ok(conn
                .retrying(|mut c| async move { c.lease_grant(ttl, None).await })
                .await?
                .id())
        })?)
    }

    fn keep_alive(&self, lease: i64) -> Result<Option<i64>, StateError> {
        let renewed = self.call(move |conn| async move {
            let ttl = conn
                .retrying(|mut c| async move {
                    let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                    keeper.keep_alive().await?;
                    Ok(stream.message().await?.map_or(0, |m| m.ttl()))
                })
                .await?;
            Ok((ttl > 0).then_some(ttl))
        });
        match renewed {
            Ok(ttl) => Ok(ttl),
            // etcd ends the keep-alive stream of a lease it does not know with an error: ask
            // whether the lease exists before calling the failure the store's.
            Err(e) => match self.time_to_live(lease)? {
                None => Ok(None),
                Some(_) => Err(e.into()),
            },
        }
    }

    fn time_to_live(&self, lease: i64) -> Result<Option<i64>, StateError> {
        Ok(self.call(move |conn| async move {
            let ttl = conn
                .retrying(|mut c| async move { c.lease_time_to_live(lease, None).await })
                .await?
                .ttl();
            Ok((ttl > 0).then_some(ttl))
        })?)
    }

    fn revoke(&self, lease: i64) -> Result<(), StateError> {
        Ok(self.call(move |conn| async move {
            conn.retrying(|mut c| async move { c.lease_revoke(lease).await })
                .await?;
            Ok(())
        })?)
    }

    fn watch(&self, prefix: &str, from: i64) -> Result<mpsc::Receiver<Watched>, StateError> {
        let Some(rt) = &self.runtime else {
            return Err(super::EtcdError::Stopped.into());
        };
        let (tx, rx) = mpsc::channel();
        let conn = self.conn.clone();
        let prefix = prefix.to_string();
        rt.spawn(async move {
            let options = WatchOptions::new().with_prefix().with_start_revision(from);
            let opened = conn
                .retrying(|mut c| {
                    let (prefix, options) = (prefix.clone(), options.clone());
                    async move { c.watch(prefix, Some(options)).await }
                })
                .await;
            let mut stream = match opened {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Watched::Ended(e.to_string()));
                    return;
                }
            };
            loop {
                let seen = match stream.message().await {
                    Ok(Some(m)) if m.compact_revision() > 0 => Watched::Compacted,
                    Ok(Some(m)) if m.canceled() => Watched::Ended(m.cancel_reason().into()),
                    Ok(Some(m)) if m.events().is_empty() => continue,
                    Ok(Some(m)) => match m.header() {
                        Some(h) => Watched::Changed {
                            revision: h.revision(),
                        },
                        None => continue,
                    },
                    Ok(None) => Watched::Ended("the watch stream closed".into()),
                    Err(e) => Watched::Ended(e.to_string()),
                };
                let last = !matches!(seen, Watched::Changed { .. });
                if tx.send(seen).is_err() || last {
                    return;
                }
            }
        });
        Ok(rx)
    }
}
