//! `safetensorize inspect`: the library's [`Inspection`] as a text report or one JSON document.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use safetensorize::inspect::{InspectOptions, Inspection, inspect};

use super::Exit;
use super::ui::{Stream, Style, paint};

/// Arguments of `inspect`.
#[derive(Args, Debug)]
#[command(after_help = "\
Reads only headers and the pickle, never tensor data, and executes nothing.

Examples:
  safetensorize inspect pytorch_model.bin           # format, tensors, selection, globals
  safetensorize inspect last.ckpt --key state_dict  # one subtree, named as convert names it
  safetensorize inspect model.safetensors           # a safetensors header, aliases included
  safetensorize inspect model.pt --json | jq '.tensors[] | select(.layout == \"view\")'

The JSON document's fields are documented in the library (safetensorize::inspect) and stable.

Exit codes: 0 inspected, 1 unreadable or not a checkpoint, 2 invalid command line.")]
pub struct InspectArgs {
    /// The checkpoint (`.pt`, `.pth`, `.bin`, `.ckpt`, any torch.save format) or `.safetensors` file.
    input: PathBuf,
    /// Print one JSON document instead of the text report.
    #[arg(long)]
    json: bool,
    /// Show only this dotted subtree, with tensors named as `convert --key` names them.
    #[arg(long)]
    key: Option<String>,
    /// Count numeric numpy arrays as tensors, as `convert --include-numpy` does.
    #[arg(long)]
    include_numpy: bool,
    /// Longest tensor table printed (0 = all); the JSON document always holds every tensor.
    #[arg(long, default_value_t = 200, value_name = "N")]
    max_rows: usize,
}

/// Runs `inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<Exit> {
    let opts = InspectOptions {
        key: args.key.clone(),
        include_numpy: args.include_numpy,
        ..Default::default()
    };
    let info = inspect(&args.input, &opts)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &info)?;
        writeln!(out)?;
    } else {
        out.write_all(render(&info, args.max_rows).as_bytes())?;
    }
    out.flush()?;
    Ok(Exit::Ok)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A byte count with a binary-prefixed approximation.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{n} B ({v:.1} {})", UNITS[u])
}

