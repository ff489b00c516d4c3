//! A project's name, validated once at the edge: it becomes part of paths under
//! /var/lib/netcompose and /run/netcompose, of namespace and link names, and of marks, so a
//! name such as `..` or `a/b` must never get that far. Compose's rule: lowercase letters,
//! digits, `_` and `-`, starting with a letter or a digit.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// Longest accepted name: one path component and one DNS label.
pub const MAX_LEN: usize = 63;

/// A valid project name; the only way to build one is [`ProjectName::new`] (or `parse`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectName(String);

#[derive(Debug, Clone, PartialEq, Eq, Error, miette::Diagnostic)]
#[diagnostic(
    code(netcompose::project_name),
    help(
        "a project name is lowercase letters, digits, `_` and `-`, starting with a letter or digit"
    )
)]
pub enum NameError {
    #[error("a project name may not be empty")]
    Empty,
    #[error("project name `{name}` is longer than {MAX_LEN} characters")]
    TooLong { name: String },
    #[error("project name `{name}` is invalid")]
    Characters { name: String },
}

impl ProjectName {
    pub fn new(name: impl Into<String>) -> Result<ProjectName, NameError> {
        let name = name.into();
        let first_ok = match name.chars().next() {
            None => return Err(NameError::Empty),
            Some(c) => c.is_ascii_lowercase() || c.is_ascii_digit(),
        };
        let rest_ok = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !(first_ok && rest_ok) {
            return Err(NameError::Characters { name });
        }
        if name.len() > MAX_LEN {
            return Err(NameError::TooLong { name });
        }
        Ok(ProjectName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ProjectName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ProjectName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ProjectName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProjectName::new(s)
    }
}

impl TryFrom<String> for ProjectName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ProjectName::new(s)
    }
}

impl From<ProjectName> for String {
    fn from(n: ProjectName) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_compose_names() {
        for ok in ["a", "demo", "my-app_1", "0x", &"a".repeat(MAX_LEN)] {
            assert_eq!(ProjectName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_what_could_leave_a_directory() {
        for bad in [
            "", "..", ".", "../x", "a/b", "/", "-a", "_a", "A", "a.b", "a b", "é",
        ] {
            assert!(ProjectName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            ProjectName::new("a".repeat(MAX_LEN + 1)),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<ProjectName>("\"../x\"").is_err());
        let n: ProjectName = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(n.to_string(), "web");
    }
}
