//! Files that appear only when complete: every output (tensor files, indexes, copied configs) is
//! written to a hidden `.NAME.XXXXXX.partial` beside its target, flushed to disk, then renamed
//! over the target (or linked into place without replacing anything). A link at the target is
//! replaced by the rename, never written through.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{ErrorKind, io};

/// The directory a file lives in (`.` for a bare name).
pub fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.NAME.`: how the temporary files of `target` start.
fn temp_prefix(target: &Path) -> String {
    format!(
        ".{}.",
        target
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into())
    )
}

/// Removes `.NAME.*.partial` beside `target`: the temporary files its writers use. Returns how
/// many were removed.
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

/// An output being written: a temporary file beside its target, removed if dropped unfinished.
pub struct Partial {
    tmp: tempfile::NamedTempFile,
}

impl Partial {
    /// Creates the temporary file for `target` in the target's folder.
    pub fn beside(target: &Path) -> Result<Partial, ErrorKind> {
        let dir = dir_of(target);
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(target))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(io(format!(
                "cannot create a temporary file in {}",
                dir.display()
            )))?;
        Ok(Partial { tmp })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// The open temporary file, for sequential writes.
    pub fn file_mut(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Flushes the file to disk and moves it to `target` (replacing it only with `overwrite`),
    /// then flushes the folder so the new name survives a crash.
    pub fn persist(self, target: &Path, overwrite: bool) -> Result<(), ErrorKind> {
        self.tmp
            .as_file()
            .sync_all()
            .map_err(io("cannot flush the output to disk"))?;
        let _ = std::fs::set_permissions(self.tmp.path(), std::fs::Permissions::from_mode(0o644));
        let persisted = if overwrite {
            self.tmp.persist(target)
        } else {
            self.tmp.persist_noclobber(target)
        };
        if let Err(e) = persisted {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(ErrorKind::OutputExists(target.to_path_buf()));
            }
            return Err(ErrorKind::Io {
                context: format!("cannot move the finished file to {}", target.display()),
                source: e.error,
            });
        }
        if let Ok(d) = File::open(dir_of(target)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8], overwrite: bool) -> Result<(), ErrorKind> {
    let mut p = Partial::beside(target)?;
    p.file_mut()
        .write_all(bytes)
        .map_err(io("cannot write the temporary file"))?;
    p.persist(target, overwrite)
}

/// Copies `source` to `target` atomically. Returns the bytes copied.
pub fn copy_atomic(source: &Path, target: &Path, overwrite: bool) -> Result<u64, ErrorKind> {
    let mut from = File::open(source).map_err(io(format!("cannot open {}", source.display())))?;
    let mut p = Partial::beside(target)?;
    let n = std::io::copy(&mut from, p.file_mut())
        .map_err(io(format!("cannot copy {}", source.display())))?;
    p.persist(target, overwrite)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_leave_no_temporary_file_and_refuse_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.safetensors.index.json");
        write_atomic(&target, b"{}", false).unwrap();
        let err = write_atomic(&target, b"{ }", false).unwrap_err();
        assert!(
            matches!(&err, ErrorKind::OutputExists(p) if p == &target),
            "{err}"
        );
        assert!(err.to_string().contains("--overwrite"), "{err}");
        write_atomic(&target, b"{ }", true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{ }");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_dropped_partial_leaves_nothing_and_remove_partials_takes_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.safetensors");
        let p = Partial::beside(&target).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(p);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        std::fs::write(dir.path().join(".model.safetensors.Ab12Cd.partial"), b"x").unwrap();
        std::fs::write(dir.path().join(".other.safetensors.Ab12Cd.partial"), b"x").unwrap();
        assert_eq!(remove_partials(&target), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_link_at_the_target_is_replaced_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"original").unwrap();
        let target = dir.path().join("link");
        std::os::unix::fs::symlink(&blob, &target).unwrap();
        write_atomic(&target, b"new", true).unwrap();
        assert_eq!(std::fs::read(&blob).unwrap(), b"original");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }
}
