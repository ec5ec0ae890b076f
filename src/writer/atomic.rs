//! Files that appear only when complete. Where the filesystem allows it (ext4, xfs, btrfs,
//! tmpfs), an output is an unnamed file in its target folder (`O_TMPFILE`): a crash at any moment
//! leaves nothing at all, and the file is linked under its name only once complete and flushed.
//! Elsewhere (NFS, some FUSE mounts) it is a hidden `.NAME.HOST-PID.XXXXXX.partial` beside its
//! target, naming its writer, so a later run removes the ones whose writer is gone
//! ([`remove_stale_partials`]). Either way a link at the target is replaced by the final rename,
//! never written through, and a file another writer finished first is never clobbered unless
//! asked.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

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

/// This machine's name, as the temporary names record it (`-` and `.` kept; `/` never occurs).
/// Asked of the system once per process.
fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(read_host)
}

fn read_host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).replace(['/', '\0'], "_");
    if ok && !name.is_empty() {
        name
    } else {
        "localhost".into()
    }
}

/// Who wrote a temporary file, read back from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// A process on this machine.
    Here {
        /// Its pid.
        pid: u32,
        /// Whether it still runs.
        alive: bool,
    },
    /// A process on another machine (shared filesystems); its state cannot be known here.
    Elsewhere {
        /// The machine's name.
        host: String,
    },
    /// A name without a writer (written by an older version of this tool).
    Unknown,
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// The writer a temporary file of `target` names, or `None` when `name` is not one.
pub fn writer_of(target: &Path, name: &str) -> Option<Writer> {
    let rest = name
        .strip_prefix(&temp_prefix(target))?
        .strip_suffix(".partial")?;
    let Some((owner, _random)) = rest.rsplit_once('.') else {
        return Some(Writer::Unknown);
    };
    Some(match owner.rsplit_once('-') {
        Some((h, pid)) => match pid.parse::<u32>() {
            Ok(pid) if h == host() => Writer::Here {
                pid,
                alive: alive(pid),
            },
            Ok(_) => Writer::Elsewhere {
                host: h.to_string(),
            },
            Err(_) => Writer::Unknown,
        },
        None => Writer::Unknown,
    })
}

/// The writer a temporary file names (`.NAME.HOST-PID.XXXXXX.partial`), whatever its target;
/// `None` when `name` is not a temporary file's. Without the target's name, another machine's
/// name cannot be told apart from dots in the target's, so it is left empty.
pub fn writer_of_name(name: &str) -> Option<Writer> {
    let rest = name.strip_prefix('.')?.strip_suffix(".partial")?;
    let (owner, _random) = rest.rsplit_once('.')?;
    let Some((head, pid)) = owner.rsplit_once('-') else {
        return Some(Writer::Unknown);
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return Some(Writer::Unknown);
    };
    Some(if head.ends_with(&format!(".{}", host())) {
        Writer::Here {
            pid,
            alive: alive(pid),
        }
    } else {
        Writer::Elsewhere {
            host: String::new(),
        }
    })
}

/// The temporary files beside `target`, with their writers.
pub fn partials(target: &Path) -> Vec<(PathBuf, Writer)> {
    let Ok(entries) = std::fs::read_dir(dir_of(target)) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Writer)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let w = writer_of(target, &name.to_string_lossy())?;
            Some((e.path(), w))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// True for a temporary file no running writer will finish: its writer on this machine is
/// gone, or it names no writer and was last touched more than an hour ago.
pub fn is_stale(path: &Path, writer: &Writer) -> bool {
    match writer {
        Writer::Here { alive, .. } => !alive,
        Writer::Elsewhere { .. } => false,
        Writer::Unknown => std::fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600),
    }
}

/// Removes the stale temporary files of `target` (see [`is_stale`]). Returns those removed.
pub fn remove_stale_partials(target: &Path) -> Vec<PathBuf> {
    partials(target)
        .into_iter()
        .filter(|(p, w)| is_stale(p, w) && std::fs::remove_file(p).is_ok())
        .map(|(p, _)| p)
        .collect()
}

