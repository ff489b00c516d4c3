//! What a load reads before any YAML: the Compose files (-f, COMPOSE_FILE, the default file
//! and its override), the `.env` files, and the project's name, found as docker compose
//! finds them.

use super::interpolate::{self, Vars};
use super::node::Node;
use super::{env, LoadError, LoadOptions, DEFAULT_FILES, DEFAULT_OVERRIDE_FILES};
use crate::diag::{ConfigError, Diagnostics};
use crate::project_name::{NameError, MAX_LEN};
use crate::source::{Sources, Span};
use std::path::{Path, PathBuf};

/// `--project-directory`, else the first file's directory, else the current directory.
pub(super) fn project_dir(opts: &LoadOptions, files: &[PathBuf], cwd: &Path) -> PathBuf {
    opts.project_directory
        .clone()
        .or_else(|| {
            files
                .first()
                .and_then(|f| f.parent())
                .map(Path::to_path_buf)
        })
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| cwd.to_path_buf())
}

/// `-f`, else COMPOSE_FILE (split on COMPOSE_PATH_SEPARATOR, `:` by default; relative to the
/// current directory, as Compose reads it), else the first default file found and its
/// override file, if any.
pub(super) fn resolve_files(
    opts: &LoadOptions,
    vars: &Vars,
    cwd: &Path,
) -> Result<Vec<PathBuf>, LoadError> {
    if !opts.files.is_empty() {
        return Ok(opts.files.clone());
    }
    if let Some(list) = vars.get("COMPOSE_FILE").filter(|l| !l.is_empty()) {
        let sep = vars
            .get("COMPOSE_PATH_SEPARATOR")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(":");
        return Ok(list
            .split(sep)
            .filter(|f| !f.is_empty())
            .map(|f| cwd.join(f))
            .collect());
    }
    let dir = opts
        .project_directory
        .clone()
        .unwrap_or_else(|| cwd.to_path_buf());
    let first = |names: &[&str]| names.iter().map(|f| dir.join(f)).find(|p| p.is_file());
    let main = first(DEFAULT_FILES).ok_or_else(|| LoadError::NoFile {
        dir: dir.display().to_string(),
    })?;
    Ok(std::iter::once(main)
        .chain(first(DEFAULT_OVERRIDE_FILES))
        .collect())
}

/// A path as diagnostics show it: relative to the current directory when it lies below it.
pub(super) fn display_path(path: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&cwd)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Add the `--env-file`s (or `dir`/.env when none is given) to `vars`, skipping files already
/// in `read`. A variable already set (by the shell or a file read before) keeps its value;
/// among the files of one reading, a later file wins.
pub(super) fn read_env_files(
    opts: &LoadOptions,
    dir: &Path,
    vars: &mut Vars,
    read: &mut Vec<PathBuf>,
    sources: &mut Sources,
    diags: &mut Diagnostics,
) -> Result<(), LoadError> {
    let env_files: Vec<PathBuf> = if opts.env_files.is_empty() {
        Some(dir.join(".env"))
            .filter(|p| p.is_file())
            .into_iter()
            .collect()
    } else {
        opts.env_files.clone()
    };
    let mut found = Vars::new();
    for path in env_files {
        if read.contains(&path) {
            continue;
        }
        read.push(path.clone());
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut scope = found.clone();
        scope.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        match env::parse(&text, &scope) {
            Ok(v) => found.extend(v),
            Err(e) => {
                let file = sources.add(display_path(&path), text.as_str());
                let offset = e.offset(&text);
                diags.push(ConfigError::EnvFile {
                    line: e.line,
                    at: Span::new(file, offset, e.text.len()),
                });
            }
        }
    }
    for (k, v) in found {
        vars.entry(k).or_insert(v);
    }
    Ok(())
}

/// As compose-go chooses it: `-p`, else COMPOSE_PROJECT_NAME (both must already be valid
/// names; an empty one counts as unset), else the last `name:` of the files, interpolated and
/// normalized, else the directory's name, normalized.
pub(super) fn project_name(
    opts: &LoadOptions,
    vars: &Vars,
    trees: &[Node],
    dir: &Path,
    diags: &mut Diagnostics,
) -> Result<String, LoadError> {
    if let Some(p) = opts.project_name.as_ref().filter(|p| !p.is_empty()) {
        return check_project_name(p);
    }
    if let Some(p) = vars.get("COMPOSE_PROJECT_NAME").filter(|p| !p.is_empty()) {
        return check_project_name(p);
    }
    let written = trees
        .iter()
        .rev()
        .filter_map(|t| t.get("name"))
        .find(|n| n.as_str().is_some_and(|s| !s.is_empty()));
    if let Some(node) = written {
        let raw = node.as_str().unwrap_or_default();
        // Errors and unset variables are reported when the whole file is interpolated.
        let interpolated = interpolate::expand(raw, vars, &mut Default::default())
            .unwrap_or_else(|_| raw.to_string());
        let normalized = normalize_project_name(&interpolated);
        let problem = if interpolated.is_empty() {
            None
        } else if normalized.is_empty() {
            Some("nothing is left once normalized to lowercase letters, digits, `_` and `-`".into())
        } else if normalized.len() > MAX_LEN {
            Some(format!("it is longer than {MAX_LEN} characters"))
        } else {
            return check_project_name(&normalized);
        };
        // Reported at the key; loading goes on under the directory's name so that every
        // other problem is found too.
        if let Some(reason) = problem {
            diags.push(ConfigError::InvalidValue {
                what: "name".into(),
                value: interpolated,
                reason,
                hint: "write a project name of lowercase letters, digits, `_` and `-`, or pass -p NAME".into(),
                at: node.span,
            });
        }
    }
    let base = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let raw = base
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let normalized = normalize_project_name(&raw);
    if normalized.is_empty() {
        return Err(LoadError::ProjectName {
            name: raw,
            reason: "nothing is left after normalizing; pass -p NAME".into(),
        });
    }
    check_project_name(&normalized)
}

fn check_project_name(name: &str) -> Result<String, LoadError> {
    crate::project_name::ProjectName::new(name)
        .map(String::from)
        .map_err(|e| LoadError::ProjectName {
            name: name.into(),
            reason: match e {
                NameError::Empty => "it is empty".into(),
                NameError::TooLong { .. } => format!("it is longer than {MAX_LEN} characters"),
                NameError::Characters { .. } => {
                    "it must be lowercase letters, digits, `_` and `-`".into()
                }
            },
        })
}

/// Compose's normalization of a `name:` or a directory name (compose-go's
/// NormalizeProjectName): lowercase, keep `[a-z0-9_-]`, drop leading `_` and `-`.
pub fn normalize_project_name(raw: &str) -> String {
    let kept: String = raw
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}
