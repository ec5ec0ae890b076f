//! `safetensorize verify`: compare a checkpoint with the safetensors file made from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use safetensorize::verify::{VerifyOptions, VerifyReport, verify};

use super::Exit;
use super::ui::{self, Stream, Style, paint};

/// Arguments of `verify`.
#[derive(Args, Debug)]
#[command(after_help = "\
Re-reads both files and compares every tensor name, dtype, shape and byte (streamed and hashed in
parallel). Aliases recorded in the output's __metadata__ must be the same view as the tensor they
name. Pass the same --key / --include-numpy / --torchscript-attributes as the conversion.

Examples:
  safetensorize verify pytorch_model.bin model.safetensors
  safetensorize verify last.ckpt last.safetensors --key state_dict
  safetensorize verify train.pt train.safetensors --json > verify.json

Exit codes: 0 identical, 1 a file cannot be read, 2 invalid command line, 4 differences found.")]
pub struct VerifyArgs {
    /// The source checkpoint.
    source: PathBuf,
    /// The safetensors file converted from it.
    output: PathBuf,
    /// The dotted path that was converted (as given to `convert --key`).
    #[arg(long)]
    key: Option<String>,
    /// The conversion included numpy arrays (`convert --include-numpy`).
    #[arg(long)]
    include_numpy: bool,
    /// The conversion included a TorchScript module's plain tensor attributes
    /// (`convert --torchscript-attributes`).
    #[arg(long)]
    torchscript_attributes: bool,
    /// Print one JSON document (the full report, with both hashes of every tensor).
    #[arg(long)]
    json: bool,
    /// Most differences listed.
    #[arg(long, default_value_t = 20, value_name = "N")]
    max_differences: usize,
    /// Threads (default: one per core).
    #[arg(short = 'j', long, default_value_t = 0)]
    jobs: usize,
}

/// Runs `verify`.
pub fn run(args: VerifyArgs) -> anyhow::Result<Exit> {
    let opts = VerifyOptions {
        key: args.key.clone(),
        include_numpy: args.include_numpy,
        torchscript_attributes: args.torchscript_attributes,
        threads: args.jobs,
        max_differences: args.max_differences,
        ..Default::default()
    };
    let report = run_verify(&args.source, &args.output, &opts)?;
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        out.flush()?;
    } else {
        print_report(&report);
    }
    Ok(code(&report))
}

/// The exit code of a report.
pub fn code(r: &VerifyReport) -> Exit {
    if r.ok { Exit::Ok } else { Exit::Mismatch }
}

/// Verifies with a progress bar on a terminal.
pub fn run_verify(
    source: &Path,
    output: &Path,
    opts: &VerifyOptions,
) -> anyhow::Result<VerifyReport> {
    let total = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    let bar = ui::bar(
        total,
        "verify {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
    );
    let report = verify(source, output, opts, &|n| bar.inc(n));
    bar.finish_and_clear();
    Ok(report?)
}

/// Prints a report: one line when identical, the differences otherwise (to stdout, so they can
/// be piped; `--quiet` keeps only the differences).
pub fn print_report(r: &VerifyReport) {
    let ui = ui::get();
    if r.ok {
        if !ui.quiet {
            println!(
                "{} {} matches {}: {} tensors ({} as aliases), {} bytes compared",
                paint("ok:", Style::Good, Stream::Out),
                r.output,
                r.source,
                r.tensors,
                r.aliases,
                r.bytes
            );
        }
        if ui.verbose {
            for c in &r.checked {
                println!("  {}  {}  {} bytes", c.output_xxh3, c.name, c.bytes);
            }
        }
        return;
    }
    println!(
        "{} {} differs from {}: {} difference{}",
        paint("FAILED:", Style::Bad, Stream::Out),
        r.output,
        r.source,
        r.difference_count,
        if r.difference_count == 1 { "" } else { "s" }
    );
    for d in &r.differences {
        println!("  {:<8} {}: {}", d.kind.as_str(), d.tensor, d.detail);
    }
    if r.difference_count > r.differences.len() {
        println!(
            "  … {} more (--max-differences)",
            r.difference_count - r.differences.len()
        );
    }
}
