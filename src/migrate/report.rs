//! What a migration did: one record per file considered, a summary, and the JSON report.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// The schema identifier of the JSON report.
pub const SCHEMA: &str = "safetensorize.migrate/1";

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A file with a checkpoint extension (converted, or skipped/failed with the reason).
    Checkpoint,
    /// A sharded model's index (`pytorch_model.bin.index.json` → `model.safetensors.index.json`).
    Index,
    /// Another file copied into `--output-dir` (configs, tokenizers, …).
    Copy,
    /// A temporary file left by a crashed or killed writer.
    Partial,
}

/// The outcome for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Outputs written.
    Converted,
    /// Copied into the output folder.
    Copied,
    /// The outputs already exist and match; nothing written.
    UpToDate,
    /// `--dry-run`: this would be written.
    Planned,
    /// Deliberately not converted (training state, not a checkpoint, no tensors, …).
    Skipped,
    /// Could not be converted; `reason` says why.
    Failed,
    /// A stale temporary file, removed.
    Removed,
}

impl Status {
    /// The name used in logs and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Converted => "converted",
            Status::Copied => "copied",
            Status::UpToDate => "up-to-date",
            Status::Planned => "would write",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
            Status::Removed => "removed",
        }
    }
}

/// Why a file was skipped, as a stable identifier for the summary and machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// `optimizer.pt`, `training_args.bin`, … (see [`super::naming::training_state`]).
    TrainingState,
    /// The content is not a torch checkpoint (an LFS pointer, HTML, GGML, …).
    NotACheckpoint,
    /// A checkpoint that holds no tensors.
    NoTensors,
    /// A file in `--output-dir` that a conversion output replaces.
    ReplacedByOutput,
}

impl SkipReason {
    /// The identifier used in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::TrainingState => "training-state",
            SkipReason::NotACheckpoint => "not-a-checkpoint",
            SkipReason::NoTensors => "no-tensors",
            SkipReason::ReplacedByOutput => "replaced-by-output",
        }
    }
}

/// One file considered.
#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    /// The source file.
    pub source: PathBuf,
    /// What it is.
    pub kind: Kind,
    /// Files written (or that would be, or already were, for `planned` and `up-to-date`).
    pub outputs: Vec<PathBuf>,
    /// The outcome.
    pub status: Status,
    /// For `skipped`: the category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip: Option<SkipReason>,
    /// Why it was skipped or failed (the full error chain, naming the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Tensors written (for an index: tensors listed).
    pub tensors: usize,
    /// Tied names written once and recorded in `__metadata__` instead (`alias`, `kept`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<(String, String)>,
    /// Bytes of the outputs (written, planned or already there).
    pub bytes: u64,
    /// Wall time spent on this file.
    pub seconds: f64,
    /// The source was removed (`--delete-source`) after its outputs were re-read.
    pub source_deleted: bool,
    /// The source is a link to a file this run converted already (a blob shared by two
    /// revisions of a Hugging Face cache): the output is a hard link to that earlier output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused: Option<PathBuf>,
}

impl FileRecord {
    /// A record with nothing done yet.
    pub fn new(source: PathBuf, kind: Kind, status: Status) -> Self {
        FileRecord {
            source,
            kind,
            outputs: Vec::new(),
            status,
            skip: None,
            reason: None,
            tensors: 0,
            aliases: Vec::new(),
            bytes: 0,
            seconds: 0.0,
            source_deleted: false,
            reused: None,
        }
    }

    /// A skipped file.
    pub fn skipped(
        source: PathBuf,
        kind: Kind,
        skip: SkipReason,
        reason: impl Into<String>,
    ) -> Self {
        FileRecord {
            skip: Some(skip),
            reason: Some(reason.into()),
            ..FileRecord::new(source, kind, Status::Skipped)
        }
    }

    /// A failed file.
    pub fn failed(source: PathBuf, kind: Kind, reason: impl Into<String>) -> Self {
        FileRecord {
            reason: Some(reason.into()),
            ..FileRecord::new(source, kind, Status::Failed)
        }
    }
}

/// Totals over every record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Checkpoints and indexes written.
    pub converted: usize,
    /// Other files copied into `--output-dir`.
    pub copied: usize,
    /// Files whose outputs were already up to date.
    pub up_to_date: usize,
    /// `--dry-run`: files that would be written.
    pub planned: usize,
    /// Files skipped, by reason.
    pub skipped: BTreeMap<&'static str, usize>,
    /// Files that failed.
    pub failed: usize,
    /// Sources removed by `--delete-source`.
    pub sources_deleted: usize,
    /// Stale temporary files (of crashed or killed writers) removed (`--dry-run`: that would
    /// be).
    pub partials_removed: usize,
    /// Bytes written (converted and copied).
    pub bytes_written: u64,
    /// Wall time of the whole run.
    pub seconds: f64,
}

impl Summary {
    /// Counts `records`.
    pub fn of(records: &[FileRecord], seconds: f64) -> Self {
        let mut s = Summary {
            seconds,
            ..Summary::default()
        };
        for r in records {
            if r.kind == Kind::Partial && matches!(r.status, Status::Removed | Status::Planned) {
                s.partials_removed += 1;
                continue;
            }
            match r.status {
                Status::Converted => s.converted += 1,
                Status::Copied => s.copied += 1,
                Status::UpToDate => s.up_to_date += 1,
                Status::Planned => s.planned += 1,
                Status::Skipped => {
                    *s.skipped
                        .entry(r.skip.map_or("other", SkipReason::as_str))
                        .or_default() += 1
                }
                Status::Failed => s.failed += 1,
                Status::Removed => s.partials_removed += 1,
            }
            if matches!(r.status, Status::Converted | Status::Copied) {
                s.bytes_written += r.bytes;
            }
            s.sources_deleted += usize::from(r.source_deleted);
        }
        s
    }

    /// Files skipped, all reasons together.
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }
}

/// The JSON document `--report FILE` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// Nothing was written (`--dry-run`).
    pub dry_run: bool,
    /// `--partition I/N`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The run was interrupted (SIGINT, SIGTERM) before every file was handled.
    pub interrupted: bool,
    /// Totals.
    pub summary: Summary,
    /// One record per file considered, in walk order.
    pub files: Vec<FileRecord>,
    /// Interrupted runs: the files of the units never finished (run again to do them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_done: Vec<PathBuf>,
}
