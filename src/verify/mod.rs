//! Proving a conversion: re-read the source checkpoint and the safetensors output and compare
//! every tensor's name, dtype, shape and bytes. Tensors are streamed in parallel (one worker per
//! tensor, largest first), each side hashed with XXH3-64 and compared byte by byte, so the first
//! differing byte is reported, not only that a hash differs. Aliases recorded in the output's
//! `__metadata__` (`alias -> kept`) are honoured: the alias must be the very same view of the same
//! storage as the kept tensor in the source, and its bytes are those of the kept tensor.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use crate::checkpoint::{Checkpoint, OpenOptions, TensorInfo};
use crate::error::{Error, ErrorKind, Result, io};
use crate::tree::FlattenOptions;
use crate::writer::{HeaderTensor, read_safetensors_header};

/// The schema identifier in every [`VerifyReport`].
pub const SCHEMA: &str = "safetensorize.verify/1";

/// Options of [`verify`].
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The subtree that was converted (`convert --key`); `None`: the default rule.
    pub key: Option<String>,
    /// Numpy arrays were converted too (`convert --include-numpy`).
    pub include_numpy: bool,
    /// A TorchScript module's plain tensor attributes were converted too
    /// (`convert --torchscript-attributes`).
    pub torchscript_attributes: bool,
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Most differences kept in the report (the count is always exact).
    pub max_differences: usize,
    /// How the source is opened.
    pub open: OpenOptions,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            key: None,
            include_numpy: false,
            torchscript_attributes: false,
            threads: 0,
            max_differences: 20,
            open: OpenOptions::default(),
        }
    }
}

/// What kind of difference was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    /// A source tensor is neither in the output nor recorded as an alias.
    Missing,
    /// The output holds a tensor or alias the source does not.
    Extra,
    /// The dtypes differ.
    Dtype,
    /// The shapes differ.
    Shape,
    /// Bytes differ.
    Bytes,
    /// An alias entry names the wrong tensor.
    Alias,
}

impl DiffKind {
    /// The lowercase name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Dtype => "dtype",
            DiffKind::Shape => "shape",
            DiffKind::Bytes => "bytes",
            DiffKind::Alias => "alias",
        }
    }
}

/// One difference.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The tensor (source name; for `extra`, the output name).
    pub tensor: String,
    /// What differs.
    pub kind: DiffKind,
    /// Expected and found.
    pub detail: String,
}

/// One tensor compared byte by byte.
#[derive(Debug, Clone, Serialize)]
pub struct TensorCheck {
    /// Source name.
    pub name: String,
    /// Bytes compared.
    pub bytes: u64,
    /// XXH3-64 of the source's logical bytes, hex.
    pub source_xxh3: String,
    /// XXH3-64 of the output's bytes, hex.
    pub output_xxh3: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The source checkpoint.
    pub source: String,
    /// The safetensors output.
    pub output: String,
    /// The dotted path compared (empty: the whole tree).
    pub key: String,
    /// Source tensor names accounted for (aliases included).
    pub tensors: usize,
    /// Of those, names found as `__metadata__` aliases.
    pub aliases: usize,
    /// Bytes compared.
    pub bytes: u64,
    /// True when nothing differs.
    pub ok: bool,
    /// Number of differences found.
    pub difference_count: usize,
    /// The first differences (at most `max_differences`), source order, then extras.
    pub differences: Vec<Difference>,
    /// Every tensor compared byte by byte, with both hashes.
    pub checked: Vec<TensorCheck>,
}

