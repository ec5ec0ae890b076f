//! The safetensors format: plan the header, copy every tensor's bytes to its offset in parallel,
//! and make the file appear only when it is complete (temp file, fsync, rename).

pub mod atomic;
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
        /// The view.
        view: Strided,
        /// Element type.
        dtype: DType,
        /// What to apply.
        transform: Transform,
    },
}

/// One unit of work for the copy pool.
#[derive(Debug, Clone)]
pub struct Job {
    /// Index of the source file.
    pub source: usize,
    /// What to do.
    pub kind: JobKind,
    /// Absolute offset in the output.
    pub dst: u64,
    /// Bytes written.
    pub len: u64,
    /// Tensor name, for messages.
    pub tensor: String,
}

impl Job {
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
/// elements, and strided ones into pieces of at most `PIECE` output bytes, in file order.
pub fn split_jobs(jobs: Vec<Job>) -> Vec<Job> {
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
            } if j.len > layout::PIECE => {
                let mut dst = j.dst;
                for piece in view.pieces() {
                    let len = piece.nbytes();
                    out.push(Job {
                        source: j.source,
                        kind: JobKind::Strided {
                            view: piece,
                            dtype: *dtype,
                            transform: *transform,
                        },
                        dst,
                        len,
                        tensor: j.tensor.clone(),
                    });
                    dst += len;
                }
            }
            _ => out.push(j),
        }
    }
    // In file order: with pieces of at most CHUNK bytes the pool stays balanced, and a cold
    // page cache sees sequential reads that its readahead can serve.
    out.sort_by_key(|j| (j.source, j.src_start()));
    out
}

/// Output settings.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Replace an existing file.
    pub overwrite: bool,
    /// Worker threads (0 = one per core).
    pub threads: usize,
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
    let tmp = atomic::Partial::beside(target)?;
    let out = tmp.file();
    out.set_len(plan.total_len)
        .map_err(io("cannot size the output file"))?;
    out.write_all_at(&plan.bytes, 0)
        .map_err(io("cannot write the header"))?;
    progress(plan.bytes.len() as u64);
    for j in &jobs {
        if let (JobKind::Strided { view, .. }, Some(src)) = (&j.kind, sources.get(j.source)) {
            layout::prefetch(src, view);
        }
    }
    let jobs = split_jobs(jobs);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| ErrorKind::Unsupported(format!("cannot start worker threads: {e}")))?;
    // Plain copies are I/O: one in-kernel stream in file order keeps the disk sequential and
    // measured as fast as two with half the system time. Gathers, byte swaps and inflated
    // data need CPU: they run on the whole pool, beside the copy stream.
    let (copies, work): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| matches!(j.kind, JobKind::Copy { .. }));
    let run = |j: &Job| {
        j.run(sources, out)?;
        progress(j.len);
        Ok::<(), ErrorKind>(())
    };
    let (a, b) = pool.install(|| {
        rayon::join(
            || copies.iter().try_for_each(run),
            || work.par_iter().try_for_each(run),
        )
    });
    a?;
    b?;
    tmp.persist(target, opts.overwrite)
}
