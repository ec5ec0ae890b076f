//! The `safetensorize` command line: parse, run, print `{err:#}`, exit with a documented code.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
