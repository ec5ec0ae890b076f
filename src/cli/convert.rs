//! `safetensorize convert`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use safetensorize::{ConvertOptions, default_output};

use super::exit;

/// Arguments of `convert`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  safetensorize convert pytorch_model.bin                 # writes model.safetensors beside it
  safetensorize convert last.ckpt -o weights.safetensors  # Lightning: takes state_dict
  safetensorize convert train.pt --key model.ema          # a dotted path inside the checkpoint
  safetensorize convert tied.pt --keep-aliases            # write tied weights twice
  safetensorize convert model.pt --verify --json          # prove it, print a JSON summary

Exit codes: 0 success, 1 conversion failed, 2 invalid command line, 3 refused: the file
references dangerous globals (or unknown ones with --strict), 4 --verify found differences.")]
pub struct ConvertArgs {
    /// The checkpoint to convert (zip or legacy torch.save format; detected from its content).
    input: PathBuf,
    /// Output file [default: beside the input, `.safetensors` instead of the extension;
    /// `pytorch_model*.bin` becomes `model*.safetensors`].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Dotted path of the part to convert, e.g. `model` or `state_dict.encoder`; `""` converts
    /// the whole tree. Default: `state_dict` if present, else the first of `model_state_dict`,
    /// `model_state`, `model`, `module` that holds tensors, else everything.
    #[arg(long)]
    key: Option<String>,
    /// Write tensors that alias each other (e.g. tied embeddings) once per name instead of once,
    /// with the other names recorded in `__metadata__`.
    #[arg(long)]
    keep_aliases: bool,
    /// Replace the output if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Also write numeric numpy arrays found in the checkpoint as tensors (same dtype and shape).
    #[arg(long)]
    include_numpy: bool,
    /// Copy threads (default: one per core).
    #[arg(short = 'j', long, default_value_t = 0)]
    jobs: usize,
    #[command(flatten)]
    policy: super::scan::PolicyArgs,
    /// List what was left out (non-tensor values) and the aliases.
    #[arg(short, long)]
    verbose: bool,
    /// Re-read the input and the output after writing and compare every tensor (as `verify`).
    #[arg(long)]
    verify: bool,
    /// Print the summary as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// Split the output into files of at most SIZE tensor bytes (e.g. `5GB`, `500MB`), named
    /// `model-00001-of-0000N.safetensors` in Hugging Face's greedy order, plus
    /// `model.safetensors.index.json`. The names come from OUTPUT (or the input's default).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "verify")]
    max_shard_size: Option<u64>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    safetensorize::migrate::shard::parse_size(s)
}

/// Runs `convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.input));
    let opts = ConvertOptions {
        key: args.key.clone(),
        keep_aliases: args.keep_aliases,
        overwrite: args.overwrite,
        threads: args.jobs,
        include_numpy: args.include_numpy,
    };
    if args.max_shard_size.is_none() {
        safetensorize::check_output(&args.input, &output, opts.overwrite)?;
    }
    // Every check happens before the output is opened: limits, then the policy, then the tensors.
    let limits = args.policy.limits.limits();
    let (ckpt, refusal) = safetensorize::scan::open_checked(
        &args.input,
        &limits,
        args.policy.strict,
        args.policy.allow_dangerous,
    )?;
    if let Some(e) = refusal {
        eprintln!(
            "warning: {e:#}\nwarning: converting anyway (--allow-dangerous); nothing is executed"
        );
    }
    let fopts = safetensorize::tree::FlattenOptions {
        include_numpy: opts.include_numpy,
        max_depth: args.policy.limits.max_depth,
    };
    let sel = ckpt.select_with(opts.key.as_deref(), opts.keep_aliases, &fopts)?;
    safetensorize::scan::check_selection(&ckpt, &sel, &limits)?;
    let total: u64 = sel.tensors.iter().map(|t| t.nbytes).sum();
    let bar = if std::io::stderr().is_terminal() && !super::ui::get().quiet {
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
        ) {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };
    if let Some(max) = args.max_shard_size {
        let dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = output
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = name
            .strip_suffix(".safetensors")
            .unwrap_or(&name)
            .to_string();
        let r =
            safetensorize::migrate::convert_sharded(&ckpt, &sel, &dir, &base, max, &opts, &|n| {
                bar.inc(n)
            })?;
        bar.finish_and_clear();
        if args.json {
            let doc = serde_json::json!({
                "input": args.input, "files": r.files, "index": r.index,
                "key": sel.key, "tensors": r.tensors, "aliases": sel.aliases.len(), "bytes": r.bytes,
                "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else if !super::ui::get().quiet {
            eprintln!(
                "wrote {} file(s){}: {} tensors, {} bytes, in {:.2}s",
                r.files.len(),
                r.index
                    .as_ref()
                    .map(|i| format!(" and {}", i.display()))
                    .unwrap_or_default(),
                r.tensors,
                r.bytes,
                started.elapsed().as_secs_f64()
            );
        }
        return Ok(exit::OK);
    }
    let report = ckpt.write(&sel, &output, &opts, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    let checked = if args.verify {
        let vopts = safetensorize::verify::VerifyOptions {
            key: Some(report.key.clone()),
            include_numpy: opts.include_numpy,
            threads: opts.threads,
            open: args.policy.limits.open_options(),
            ..Default::default()
        };
        Some(super::verify::run_verify(&args.input, &output, &vopts)?)
    } else {
        None
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary_json(
                &report,
                started.elapsed().as_secs_f64(),
                checked.as_ref()
            ))?
        );
        return Ok(checked.as_ref().map_or(exit::OK, super::verify::code));
    }
    if let Some(r) = &checked {
        super::verify::print_report(r);
        if !r.ok {
            eprintln!("the output was kept for inspection: {}", output.display());
            return Ok(exit::MISMATCH);
        }
    }
    if super::ui::get().quiet {
        return Ok(exit::OK);
    }
    if args.verbose || super::ui::get().verbose {
        for (name, ty) in &report.skipped {
            eprintln!("left out {name}: {ty}");
        }
        for (alias, kept) in &report.aliases {
            eprintln!("alias {alias} -> {kept}");
        }
    }
    let from = if report.key.is_empty() {
        String::new()
    } else {
        format!(" from key {:?}", report.key)
    };
    eprintln!(
        "wrote {}: {} tensors{from}, {} bytes, {} aliases, {} non-tensor values left out, in {:.2}s",
        report.output.display(),
        report.tensors,
        report.bytes,
        report.aliases.len(),
        report.skipped.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(exit::OK)
}

/// `convert --json`: the report, the time taken and the `--verify` outcome.
fn summary_json(
    r: &safetensorize::ConvertReport,
    seconds: f64,
    verify: Option<&safetensorize::verify::VerifyReport>,
) -> serde_json::Value {
    serde_json::json!({
        "schema": "safetensorize.convert/1",
        "input": r.input.display().to_string(),
        "output": r.output.display().to_string(),
        "key": r.key,
        "tensors": r.tensors,
        "bytes": r.bytes,
        "aliases": r.aliases.iter().map(|(a, k)| serde_json::json!({"alias": a, "kept": k})).collect::<Vec<_>>(),
        "non_tensors": r.skipped.iter().map(|(p, t)| serde_json::json!({"path": p, "type": t})).collect::<Vec<_>>(),
        "seconds": seconds,
        "verify": verify,
    })
}