fn shape(s: &[u64]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Lays out rows as left-aligned columns separated by two spaces.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::from("  ");
        let last = cells.len().saturating_sub(1);
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            s.push_str(c);
            if i < last {
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = paint(
        line(head.iter().map(|h| h.to_string()).collect()).trim_end(),
        Style::Bold,
        Stream::Out,
    ) + "\n";
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// The text report.
pub fn render(i: &Inspection, max_rows: usize) -> String {
    let mut s = String::new();
    let field = |s: &mut String, k: &str, v: String| {
        s.push_str(&format!(
            "{}{v}\n",
            paint(&format!("{k:<12}"), Style::Bold, Stream::Out)
        ))
    };
    field(
        &mut s,
        "file",
        format!("{}, {}", i.file, human_bytes(i.file_bytes)),
    );
    field(
        &mut s,
        "format",
        format!("{}: {}", i.format.as_str(), i.era),
    );
    if let Some(root) = &i.zip_root {
        field(
            &mut s,
            "zip root",
            if root.is_empty() {
                "(none)".into()
            } else {
                root.clone()
            },
        );
    }
    if let Some(p) = i.pickle_protocol {
        field(&mut s, "pickle", format!("protocol {p}"));
    }
    if let Some(b) = i.byte_order {
        field(&mut s, "byte order", b.to_string());
    }
    if let Some(n) = i.header_bytes {
        field(&mut s, "header", format!("{n} bytes of JSON"));
    }
    if !i.records.is_empty() {
        let r: Vec<String> = i
            .records
            .iter()
            .map(|r| format!("{}={}", r.name, r.value))
            .collect();
        field(&mut s, "records", r.join(", "));
    }
    if let Some(m) = &i.metadata {
        let r: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
        field(
            &mut s,
            "metadata",
            if r.is_empty() {
                "(none)".into()
            } else {
                r.join(", ")
            },
        );
    }
    if let Some(sel) = &i.selection {
        let key = if sel.key.is_empty() {
            "the whole tree".to_string()
        } else {
            format!("key {:?}", sel.key)
        };
        let v = match &sel.error {
            Some(e) => paint(
                &format!("{key}: convert would fail: {e}"),
                Style::Bad,
                Stream::Out,
            ),
            None => format!(
                "{key}: {}, {}, {}, {} left out",
                plural(sel.tensors, "tensor", "tensors"),
                plural(sel.aliases, "alias", "aliases"),
                human_bytes(sel.bytes),
                plural(sel.non_tensors, "non-tensor value", "non-tensor values")
            ),
        };
        field(&mut s, "converts", v);
    }

    let t = &i.totals;
    s.push('\n');
    s.push_str(&paint(
        &format!(
            "tensors: {} ({} written, {}), {} of data{}",
            t.tensors,
            t.written,
            plural(t.aliases, "alias", "aliases"),
            human_bytes(t.bytes),
            if t.storages > 0 {
                format!(", {}", plural(t.storages, "storage", "storages"))
            } else {
                String::new()
            }
        ),
        Style::Bold,
        Stream::Out,
    ));
    s.push('\n');
    if !i.tensors.is_empty() {
        let safetensors = i.format.as_str() == "safetensors";
        let head: Vec<&str> = if safetensors {
            vec![
                "name",
                "dtype",
                "shape",
                "bytes",
                "data offsets",
                "alias of",
            ]
        } else {
            vec![
                "", "name", "dtype", "shape", "bytes", "storage", "offset", "layout", "alias of",
            ]
        };
        let shown = if max_rows == 0 {
            i.tensors.len()
        } else {
            i.tensors.len().min(max_rows)
        };
        let rows: Vec<Vec<String>> = i.tensors[..shown]
            .iter()
            .map(|r| {
                let alias = r.alias_of.clone().unwrap_or_default();
                if safetensors {
                    let off = r
                        .data_offsets
                        .map(|[a, b]| format!("{a}..{b}"))
                        .unwrap_or_default();
                    vec![
                        r.name.clone(),
                        r.dtype.clone(),
                        shape(&r.shape),
                        r.bytes.to_string(),
                        off,
                        alias,
                    ]
                } else {
                    let mark = if r.problem.is_some() {
                        "!"
                    } else if r.selected {
                        "*"
                    } else {
                        ""
                    };
                    let bytes = if r.problem.is_some() && r.shape.is_empty() {
                        "-".into()
                    } else {
                        r.bytes.to_string()
                    };
                    vec![
                        mark.into(),
                        r.name.clone(),
                        r.dtype.clone(),
                        shape(&r.shape),
                        bytes,
                        r.storage.clone().unwrap_or_default(),
                        r.offset.map(|o| o.to_string()).unwrap_or_default(),
                        r.layout.into(),
                        alias,
                    ]
                }
            })
            .collect();
        s.push_str(&table(&head, &rows));
        if shown < i.tensors.len() {
            s.push_str(&format!(
                "  … {} more (--max-rows 0 shows all)\n",
                i.tensors.len() - shown
            ));
        }
        if !safetensors {
            s.push_str(&paint(
                "  * converted by default   ! cannot be written\n",
                Style::Dim,
                Stream::Out,
            ));
        }
    }
    if !t.by_dtype.is_empty() {
        let d: Vec<String> = t
            .by_dtype
            .iter()
            .map(|(k, v)| format!("{k}: {} ({} B)", v.tensors, v.bytes))
            .collect();
        s.push_str(&format!("  by dtype: {}\n", d.join(", ")));
    }

    if !i.non_tensors.is_empty() {
        s.push('\n');
        s.push_str(&paint(
            &format!("non-tensor values: {}", i.non_tensors.len()),
            Style::Bold,
            Stream::Out,
        ));
        s.push('\n');
        let rows: Vec<Vec<String>> = i
            .non_tensors
            .iter()
            .map(|n| vec![n.path.clone(), n.type_name.clone()])
            .collect();
        s.push_str(&table(&["path", "type"], &rows));
    }
    if !i.globals.is_empty() {
        s.push('\n');
        s.push_str(&paint(
            &format!("globals: {}", i.globals.len()),
            Style::Bold,
            Stream::Out,
        ));
        s.push('\n');
        let rows: Vec<Vec<String>> = i
            .globals
            .iter()
            .map(|g| {
                let class = g.class.to_string();
                let class = match class.as_str() {
                    "dangerous" => paint(&class, Style::Bad, Stream::Out),
                    "unknown" => paint(&class, Style::Warn, Stream::Out),
                    _ => class,
                };
                vec![
                    class,
                    g.name.clone(),
                    format!("x{}", g.count),
                    format!("byte {}", g.first_offset),
                ]
            })
            .collect();
        s.push_str(&table(&["class", "name", "count", "first at"], &rows));
    }
    if !i.warnings.is_empty() {
        s.push('\n');
        s.push_str(&paint(
            &format!("warnings: {}", i.warnings.len()),
            Style::Warn,
            Stream::Out,
        ));
        s.push('\n');
        for w in &i.warnings {
            s.push_str(&format!("  {w}\n"));
        }
    }
    s
}
