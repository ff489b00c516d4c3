//! One agent's work on each project of a snapshot: re-place when the live nodes call for it
//! (a compare-and-swap, so one agent wins), build this host's share with the reconciler,
//! then report its status on its lease when the share or its errors changed. When the
//! project's files are the ones it last built from and only the view changed (what it derives
//! of the other hosts: their endpoints, their records; or the replicas placed on it), the
//! reconciler starts from what this host recorded instead of observing every namespace, and
//! applies just the difference (FDB and neighbour entries, DNS records, VIP map elements, a
//! replica added or taken away). A project whose spec is gone is brought down here and its
//! status deleted.

use super::share::{self, fingerprint};
use super::{spec, AgentConfig, AgentLog};
use crate::model::cluster::{ClusterView, TunnelEnd};
use crate::placement::Demand;
use crate::project_name::ProjectName;
use crate::reconcile::{Events, Observation, ReconcileError};
use crate::state::cluster::{
    allocations_key, placement_key, put_if_changed, status_key, ClusterKv, ClusterSnapshot,
    ProjectKeys, SpecRecord, StatusRecord,
};
use crate::state::kv::{Op, Unchanged};
use crate::state::{StateError, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A project as this agent last converged it.
struct Converged {
    /// The inputs' [`fingerprint`]: the same again is nothing to do.
    fingerprint: u64,
    /// What it built, when that succeeded (None after an error: the next pass observes).
    built: Option<Built>,
}

/// A share built without error: the files and the view it was built from.
struct Built {
    files: SpecRecord,
    view: ClusterView,
}

pub(super) struct Agent<'a> {
    kv: &'a dyn ClusterKv,
    local: &'a dyn Store,
    cfg: &'a AgentConfig,
    events: &'a dyn Events,
    log: &'a dyn AgentLog,
    converged: BTreeMap<String, Converged>,
    /// This host's WireGuard end, or why it has none.
    tunnel: Result<TunnelEnd, String>,
}

