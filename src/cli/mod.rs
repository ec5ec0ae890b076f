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

/// The documented exit codes (`--help`, the README), one per outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The conversion failed (unreadable, malformed or unsupported input, a limit exceeded, the
    /// output exists, an I/O error); `scan`: something suspicious.
    Failed = 1,
    /// The command line was invalid (clap's own code).
    Usage = 2,
    /// Refused by the policy: globals that would run code in a normal unpickler (or unknown ones
    /// under `--strict`); `scan`: something dangerous.
    Refused = 3,
    /// `verify` (or `convert --verify`) found differences between a checkpoint and its output.
    Mismatch = 4,
    /// `scan`: a file the tool cannot look into (a 7z or RAR archive, an unknown binary, a
    /// compression it does not open), and nothing suspicious or dangerous elsewhere.
    Unscannable = 5,
    /// Stopped by SIGINT or SIGTERM (`migrate`: finished outputs are complete, run again to
    /// resume).
    Interrupted = 130,
}

impl Exit {
    /// The exit code of a library error: the one place errors meet exit codes.
    pub fn of_error(kind: &safetensorize::ErrorKind) -> Exit {
        use safetensorize::ErrorKind as K;
        match kind {
            K::Dangerous { .. } | K::UnknownUnderStrict { .. } => Exit::Refused,
            K::Io { .. }
            | K::NotACheckpoint(_)
            | K::Malformed(_)
            | K::Pickle { .. }
            | K::Tensor { .. }
            | K::Unsupported(_)
            | K::Selection(_)
            | K::LimitExceeded(_)
            | K::OutputExists(_)
            | K::OutputDiffers(_)
            | K::Reread(_) => Exit::Failed,
            K::Interrupted => Exit::Interrupted,
        }
    }
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  conversion failed (unreadable, malformed or unsupported input, output exists, I/O error)
  2  invalid command line
  3  the file references dangerous globals (convert refuses it; scan found one)
  4  verify (or convert --verify) found differences
  5  scan: a file it cannot look into (7z, RAR, an unknown binary), nothing worse
  130  interrupted (SIGINT or SIGTERM; migrate: finished outputs are complete)";

/// Convert PyTorch pickle checkpoints to safetensors without executing any pickle code.
#[derive(Parser, Debug)]
#[command(name = "safetensorize", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Print only errors (and what a `--json` flag asks for). Accepted before or after the
    /// subcommand.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Print details: what convert left out and the aliases, every global scan saw, per-tensor
    /// hashes. Accepted before or after the subcommand.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert one checkpoint file into a safetensors file.
    Convert(convert::ConvertArgs),
    /// Report what checkpoint files attempt: globals with their class, odd opcodes, archive
    /// anomalies, and a verdict (safe, suspicious, dangerous, unscannable). Nothing is executed.
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
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::from(Exit::Ok as u8);
            }
            eprintln!(
                "{} {err:#}",
                ui::paint("error:", ui::Style::Bad, ui::Stream::Err)
            );
            ExitCode::from(exit_code(&err) as u8)
        }
    }
}

/// The documented exit code of a failure: the library error's, else [`Exit::Failed`].
fn exit_code(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|c| c.downcast_ref::<safetensorize::Error>())
        .map_or(Exit::Failed, |e| Exit::of_error(&e.kind))
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::Exit;
    use safetensorize::ErrorKind as K;

    #[test]
    fn policy_refusals_exit_3_and_every_other_failure_exits_1() {
        let g = || vec!["posix.system (dangerous, REDUCE at byte 9 of data.pkl)".to_string()];
        assert_eq!(Exit::of_error(&K::Dangerous { globals: g() }) as u8, 3);
        assert_eq!(
            Exit::of_error(&K::UnknownUnderStrict { globals: g() }) as u8,
            3
        );
        for k in [
            K::LimitExceeded("3 tensors, more than the limit of 2 (--max-tensors)".into()),
            K::Malformed("bad".into()),
            K::NotACheckpoint("html".into()),
            K::OutputExists("a.safetensors".into()),
            K::Unsupported("x".into()),
            K::Selection("x".into()),
        ] {
            assert_eq!(Exit::of_error(&k), Exit::Failed, "{k}");
        }
        assert_eq!(
            (
                Exit::Ok as u8,
                Exit::Usage as u8,
                Exit::Mismatch as u8,
                Exit::Interrupted as u8
            ),
            (0, 2, 4, 130)
        );
    }

    #[test]
    fn the_exit_code_comes_from_the_library_error_anywhere_in_the_chain() {
        let e = safetensorize::Error::new(
            "m.pt".as_ref(),
            K::Dangerous {
                globals: vec!["os.system".into()],
            },
        );
        let wrapped = anyhow::Error::new(e).context("converting m.pt");
        assert_eq!(super::exit_code(&wrapped) as u8, 3);
        assert_eq!(super::exit_code(&anyhow::anyhow!("plain")) as u8, 1);
    }
}
