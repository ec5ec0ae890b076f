//! Command-line definitions and one file per subcommand. Progress bars live here only.

mod completions;
mod convert;
mod inspect;
mod migrate;
mod scan;
mod ui;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The conversion failed (unreadable, malformed or unsupported input, or an I/O error).
    pub const FAILED: u8 = 1;
    /// The command line was invalid (clap's own code).
    #[allow(dead_code)]
    pub const USAGE: u8 = 2;
    /// The file references globals that would run code in a normal unpickler (refused by
    /// `convert` without `--allow-dangerous`; reported by `scan`).
    pub const DANGEROUS: u8 = 3;
    /// `verify` (or `convert --verify`) found differences between a checkpoint and its output.
    pub const MISMATCH: u8 = 4;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  conversion failed (unreadable, malformed or unsupported input, output exists, I/O error)
  2  invalid command line
  3  the file references dangerous globals (convert refuses it; scan found one)
  4  verify (or convert --verify) found differences";

/// Convert PyTorch pickle checkpoints to safetensors without executing any pickle code.
#[derive(Parser, Debug)]
#[command(name = "safetensorize", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Print only errors (and what a `--json` flag asks for).
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Print details: what was left out, aliases, per-tensor hashes.
    #[arg(short, long)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert one checkpoint file into a safetensors file.
    Convert(convert::ConvertArgs),
    /// Report what checkpoint files attempt: globals with their class, odd opcodes, archive
    /// anomalies, and a verdict (safe, suspicious, dangerous). Nothing is executed.
    Scan(scan::ScanArgs),
    /// Show what a checkpoint or safetensors file holds: format, tensors, selection, globals.
    /// Reads only headers and the pickle.
    Inspect(inspect::InspectArgs),
    /// Compare a checkpoint with the safetensors file converted from it, byte for byte.
    Verify(verify::VerifyArgs),
    /// Convert every checkpoint under folders: HF names and indexes, resharding, resumable,
    /// with progress and a report.
    Migrate(migrate::MigrateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
}

/// Parses the command line, runs it and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    ui::init(cli.quiet, cli.verbose);
    let result = match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Completions(args) => completions::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::from(exit::OK);
            }
            eprintln!(
                "{} {err:#}",
                ui::paint("error:", ui::Style::Bad, ui::Stream::Err)
            );
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The documented exit code of a failure: 3 for a policy refusal, 1 for everything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    let refused = err.chain().any(|c| {
        c.downcast_ref::<safetensorize::Error>()
            .is_some_and(|e| matches!(e.kind, safetensorize::ErrorKind::Dangerous { .. }))
    });
    if refused {
        exit::DANGEROUS
    } else {
        exit::FAILED
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
