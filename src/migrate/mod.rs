//! Whole folders: discover checkpoints, name their outputs the way the ecosystem does, rewrite
//! sharded models' indexes, reshard, and report on every file. Resumable (up-to-date outputs are
//! skipped), partitionable across machines, and nothing is printed here: callers watch through
//! an [`Observer`].
//!
//! ```no_run
//! use std::path::PathBuf;
//! use safetensorize::migrate::{Control, MigrateOptions, NoObserver, run};
//!
//! let report = run(&[PathBuf::from("models/bert")], &MigrateOptions::default(), &NoObserver, &Control::new())?;
//! println!("{} converted, {} failed", report.summary.converted, report.summary.failed);
//! # Ok::<(), safetensorize::migrate::PlanError>(())
//! ```
//!
//! Tied weights: by default a name that shares its tensor with another (tied embeddings) is
//! written once and recorded in the `__metadata__` of the file holding the tensor it aliases, as
//! Hugging Face's own converter does; it is not listed in the index's `weight_map`, which names
//! only tensors actually written. transformers re-ties such weights when it loads the model.
//! With resharding an alias therefore always lives with its tensor. `keep_aliases` writes every
//! name as its own copy instead (for loaders that do not re-tie).

mod control;
pub mod discover;
pub mod naming;
pub mod outputs;
pub mod report;
mod unit;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

pub use crate::writer::atomic::remove_partials;
pub use control::Control;
pub use discover::{Filter, Item, Unit};
pub use report::{FileRecord, Kind, Report, SkipReason, Status, Summary};

use crate::pickle::Limits;

/// Why a migration cannot start: the options or the PATHs (the CLI exits 2). Failures of single
/// files are never this; they are recorded in the [`Report`] and the run goes on.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No folder or file was named.
    #[error("no PATH given")]
    NoPaths,
    /// An `--include`/`--exclude` pattern does not compile.
    #[error("invalid glob {pattern:?}: {reason}")]
    Glob {
        /// The pattern (all of them when the set as a whole failed).
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two PATHs with the same name would be mirrored into the same folder of `--output-dir`.
    #[error("{} and {} would both be written to {}; migrate them in separate runs", first.display(), second.display(), target.display())]
    SameOutput {
        /// The PATH met first.
        first: PathBuf,
        /// The PATH met second.
        second: PathBuf,
        /// The folder both would be written to.
        target: PathBuf,
    },
}

/// Settings of a migration.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Mirror each input into this folder instead of writing beside the sources.
    pub output_dir: Option<PathBuf>,
    /// Plan only: read and check everything, write nothing.
    pub dry_run: bool,
    /// Replace outputs that exist but are not up to date (and rewrite up-to-date ones).
    pub overwrite: bool,
    /// Remove each source once its outputs were written, fsynced and re-read successfully.
    pub delete_source: bool,
    /// Split or regroup outputs into shards of at most this many tensor bytes.
    pub max_shard_size: Option<u64>,
    /// Files converted at once (at least 1).
    pub jobs: usize,
    /// Copy threads in total, shared by the files converted at once (0 = one per core).
    pub threads: usize,
    /// Only this share of the units.
    pub partition: Option<Partition>,
    /// `--include` globs (empty: everything).
    pub include: Vec<String>,
    /// `--exclude` globs.
    pub exclude: Vec<String>,
    /// Write tied names as their own copies instead of metadata aliases.
    pub keep_aliases: bool,
    /// Convert files that reference dangerous globals (nothing is executed either way).
    pub allow_dangerous: bool,
    /// Also refuse files that reference globals outside the known set.
    pub strict: bool,
    /// Bounds applied to every file.
    pub limits: Limits,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            output_dir: None,
            dry_run: false,
            overwrite: false,
            delete_source: false,
            max_shard_size: None,
            jobs: 1,
            threads: 0,
            partition: None,
            include: Vec::new(),
            exclude: Vec::new(),
            keep_aliases: false,
            allow_dangerous: false,
            strict: false,
            limits: Limits::default(),
        }
    }
}

/// `I/N`: the `I`-th (from 0) of `N` shares of the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Which share, `0..count`.
    pub index: u64,
    /// How many shares.
    pub count: u64,
}

