//! A service's `env_file`s, read as Compose reads them: paths relative to the project
//! directory, in order (a later file's value wins), in the `.env` syntax with `${VAR}`
//! interpolated from the project's environment (or literally, with `format: raw`); a missing
//! file is an error unless the entry says `required: false`.

use super::env;
use super::interpolate::Vars;
use crate::diag::{ConfigError, Diagnostics};
use crate::source::{Sources, Span};
use crate::spec::{EnvFile, Project};
use std::path::Path;

/// Fill each service's `env_file_vars` from its `env_file`s.
pub fn read(
    project: &mut Project,
    vars: &Vars,
    dir: &Path,
    sources: &mut Sources,
    diags: &mut Diagnostics,
) {
    for svc in project.services.values_mut() {
        let mut out = Vec::new();
        for file in &svc.exec.env_files {
            if let Some(mut v) = read_one(file, vars, dir, sources, diags) {
                v.sort();
                out.extend(v);
            }
        }
        svc.exec.env_file_vars = out;
    }
}

fn read_one(
    file: &EnvFile,
    vars: &Vars,
    dir: &Path,
    sources: &mut Sources,
    diags: &mut Diagnostics,
) -> Option<Vec<(String, String)>> {
    let path = dir.join(&file.path.value);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file.required => return None,
        Err(e) => {
            let (reason, hint) = match e.kind() {
                std::io::ErrorKind::NotFound => (
                    format!("{} does not exist", path.display()),
                    format!(
                        "create it, or write `{{path: {}, required: false}}` to allow it to be \
                         missing",
                        file.path.value
                    ),
                ),
                _ => (
                    format!("cannot read {}: {e}", path.display()),
                    "make it readable".to_string(),
                ),
            };
            diags.push(ConfigError::InvalidValue {
                what: "env_file".into(),
                value: file.path.value.clone(),
                reason,
                hint,
                at: file.path.span,
            });
            return None;
        }
    };
    if file.raw {
        return Some(raw(&text));
    }
    match env::parse(&text, vars) {
        Ok(v) => Some(v.into_iter().collect()),
        Err(e) => {
            let id = sources.add(path.display().to_string(), text.as_str());
            let offset = e.offset(&text);
            diags.push(ConfigError::EnvFile {
                line: e.line,
                at: Span::new(id, offset, e.text.len()),
            });
            None
        }
    }
}

/// `format: raw`: `KEY=VALUE` lines as written; blank lines and `#` comments are skipped.
fn raw(text: &str) -> Vec<(String, String)> {
    let mut map = std::collections::BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        map.insert(k.trim().to_string(), v.to_string());
    }
    map.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use crate::diag::ConfigError;
    use crate::load::{load, LoadOptions, Loaded};

    fn load_in(dir: &std::path::Path, yaml: &str) -> Loaded {
        let file = dir.join("compose.yaml");
        std::fs::write(&file, yaml).unwrap();
        load(&LoadOptions {
            files: vec![file],
            environment: Some([("SHELL_VAR".to_string(), "from-shell".to_string())].into()),
            ..Default::default()
        })
        .unwrap()
    }

    fn env_of(loaded: &Loaded, svc: &str) -> Vec<(String, String)> {
        loaded.project.services[svc].exec.env_file_vars.clone()
    }

    #[test]
    fn files_in_order_interpolated_relative_to_the_project() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("env")).unwrap();
        std::fs::write(
            dir.path().join("env/base.env"),
            "# base\nA=1\nB=\"two words\"\nC=${SHELL_VAR}\nexport D='lit ${X}'\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("over.env"), "A=2\n").unwrap();
        std::fs::write(dir.path().join("raw.env"), "R=\"${SHELL_VAR}\"\n# c\n").unwrap();
        let loaded = load_in(
            dir.path(),
            "services:\n  a:\n    env_file: [env/base.env, over.env, \
             {path: missing.env, required: false}, {path: raw.env, format: raw}]\n  \
             b:\n    env_file: over.env\n",
        );
        assert!(!loaded.diags.has_errors(), "{:?}", loaded.diags);
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            env_of(&loaded, "a"),
            pairs(&[
                ("A", "1"),
                ("B", "two words"),
                ("C", "from-shell"),
                ("D", "lit ${X}"),
                ("A", "2"),
                ("R", "\"${SHELL_VAR}\""),
            ])
        );
        assert_eq!(env_of(&loaded, "b"), pairs(&[("A", "2")]));
    }

    #[test]
    fn a_missing_required_file_or_a_bad_line_is_diagnosed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.env"), "A=1\n=oops\n").unwrap();
        let yaml = "services:\n  a:\n    env_file: [nope.env, bad.env]\n";
        let loaded = load_in(dir.path(), yaml);
        assert_eq!(loaded.diags.errors.len(), 2, "{:?}", loaded.diags);
        match &loaded.diags.errors[0] {
            ConfigError::InvalidValue { what, hint, at, .. } => {
                assert_eq!(what, "env_file");
                assert!(hint.contains("required: false"), "{hint}");
                assert_eq!(at.offset as usize, yaml.find("nope.env").unwrap());
            }
            other => panic!("{other:?}"),
        }
        match &loaded.diags.errors[1] {
            ConfigError::EnvFile { line, at } => {
                assert_eq!(*line, 2);
                assert_eq!(at.offset, 4);
                assert!(loaded
                    .sources
                    .get(at.file)
                    .unwrap()
                    .name
                    .ends_with("bad.env"));
            }
            other => panic!("{other:?}"),
        }
    }
}
