//! The embedded state store: /var/lib/netcompose/<project>/state.json holds the allocations
//! and the resources last applied (what the kernel cannot tell, such as why an address was
//! chosen). Written atomically (temp file + rename) and guarded by a per-project lock.

use crate::ipam::Allocations;
use crate::model::Resource;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const STATE_ROOT: &str = "/var/lib/netcompose";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format_version: u32,
    pub project: String,
    pub allocations: Allocations,
    pub resources: Vec<Resource>,
}

#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot read state {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("state {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("cannot write state {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("another netcompose is working on project `{project}` (lock {path} held)")]
    Locked { project: String, path: String },
}

pub fn project_dir(root: &Path, project: &str) -> PathBuf {
    root.join(project)
}

fn state_path(root: &Path, project: &str) -> PathBuf {
    project_dir(root, project).join("state.json")
}

/// The project's state, or None when there is none.
pub fn load(root: &Path, project: &str) -> Result<Option<State>, StateError> {
    let path = state_path(root, project);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| StateError::Parse {
            path: path.display().to_string(),
            source,
        })
}

pub fn save(root: &Path, state: &State) -> Result<(), StateError> {
    let path = state_path(root, &state.project);
    let err = |source| StateError::Write {
        path: path.display().to_string(),
        source,
    };
    fs::create_dir_all(project_dir(root, &state.project)).map_err(err)?;
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec(state).map_err(|e| err(std::io::Error::other(e)))?;
    let mut f = File::create(&tmp).map_err(err)?;
    f.write_all(&body).and_then(|_| f.sync_all()).map_err(err)?;
    fs::rename(&tmp, &path).map_err(err)
}

/// Remove the project's state directory (after `down`).
pub fn remove(root: &Path, project: &str) -> Result<(), StateError> {
    let dir = project_dir(root, project);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Write {
            path: dir.display().to_string(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Every other project's state under `root`, for subnets already in use.
pub fn others(root: &Path, project: &str) -> Vec<State> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n != project))
        .filter_map(|e| load(root, &e.file_name().to_string_lossy()).ok().flatten())
        .collect()
}

/// An exclusive lock on a project, released on drop (flock: the kernel drops it if we die).
pub struct Lock {
    _held: nix::fcntl::Flock<File>,
}

pub fn lock(root: &Path, project: &str, wait: bool) -> Result<Lock, StateError> {
    use nix::fcntl::{Flock, FlockArg};
    let dir = project_dir(root, project);
    let path = dir.join("lock");
    let err = |source| StateError::Write {
        path: path.display().to_string(),
        source,
    };
    fs::create_dir_all(&dir).map_err(err)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err)?;
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(file, arg) {
        Ok(held) => Ok(Lock { _held: held }),
        Err((_, _)) => Err(StateError::Locked {
            project: project.into(),
            path: path.display().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = State {
            format_version: FORMAT_VERSION,
            project: "p".into(),
            ..Default::default()
        };
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path(), "p").unwrap(), Some(s));
        assert!(others(dir.path(), "q").len() == 1 && others(dir.path(), "p").is_empty());
        remove(dir.path(), "p").unwrap();
        assert_eq!(load(dir.path(), "p").unwrap(), None);
    }
}