/// [`remove_stale_partials`] for an output about to be written, listing each folder once per
/// process: a migration writing thousands of outputs into one folder must not list it once per
/// output. Stale temporaries that appear after the first listing (a writer that died since) are
/// left to the next run.
fn remove_stale_partials_once(target: &Path) {
    type Seen = HashMap<PathBuf, Vec<(PathBuf, String)>>;
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    let dir = dir_of(target);
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let listed = seen.entry(dir.to_path_buf()).or_insert_with(|| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        writer_of_name(&name).map(|_| (e.path(), name))
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    listed.retain(|(path, name)| match writer_of(target, name) {
        Some(w) if is_stale(path, &w) => {
            let _ = std::fs::remove_file(path);
            false
        }
        _ => true,
    });
}

/// Removes this process's own temporary files of `target` (an interrupted run cleaning up).
/// Returns how many were removed.
pub fn remove_partials(target: &Path) -> usize {
    let me = std::process::id();
    partials(target)
        .into_iter()
        .filter(|(_, w)| matches!(w, Writer::Here { pid, .. } if *pid == me))
        .filter(|(p, _)| std::fs::remove_file(p).is_ok())
        .count()
}

/// The name a temporary file of `target` written by `pid` on this machine gets, with `random`
/// for the random part (for tests and tools that need to recognise one).
pub fn partial_name(target: &Path, pid: u32, random: &str) -> String {
    format!("{}{random}.partial", owner_prefix(target, pid))
}

/// `.NAME.HOST-PID.`: how the temporary files of `target` written by `pid` here start.
fn owner_prefix(target: &Path, pid: u32) -> String {
    format!("{}{}-{pid}.", temp_prefix(target), host())
}

fn named_beside(target: &Path) -> Result<tempfile::NamedTempFile, ErrorKind> {
    let dir = dir_of(target);
    tempfile::Builder::new()
        .prefix(&owner_prefix(target, std::process::id()))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io(format!(
            "cannot create a temporary file in {}",
            dir.display()
        )))
}

/// An unnamed file in `dir`, or `None` where the filesystem cannot make one.
fn unnamed_in(dir: &Path) -> Option<File> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path; the returned descriptor is owned by the File.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
}

/// Gives the unnamed file `f` the name `target`; fails with `EEXIST` when the name is taken.
fn link_unnamed(f: &File, target: &Path) -> std::io::Result<()> {
    let src = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    let dst = CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated paths.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

enum Inner {
    Unnamed(File),
    Named(tempfile::NamedTempFile),
}

/// An output being written: an unnamed file in the target's folder, or a temporary file beside
/// it that is removed if dropped unfinished.
pub struct Partial {
    inner: Inner,
}

impl Partial {
    /// Creates the file for `target` in the target's folder (removing stale temporary files
    /// of `target` left by writers that are gone).
    pub fn beside(target: &Path) -> Result<Partial, ErrorKind> {
        remove_stale_partials_once(target);
        let inner = match unnamed_in(dir_of(target)) {
            Some(f) => Inner::Unnamed(f),
            None => Inner::Named(named_beside(target)?),
        };
        Ok(Partial { inner })
    }

    /// True when the file has no name until it is persisted (a crash leaves nothing).
    pub fn is_unnamed(&self) -> bool {
        matches!(self.inner, Inner::Unnamed(_))
    }

    /// The open file.
    pub fn file(&self) -> &File {
        match &self.inner {
            Inner::Unnamed(f) => f,
            Inner::Named(t) => t.as_file(),
        }
    }

    /// The open file, for sequential writes.
    pub fn file_mut(&mut self) -> &mut File {
        match &mut self.inner {
            Inner::Unnamed(f) => f,
            Inner::Named(t) => t.as_file_mut(),
        }
    }

    /// Flushes the file to disk and puts it at `target` (replacing what is there only with
    /// `overwrite`), then flushes the folder so the new name survives a crash.
    pub fn persist(self, target: &Path, overwrite: bool) -> Result<(), ErrorKind> {
        self.persist_with(target, overwrite, true)
    }

    /// [`Partial::persist`]; with `sync_folder` false the folder is not flushed: the caller
    /// does it once for many files ([`sync_folder`]). Until then a crash can lose the new
    /// name, never leave a partial file under it.
    pub fn persist_with(
        self,
        target: &Path,
        overwrite: bool,
        sync_folder: bool,
    ) -> Result<(), ErrorKind> {
        let file = self.file();
        file.sync_all()
            .map_err(io("cannot flush the output to disk"))?;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o644));
        let moved = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ErrorKind::OutputExists(target.to_path_buf())
            } else {
                ErrorKind::Io {
                    context: format!("cannot move the finished file to {}", target.display()),
                    source: e,
                }
            }
        };
        match self.inner {
            Inner::Unnamed(f) if !overwrite => link_unnamed(&f, target).map_err(moved)?,
            Inner::Unnamed(f) => {
                // Named for an instant, complete, then renamed over the target.
                let tmp = named_beside(target)?;
                let path = tmp.into_temp_path();
                std::fs::remove_file(&path).map_err(moved)?;
                link_unnamed(&f, &path).map_err(moved)?;
                path.persist(target).map_err(|e| moved(e.error))?;
            }
            Inner::Named(t) => {
                let done = if overwrite {
                    t.persist(target)
                } else {
                    t.persist_noclobber(target)
                };
                done.map_err(|e| moved(e.error))?;
            }
        }
        if sync_folder {
            self::sync_folder(dir_of(target));
        }
        Ok(())
    }
}

/// Flushes a folder's entries to disk, so names linked into it survive a crash (best effort:
/// a folder that cannot be opened or flushed is left as it is).
pub fn sync_folder(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8], overwrite: bool) -> Result<(), ErrorKind> {
    write_atomic_with(target, bytes, overwrite, true)
}

