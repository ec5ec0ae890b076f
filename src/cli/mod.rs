//! Command-line definitions and one file per subcommand. Progress bars live here only.

mod convert;

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
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  conversion failed (unreadable, malformed or unsupported input, output exists, I/O error)
  2  invalid command line";

/// Convert PyTorch pickle checkpoints to safetensors without executing any pickle code.
#[derive(Parser, Debug)]
#[command(name = "safetensorize", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert one checkpoint file into a safetensors file.
    Convert(convert::ConvertArgs),
}

/// Parses the command line, runs it and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(args) => convert::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::from(exit::OK);
            }
            eprintln!("error: {err:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}
