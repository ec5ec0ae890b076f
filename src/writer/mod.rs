//! The safetensors format: plan the header, copy every tensor's bytes to its offset in parallel,
//! and make the file appear only when it is complete (temp file, fsync, rename).

pub mod atomic;
mod batch;
mod copy;
mod header;
mod read;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

pub use copy::{CHUNK, copy_buffered, copy_range};
pub use header::{HeaderEntry, HeaderPlan, MAX_HEADER, plan_header};
pub use read::{HeaderTensor, SafetensorsHeader, looks_like_safetensors, read_safetensors_header};

use crate::dtype::DType;
use crate::error::{ErrorKind, io};
use crate::layout::{self, Strided, Transform};

/// How one piece of output is produced.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// A contiguous byte range copied as is.
    Copy {
        /// Absolute offset in the source.
        src_off: u64,
    },
    /// A contiguous range that needs byte swapping or sign changes.
    Transformed {
        /// Absolute offset in the source.
        src_off: u64,
        /// Element type.
        dtype: DType,
        /// What to apply.
        transform: Transform,
    },
    /// A strided view gathered into row-major order.
    Strided {
        /// The view (boxed: the other kinds, one per small tensor, stay small).
        view: Box<Strided>,
        /// Element type.
        dtype: DType,
        /// What to apply.
        transform: Transform,
    },
}

/// One unit of work for the copy pool.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    /// Index of the source file.
    pub source: usize,
    /// What to do.
    pub kind: JobKind,
    /// Absolute offset in the output.
    pub dst: u64,
    /// Bytes written.
    pub len: u64,
    /// Tensor name, for messages (borrowed: a job per tensor, no copy of its name).
    pub tensor: &'a str,
}

impl Job<'_> {
    /// Where in its source the job starts reading.
    fn src_start(&self) -> u64 {
        match &self.kind {
            JobKind::Copy { src_off } | JobKind::Transformed { src_off, .. } => *src_off,
            JobKind::Strided { view, .. } => view.base + view.offset * view.itemsize,
        }
    }

    fn run(&self, sources: &[File], dst: &File) -> Result<(), ErrorKind> {
        let src = sources
            .get(self.source)
            .ok_or_else(|| ErrorKind::Unsupported("internal: no such source".into()))?;
        let r = match &self.kind {
            JobKind::Copy { src_off } => copy::copy_range(src, *src_off, dst, self.dst, self.len),
            JobKind::Transformed {
                src_off,
                dtype,
                transform,
            } => copy::copy_buffered(
                src,
                *src_off,
                dst,
                self.dst,
                self.len,
                Some((*dtype, transform)),
            ),
            JobKind::Strided {
                view,
                dtype,
                transform,
            } => layout::copy_strided(src, view, *dtype, transform, dst, self.dst),
        };
        r.map_err(io(format!("copying the bytes of tensor {:?}", self.tensor)))
    }
}

/// Splits large contiguous jobs into pieces of at most [`CHUNK`] bytes, each a whole number of
/// elements, and strided ones into their [`layout::Strided::pieces`], in file order.
pub fn split_jobs(jobs: Vec<Job>) -> Vec<Job> {
    // In file order: with pieces of at most CHUNK bytes the pool stays balanced, and a cold
    // page cache sees sequential reads that its readahead can serve.
    sorted_by(split(jobs), |j| (j.source, j.src_start(), j.dst))
}

/// `jobs` sorted by `key`, sorting indices (jobs are large to move).
fn sorted_by<K: Ord>(jobs: Vec<Job>, key: impl Fn(&Job) -> K) -> Vec<Job> {
    let mut keys: Vec<(K, usize)> = jobs.iter().enumerate().map(|(i, j)| (key(j), i)).collect();
    if keys.is_sorted() {
        return jobs;
    }
    keys.sort_unstable();
    let mut slots: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
    keys.iter().filter_map(|&(_, i)| slots[i].take()).collect()
}

