//! The client side of `netcompose stop|start|restart|top`: requests to the project daemon, and
//! the processes of each `x-run` replica as the kernel lists them.
//!
//! `top` asks the daemon which processes it runs, then reads what each started: every pid in
//! the cgroup leaves of that process (`x-run/<name>.<k>`, see [`super::contain`]), which holds
//! whatever it forked, whatever it did with sessions; without cgroup v2, the descendants of the
//! pid the daemon started.

use super::{config_path, contain, request, runner, DaemonConfig, DaemonError, Reply, Request};
use crate::project_name::ProjectName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What `stop`, `start` and `restart` ask of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Stop,
    Start,
    Restart,
}

/// How long a stop of the project's processes may take: the longest grace period its
/// configuration gives, and a margin for the kill after it.
pub fn stop_timeout(project: &ProjectName) -> Duration {
    let longest = std::fs::read(config_path(project))
        .ok()
        .and_then(|b| serde_json::from_slice::<DaemonConfig>(&b).ok())
        .and_then(|cfg| {
            cfg.processes
                .iter()
                .filter_map(|p| p.stop_grace_period_ms)
                .max()
        })
        .map_or(runner::GRACE, |ms| {
            Duration::from_millis(ms).max(runner::GRACE)
        });
    longest + Duration::from_secs(5)
}

/// Stop, start or restart the x-run processes of `services` (all when empty); the reply
/// comes once they are stopped or started.
pub fn control(
    project: &ProjectName,
    action: Action,
    services: &[String],
) -> Result<Reply, DaemonError> {
    let req = Request::Processes {
        action,
        services: services.to_vec(),
    };
    request(
        project,
        &req,
        stop_timeout(project) + Duration::from_secs(5),
    )
}

/// One process of a replica, as `top` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopProcess {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    /// The user's name from /etc/passwd, else the uid.
    pub user: String,
    /// The command line, or `[comm]` for a process without one.
    pub cmd: String,
}

/// The processes an x-run replica started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Top {
    /// `<service>-<n>`.
    pub name: String,
    pub service: String,
    /// `running`, `stopped`, `exited`, ... as `ps` shows it.
    pub state: String,
    pub processes: Vec<TopProcess>,
}

/// The processes of the x-run replicas of `services` (all when empty).
pub fn top(project: &ProjectName, services: &[String]) -> Result<Vec<Top>, DaemonError> {
    let reply = request(project, &Request::Status, Duration::from_secs(5))?;
    let leaves = contain::Cgroups::find(project)
        .and_then(|cg| cg.x_run())
        .ok()
        .map(|x| x.path().to_path_buf());
    let table = ProcTable::read();
    // An `init: true` reaper is a fork of the daemon that never execs: it has the daemon's
    // command line, and is shown by its name instead.
    let daemon_cmdline = std::fs::read(format!("/proc/{}/cmdline", reply.pid)).ok();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut out = Vec::new();
    for p in reply.processes {
        if !services.is_empty() && !services.contains(&p.service) {
            continue;
        }
        let mut pids = match &leaves {
            Some(dir) => leaf_pids(dir, &p.name),
            None => p.pid.map(|pid| table.descendants(pid)).unwrap_or_default(),
        };
        pids.sort_unstable();
        pids.dedup();
        let processes = pids
            .into_iter()
            .filter_map(|pid| table.describe(pid, &passwd, daemon_cmdline.as_deref()))
            .collect();
        out.push(Top {
            name: p.name,
            service: p.service,
            state: p.state,
            processes,
        });
    }
    Ok(out)
}

/// The pids in every leaf `<name>.<k>` under `dir` (more than one while a restart clears the
/// last run's).
fn leaf_pids(dir: &std::path::Path, name: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let file = entry.file_name();
        let ours = file
            .to_str()
            .and_then(|f| f.strip_prefix(name)?.strip_prefix('.'))
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
        if ours {
            let leaf = crate::kernel::cgroup::Cgroup::at(entry.path());
            pids.extend(leaf.pids().unwrap_or_default());
        }
    }
    pids
}

/// Every process's parent, from /proc/<pid>/stat.
struct ProcTable {
    parents: BTreeMap<i32, i32>,
}

impl ProcTable {
    fn read() -> ProcTable {
        let mut parents = BTreeMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_ppid(pid) {
                parents.insert(pid, ppid);
            }
        }
        ProcTable { parents }
    }

    /// `root` and every process below it.
    fn descendants(&self, root: i32) -> Vec<i32> {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            out.extend(
                self.parents
                    .iter()
                    .filter(|(_, pp)| **pp == parent)
                    .map(|(p, _)| *p),
            );
            i += 1;
        }
        out
    }

    /// A process that is gone by now is left out; one whose command line is `daemon`'s is
    /// shown as `[comm]`.
    fn describe(&self, pid: i32, passwd: &str, daemon: Option<&[u8]>) -> Option<TopProcess> {
        let ppid = self.parents.get(&pid).copied().or_else(|| stat_ppid(pid))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let forked = daemon.is_some_and(|d| d == cmdline.as_slice());
        let words: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        let cmd = if words.is_empty() || forked {
            let comm = status
                .lines()
                .find_map(|l| l.strip_prefix("Name:"))
                .unwrap_or_default()
                .trim();
            format!("[{comm}]")
        } else {
            words.join(" ")
        };
        Some(TopProcess {
            pid,
            ppid,
            uid,
            user: user_name(passwd, uid),
            cmd,
        })
    }
}

/// The parent pid from /proc/<pid>/stat (after the command name, which may hold anything).
fn stat_ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn user_name(passwd: &str, uid: u32) -> String {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[2].parse() == Ok(uid))
        .map_or_else(|| uid.to_string(), |f| f[0].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_users() {
        let passwd = "root:x:0:0::/root:/bin/sh\nweb:x:1001:1001::/srv:/bin/sh\n";
        assert_eq!(user_name(passwd, 0), "root");
        assert_eq!(user_name(passwd, 1001), "web");
        assert_eq!(user_name(passwd, 7), "7");
    }

    #[test]
    fn this_process_and_its_parent() {
        let me = std::process::id() as i32;
        let table = ProcTable::read();
        let p = table.describe(me, "", None).unwrap();
        let mine = std::fs::read("/proc/self/cmdline").unwrap();
        assert!(table
            .describe(me, "", Some(&mine))
            .unwrap()
            .cmd
            .starts_with('['));
        assert_eq!(p.pid, me);
        assert_eq!(p.ppid, nix::unistd::getppid().as_raw());
        assert!(table.descendants(p.ppid).contains(&me));
    }

    #[test]
    fn actions_on_the_wire() {
        let req = Request::Processes {
            action: Action::Restart,
            services: vec!["web".into()],
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"op":"processes","action":"restart","services":["web"]}"#
        );
    }
}
