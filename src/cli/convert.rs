//! `safetensorize convert`.

use std::path::PathBuf;
use std::time::Instant;

use super::ui::bar;
use clap::Args;
use safetensorize::pipeline::{Event, Pipeline, Policy, Target};
use safetensorize::{ConvertOptions, default_output};

use super::Exit;

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
    /// TorchScript archives: also write tensor attributes that are not parameters or buffers
    /// (after the `state_dict()` names; without it the output is exactly `state_dict()`).
    #[arg(long)]
    torchscript_attributes: bool,
    /// Copy threads (default: one per core).
    #[arg(short = 'j', long, default_value_t = 0)]
    jobs: usize,
    #[command(flatten)]
    policy: super::scan::PolicyArgs,
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
    safetensorize::pipeline::shard::parse_size(s)
}

/// Runs `convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.input));
    let pipeline = Pipeline {
        convert: ConvertOptions {
            key: args.key.clone(),
            keep_aliases: args.keep_aliases,
            overwrite: args.overwrite,
            threads: args.jobs,
            include_numpy: args.include_numpy,
            torchscript_attributes: args.torchscript_attributes,
            defer_folder_sync: false,
        },
        policy: Policy {
            strict: args.policy.strict,
            allow_dangerous: args.policy.allow_dangerous,
        },
        limits: args.policy.limits.limits(),
        verify: args.verify,
    };
    let target = Target::for_output(&output, args.max_shard_size);
    let write_bar = bar(
        0,
        "{wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
    );
    let verify_bar = bar(
        0,
        "verify {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
    );
    let progress = |event: Event<'_>| match event {
        Event::Allowed(e) => eprintln!(
            "warning: {e:#}\nwarning: converting anyway (--allow-dangerous); nothing is executed"
        ),
        // What the pickle, the audit and then the tree held goes back before the next step
        // allocates anew.
        Event::Released => crate::release_freed_memory(),
        Event::Selected { bytes, .. } => write_bar.set_length(bytes),
        Event::Written(n) => write_bar.inc(n),
        Event::Verifying { bytes } => {
            write_bar.finish_and_clear();
            verify_bar.set_length(bytes);
        }
        Event::Verified(n) => verify_bar.inc(n),
    };
    let done = pipeline.open(&args.input, &progress).and_then(|opened| {
        crate::release_freed_memory();
        let written = pipeline.write(&opened, &target, &progress);
        // The process ends next: the opened checkpoint (the selection and the archive's
        // records: a few allocations per tensor, a million for a large MoE) is left to the
        // system to reclaim rather than freed one by one. Its object tree, pickle and zip
        // audit were freed by `Pipeline::open`, before the write allocates.
        std::mem::forget(opened);
        written
    });
    write_bar.finish_and_clear();
    verify_bar.finish_and_clear();
    let done = done?;
    let report = &done.report;
    if args.max_shard_size.is_some() {
        if args.json {
            let doc = serde_json::json!({
                "input": args.input, "files": done.files, "index": done.index,
                "key": report.key, "tensors": report.tensors, "aliases": report.aliases.len(),
                "bytes": report.bytes, "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else if !super::ui::get().quiet {
            eprintln!(
                "wrote {} file(s){}: {} tensors, {} bytes, in {:.2}s",
                done.files.len(),
                done.index
                    .as_ref()
                    .map(|i| format!(" and {}", i.display()))
                    .unwrap_or_default(),
                report.tensors,
                report.bytes,
                started.elapsed().as_secs_f64()
            );
        }
        return Ok(Exit::Ok);
    }
    let checked = done.verify.as_ref();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary_json(
                report,
                started.elapsed().as_secs_f64(),
                checked
            ))?
        );
        return Ok(checked.map_or(Exit::Ok, super::verify::code));
    }
    if let Some(r) = checked {
        super::verify::print_report(r);
        if !r.ok {
            eprintln!("the output was kept for inspection: {}", output.display());
            return Ok(Exit::Mismatch);
        }
    }
    if super::ui::get().quiet {
        return Ok(Exit::Ok);
    }
    if super::ui::get().verbose {
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
    Ok(Exit::Ok)
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