/// [`split_jobs`] without the sort.
fn split(jobs: Vec<Job>) -> Vec<Job> {
    let needs_split = |j: &Job| match &j.kind {
        JobKind::Copy { .. } | JobKind::Transformed { .. } => j.len > CHUNK,
        JobKind::Strided { view, .. } => j.len > view.piece_size(),
    };
    if !jobs.iter().any(needs_split) {
        return jobs;
    }
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        match &j.kind {
            JobKind::Copy { src_off } | JobKind::Transformed { src_off, .. } if j.len > CHUNK => {
                let mut done = 0;
                while done < j.len {
                    let n = (j.len - done).min(CHUNK);
                    let mut piece = j.clone();
                    piece.kind = match &j.kind {
                        JobKind::Copy { .. } => JobKind::Copy {
                            src_off: src_off + done,
                        },
                        JobKind::Transformed {
                            dtype, transform, ..
                        } => JobKind::Transformed {
                            src_off: src_off + done,
                            dtype: *dtype,
                            transform: *transform,
                        },
                        other => other.clone(),
                    };
                    piece.dst = j.dst + done;
                    piece.len = n;
                    out.push(piece);
                    done += n;
                }
            }
            JobKind::Strided {
                view,
                dtype,
                transform,
            } if j.len > view.piece_size() => {
                let mut dst = j.dst;
                for piece in view.pieces() {
                    let len = piece.nbytes();
                    out.push(Job {
                        source: j.source,
                        kind: JobKind::Strided {
                            view: Box::new(piece),
                            dtype: *dtype,
                            transform: *transform,
                        },
                        dst,
                        len,
                        tensor: j.tensor,
                    });
                    dst += len;
                }
            }
            _ => out.push(j),
        }
    }
    out
}

/// Output settings.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Replace an existing file.
    pub overwrite: bool,
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Flush the output's folder once the file is in place (false: the caller flushes it, see
    /// [`atomic::Partial::persist_with`]).
    pub sync_folder: bool,
}

/// Writes `header` then runs `jobs` into a temp file beside `target`, fsyncs and renames it.
/// On any error the temp file is removed and `target` is untouched.
pub fn write_file(
    target: &Path,
    plan: &HeaderPlan,
    jobs: Vec<Job>,
    sources: &[File],
    opts: WriteOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), ErrorKind> {
    start_file(target, &plan.bytes, plan.total_len, progress)?.finish(jobs, sources, opts, progress)
}

/// An output being written: its temp file beside the target, sized, with the header in place.
/// Dropped before [`Output::finish`], the temp file is removed and the target untouched.
pub struct Output {
    tmp: atomic::Partial,
    target: std::path::PathBuf,
}

