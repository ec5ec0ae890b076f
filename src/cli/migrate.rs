//! `safetensorize migrate`: whole folders, with a progress bar on a terminal, plain log lines
//! otherwise, a summary, an optional JSON report, and Ctrl-C cleanup.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::ProgressBar;
use safetensorize::migrate::{
    self, Control, FileRecord, Kind, MigrateOptions, Observer, Partition, Report, Status,
};

use super::Exit;
use super::ui::{self, Stream, Style, paint};

/// Arguments of `migrate`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  safetensorize migrate models/                          # convert in place, beside the sources
  safetensorize migrate models/bert --output-dir bert-st # a ready safetensors copy of the folder
  safetensorize migrate runs/ --dry-run                  # the plan; nothing is written
  safetensorize migrate llama/ --max-shard-size 5GB      # reshard into <=5GB files + index
  safetensorize migrate /data/models --jobs 4 --report migrate.json
  safetensorize migrate /data/models --partition $SLURM_ARRAY_TASK_ID/32  # one of 32 tasks

Candidates are .pt .pth .bin .ckpt .pkl files whose content is a torch checkpoint. Training state
(optimizer.pt, scheduler.pt, scaler.pt, rng_state*.pth, training_args.bin) is skipped, as are
files that are not checkpoints (LFS pointers, HTML, GGML), each reported with the reason.
Outputs already up to date are skipped, so running again resumes an interrupted run.

Exit codes: 0 every file converted, skipped or up to date; 1 at least one file failed;
2 invalid command line; 130 interrupted by SIGINT or SIGTERM (the report is still written,
marked interrupted; no temporary files are left).")]
pub struct MigrateArgs {
    /// Files or folders (walked recursively; links to files are read through, wherever they point,
    /// and outputs are named after the link; links to folders are not followed).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Mirror each PATH into DIR (converted weights plus copies of every other file) instead of
    /// writing beside the sources. With several PATHs each keeps its own name under DIR.
    #[arg(short, long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Print the plan (what would be written, skipped, and why) and write nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Replace outputs that exist, even up-to-date ones.
    #[arg(long)]
    overwrite: bool,
    /// Remove each source checkpoint once its outputs are written, fsynced and re-read byte for
    /// byte (shards: once the whole model and its new index are written).
    #[arg(long)]
    delete_source: bool,
    /// Split outputs into model-0000i-of-0000N.safetensors files of at most SIZE tensor bytes
    /// (5GB, 500MB, 2GiB, bytes), plus an index, in Hugging Face's greedy order. A tensor larger
    /// than SIZE gets a file of its own.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_shard_size: Option<u64>,
    /// Files converted at once.
    #[arg(short, long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Copy threads in total, shared by the files converted at once (default: one per core).
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Handle only share I of N (0 <= I < N). Shares are balanced by bytes, computed by each
    /// task from the same listing of the tree: N tasks running I = 0..N-1 cover every file
    /// exactly once, with no coordination. Keep N fixed (not the number of tasks submitted).
    #[arg(long, value_name = "I/N")]
    partition: Option<Partition>,
    /// Write a JSON report: one record per file with source, outputs, status, reason, tensors,
    /// bytes, seconds; and the summary.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the same JSON report on stdout (as `--report -`).
    #[arg(long, conflicts_with = "report")]
    json: bool,
    /// Only files matching GLOB (a glob with `/` matches the path below PATH, one without matches
    /// the file name). Repeatable.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out files and folders matching GLOB. Repeatable.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Write tensors that alias each other (tied embeddings) once per name instead of once.
    #[arg(long)]
    keep_aliases: bool,
    #[command(flatten)]
    policy: super::scan::PolicyArgs,
}

fn parse_size(s: &str) -> Result<u64, String> {
    safetensorize::pipeline::shard::parse_size(s)
}

/// Prints a line per file and drives the bar.
struct Printer {
    bar: ProgressBar,
    dry_run: bool,
    quiet: bool,
}

