//! `safetensorize completions`: shell completion scripts, generated from the clap definitions.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, Exit};

/// Arguments of `completions`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  safetensorize completions bash > ~/.local/share/bash-completion/completions/safetensorize
  safetensorize completions zsh > ~/.zfunc/_safetensorize     # with fpath+=(~/.zfunc)
  safetensorize completions fish > ~/.config/fish/completions/safetensorize.fish")]
pub struct CompletionsArgs {
    /// The shell.
    shell: Shell,
}

/// Prints the completion script.
pub fn run(args: CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "safetensorize", &mut out);
    Ok(Exit::Ok)
}
