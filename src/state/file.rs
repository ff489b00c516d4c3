//! The file store: /var/lib/netcompose/<project>/state.json, written atomically (temp file +
//! rename), and /var/lib/netcompose/<project>/lock, held with flock (the kernel releases it if
//! the holder dies). The state can hold secrets of the network's layout: directories are 0700
//! and files 0600 whatever the umask, and existing ones are brought back to those modes.
//!
//! The lock file is unlinked when a holder releases it and the project has no state (a
//! refused `up`, a finished `down`), so nothing is left behind. That is safe with flock only
//! because every locker, once it holds the lock, checks that the file it locked is still the
//! one at the path; a waiter that was queued on an unlinked file starts over.

use super::{check_lock, Lock, Others, State, StateError, Store, Wait};
use crate::project_name::ProjectName;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{BufWriter, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// A locker that keeps losing the race with releases (each one unlinks the file it locked)
/// gives up after this many tries rather than spin.
const LOCK_TRIES: usize = 1000;
/// The buffer a state is encoded into on its way to the file.
const WRITE_BUFFER: usize = 64 * 1024;

/// Project states in one directory per project under `root`.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(root: impl Into<PathBuf>) -> FileStore {
        FileStore { root: root.into() }
    }

    /// The store of this machine, /var/lib/netcompose.
    pub fn system() -> FileStore {
        FileStore::new(super::STATE_ROOT)
    }

    pub fn project_dir(&self, project: &ProjectName) -> PathBuf {
        self.root.join(project.as_str())
    }

    fn state_path(&self, project: &ProjectName) -> PathBuf {
        self.project_dir(project).join("state.json")
    }

    fn lock_path(&self, project: &ProjectName) -> PathBuf {
        self.project_dir(project).join("lock")
    }

    /// The root and the project's directory, created 0700 or brought back to 0700.
    fn private_dirs(&self, project: &ProjectName) -> std::io::Result<PathBuf> {
        let dir = self.project_dir(project);
        for d in [&self.root, &dir] {
            match DirBuilder::new().mode(DIR_MODE).create(d) {
                Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(e),
                _ => fs::set_permissions(d, Permissions::from_mode(DIR_MODE))?,
            }
        }
        Ok(dir)
    }

    /// Every project's state but `except`'s.
    fn states(&self, except: Option<&ProjectName>) -> Others {
        let mut out = Others::default();
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return out,
            Err(source) => {
                out.unreadable.push(StateError::Read {
                    path: self.root.display().to_string(),
                    source,
                });
                return out;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(source) => {
                    out.unreadable.push(StateError::Read {
                        path: self.root.display().to_string(),
                        source,
                    });
                    continue;
                }
            };
            // Only directories named as projects are netcompose's; anything else was put
            // there by someone else and holds no allocations.
            let name = entry.file_name();
            let Some(other) = name.to_str().and_then(|n| ProjectName::new(n).ok()) else {
                continue;
            };
            if Some(&other) == except || !entry.path().is_dir() {
                continue;
            }
            match self.load(&other) {
                Ok(Some(s)) => out.states.push(s),
                Ok(None) => {}
                Err(e) => out.unreadable.push(e),
            }
        }
        out
    }
}

/// Open (creating) a file readable by its owner only, fixing the mode of an existing one.
fn private_file(path: &Path, truncate: bool) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(truncate)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

fn read_state(path: &Path) -> Result<Option<State>, StateError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    super::decode(&text)
        .map(Some)
        .map_err(|source| StateError::Parse {
            path: path.display().to_string(),
            source,
        })
}

/// A held file lock; on release, a project without state loses its lock file and directory.
struct FileLock {
    held: Option<Flock<File>>,
    dir: PathBuf,
    lock: PathBuf,
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Unlinked while still held: whoever waits on this file finds it gone once it gets the
        // lock, and starts over on a new one (see the module docs).
        if !self.dir.join("state.json").exists() {
            let _ = fs::remove_file(&self.lock);
            let _ = fs::remove_dir(&self.dir);
        }
        drop(self.held.take());
    }
}

impl Store for FileStore {
    fn load(&self, project: &ProjectName) -> Result<Option<State>, StateError> {
        read_state(&self.state_path(project))
    }

