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
  safetensorize scan --json model.pt | jq .  # for machines

Verdicts: safe (only what torch writes), suspicious (an unknown global is called, an opcode or
archive layout no torch writer produces, a hidden pickle), dangerous (a name that would run code
or touch the system in a normal unpickler). Nothing is ever executed.

Exit codes: 0 all safe, 1 something suspicious, 3 something dangerous, 2 invalid command line.")]
pub struct ScanArgs {
    /// Files or folders (folders are scanned recursively; files that are not checkpoints are
    /// skipped inside folders).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print one JSON document (an array of file reports) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    limits: LimitArgs,
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
    if args.json {
        serde_json::to_writer_pretty(&mut out, &reports)?;
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
        writeln!(
            out,
            "{} files: {} safe, {} suspicious, {} dangerous",
            reports.len(),
            count(Verdict::Safe),
            count(Verdict::Suspicious),
            count(Verdict::Dangerous)
        )?;
    }
    Ok(match worst {
        Verdict::Safe => Exit::Ok,
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
