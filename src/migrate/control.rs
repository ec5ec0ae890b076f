//! Stopping a run cleanly: which outputs are being written right now, and removing their
//! temporary files when the run is interrupted. Also the atomic write and copy used for indexes
//! and copied files (the same temp + fsync + rename as the tensor writer, same temp names).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared between a run and whoever may interrupt it (the CLI's Ctrl-C handler).
#[derive(Debug, Default)]
pub struct Control {
    stopped: AtomicBool,
    in_flight: Mutex<BTreeSet<PathBuf>>,
}

/// An output registered as being written; unregistered when dropped.
pub struct InFlight<'a> {
    control: &'a Control,
    path: PathBuf,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.control.in_flight.lock() {
            set.remove(&self.path);
        }
    }
}

impl Control {
    /// A control that has not been interrupted.
    pub fn new() -> Self {
        Control::default()
    }

    /// True once [`Control::interrupt`] was called: no new file is started.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Registers `output` before its temporary file is created; `None` once interrupted.
    pub fn begin(&self, output: &Path) -> Option<InFlight<'_>> {
        let mut set = self.in_flight.lock().ok()?;
        if self.is_stopped() {
            return None;
        }
        set.insert(output.to_path_buf());
        Some(InFlight {
            control: self,
            path: output.to_path_buf(),
        })
    }

    /// Stops the run: no new output is started, and the temporary files of the outputs being
    /// written are removed (their writers fail or the process exits; no final name is ever
    /// touched). Returns how many temporary files were removed. Safe to call more than once.
    pub fn interrupt(&self) -> usize {
        self.stopped.store(true, Ordering::SeqCst);
        let set = match self.in_flight.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        set.iter().map(|p| remove_partials(p)).sum()
    }
}

/// The directory a file lives in (`.` for a bare name).
pub(crate) fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_prefix(target: &Path) -> String {
    format!(
        ".{}.",
        target
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into())
    )
}

/// Removes `.NAME.*.partial` beside `target`: the temporary files its writer uses.
pub fn remove_partials(target: &Path) -> usize {
    let prefix = temp_prefix(target);
    let Ok(entries) = std::fs::read_dir(dir_of(target)) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".partial")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

fn temp_beside(target: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&temp_prefix(target))
        .suffix(".partial")
        .tempfile_in(dir_of(target))
}

fn persist(tmp: tempfile::NamedTempFile, target: &Path, overwrite: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .sync_all()
        .map_err(|e| format!("{}: cannot flush to disk: {e}", target.display()))?;
    let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
    let done = if overwrite {
        tmp.persist(target)
    } else {
        tmp.persist_noclobber(target)
    };
    done.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{}: already exists (pass --overwrite to replace it)",
                target.display()
            )
        } else {
            format!(
                "{}: cannot move the finished file into place: {}",
                target.display(),
                e.error
            )
        }
    })?;
    if let Ok(d) = File::open(dir_of(target)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `target` atomically (temp + fsync + rename).
pub fn write_atomic(target: &Path, bytes: &[u8], overwrite: bool) -> Result<(), String> {
    let mut tmp = temp_beside(target)
        .map_err(|e| format!("{}: cannot create a temporary file: {e}", target.display()))?;
    tmp.write_all(bytes)
        .map_err(|e| format!("{}: cannot write: {e}", target.display()))?;
    persist(tmp, target, overwrite)
}

/// Copies `source` to `target` atomically (temp + fsync + rename). Returns the bytes copied.
pub fn copy_atomic(source: &Path, target: &Path, overwrite: bool) -> Result<u64, String> {
    let mut from =
        File::open(source).map_err(|e| format!("{}: cannot open: {e}", source.display()))?;
    let mut tmp = temp_beside(target)
        .map_err(|e| format!("{}: cannot create a temporary file: {e}", target.display()))?;
    let n = std::io::copy(&mut from, tmp.as_file_mut()).map_err(|e| {
        format!(
            "{}: cannot copy to {}: {e}",
            source.display(),
            target.display()
        )
    })?;
    persist(tmp, target, overwrite)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_removes_the_temporary_files_of_outputs_in_flight_and_stops_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model.safetensors");
        let c = Control::new();
        let guard = c.begin(&out).unwrap();
        let partial = dir.path().join(".model.safetensors.Ab12Cd.partial");
        let other = dir.path().join(".other.safetensors.Ab12Cd.partial");
        std::fs::write(&partial, b"half").unwrap();
        std::fs::write(&other, b"not ours").unwrap();
        assert_eq!(c.interrupt(), 1);
        assert!(!partial.exists() && other.exists());
        assert!(c.is_stopped() && c.begin(&dir.path().join("next.safetensors")).is_none());
        drop(guard);
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file_and_refuse_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.safetensors.index.json");
        write_atomic(&target, b"{}", false).unwrap();
        assert!(
            write_atomic(&target, b"{ }", false)
                .unwrap_err()
                .contains("--overwrite")
        );
        write_atomic(&target, b"{ }", true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{ }");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