    fn save(&self, lock: &Lock, state: &State) -> Result<(), StateError> {
        check_lock(lock, state)?;
        let path = self.state_path(lock.project());
        let err = |source| StateError::Write {
            path: path.display().to_string(),
            source,
        };
        self.private_dirs(lock.project()).map_err(err)?;
        let tmp = path.with_extension("json.tmp");
        let f = private_file(&tmp, true).map_err(err)?;
        // Written as it is encoded: a state of a thousand resources is half a megabyte, which
        // a buffer of its own would grow to by doubling, copying and faulting in fresh pages.
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, f);
        super::encode_to(&mut out, state)
            .map_err(std::io::Error::from)
            .and_then(|_| out.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all())
            .map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)
    }

    fn remove(&self, lock: &Lock) -> Result<(), StateError> {
        let path = self.state_path(lock.project());
        for p in [path.with_extension("json.tmp"), path.clone()] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(StateError::Write {
                        path: p.display().to_string(),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn others(&self, project: &ProjectName) -> Others {
        self.states(Some(project))
    }

    fn all(&self) -> Others {
        self.states(None)
    }

    fn lock(&self, project: &ProjectName, wait: Wait) -> Result<Lock, StateError> {
        let path = self.lock_path(project);
        let err = |source| StateError::Write {
            path: path.display().to_string(),
            source,
        };
        let arg = match wait {
            Wait::Yes => FlockArg::LockExclusive,
            Wait::No => FlockArg::LockExclusiveNonblock,
        };
        for _ in 0..LOCK_TRIES {
            // A releaser may remove the directory at any step until the lock is ours: start
            // over.
            let opened = self
                .private_dirs(project)
                .and_then(|dir| Ok((dir, private_file(&path, false)?)));
            let (dir, file) = match opened {
                Ok(o) => o,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(err(e)),
            };
            let held = match Flock::lock(file, arg) {
                Ok(h) => h,
                Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                    return Err(StateError::Locked {
                        project: project.to_string(),
                        path: path.display().to_string(),
                    })
                }
                Err((_, errno)) => return Err(err(errno.into())),
            };
            let ours = held.metadata().map_err(err)?;
            match fs::metadata(&path) {
                Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {
                    let held = FileLock {
                        held: Some(held),
                        dir,
                        lock: path.clone(),
                    };
                    return Ok(Lock::new(project.clone(), Box::new(held)));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(err(e)),
            }
        }
        Err(err(std::io::Error::other(
            "the lock file kept being replaced while waiting for it",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ProjectName {
        ProjectName::new(n).unwrap()
    }

    fn state(project: &str) -> State {
        State {
            format_version: super::super::FORMAT_VERSION,
            project: project.into(),
            ..Default::default()
        }
    }

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let lock = store.lock(&name("p"), Wait::No).unwrap();
        store.save(&lock, &state("p")).unwrap();
        assert_eq!(store.load(&name("p")).unwrap(), Some(state("p")));
        assert_eq!(store.others(&name("q")).states.len(), 1);
        assert!(store.others(&name("p")).states.is_empty());
        store.remove(&lock).unwrap();
        assert_eq!(store.load(&name("p")).unwrap(), None);
        drop(lock);
        assert!(!dir.path().join("p").exists(), "an empty project is left");
    }

    #[test]
    fn a_write_needs_the_projects_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let lock = store.lock(&name("p"), Wait::No).unwrap();
        assert!(matches!(
            store.save(&lock, &state("q")),
            Err(StateError::WrongLock { .. })
        ));
    }

    #[test]
    fn a_second_locker_is_refused_then_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let first = store.lock(&name("p"), Wait::No).unwrap();
        assert!(matches!(
            store.lock(&name("p"), Wait::No),
            Err(StateError::Locked { .. })
        ));
        let waiter = {
            let store = store.clone();
            std::thread::spawn(move || store.lock(&name("p"), Wait::Yes).map(|_| ()))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Released without state: the file the waiter queued on is unlinked; it must start
        // over on a fresh one rather than believe it holds the lock.
        drop(first);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn a_released_lock_file_is_never_shared() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let inside = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (store, inside) = (store.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _l = store.lock(&name("p"), Wait::Yes).unwrap();
                        let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(n, 0, "two holders at once");
                        inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn lax_modes_left_by_others_are_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, Permissions::from_mode(0o755)).unwrap();
        let store = FileStore::new(&root);
        let lock = store.lock(&name("p"), Wait::No).unwrap();
        store.save(&lock, &state("p")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("p")), 0o700);
        assert_eq!(mode(&root.join("p/state.json")), 0o600);
        assert_eq!(mode(&root.join("p/lock")), 0o600);
    }

    #[test]
    fn an_unreadable_other_project_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        fs::create_dir(dir.path().join("broken")).unwrap();
        fs::write(dir.path().join("broken/state.json"), "{ not json").unwrap();
        fs::create_dir(dir.path().join("not.a.project")).unwrap();
        let others = store.others(&name("p"));
        assert!(others.states.is_empty());
        assert!(matches!(
            others.unreadable.as_slice(),
            [StateError::Parse { .. }]
        ));
    }
}