/// [`write_atomic`], flushing the folder only with `sync_folder` (see [`Partial::persist_with`]).
pub fn write_atomic_with(
    target: &Path,
    bytes: &[u8],
    overwrite: bool,
    sync_folder: bool,
) -> Result<(), ErrorKind> {
    let mut p = Partial::beside(target)?;
    p.file_mut()
        .write_all(bytes)
        .map_err(io("cannot write the temporary file"))?;
    p.persist_with(target, overwrite, sync_folder)
}

/// Copies `source` to `target` atomically. Returns the bytes copied.
pub fn copy_atomic(source: &Path, target: &Path, overwrite: bool) -> Result<u64, ErrorKind> {
    copy_atomic_with(source, target, overwrite, true)
}

/// [`copy_atomic`], flushing the folder only with `sync_folder` (see [`Partial::persist_with`]).
pub fn copy_atomic_with(
    source: &Path,
    target: &Path,
    overwrite: bool,
    sync_folder: bool,
) -> Result<u64, ErrorKind> {
    let mut from = File::open(source).map_err(io(format!("cannot open {}", source.display())))?;
    let mut p = Partial::beside(target)?;
    let n = std::io::copy(&mut from, p.file_mut())
        .map_err(io(format!("cannot copy {}", source.display())))?;
    p.persist_with(target, overwrite, sync_folder)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn files_persisted_without_a_folder_flush_are_complete_and_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        write_atomic_with(&target, b"{\"a\":1}", false, false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{\"a\":1}");
        let copy = dir.path().join("b.json");
        assert_eq!(copy_atomic_with(&target, &copy, false, false).unwrap(), 7);
        assert_eq!(std::fs::read(&copy).unwrap(), b"{\"a\":1}");
        // No clobbering either way, and no temporary left behind.
        assert!(matches!(
            write_atomic_with(&target, b"{}", false, false),
            Err(ErrorKind::OutputExists(_))
        ));
        sync_folder(dir.path());
        assert_eq!(count(dir.path()), 2);
    }

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
        assert_eq!(count(dir.path()), 1);
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn an_unfinished_output_is_invisible_where_the_filesystem_allows_and_gone_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.safetensors");
        let p = Partial::beside(&target).unwrap();
        // The temp folder of this machine supports O_TMPFILE (ext4, tmpfs); a named
        // temporary is the fallback elsewhere.
        assert_eq!(count(dir.path()), usize::from(!p.is_unnamed()));
        drop(p);
        assert_eq!(count(dir.path()), 0);
    }

    #[test]
    fn temporary_names_record_their_writer_and_only_stale_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.safetensors");
        let me = std::process::id();
        // A process that has exited: its pid is free (and, in the time of this test, unused).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let mine = partial_name(&target, me, "Aa1111");
        let dead = partial_name(&target, gone, "Bb2222");
        let remote = ".model.safetensors.other-host.example-42.Cc3333.partial";
        let old_fresh = ".model.safetensors.Dd4444.partial";
        let old_stale = ".model.safetensors.Ee5555.partial";
        let unrelated = ".other.safetensors.Ff6666.partial";
        for n in [&mine, &dead, remote, old_fresh, old_stale, unrelated] {
            std::fs::write(dir.path().join(n), b"half").unwrap();
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(dir.path().join(old_stale))
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let w = |n: &str| writer_of(&target, n);
        assert_eq!(
            w(&mine),
            Some(Writer::Here {
                pid: me,
                alive: true
            })
        );
        assert_eq!(
            w(&dead),
            Some(Writer::Here {
                pid: gone,
                alive: false
            })
        );
        assert_eq!(
            w(remote),
            Some(Writer::Elsewhere {
                host: "other-host.example".into()
            })
        );
        assert_eq!(w(old_fresh), Some(Writer::Unknown));
        assert_eq!(w(unrelated), None);
        for n in [&mine, &dead, old_fresh] {
            assert_eq!(writer_of_name(n), w(n), "{n}");
        }
        assert_eq!(
            writer_of_name(remote),
            Some(Writer::Elsewhere {
                host: String::new()
            })
        );
        assert_eq!(writer_of_name("model.safetensors"), None);
        let removed = remove_stale_partials(&target);
        assert_eq!(
            removed,
            vec![dir.path().join(old_stale), dir.path().join(&dead)],
            "only a gone writer's file and an old unowned one"
        );
        assert_eq!(remove_partials(&target), 1, "this process's own");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [old_fresh, remote, unrelated]);
    }

    #[test]
    fn a_link_at_the_target_is_replaced_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"original").unwrap();
        let target = dir.path().join("link");
        std::os::unix::fs::symlink(&blob, &target).unwrap();
        let err = write_atomic(&target, b"new", false).unwrap_err();
        assert!(matches!(err, ErrorKind::OutputExists(_)), "{err}");
        write_atomic(&target, b"new", true).unwrap();
        assert_eq!(std::fs::read(&blob).unwrap(), b"original");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(count(dir.path()), 2);
    }
}