/// Compares the checkpoint `source` with the safetensors file `output`.
///
/// ```
/// use safetensorize::verify::{VerifyOptions, verify};
/// use safetensorize::{ConvertOptions, convert};
///
/// let dir = tempfile::tempdir().unwrap();
/// let out = dir.path().join("aliases.safetensors");
/// let src = std::path::Path::new("tests/fixtures/ckpt/aliases.pt");
/// convert(src, &out, &ConvertOptions::default(), &|_| {})?;
/// let report = verify(src, &out, &VerifyOptions::default(), &|_| {})?;
/// assert!(report.ok, "{:?}", report.differences);
/// # Ok::<(), safetensorize::Error>(())
/// ```
pub fn verify(
    source: &Path,
    output: &Path,
    opts: &VerifyOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<VerifyReport> {
    let out_err = |k| Error::new(output, k);
    let ckpt = Checkpoint::open_with(source, &opts.open)?;
    let sel = ckpt.select_with(
        opts.key.as_deref(),
        true,
        &FlattenOptions {
            include_numpy: opts.include_numpy,
            torchscript_attributes: opts.torchscript_attributes,
            ..Default::default()
        },
    )?;
    let meta = std::fs::metadata(output)
        .map_err(|e| out_err(io("cannot read the output's metadata")(e)))?;
    if meta.is_dir() {
        return Err(out_err(ErrorKind::NotACheckpoint(
            "this is a directory; verify takes the safetensors file convert wrote".into(),
        )));
    }
    let out_file = File::open(output).map_err(|e| out_err(io("cannot open the output")(e)))?;
    let header = read_safetensors_header(&out_file, meta.len()).map_err(out_err)?;
    header.check_len(meta.len()).map_err(out_err)?;

    let out_by_name: HashMap<&str, &HeaderTensor> = header
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let src_by_name: HashMap<&str, &TensorInfo> =
        sel.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut diffs: Vec<(usize, Difference)> = Vec::new();
    let mut diff = |order: usize, tensor: &str, kind: DiffKind, detail: String| {
        diffs.push((
            order,
            Difference {
                tensor: tensor.to_string(),
                kind,
                detail,
            },
        ))
    };
    // (source tensor, output tensor) pairs whose bytes must be compared.
    let mut jobs: Vec<(usize, &TensorInfo, &HeaderTensor)> = Vec::new();
    let mut aliases = 0usize;
    for (i, s) in sel.tensors.iter().enumerate() {
        let target = match (
            out_by_name.get(s.name.as_str()),
            header.metadata.get(&s.name),
        ) {
            (Some(t), _) => *t,
            (None, Some(kept)) => match out_by_name.get(kept.as_str()) {
                Some(t) => {
                    aliases += 1;
                    match src_by_name.get(kept.as_str()) {
                        Some(k) if same_view(s, k) => {
                            // The kept tensor's own bytes are compared under its name.
                            check_meta(i, s, t, &mut diff);
                            continue;
                        }
                        Some(_) => {
                            diff(
                                i,
                                &s.name,
                                DiffKind::Alias,
                                format!(
                                    "recorded as an alias of {kept:?}, but in the source they are different tensors"
                                ),
                            );
                            continue;
                        }
                        None => *t,
                    }
                }
                None => {
                    diff(
                        i,
                        &s.name,
                        DiffKind::Alias,
                        format!("recorded as an alias of {kept:?}, which the output does not hold"),
                    );
                    continue;
                }
            },
            (None, None) => {
                diff(
                    i,
                    &s.name,
                    DiffKind::Missing,
                    format!(
                        "{} {:?} in the source, absent from the output",
                        s.dtype, s.shape
                    ),
                );
                continue;
            }
        };
        if check_meta(i, s, target, &mut diff) {
            jobs.push((i, s, target));
        }
    }
    let n = sel.tensors.len();
    for (j, t) in header.tensors.iter().enumerate() {
        if !src_by_name.contains_key(t.name.as_str()) {
            diff(
                n + j,
                &t.name,
                DiffKind::Extra,
                format!("{} {:?} in the output, not in the source", t.dtype, t.shape),
            );
        }
    }
    for (j, (alias, kept)) in header.aliases().into_iter().enumerate() {
        if !src_by_name.contains_key(alias) {
            diff(
                n + header.tensors.len() + j,
                alias,
                DiffKind::Extra,
                format!("recorded as an alias of {kept:?} in the output, not in the source"),
            );
        }
    }

    let reader = ckpt.reader(&sel)?;
    jobs.sort_by_key(|(_, s, _)| std::cmp::Reverse(s.nbytes));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| {
            out_err(ErrorKind::Unsupported(format!(
                "cannot start worker threads: {e}"
            )))
        })?;
    let data_start = header.data_start();
    let results = pool.install(|| {
        jobs.par_iter()
            .map(|&(i, s, t)| {
                compare_bytes(&reader, &out_file, output, data_start, s, t, progress)
                    .map(|r| (i, s, r))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut checked = Vec::with_capacity(results.len());
    let mut bytes = 0u64;
    let mut results = results;
    results.sort_by_key(|(i, _, _)| *i);
    for (i, s, r) in results {
        bytes += s.nbytes;
        if let Some(d) = r.first_difference {
            let item = s.dtype.itemsize();
            diff(
                i,
                &s.name,
                DiffKind::Bytes,
                format!(
                    "{} of {} bytes differ; first at byte {d} (element {}): source {}, output {}",
                    r.differing,
                    s.nbytes,
                    d / item,
                    hex(&r.source_element),
                    hex(&r.output_element)
                ),
            );
        }
        checked.push(TensorCheck {
            name: s.name.clone(),
            bytes: s.nbytes,
            source_xxh3: format!("{:016x}", r.source_hash),
            output_xxh3: format!("{:016x}", r.output_hash),
        });
    }
    diffs.sort_by_key(|(i, _)| *i);
    let difference_count = diffs.len();
    Ok(VerifyReport {
        schema: SCHEMA,
        source: source.display().to_string(),
        output: output.display().to_string(),
        key: sel.key.clone(),
        tensors: sel.tensors.len(),
        aliases,
        bytes,
        ok: difference_count == 0,
        difference_count,
        differences: diffs
            .into_iter()
            .take(opts.max_differences)
            .map(|(_, d)| d)
            .collect(),
        checked,
    })
}

/// Two names for the very same view of the same storage.
fn same_view(a: &TensorInfo, b: &TensorInfo) -> bool {
    a.storage == b.storage
        && a.storage_base == b.storage_base
        && a.dtype == b.dtype
        && a.offset == b.offset
        && a.shape == b.shape
        && a.stride == b.stride
        && a.conj == b.conj
        && a.neg == b.neg
}

/// Compares dtype and shape; true when the bytes can be compared.
fn check_meta(
    i: usize,
    s: &TensorInfo,
    t: &HeaderTensor,
    diff: &mut impl FnMut(usize, &str, DiffKind, String),
) -> bool {
    let want = s.dtype.info().safetensors;
    if want != Some(t.dtype) {
        let want = want.map(|d| d.to_string()).unwrap_or_else(|| "none".into());
        diff(
            i,
            &s.name,
            DiffKind::Dtype,
            format!("source {} ({want}), output {}", s.dtype, t.dtype),
        );
        return false;
    }
    if *s.shape != *t.shape {
        diff(
            i,
            &s.name,
            DiffKind::Shape,
            format!("source {:?}, output {:?}", s.shape, t.shape),
        );
        return false;
    }
    true
}

struct ByteResult {
    first_difference: Option<u64>,
    differing: u64,
    source_element: Vec<u8>,
    output_element: Vec<u8>,
    source_hash: u64,
    output_hash: u64,
}

fn compare_bytes(
    reader: &crate::TensorReader,
    out: &File,
    output: &Path,
    data_start: u64,
    s: &TensorInfo,
    t: &HeaderTensor,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ByteResult> {
    let mut src_hash = Xxh3::new();
    let mut out_hash = Xxh3::new();
    let mut res = ByteResult {
        first_difference: None,
        differing: 0,
        source_element: Vec::new(),
        output_element: Vec::new(),
        source_hash: 0,
        output_hash: 0,
    };
    let mut pos = 0u64;
    let mut buf = Vec::new();
    let item = s.dtype.itemsize() as usize;
    let mut out_failure = None;
    reader
        .stream(&s.name, &mut |chunk| {
            buf.resize(chunk.len(), 0);
            if let Err(e) = out.read_exact_at(&mut buf, data_start + t.begin + pos) {
                out_failure = Some(e);
                return Err(std::io::Error::other("the output could not be read"));
            }
            src_hash.update(chunk);
            out_hash.update(&buf);
            if chunk != &buf[..] {
                for (k, (a, b)) in chunk.iter().zip(buf.iter()).enumerate() {
                    if a != b {
                        res.differing += 1;
                        if res.first_difference.is_none() {
                            let at = pos + k as u64;
                            res.first_difference = Some(at);
                            let e0 = k - k % item;
                            res.source_element = chunk[e0..(e0 + item).min(chunk.len())].to_vec();
                            res.output_element = buf[e0..(e0 + item).min(buf.len())].to_vec();
                        }
                    }
                }
            }
            pos += chunk.len() as u64;
            progress(chunk.len() as u64);
            Ok(())
        })
        .map_err(|e| match out_failure.take() {
            Some(oe) => Error::new(
                output,
                ErrorKind::Io {
                    context: format!("reading the bytes of tensor {:?}", t.name),
                    source: oe,
                },
            ),
            None => e,
        })?;
    if pos != s.nbytes {
        return Err(Error::new(
            reader.path(),
            ErrorKind::Tensor {
                name: s.name.clone(),
                storage: Some(s.storage.clone()),
                msg: format!("read {pos} bytes, expected {}", s.nbytes),
            },
        ));
    }
    res.source_hash = src_hash.digest();
    res.output_hash = out_hash.digest();
    Ok(res)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