/// Starts the output of [`write_file`]: the temp file of `total_len` bytes with `header` (the
/// planned header, length prefix included) at its start. The caller can free the header
/// before it builds the jobs (a header of 100,000 entries is 8.5 MB).
pub fn start_file(
    target: &Path,
    header: &[u8],
    total_len: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Output, ErrorKind> {
    let tmp = atomic::Partial::beside(target)?;
    let out = tmp.file();
    out.set_len(total_len)
        .map_err(io("cannot size the output file"))?;
    out.write_all_at(header, 0)
        .map_err(io("cannot write the header"))?;
    progress(header.len() as u64);
    Ok(Output {
        tmp,
        target: target.to_path_buf(),
    })
}

impl Output {
    /// Runs `jobs`, fsyncs the file and renames it to its target.
    pub fn finish(
        self,
        jobs: Vec<Job>,
        sources: &[File],
        opts: WriteOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), ErrorKind> {
        let Output { tmp, target } = self;
        let out = tmp.file();
        for j in &jobs {
            if let (JobKind::Strided { view, .. }, Some(src)) = (&j.kind, sources.get(j.source)) {
                layout::prefetch(src, view);
            }
        }
        let jobs = split(jobs);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .build()
            .map_err(|e| ErrorKind::Unsupported(format!("cannot start worker threads: {e}")))?;
        // Plain copies are I/O: one stream keeps the disk sequential and measured as fast as
        // two with half the system time. Small ones go in windows in output order, a few
        // system calls per window (see `batch`); large ones are one in-kernel copy each, in
        // file order. Gathers, byte swaps and inflated data need CPU: they run on the whole
        // pool, beside the copy stream. Sorted through (key, index) pairs and borrowed: the
        // jobs are large to move.
        let mut small = Vec::with_capacity(jobs.len());
        let mut large = Vec::new();
        let mut work = Vec::new();
        for (i, j) in jobs.iter().enumerate() {
            let file_order = ((j.source, j.src_start(), j.dst), i);
            match j.kind {
                JobKind::Copy { .. } if batch::batchable(j) => small.push((j.dst, i)),
                JobKind::Copy { .. } => large.push(file_order),
                _ => work.push(file_order),
            }
        }
        small.sort_unstable();
        large.sort_unstable();
        work.sort_unstable();
        let small: Vec<&Job> = small.iter().map(|&(_, i)| &jobs[i]).collect();
        let large: Vec<&Job> = large.iter().map(|&(_, i)| &jobs[i]).collect();
        let work: Vec<&Job> = work.iter().map(|&(_, i)| &jobs[i]).collect();
        let run = |j: &Job| {
            j.run(sources, out)?;
            progress(j.len);
            Ok::<(), ErrorKind>(())
        };
        let copy_stream = || {
            let mut batcher = batch::Batcher::default();
            for g in batch::group(&small, batch::WINDOW) {
                let window = &small[g];
                batcher.run(window, sources, out)?;
                progress(window.iter().map(|j| j.len).sum());
            }
            drop(batcher);
            large.iter().try_for_each(|j| run(j))
        };
        let (a, b) =
            pool.install(|| rayon::join(copy_stream, || work.par_iter().try_for_each(|j| run(j))));
        a?;
        b?;
        tmp.persist_with(&target, opts.overwrite, opts.sync_folder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Write;

    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    /// Small copies (batched), a large copy and a byte-swapped tensor, handed over in output
    /// order as the checkpoint does, from a source where they are in another order.
    #[test]
    fn a_mix_of_small_large_and_swapped_tensors_lands_byte_for_byte() {
        let mut rng = 3u64;
        let src_bytes: Vec<u8> = (0..3_000_000).map(|_| lcg(&mut rng) as u8).collect();
        let mut src = tempfile::tempfile().unwrap();
        src.write_all(&src_bytes).unwrap();
        // (name, source offset, length, swapped)
        let mut tensors = Vec::new();
        let mut at = 0u64;
        for i in 0..2000 {
            let len = 4 * (1 + lcg(&mut rng) % 100);
            tensors.push((format!("t.{i}"), at, len, i % 500 == 7));
            at += len + lcg(&mut rng) % 200;
        }
        tensors.push(("big".into(), at, batch::SMALL + 4 * 123, false));
        let entries = tensors
            .iter()
            .map(|(n, _, len, _)| HeaderEntry {
                name: n.as_str().into(),
                dtype: safetensors::Dtype::F32,
                shape: vec![len / 4].into(),
                nbytes: *len,
            })
            .collect();
        let plan = plan_header(entries, &BTreeMap::new()).unwrap();
        let data = plan.bytes.len() as u64;
        let mut expected = plan.bytes.clone();
        expected.resize(plan.total_len as usize, 0);
        let by_name: std::collections::HashMap<_, _> =
            tensors.iter().map(|t| (t.0.clone(), t)).collect();
        let mut jobs = Vec::new();
        for (&i, (begin, end)) in plan.order.iter().zip(&plan.offsets) {
            let name = &tensors[i].0;
            let &(_, s, len, swapped) = by_name[name];
            let mut bytes = src_bytes[s as usize..(s + len) as usize].to_vec();
            let kind = if swapped {
                bytes.chunks_exact_mut(4).for_each(|c| c.reverse());
                JobKind::Transformed {
                    src_off: s,
                    dtype: DType::F32,
                    transform: Transform {
                        swap_unit: Some(4),
                        ..Default::default()
                    },
                }
            } else {
                JobKind::Copy { src_off: s }
            };
            expected[(data + begin) as usize..(data + end) as usize].copy_from_slice(&bytes);
            jobs.push(Job {
                source: 0,
                kind,
                dst: data + begin,
                len,
                tensor: name,
            });
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.safetensors");
        let opts = WriteOptions {
            overwrite: false,
            threads: 2,
            sync_folder: true,
        };
        let done = std::sync::atomic::AtomicU64::new(0);
        let progress = |n: u64| {
            done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        write_file(&target, &plan, jobs, &[src], opts, &progress).unwrap();
        assert!(std::fs::read(&target).unwrap() == expected);
        assert_eq!(done.into_inner(), plan.total_len);
    }

    #[test]
    fn a_failed_batched_read_names_its_tensor_and_leaves_no_output() {
        let mut src = tempfile::tempfile().unwrap();
        src.write_all(&[5u8; 1000]).unwrap();
        let entries: Vec<HeaderEntry> = ["a", "b", "c"]
            .iter()
            .map(|n| HeaderEntry {
                name: (*n).into(),
                dtype: safetensors::Dtype::U8,
                shape: vec![100].into(),
                nbytes: 100,
            })
            .collect();
        let plan = plan_header(entries, &BTreeMap::new()).unwrap();
        let data = plan.bytes.len() as u64;
        // "b" reads past the end of the source.
        let jobs = [("a", 0), ("b", 950), ("c", 200)]
            .iter()
            .enumerate()
            .map(|(i, (n, s))| Job {
                source: 0,
                kind: JobKind::Copy { src_off: *s },
                dst: data + 100 * i as u64,
                len: 100,
                tensor: n,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.safetensors");
        let opts = WriteOptions {
            overwrite: false,
            threads: 1,
            sync_folder: true,
        };
        let e = write_file(&target, &plan, jobs, &[src], opts, &|_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor \"b\""), "{e}");
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