impl FromStr for Partition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a partition; use I/N with 0 <= I < N and N fixed, e.g. $SLURM_ARRAY_TASK_ID/32"
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u64>().map_err(|_| bad())?,
            n.trim().parse::<u64>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Partition { index, count })
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Partition {
    /// Which of `units` (each its label and its bytes, in plan order) belong to this share.
    ///
    /// Shares are balanced by bytes: the units are taken largest first (ties by label) and each
    /// goes to the share with the fewest bytes so far (ties to the lowest index), the classic
    /// longest-processing-time rule, so the largest share exceeds the mean by at most the
    /// largest unit. The answer depends only on the labels and sizes, so every task that lists
    /// the same tree agrees without talking to the others.
    pub fn select(&self, units: &[(&str, u64)]) -> Vec<bool> {
        let mut order: Vec<usize> = (0..units.len()).collect();
        order.sort_by(|&a, &b| units[b].1.cmp(&units[a].1).then(units[a].0.cmp(units[b].0)));
        // A min-heap of (bytes so far, share).
        let mut loads: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u64)>> =
            (0..self.count).map(|s| std::cmp::Reverse((0, s))).collect();
        let mut mine = vec![false; units.len()];
        for i in order {
            if let Some(std::cmp::Reverse((load, share))) = loads.pop() {
                mine[i] = share == self.index;
                loads.push(std::cmp::Reverse((load.saturating_add(units[i].1), share)));
            }
        }
        mine
    }
}

/// Watches a run; every method may be called from several worker threads.
pub trait Observer: Sync {
    /// The plan is made: `units` to handle, about `bytes` to read.
    fn begin(&self, _units: usize, _bytes: u64) {}
    /// `bytes` more were processed.
    fn advance(&self, _bytes: u64) {}
    /// A file is done.
    fn finished(&self, _record: &FileRecord) {}
    /// Memory was freed in bulk on the calling worker thread (a source's pickle and zip audit,
    /// then its object tree, then what selecting its tensors left): a binary that owns its
    /// allocator may return it to the system here, as `convert` does between the same steps.
    fn released(&self) {}
}

/// An observer that ignores everything.
pub struct NoObserver;

impl Observer for NoObserver {}

/// Discovers and partitions the work for `paths` (nothing is opened but folders and indexes).
pub fn plan(paths: &[PathBuf], opts: &MigrateOptions) -> Result<Vec<Item>, PlanError> {
    if paths.is_empty() {
        return Err(PlanError::NoPaths);
    }
    let filter = Filter::new(&opts.include, &opts.exclude)?;
    let roots = discover::roots(paths, opts.output_dir.as_deref())?;
    let mut items = discover::discover(&roots, &filter, opts.output_dir.as_deref());
    // Collisions first, over the whole tree, so every task agrees on them.
    discover::resolve_collisions(&mut items, opts.max_shard_size.is_some());
    if let Some(p) = opts.partition {
        let sizes: Vec<(&str, u64)> = items
            .iter()
            .map(|i| (i.label.as_str(), unit::source_bytes(i)))
            .collect();
        let mine = p.select(&sizes);
        let mut keep = mine.into_iter();
        items.retain(|_| keep.next().unwrap_or(false));
    }
    Ok(items)
}

/// Migrates every checkpoint under `paths`. A file that fails is recorded and the run goes on;
/// only a bad set of options is an `Err`. Stops early (recording nothing more) once `control`
/// is interrupted.
pub fn run(
    paths: &[PathBuf],
    opts: &MigrateOptions,
    observer: &dyn Observer,
    control: &Control,
) -> Result<Report, PlanError> {
    let started = Instant::now();
    let items = plan(paths, opts)?;
    let bytes: u64 = items.iter().map(unit::source_bytes).sum();
    observer.begin(items.len(), bytes);
    let jobs = opts.jobs.max(1).min(items.len().max(1));
    let total_threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let ctx = unit::Context {
        opts,
        observer,
        control,
        threads: (total_threads / jobs).max(1),
        blobs: Default::default(),
        folders: Default::default(),
    };
    control.plan(
        started,
        items.iter().map(|i| i.unit.file().to_path_buf()).collect(),
        opts.dry_run,
        opts.partition.map(|p| p.to_string()),
    );
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    if control.is_stopped() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let records = unit::process(item, &ctx);
                    control.done(i, records);
                }
            });
        }
    });
    // The outputs' names are durable before the run reports them.
    ctx.sync_folders();
    Ok(control.report())
}
