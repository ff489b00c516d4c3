//! The project's log: one file, `run.log`, with a line per output line of every `x-run`
//! process, prefixed as Compose does (`web-1 | ...`), and a line per lifecycle event
//! (`web-1 # exited with status 1; restarting in 200 ms`). It is rotated to `run.log.1` past
//! [`MAX_SIZE`]. `netcompose logs` reads it back.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Rotate past this size (the previous file is kept as `.1`: at most twice this on disk).
pub const MAX_SIZE: u64 = 16 << 20;

/// Separator of an output line.
pub const OUTPUT: char = '|';
/// Separator of a lifecycle line.
pub const EVENT: char = '#';

pub struct LogSink {
    path: PathBuf,
    file: Mutex<Option<(File, u64)>>,
}

impl LogSink {
    pub fn new(path: PathBuf) -> LogSink {
        LogSink {
            path,
            file: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `<prefix> <sep> <text>` (one line; a trailing newline of `text` is dropped).
    pub fn line(&self, prefix: &str, sep: char, text: &str) {
        let text = text.trim_end_matches(['\n', '\r']);
        let line = format!("{prefix} {sep} {text}\n");
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        if guard.as_ref().is_some_and(|(_, size)| *size > MAX_SIZE) {
            *guard = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, old);
        }
        if guard.is_none() {
            // Root's only, even if an older version made it readable: output can hold secrets.
            *guard = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .and_then(|f| {
                    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                    Ok(f)
                })
                .ok()
                .map(|f| {
                    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    (f, size)
                });
        }
        if let Some((f, size)) = guard.as_mut() {
            if f.write_all(line.as_bytes()).is_ok() {
                *size += line.len() as u64;
            }
        }
    }
}

/// The replica name (`web-1`) of a log line, and whether it belongs to `service`.
pub fn line_service(line: &str) -> Option<&str> {
    let (prefix, _) = line.split_once(' ')?;
    prefix.rsplit_once('-').map(|(svc, _)| svc)
}

/// Whether a line is shown for the given service filter.
pub fn shown(line: &str, services: &[String]) -> bool {
    services.is_empty() || line_service(line).is_some_and(|s| services.iter().any(|x| x == s))
}

/// Print the log (the rotated part first), filtered; with `follow`, keep printing new lines
/// until interrupted. Returns whether there was a log at all.
pub fn print(
    path: &Path,
    services: &[String],
    follow: bool,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let mut old = path.to_path_buf().into_os_string();
    old.push(".1");
    let mut found = false;
    if let Ok(text) = std::fs::read(&old) {
        found = true;
        emit(&text, services, out)?;
    }
    let mut pos = 0u64;
    let mut ino = 0u64;
    let mut pending = Vec::new();
    loop {
        use std::os::unix::fs::MetadataExt;
        match File::open(path) {
            Ok(mut f) => {
                found = true;
                let meta = f.metadata()?;
                if meta.ino() != ino || meta.len() < pos {
                    // First open, or rotated: start at the beginning of the new file.
                    ino = meta.ino();
                    pos = 0;
                }
                f.seek(SeekFrom::Start(pos))?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                pos += buf.len() as u64;
                pending.extend_from_slice(&buf);
                if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                    let complete: Vec<u8> = pending.drain(..=end).collect();
                    emit(&complete, services, out)?;
                    out.flush()?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if !follow {
            if !pending.is_empty() {
                pending.push(b'\n');
                emit(&pending, services, out)?;
            }
            return Ok(found);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn emit(text: &[u8], services: &[String], out: &mut dyn Write) -> std::io::Result<()> {
    for line in String::from_utf8_lossy(text).lines() {
        if shown(line, services) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_filters_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::new(dir.path().join("run.log"));
        sink.line("web-1", OUTPUT, "hello\n");
        sink.line("api-server-2", OUTPUT, "there");
        sink.line("web-1", EVENT, "exited with status 0");
        let mut out = Vec::new();
        assert!(print(sink.path(), &["web".into()], false, &mut out).unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "web-1 | hello\nweb-1 # exited with status 0\n"
        );
        let mut out = Vec::new();
        print(sink.path(), &["api-server".into()], false, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "api-server-2 | there\n");
        let mut out = Vec::new();
        assert!(!print(&dir.path().join("none.log"), &[], false, &mut out).unwrap());
    }
}
