//! How the command line talks: `--quiet`/`--verbose`, and colour only when the stream is a
//! terminal (and `NO_COLOR` is unset). Set once in `main`, read by every subcommand.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// Output settings from the global flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ui {
    /// Print nothing but errors (and what was asked for on stdout, e.g. `--json`).
    pub quiet: bool,
    /// Print details (left-out values, aliases, timings).
    pub verbose: bool,
    /// Colour stdout.
    pub color_out: bool,
    /// Colour stderr.
    pub color_err: bool,
}

static UI: OnceLock<Ui> = OnceLock::new();

/// Records the global flags; later calls are ignored.
pub fn init(quiet: bool, verbose: bool) {
    let allowed = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = UI.set(Ui {
        quiet,
        verbose: verbose && !quiet,
        color_out: allowed && std::io::stdout().is_terminal(),
        color_err: allowed && std::io::stderr().is_terminal(),
    });
}

/// The settings (defaults when `init` was not called).
pub fn get() -> Ui {
    UI.get().copied().unwrap_or_default()
}

/// A style for [`paint`].
#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// Success.
    Good,
    /// Failure.
    Bad,
    /// Something to notice.
    Warn,
    /// Headings.
    Bold,
    /// Less important.
    Dim,
}

/// Which stream a text goes to.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// `text` in `style` when that stream is a colour terminal, else `text` unchanged.
pub fn paint(text: &str, style: Style, stream: Stream) -> String {
    let ui = get();
    let on = match stream {
        Stream::Out => ui.color_out,
        Stream::Err => ui.color_err,
    };
    if !on {
        return text.to_string();
    }
    let code = match style {
        Style::Good => "32",
        Style::Bad => "31;1",
        Style::Warn => "33",
        Style::Bold => "1",
        Style::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// A progress bar of `len` bytes drawn on stderr with `template` when stderr is a terminal and
/// `--quiet` is off; hidden otherwise.
pub fn bar(len: u64, template: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if !std::io::stderr().is_terminal() || get().quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style);
    }
    b
}
