//! The floor a conversion is measured against: its output's own bytes moved from the checkpoint
//! to the same output offsets by `copy_file_range`, nothing parsed or checked.
//!
//! safetensors packs tensors without gaps, so most land at offsets not congruent to their
//! source's modulo the page size. On ext4 that costs more than `cp`'s aligned copy (the page
//! cache is filled in partial pages, and the disk then gets about twice the write requests for
//! the same bytes); the floor pays it too, so a conversion's time over the floor's is what the
//! conversion itself adds.
//!
//! A plan holds the converted file's header, then per tensor in output order where its bytes
//! start in the checkpoint, where they start in the output and how many there are, all u64 LE
//! after the header's length. The copier runs in a child process of the benchmark (see
//! [`main_file`] and [`main_tree`]) so that it is timed like the other commands.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::synth::TensorSpec;

/// The hidden first argument that runs [`main_file`].
pub const FILE: &str = "__floor";
/// The hidden first argument that runs [`main_tree`].
pub const TREE: &str = "__floor-tree";

/// Most bytes per `copy_file_range` call.
const PIECE: u64 = 64 << 20;
/// Writeback is started on the output each time this many bytes past the last start are
/// written (as a conversion does for its windows of small tensors and its large pieces).
const KICK: u64 = 2 << 20;

/// Writes the floor's plan for `out`, converted from `src`, whose tensor `i` starts at
/// `starts[i]` in `src`.
pub fn write_plan(
    out: &Path,
    tensors: &[TensorSpec],
    starts: &[u64],
    plan: &Path,
) -> io::Result<()> {
    let offsets = crate::safetensors_offsets(out)?;
    let mut ranges = Vec::with_capacity(tensors.len());
    for (t, &from) in tensors.iter().zip(starts) {
        let (_, a, b) = offsets
            .iter()
            .find(|(n, _, _)| *n == t.name)
            .ok_or_else(|| io::Error::other(format!("{}: {} missing", out.display(), t.name)))?;
        ranges.push((from, *a, b - a));
    }
    ranges.sort_by_key(|r| r.1);
    let header_end = ranges.first().map_or(0, |r| r.1);
    let mut header = vec![0u8; header_end as usize];
    File::open(out)?.read_exact_at(&mut header, 0)?;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    for (from, to, len) in ranges {
        for w in [from, to, len] {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
    }
    std::fs::write(plan, bytes)
}

/// Moves `len` bytes of `src` at `from` to `out` at `to`, a piece per call, in output order:
/// `kicked` is where the output's writeback was last started, everything before `to` written.
fn copy(
    src: &File,
    mut from: i64,
    out: &File,
    mut to: i64,
    mut len: u64,
    kicked: &mut i64,
) -> io::Result<()> {
    while len > 0 {
        // SAFETY: both descriptors are open for the call; the offsets are live locals.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut from,
                out.as_raw_fd(),
                &mut to,
                len.min(PIECE) as usize,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::other("source ended early"));
        }
        len -= n as u64;
        if (to - *kicked) as u64 >= KICK {
            // SAFETY: a plain system call on an open descriptor; it reads no user memory.
            unsafe {
                libc::sync_file_range(
                    out.as_raw_fd(),
                    *kicked,
                    to - *kicked,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            *kicked = to;
        }
    }
    Ok(())
}

/// Carries out `plan` (or, with none, copies the whole of `src`) into a new file `dst`, sized
/// first, and fsyncs it.
fn run_plan(src: &Path, plan: Option<&Path>, dst: &Path) -> io::Result<()> {
    let src = File::open(src)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    let Some(plan) = plan else {
        let len = src.metadata()?.len();
        out.set_len(len)?;
        copy(&src, 0, &out, 0, len, &mut 0)?;
        return out.sync_all();
    };
    let plan = std::fs::read(plan)?;
    let word = |at: usize| -> io::Result<u64> {
        plan.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| io::Error::other("plan ends early"))
    };
    let header_len = word(0)? as usize;
    let header = plan
        .get(8..8 + header_len)
        .ok_or_else(|| io::Error::other("plan ends early"))?;
    let ranges = (8 + header_len..plan.len()).step_by(24);
    let mut end = header_len as u64;
    for at in ranges.clone() {
        end = end.max(word(at + 8)? + word(at + 16)?);
    }
    out.set_len(end)?;
    out.write_all(header)?;
    let mut kicked = 0;
    for at in ranges {
        let (from, to, len) = (word(at)? as i64, word(at + 8)? as i64, word(at + 16)?);
        copy(&src, from, &out, to, len, &mut kicked)?;
    }
    out.sync_all()
}