impl<'a> Agent<'a> {
    pub(super) fn new(
        kv: &'a dyn ClusterKv,
        local: &'a dyn Store,
        cfg: &'a AgentConfig,
        events: &'a dyn Events,
        log: &'a dyn AgentLog,
    ) -> Agent<'a> {
        Agent {
            kv,
            local,
            cfg,
            events,
            log,
            converged: BTreeMap::new(),
            tunnel: Err("the agent was started without a WireGuard engine".into()),
        }
    }

    pub(super) fn set_tunnel(&mut self, tunnel: Result<TunnelEnd, String>) {
        self.tunnel = tunnel;
    }

    /// Rebuild and republish everything on the next pass (the lease was re-granted).
    pub(super) fn forget(&mut self) {
        self.converged.clear();
    }

    fn projects_dir(&self) -> PathBuf {
        self.cfg.dir.join("projects")
    }

    /// Every project of `snapshot`, and those this host built whose spec is gone.
    pub(super) fn converge(&mut self, snapshot: &ClusterSnapshot, lease: i64) {
        for (name, keys) in &snapshot.projects {
            if keys.spec.is_none() {
                continue;
            }
            if let Err(e) = self.project(snapshot, name, keys, lease) {
                self.log.info(&format!("project {name}: {e}"));
            }
        }
        let built: Vec<String> = std::fs::read_dir(self.projects_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for name in built {
            let gone = snapshot
                .projects
                .get(&name)
                .is_none_or(|k| k.spec.is_none());
            if gone {
                if let Err(e) = self.bring_down(snapshot, &name, lease) {
                    self.log.info(&format!("project {name}: down: {e}"));
                }
            }
        }
    }

    fn project(
        &mut self,
        snapshot: &ClusterSnapshot,
        name: &str,
        keys: &ProjectKeys,
        lease: i64,
    ) -> Result<(), ReconcileError> {
        let fp = fingerprint(snapshot, keys);
        let reported = keys.status.contains_key(&self.cfg.node);
        let last = self.converged.get(name);
        if reported && last.is_some_and(|c| c.fingerprint == fp) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let Some(spec_record) = &keys.spec else {
            return Ok(());
        };
        let project = ProjectName::new(name.to_string())?;
        let dir = self.projects_dir().join(project.as_str());
        let opts = spec::materialise(&spec_record.value, &dir.join("files")).map_err(|source| {
            super::ClusterError::Spec {
                path: dir.display().to_string(),
                source,
            }
        })?;
        let checked = match crate::pipeline::checked_project(&opts) {
            Ok(c) => c,
            Err(_) => {
                let why = "the project's spec does not load here".to_string();
                self.report(snapshot, name, keys, lease, fp, vec![why], None)?;
                return Ok(());
            }
        };
        let demands = Demand::of_project(&checked.project);
        if let Some(new) = share::replace(snapshot, keys, &demands) {
            let key = placement_key(name);
            let mut guards = vec![Unchanged {
                key: key.clone(),
                since: snapshot.revision,
            }];
            let value = crate::state::cluster::encode(&key, &new)?;
            let mut ops = vec![Op::Put { key, value }];
            // A global service's replica on a node that joined: its addresses go with it.
            let stored = keys.allocations.as_ref().map(|a| &a.value);
            let extended = stored.map(|s| super::global::extended(&checked.project, s, &new));
            match extended {
                Some(Ok(Some(allocations))) => {
                    let key = allocations_key(name);
                    guards.push(Unchanged {
                        key: key.clone(),
                        since: snapshot.revision,
                    });
                    let value = crate::state::cluster::encode(&key, &allocations)?;
                    ops.push(Op::Put { key, value });
                }
                Some(Ok(None)) | None => {}
                Some(Err(errors)) => {
                    let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    self.log.info(&format!(
                        "project {name}: no address for a new replica: {}",
                        why.join("; ")
                    ));
                }
            }
            let won = self.kv.commit_on(None, &guards, &ops)?;
            let moved: Vec<String> = new
                .moved
                .iter()
                .map(|(k, m)| format!("{k} {}→{}", m.from, m.to))
                .collect();
            self.log.info(&format!(
                "project {name}: placed again{}{}",
                if won.is_some() {
                    ""
                } else {
                    " (another agent won)"
                },
                if moved.is_empty() {
                    String::new()
                } else {
                    format!(": {}", moved.join(", "))
                }
            ));
            // The new placement comes back as an event; build from it then.
            return Ok(());
        }
        let overlays = share::Overlays::of(&checked.project);
        let view = share::view(
            snapshot,
            keys,
            &self.cfg.node,
            &self.cfg.record,
            self.tunnel.as_ref().ok(),
            &overlays,
        );
        let files = share::files(keys).unwrap_or_default();
        let built = last.and_then(|c| c.built.as_ref());
        let observation = share::observation(built.map(|b| (&b.files, &b.view)), &files, &view);
        let (mut errors, observation) =
            match super::super::up_with(self.local, &opts, Some(&view), observation, self.events) {
                Ok((_, used)) => (Vec::new(), used),
                Err(e) => (vec![e.to_string()], observation),
            };
        if let (false, Err(why)) = (overlays.encrypted.is_empty(), &self.tunnel) {
            let names: Vec<String> = overlays
                .encrypted
                .iter()
                .map(|n| format!("`{n}`"))
                .collect();
            errors.push(format!(
                "encrypted network {} not built on node {}: no WireGuard here ({why})",
                names.join(", "),
                self.cfg.node
            ));
        }
        if errors.is_empty() {
            self.log.info(&format!(
                "project {name}: converged to revision {} ({} local replicas, {} remote endpoints; {}, {} ms)",
                snapshot.revision,
                view.local.len(),
                view.remote.len(),
                match observation {
                    Observation::Full => "observed in full",
                    Observation::Recorded => "the difference to its record",
                },
                started.elapsed().as_millis()
            ));
        }
        let built = errors.is_empty().then_some(Built { files, view });
        self.report(snapshot, name, keys, lease, fp, errors, built)
    }

    /// Write this node's status (the snapshot's revision, its share's digest, `errors`) on
    /// the lease unless it says that already, and remember the inputs as converged.
    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        snapshot: &ClusterSnapshot,
        name: &str,
        keys: &ProjectKeys,
        lease: i64,
        fp: u64,
        errors: Vec<String>,
        built: Option<Built>,
    ) -> Result<(), ReconcileError> {
        let current = keys.status.get(&self.cfg.node);
        // A report says which share of `up`'s writes this node has built: another node's
        // replicas or lease coming or going, or an `up` that changed nothing of this host,
        // is applied here without a new report (a scale is reported by the host it adds to).
        let digest = share::share_digest(keys, &self.cfg.node);
        let reported = current.is_some_and(|c| c.value.errors == errors && c.value.share == digest);
        if !reported {
            let status = StatusRecord {
                revision: snapshot.revision,
                share: digest,
                errors,
            };
            let put = put_if_changed(
                status_key(name, &self.cfg.node),
                &status,
                current.map(|c| c.raw.as_slice()),
            )?;
            if let Some(op) = put {
                self.kv.commit_on(Some(lease), &[], &[op])?;
            }
        }
        self.converged.insert(
            name.to_string(),
            Converged {
                fingerprint: fp,
                built,
            },
        );
        Ok(())
    }

    fn bring_down(
        &mut self,
        snapshot: &ClusterSnapshot,
        name: &str,
        lease: i64,
    ) -> Result<(), ReconcileError> {
        let project = ProjectName::new(name.to_string())?;
        super::super::down(self.local, &project, self.events)?;
        let reported = snapshot
            .projects
            .get(name)
            .is_some_and(|k| k.status.contains_key(&self.cfg.node));
        if reported {
            let key = status_key(name, &self.cfg.node);
            self.kv.commit_on(Some(lease), &[], &[Op::Delete { key }])?;
        }
        let dir = self.projects_dir().join(name);
        std::fs::remove_dir_all(&dir).map_err(|source| StateError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        self.converged.remove(name);
        self.log.info(&format!("project {name}: brought down"));
        Ok(())
    }
}
