//! Source files and spans: every value read from a Compose file remembers where it came from,
//! so that any later stage can point a diagnostic at the exact file, line and column.

use miette::{NamedSource, SourceSpan};
use std::sync::Arc;

/// Index of a file in [`Sources`].
pub type FileId = u16;

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub offset: u32,
    pub len: u32,
}

impl Span {
    pub fn new(file: FileId, offset: usize, len: usize) -> Self {
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Span {
            file,
            offset: clamp(offset),
            len: clamp(len),
        }
    }
}

impl From<Span> for SourceSpan {
    fn from(s: Span) -> Self {
        SourceSpan::new((s.offset as usize).into(), s.len as usize)
    }
}

/// One loaded file: its display name and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
}

/// Every file read for a project, addressed by [`FileId`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<Arc<str>>) -> FileId {
        self.files.push(SourceFile {
            name: name.into(),
            text: text.into(),
        });
        FileId::try_from(self.files.len() - 1).unwrap_or(FileId::MAX)
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id as usize)
    }

    /// A miette source for the file a span points into.
    pub fn named(&self, id: FileId) -> NamedSource<String> {
        match self.get(id) {
            Some(f) => NamedSource::new(f.name.clone(), f.text.to_string()),
            None => NamedSource::new("<unknown>", String::new()),
        }
    }

    /// 1-based line and column of a span, for plain-text output and tests.
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        let Some(f) = self.get(span.file) else {
            return (0, 0);
        };
        let upto = &f.text[..(span.offset as usize).min(f.text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}
