//! `safetensorize scan`, and the resource-limit flags `convert` shares.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use safetensorize::OpenOptions;
use safetensorize::pickle::Limits;
use safetensorize::scan::{Verdict, scan_paths};

use super::Exit;

/// The policy for files that name suspicious globals, and the resource limits: shared by
/// `convert` and `migrate`.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Convert files that reference dangerous globals (`os.system`, `builtins.eval`, …) instead
    /// of refusing them with exit code 3. Nothing is ever called either way; only tensors are
    /// extracted.
    #[arg(long)]
    pub allow_dangerous: bool,
    /// Also refuse files that reference globals outside the known torch/numpy/config set.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Bounds on what one file may make the tool do. The defaults are far above real checkpoints.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Largest main pickle (`data.pkl`), in bytes.
    #[arg(long, default_value_t = Limits::default().max_pickle_bytes, value_name = "BYTES")]
    pub max_pickle_bytes: u64,
    /// Most pickle opcodes executed.
    #[arg(long, default_value_t = Limits::default().max_ops, value_name = "N")]
    pub max_pickle_ops: u64,
    /// Deepest VM stack (values plus open marks).
    #[arg(long, default_value_t = Limits::default().max_stack, value_name = "N")]
    pub max_stack: usize,
    /// Most memo entries.
    #[arg(long, default_value_t = Limits::default().max_memo, value_name = "N")]
    pub max_memo: usize,
    /// Longest single string or bytes argument, in bytes.
    #[arg(long, default_value_t = Limits::default().max_string, value_name = "BYTES")]
    pub max_string_bytes: u64,
    /// Most zip entries.
    #[arg(long, default_value_t = Limits::default().max_zip_entries, value_name = "N")]
    pub max_zip_entries: u64,
    /// Most bytes that compressed zip members may inflate to, in total.
    #[arg(long, default_value_t = Limits::default().max_inflated_bytes, value_name = "BYTES")]
    pub max_inflated_bytes: u64,
    /// Most tensors converted.
    #[arg(long, default_value_t = Limits::default().max_tensors, value_name = "N")]
    pub max_tensors: u64,
    /// Most elements in any one tensor.
    #[arg(long, default_value_t = Limits::default().max_tensor_elements, value_name = "N")]
    pub max_tensor_elements: u64,
    /// Deepest nesting of containers walked in the object tree.
    #[arg(long, default_value_t = Limits::default().max_depth, value_name = "N")]
    pub max_depth: usize,
}

impl LimitArgs {
    /// The limits these flags describe.
    pub fn limits(&self) -> Limits {
        Limits {
            max_ops: self.max_pickle_ops,
            max_stack: self.max_stack,
            max_memo: self.max_memo,
            max_string: self.max_string_bytes,
            max_pickle_bytes: self.max_pickle_bytes,
            max_zip_entries: self.max_zip_entries,
            max_inflated_bytes: self.max_inflated_bytes,
            max_tensors: self.max_tensors,
            max_tensor_elements: self.max_tensor_elements,
            max_depth: self.max_depth,
        }
    }

    /// The options to open a checkpoint with.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            limits: self.limits(),
        }
    }
}

/// Arguments of `scan`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  safetensorize scan pytorch_model.bin       # one file
  safetensorize scan checkpoints/            # every file under a folder
  safetensorize scan --json model.pt | jq .  # for machines (schema safetensorize.scan/1)
  safetensorize scan --format sarif models/ > scan.sarif   # SARIF 2.1.0 for code scanning

Verdicts (nothing is ever executed):
  safe         every byte a loader would execute was understood and every global is one the
               tool interprets or a known inert data class; or a format that cannot carry code
               (safetensors, a numeric .npy/.npz, text), named
  suspicious   anything else no torch writer produces: unknown globals (called or not: importing
               an unknown module runs its code), memo/DUP expansion and hash bombs, duplicate
               dict keys, hidden or embedded pickles, malformed pickles, bytes after STOP
  dangerous    a global that runs code, touches files, processes or the network, loads other
               code or pickles, or tampers with scanners (picklescan, fickling, modelscan); an
               opcode shape that only exists to reach one (STACK_GLOBAL on computed operands,
               attribute chains through modules, BUILD on a module)
  unscannable  a file the tool cannot look into (7z, RAR, bzip2/xz/zstd, an unknown binary)

Exit codes (the worst file wins): 0 all safe, 1 something suspicious, 3 something dangerous,
5 something unscannable and nothing worse, 2 invalid command line.")]
pub struct ScanArgs {
    /// Files or folders (folders are scanned recursively and in parallel; text files that are
    /// not checkpoints are skipped inside folders, unknown binaries are reported unscannable).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print one JSON document (an array of file reports, each with
    /// `"schema": "safetensorize.scan/1"`) instead of text; same as `--format json`.
    #[arg(long)]
    json: bool,
    /// Output format: text, json, or sarif (SARIF 2.1.0: one result per finding and per
    /// unknown or dangerous global, with the file and byte offset).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    limits: LimitArgs,
}