fn exit_with(what: &str, r: io::Result<()>) -> ! {
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{what}: {e}");
            std::process::exit(1);
        }
    }
}

/// `__floor SRC PLAN DST`: the floor of one conversion.
pub fn main_file(argv: &[OsString]) -> ! {
    let r = match argv {
        [src, plan, dst] => run_plan(src.as_ref(), Some(plan.as_ref()), dst.as_ref()),
        _ => Err(io::Error::other("usage: __floor SRC PLAN DST")),
    };
    exit_with("floor", r)
}

/// One file of a tree's floor: a checkpoint's plan, or a file copied whole (`plan` `None`).
pub struct Entry {
    pub src: PathBuf,
    pub plan: Option<PathBuf>,
    pub dst: PathBuf,
}

/// Writes the list [`main_tree`] reads: per entry three lines, SRC, PLAN (empty for a whole
/// copy) and DST.
pub fn write_list(entries: &[Entry], list: &Path) -> io::Result<()> {
    let mut text = String::new();
    for e in entries {
        for p in [Some(&e.src), e.plan.as_ref(), Some(&e.dst)] {
            let p = p.map(|p| p.to_str().ok_or_else(|| io::Error::other("non-UTF-8 path")));
            text.push_str(p.transpose()?.unwrap_or(""));
            text.push('\n');
        }
    }
    std::fs::write(list, text)
}

/// `__floor-tree LIST JOBS`: the floor of a migration. Creates each DST's folder, then carries
/// out the entries on JOBS threads, each file fsynced as it is done, and last fsyncs every
/// folder it wrote into (a migration makes each output durable on its own).
pub fn main_tree(argv: &[OsString]) -> ! {
    let run = || -> io::Result<()> {
        let [list, jobs] = argv else {
            return Err(io::Error::other("usage: __floor-tree LIST JOBS"));
        };
        let jobs: usize = jobs
            .to_str()
            .and_then(|j| j.parse().ok())
            .ok_or_else(|| io::Error::other("JOBS must be a number"))?;
        let text = std::fs::read_to_string(list)?;
        let lines: Vec<&str> = text.lines().collect();
        let entries: Vec<Entry> = lines
            .chunks(3)
            .map(|c| match c {
                [s, p, d] => Ok(Entry {
                    src: s.into(),
                    plan: (!p.is_empty()).then(|| p.into()),
                    dst: d.into(),
                }),
                _ => Err(io::Error::other("list ends early")),
            })
            .collect::<io::Result<_>>()?;
        let mut dirs: Vec<&Path> = entries.iter().filter_map(|e| e.dst.parent()).collect();
        dirs.sort();
        dirs.dedup();
        for d in &dirs {
            std::fs::create_dir_all(d)?;
        }
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..jobs.max(1))
                .map(|_| {
                    s.spawn(|| -> io::Result<()> {
                        while let Some(e) = entries.get(next.fetch_add(1, Ordering::Relaxed)) {
                            run_plan(&e.src, e.plan.as_deref(), &e.dst).map_err(|err| {
                                io::Error::other(format!("{}: {err}", e.dst.display()))
                            })?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().map_err(|_| io::Error::other("worker panicked"))?)
        })?;
        dirs.iter().try_for_each(|d| File::open(d)?.sync_all())
    };
    exit_with("floor-tree", run())
}

/// True when two files hold the same bytes.
pub fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}