fn short(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

fn line(r: &FileRecord, stream: Stream) -> String {
    let (word, style) = match r.status {
        Status::Converted => ("converted", Style::Good),
        Status::Copied => ("copied", Style::Good),
        Status::UpToDate => ("up-to-date", Style::Dim),
        Status::Planned => ("would write", Style::Bold),
        Status::Skipped => ("skipped", Style::Warn),
        Status::Failed => ("failed", Style::Bad),
        Status::Removed => ("removed", Style::Dim),
    };
    if r.kind == Kind::Partial {
        let word = if r.status == Status::Planned {
            "would remove"
        } else {
            word
        };
        let head = paint(&format!("{word:<11}"), style, stream);
        let why = r.reason.as_deref().unwrap_or("");
        return format!("{head} {}: {why}", r.source.display());
    }
    let head = paint(&format!("{word:<11}"), style, stream);
    match r.status {
        Status::Skipped | Status::Failed => {
            let reason = r.reason.as_deref().unwrap_or("");
            // Reasons name their file already; print the source only when they do not.
            if reason.contains(&*r.source.to_string_lossy()) {
                format!("{head} {reason}")
            } else {
                format!("{head} {}: {reason}", r.source.display())
            }
        }
        _ => {
            let outs: Vec<String> = r.outputs.iter().map(|o| short(o)).collect();
            let outs = if outs.is_empty() {
                String::new()
            } else {
                format!(" -> {}", outs.join(", "))
            };
            let tensors = if r.tensors > 0 {
                format!("{} tensors, ", r.tensors)
            } else {
                String::new()
            };
            let deleted = if r.source_deleted {
                ", source deleted"
            } else {
                ""
            };
            let note = r
                .reason
                .as_deref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default();
            format!(
                "{head} {}{outs} ({tensors}{}, {:.2}s{deleted}){note}",
                r.source.display(),
                human(r.bytes),
                r.seconds
            )
        }
    }
}

impl Observer for Printer {
    fn begin(&self, _units: usize, bytes: u64) {
        self.bar.set_length(bytes);
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn released(&self) {
        crate::release_freed_memory();
    }

    fn finished(&self, r: &FileRecord) {
        if self.quiet && r.status != Status::Failed {
            return;
        }
        if self.dry_run {
            let text = line(r, Stream::Out);
            self.bar.suspend(|| println!("{text}"));
        } else {
            let text = line(r, Stream::Err);
            self.bar.suspend(|| eprintln!("{text}"));
        }
    }
}

fn summary(report: &Report) -> String {
    let s = &report.summary;
    let mut parts = Vec::new();
    if report.dry_run {
        parts.push(format!("{} to write", s.planned));
    } else {
        parts.push(format!("{} converted", s.converted));
    }
    if s.copied > 0 {
        parts.push(format!("{} copied", s.copied));
    }
    parts.push(format!("{} up to date", s.up_to_date));
    let why: Vec<String> = s.skipped.iter().map(|(k, n)| format!("{n} {k}")).collect();
    if why.is_empty() {
        parts.push("0 skipped".into());
    } else {
        parts.push(format!(
            "{} skipped ({})",
            s.skipped_total(),
            why.join(", ")
        ));
    }
    parts.push(format!("{} failed", s.failed));
    if s.sources_deleted > 0 {
        parts.push(format!("{} sources deleted", s.sources_deleted));
    }
    if s.partials_removed > 0 {
        let verb = if report.dry_run {
            "to remove"
        } else {
            "removed"
        };
        parts.push(format!(
            "{} stale temporary file(s) {verb}",
            s.partials_removed
        ));
    }
    let what = if report.dry_run {
        "dry run (nothing written)"
    } else {
        "migrate"
    };
    format!(
        "{what}: {}; {} written in {:.2}s",
        parts.join(", "),
        human(s.bytes_written),
        s.seconds
    )
}

/// Runs `migrate`.
pub fn run(args: MigrateArgs) -> anyhow::Result<Exit> {
    let opts = MigrateOptions {
        output_dir: args.output_dir.clone(),
        dry_run: args.dry_run,
        overwrite: args.overwrite,
        delete_source: args.delete_source,
        max_shard_size: args.max_shard_size,
        jobs: args.jobs.max(1),
        threads: args.threads,
        partition: args.partition,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        keep_aliases: args.keep_aliases,
        allow_dangerous: args.policy.allow_dangerous,
        strict: args.policy.strict,
        limits: args.policy.limits.limits(),
    };
    if args.dry_run && args.delete_source {
        eprintln!("note: --dry-run deletes nothing; listing what would be converted");
    }
    let quiet = ui::get().quiet;
    let bar = ui::bar(
        0,
        "{wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    );
    if !bar.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    let control = Arc::new(Control::new());
    let report_to = if args.json {
        Some(PathBuf::from("-"))
    } else {
        args.report.clone()
    };
    {
        let control = Arc::clone(&control);
        let bar = bar.clone();
        let report_to = report_to.clone();
        // SIGINT, or SIGTERM from a scheduler: remove the temporary files of the outputs being
        // written (the second pass catches one created in between), write the report of what
        // was done and what was not, and exit.
        let _ = ctrlc::set_handler(move || {
            let mut removed = control.interrupt();
            std::thread::sleep(Duration::from_millis(200));
            removed += control.interrupt();
            bar.abandon();
            if !control.claim_report() {
                // The run has finished and is writing its own report; it exits 130.
                return;
            }
            let report = control.report();
            let written = match &report_to {
                Some(path) => write_report(&report, path).map_err(|e| format!("{e:#}")),
                None => Ok(()),
            };
            eprintln!(
                "\ninterrupted: {removed} partial file(s) removed; finished outputs are complete; {} file(s) not done. Run again to resume.",
                report.not_done.len()
            );
            if let Err(e) = written {
                eprintln!("{} {e}", paint("error:", Style::Bad, Stream::Err));
            }
            std::process::exit(Exit::Interrupted as i32);
        });
    }
    let printer = Printer {
        bar: bar.clone(),
        // With a JSON report on stdout, the plan's lines go to stderr.
        dry_run: args.dry_run && !args.json && args.report.as_deref() != Some(Path::new("-")),
        quiet,
    };
    let report = match migrate::run(&args.paths, &opts, &printer, &control) {
        Ok(r) => r,
        Err(msg) => {
            bar.finish_and_clear();
            eprintln!("{} {msg}", paint("error:", Style::Bad, Stream::Err));
            return Ok(Exit::Usage);
        }
    };
    bar.finish_and_clear();
    if !control.claim_report() {
        // A signal handler is writing the report and exits the process.
        loop {
            std::thread::park();
        }
    }
    if let Some(path) = &report_to {
        write_report(&report, path)?;
    }
    if !quiet || report.summary.failed > 0 {
        eprintln!("{}", summary(&report));
    }
    if report.interrupted {
        return Ok(Exit::Interrupted);
    }
    Ok(if report.summary.failed > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// Writes the JSON report to `path` (`-`: stdout).
fn write_report(report: &migrate::Report, path: &Path) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(report)?;
    text.push(b'\n');
    if path.as_os_str() == "-" {
        std::io::stdout().lock().write_all(&text)?;
    } else {
        // Atomic, so a report is whole or absent even if the process is killed while writing.
        safetensorize::writer::atomic::write_atomic(path, &text, true)
            .map_err(|k| safetensorize::Error::new(path, k))?;
    }
    Ok(())
}
