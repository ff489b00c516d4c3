//! A project as `up` loaded it, carried to the agents: [`capture`] keeps the text of every
//! file the loader read (Compose files, `.env`, `--env-file`s, services' `env_file`s) and the
//! variables they interpolate; [`materialise`] writes them back under a root-only directory
//! of the agent, at the same paths below it, so that the normal loader reads the very same
//! project (faithful by construction: one loader, the same texts, the same variables).
//! Paths written absolute in a file (an `env_file: /etc/x.env`) are read on the agent's host.

use crate::load::LoadOptions;
use crate::pipeline::Checked;
use crate::state::cluster::SpecRecord;
use std::collections::BTreeMap;
use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// The store's password never leaves the host, even if a file names it.
const NEVER_SHARED: &[&str] = &[crate::state::url::PASSWORD_ENV];

/// The record of the project `checked` (loaded with `opts`, in `environment`).
pub fn capture(
    opts: &LoadOptions,
    checked: &Checked,
    environment: &BTreeMap<String, String>,
) -> Result<SpecRecord, std::io::Error> {
    let mut texts = BTreeMap::new();
    let mut read = |path: PathBuf, required: bool| -> Result<(), std::io::Error> {
        match fs::read_to_string(&path) {
            Ok(t) => {
                texts.insert(path, t);
                Ok(())
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    };
    for f in &checked.files {
        read(f.clone(), true)?;
    }
    read(checked.working_dir.join(".env"), false)?;
    let cwd = std::env::current_dir()?;
    for f in &opts.env_files {
        read(cwd.join(f), true)?;
    }
    for svc in checked.project.services.values() {
        for f in &svc.exec.env_files {
            read(checked.working_dir.join(&f.path.value), f.required)?;
        }
    }
    let mentioned = |name: &str| {
        name.starts_with("COMPOSE_") || texts.values().any(|t: &String| t.contains(name))
    };
    let environment = environment
        .iter()
        .filter(|(k, _)| !NEVER_SHARED.contains(&k.as_str()) && mentioned(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(SpecRecord {
        name: checked.project.name.clone(),
        working_dir: checked.working_dir.clone(),
        files: checked.files.clone(),
        texts,
        environment,
        profiles: opts.profiles.clone(),
        scale: opts.scale.clone(),
    })
}

/// `path` below `root` (an absolute path loses its root; `..` is refused, so a record
/// cannot make the agent write outside its directory).
fn below(root: &Path, path: &Path) -> Result<PathBuf, std::io::Error> {
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::Prefix(_) | Component::ParentDir => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{} is not a plain path", path.display()),
                ))
            }
        }
    }
    Ok(out)
}

/// Write `spec`'s files under `root` (created 0700, files 0600; earlier files removed) and
/// say how to load them.
pub fn materialise(spec: &SpecRecord, root: &Path) -> Result<LoadOptions, std::io::Error> {
    match fs::remove_dir_all(root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for (path, text) in &spec.texts {
        let at = below(root, path)?;
        if let Some(dir) = at.parent() {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&at)?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
    }
    let working_dir = below(root, &spec.working_dir)?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&working_dir)?;
    Ok(LoadOptions {
        files: spec
            .files
            .iter()
            .map(|f| below(root, f))
            .collect::<Result<_, _>>()?,
        project_name: Some(spec.name.clone()),
        project_directory: Some(working_dir),
        env_files: Vec::new(),
        profiles: spec.profiles.clone(),
        environment: Some(spec.environment.clone().into_iter().collect()),
        scale: spec.scale.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(opts: &LoadOptions) -> Vec<crate::model::Resource> {
        let checked = crate::pipeline::checked_project(opts).unwrap();
        crate::model::build(&checked.project, &Default::default())
            .unwrap()
            .resources
    }

    /// Every example builds the same resources from the materialised record as from its
    /// files, so every networking key the model reads makes the trip.
    #[test]
    fn every_example_reads_back_the_same() {
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
        let mut seen = 0;
        for dir in fs::read_dir(examples).unwrap() {
            let file = dir.unwrap().path().join("compose.yaml");
            if !file.exists() {
                continue;
            }
            let opts = LoadOptions {
                files: vec![file.clone()],
                environment: Some(Default::default()),
                ..Default::default()
            };
            let Ok(checked) = crate::pipeline::checked_project(&opts) else {
                continue;
            };
            let spec = capture(&opts, &checked, &Default::default()).unwrap();
            let root = tempfile::tempdir().unwrap();
            let back = materialise(&spec, root.path()).unwrap();
            assert_eq!(desired(&opts), desired(&back), "{}", file.display());
            seen += 1;
        }
        assert!(seen >= 10, "{seen} examples");
    }

    #[test]
    fn interpolated_variables_travel_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        fs::write(
            &file,
            "name: sp\nservices:\n  a:\n    networks: [n]\nnetworks:\n  n:\n    ipam:\n      config: [{subnet: \"${NET}\"}]\n",
        )
        .unwrap();
        let env: BTreeMap<String, String> = [
            ("NET", "10.77.0.0/24"),
            ("SECRET", "x"),
            ("NETCOMPOSE_STORE_PASSWORD", "NET"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let opts = LoadOptions {
            files: vec![file],
            environment: Some(env.clone().into_iter().collect()),
            ..Default::default()
        };
        let checked = crate::pipeline::checked_project(&opts).unwrap();
        let spec = capture(&opts, &checked, &env).unwrap();
        assert_eq!(
            spec.environment.keys().collect::<Vec<_>>(),
            vec!["NET"],
            "only what the file names"
        );
        let root = tempfile::tempdir().unwrap();
        let back = materialise(&spec, root.path()).unwrap();
        assert_eq!(desired(&opts), desired(&back));
    }

    #[test]
    fn a_record_cannot_write_outside_the_directory() {
        let spec = SpecRecord {
            texts: [(PathBuf::from("/a/../../etc/x"), String::new())].into(),
            ..Default::default()
        };
        let root = tempfile::tempdir().unwrap();
        assert!(materialise(&spec, root.path()).is_err());
    }
}