/// `scan --format`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per file, its unknown and dangerous globals and findings, a summary line.
    Text,
    /// An array of file reports (schema `safetensorize.scan/1`).
    Json,
    /// SARIF 2.1.0.
    Sarif,
}

/// Runs `scan`.
pub fn run(args: ScanArgs) -> anyhow::Result<Exit> {
    let reports = scan_paths(&args.paths, &args.limits.open_options());
    let verbose = super::ui::get().verbose;
    let worst = reports
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Safe);
    let mut out = std::io::stdout().lock();
    let format = if args.json { Format::Json } else { args.format };
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut out, &reports)?;
        writeln!(out)?;
    } else if format == Format::Sarif {
        serde_json::to_writer_pretty(&mut out, &safetensorize::scan::sarif(&reports))?;
        writeln!(out)?;
    } else {
        for r in &reports {
            writeln!(out, "{}: {} ({})", r.path.display(), r.verdict, r.format)?;
            if let Some(e) = &r.error {
                writeln!(
                    out,
                    "  convert cannot read it: {}",
                    safetensorize::pickle::truncate(e, 300)
                )?;
            }
            for g in &r.globals {
                use safetensorize::torch::GlobalClass::*;
                let show = verbose || matches!(g.class, Dangerous | Unknown);
                if !show {
                    continue;
                }
                let calls = if g.calls.is_empty() {
                    String::new()
                } else {
                    let c: Vec<String> = g
                        .calls
                        .iter()
                        .take(3)
                        .map(|c| format!("{}@{}", c.opcode, c.offset))
                        .collect();
                    format!(", called by {}", c.join(" "))
                };
                writeln!(
                    out,
                    "  {:<11} {} ({} at byte {} of {}{calls})",
                    g.class.as_str(),
                    safetensorize::pickle::truncate(&g.qualified(), 200),
                    g.opcode,
                    g.offset,
                    g.member
                )?;
            }
            for f in r
                .findings
                .iter()
                .filter(|f| verbose || f.severity > Verdict::Safe)
            {
                let at = match (&f.member, f.offset) {
                    (Some(m), Some(o)) => format!(" ({m} at byte {o})"),
                    (Some(m), None) => format!(" ({m})"),
                    (None, Some(o)) => format!(" (byte {o})"),
                    (None, None) => String::new(),
                };
                writeln!(
                    out,
                    "  {:<11} {}: {}{at}",
                    f.severity.as_str(),
                    f.kind,
                    safetensorize::pickle::truncate(&f.detail, 300)
                )?;
            }
        }
        let count = |v: Verdict| reports.iter().filter(|r| r.verdict == v).count();
        let unscannable = match count(Verdict::Unscannable) {
            0 => String::new(),
            n => format!(", {n} unscannable"),
        };
        writeln!(
            out,
            "{} files: {} safe, {} suspicious, {} dangerous{unscannable}",
            reports.len(),
            count(Verdict::Safe),
            count(Verdict::Suspicious),
            count(Verdict::Dangerous)
        )?;
    }
    Ok(match worst {
        Verdict::Safe => Exit::Ok,
        Verdict::Unscannable => Exit::Unscannable,
        Verdict::Suspicious => Exit::Failed,
        Verdict::Dangerous => Exit::Refused,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn the_flags_default_to_the_one_set_of_library_limits_and_each_sets_its_own_bound() {
        let f = Flags::try_parse_from(["t"]).unwrap();
        assert_eq!(f.limits.limits(), Limits::default());
        let f = Flags::try_parse_from([
            "t",
            "--max-pickle-ops=1",
            "--max-stack=2",
            "--max-memo=3",
            "--max-string-bytes=4",
            "--max-pickle-bytes=5",
            "--max-zip-entries=6",
            "--max-inflated-bytes=7",
            "--max-tensors=8",
            "--max-tensor-elements=9",
            "--max-depth=10",
        ])
        .unwrap();
        let l = f.limits.limits();
        assert_eq!(
            (
                l.max_ops,
                l.max_stack,
                l.max_memo,
                l.max_string,
                l.max_pickle_bytes
            ),
            (1, 2, 3, 4, 5)
        );
        assert_eq!(
            (
                l.max_zip_entries,
                l.max_inflated_bytes,
                l.max_tensors,
                l.max_tensor_elements,
                l.max_depth
            ),
            (6, 7, 8, 9, 10)
        );
    }
}
