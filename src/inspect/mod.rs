//! What `inspect` shows about a checkpoint or a safetensors file, as one serializable
//! [`Inspection`]. Only headers and the pickle are read, never tensor data, so a 10 GB file is
//! inspected as fast as a small one. Nothing in the pickle is executed.
//!
//! # JSON schema (`safetensorize inspect --json`)
//!
//! The field names below are stable; new fields may be added, existing ones are not renamed or
//! removed without changing [`SCHEMA`].
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `schema` | string | `"safetensorize.inspect/1"` |
//! | `file` | string | the path inspected |
//! | `file_bytes` | int | its size |
//! | `format` | string | `zip`, `legacy`, `torchscript`, `pickle`, `tar` or `safetensors` |
//! | `era` | string | which writer and torch versions produce this format |
//! | `zip_root` | string or null | root folder of a zip archive's records |
//! | `pickle_protocol` | int or null | highest pickle protocol the main pickle declares |
//! | `byte_order` | string or null | `little` or `big`: the storages' byte order |
//! | `records` | `[{name, value}]` | version records (`version`, `.format_version`, `byteorder`, legacy `sys_info`) |
//! | `header_bytes` | int or null | safetensors only: the JSON header's length |
//! | `metadata` | object or null | safetensors only: `__metadata__` |
//! | `tensors` | `[tensor]` | every tensor-like leaf, in checkpoint order (safetensors: file order) |
//! | `totals` | object | `tensors`, `written` (unique tensors), `aliases`, `bytes` (unique), `storages`, `by_dtype` (`{dtype: {tensors, bytes}}`) |
//! | `non_tensors` | `[{path, type}]` | values that are not tensors (left out by `convert`) |
//! | `selection` | object or null | what `convert` would write by default: `key`, `tensors`, `aliases`, `non_tensors`, `bytes`, `error` |
//! | `globals` | `[{name, class, count, first_offset}]` | globals the main pickle names; `class` is `interpreted`, `inert`, `unknown` or `dangerous` |
//! | `warnings` | `[string]` | anything that would stop or change a conversion |
//!
//! A `tensor` is `{name, dtype, safetensors_dtype, shape, bytes, storage, offset, stride, layout,
//! data_offsets, alias_of, selected, problem}`: `dtype` is torch's name (`float32`; for
//! safetensors files the safetensors name, `F32`), `storage` the storage key and `offset` the
//! element offset into it, `layout` `contiguous` (row-major strides) or `view` (a strided view
//! that `convert` gathers; `none` for a tensor-like leaf without plain data), `data_offsets` the
//! byte range in a safetensors file's data section,
//! `alias_of` the first name sharing the exact same view (written once), `selected` whether the
//! default selection converts it, `problem` why it cannot be written.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use crate::checkpoint::{Checkpoint, OpenOptions};
use crate::container::{ByteOrder, Container, Kind};
use crate::error::{Error, ErrorKind, Result, io};
use crate::torch::{GlobalClass, TensorRef, classify_global};
use crate::tree::{self, FlattenOptions, Leaf, ViewKey};
use crate::writer::{looks_like_safetensors, read_safetensors_header};

/// The schema identifier in every [`Inspection`].
pub const SCHEMA: &str = "safetensorize.inspect/1";

/// A name/value record of the container (`version`, `byteorder`, legacy `sys_info` entries).
#[derive(Debug, Clone, Serialize)]
pub struct InfoRecord {
    /// Record name.
    pub name: String,
    /// Its text.
    pub value: String,
}

/// One tensor-like leaf.
#[derive(Debug, Clone, Serialize)]
pub struct TensorRow {
    /// Dotted path (the output name when inspecting a `key` subtree or a safetensors file).
    pub name: String,
    /// torch's dtype name (safetensors files: the safetensors name).
    pub dtype: String,
    /// The safetensors dtype it is written as, when it has one.
    pub safetensors_dtype: Option<String>,
    /// Shape.
    pub shape: Vec<u64>,
    /// Bytes of the row-major tensor.
    pub bytes: u64,
    /// Storage key (checkpoints only).
    pub storage: Option<String>,
    /// Offset into the storage, in elements (checkpoints only).
    pub offset: Option<u64>,
    /// Strides in elements (checkpoints only).
    pub stride: Option<Vec<u64>>,
    /// `contiguous` or `view`.
    pub layout: &'static str,
    /// Byte range in the data section (safetensors files only).
    pub data_offsets: Option<[u64; 2]>,
    /// The name this tensor is an exact alias of.
    pub alias_of: Option<String>,
    /// True when the default selection converts it.
    pub selected: bool,
    /// Why it cannot be written, if it cannot.
    pub problem: Option<String>,
}

/// Count and bytes of one dtype.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DtypeTotal {
    /// Tensors (aliases excluded).
    pub tensors: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Totals over [`Inspection::tensors`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Rows, aliases included.
    pub tensors: usize,
    /// Rows that are not aliases (what `--keep-aliases` off writes).
    pub written: usize,
    /// Rows that are aliases.
    pub aliases: usize,
    /// Bytes of the rows that are not aliases.
    pub bytes: u64,
    /// Distinct storages referenced (checkpoints only; 0 for safetensors).
    pub storages: usize,
    /// Per dtype name, aliases excluded.
    pub by_dtype: BTreeMap<String, DtypeTotal>,
}

/// A non-tensor value.
#[derive(Debug, Clone, Serialize)]
pub struct NonTensor {
    /// Dotted path.
    pub path: String,
    /// Python type.
    #[serde(rename = "type")]
    pub type_name: String,
}

/// What `convert` would write with the default selection (or `--key`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SelectionSummary {
    /// Dotted path selected (empty: the whole tree).
    pub key: String,
    /// Tensors written.
    pub tensors: usize,
    /// Aliases recorded in `__metadata__`.
    pub aliases: usize,
    /// Non-tensor values left out.
    pub non_tensors: usize,
    /// Bytes of tensor data.
    pub bytes: u64,
    /// Why `convert` would fail, if it would.
    pub error: Option<String>,
}

/// A global the main pickle names.
#[derive(Debug, Clone, Serialize)]
pub struct GlobalRow {
    /// `module.name`.
    pub name: String,
    /// What it would do in a normal unpickler.
    pub class: GlobalClass,
    /// How many times it is named.
    pub count: usize,
    /// Byte offset of the first opcode naming it.
    pub first_offset: usize,
}

/// Everything `inspect` shows. See the [module docs](self) for the JSON schema.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The file.
    pub file: String,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// Container format.
    pub format: Kind,
    /// Which writer (and torch versions) produce this format.
    pub era: String,
    /// Root folder of a zip archive.
    pub zip_root: Option<String>,
    /// Highest pickle protocol of the main pickle.
    pub pickle_protocol: Option<u8>,
    /// `little` or `big`.
    pub byte_order: Option<&'static str>,
    /// Version and system records.
    pub records: Vec<InfoRecord>,
    /// Length of a safetensors file's JSON header.
    pub header_bytes: Option<u64>,
    /// A safetensors file's `__metadata__`.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Tensor-like leaves.
    pub tensors: Vec<TensorRow>,
    /// Totals.
    pub totals: Totals,
    /// Non-tensor values.
    pub non_tensors: Vec<NonTensor>,
    /// What `convert` would write (checkpoints only).
    pub selection: Option<SelectionSummary>,
    /// Globals named by the main pickle.
    pub globals: Vec<GlobalRow>,
    /// Anything that would stop or change a conversion.
    pub warnings: Vec<String>,
}

/// Options of [`inspect`].
#[derive(Debug, Clone, Default)]
pub struct InspectOptions {
    /// Inspect only this dotted subtree, naming tensors as `convert --key` would. `None`: the
    /// whole tree, with the default selection marked.
    pub key: Option<String>,
    /// Count numeric numpy arrays as tensors (as `convert --include-numpy`).
    pub include_numpy: bool,
    /// How the checkpoint is opened (VM limits).
    pub open: OpenOptions,
}

/// Inspects `path`: a torch checkpoint (any supported container) or a safetensors file.
///
/// ```
/// use safetensorize::inspect::{InspectOptions, inspect};
///
/// let info = inspect("tests/fixtures/ckpt/aliases.pt".as_ref(), &InspectOptions::default())?;
/// assert_eq!(info.format.as_str(), "zip");
/// for t in &info.tensors {
///     println!("{} {} {:?} alias of {:?}", t.name, t.dtype, t.shape, t.alias_of);
/// }
/// # Ok::<(), safetensorize::Error>(())
/// ```
pub fn inspect(path: &Path, opts: &InspectOptions) -> Result<Inspection> {
    let err = |k| Error::new(path, k);
    if let Ok(meta) = std::fs::metadata(path)
        && meta.is_file()
    {
        let file =
            crate::container::open_source(path).map_err(|e| err(io("cannot open the file")(e)))?;
        let mut head = vec![0u8; meta.len().min(16) as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| err(io("cannot read the start of the file")(e)))?;
        if looks_like_safetensors(&head, meta.len()) {
            return inspect_safetensors(path, &file, meta.len()).map_err(err);
        }
    }
    let ckpt = Checkpoint::open_with(path, &opts.open)?;
    Ok(inspect_checkpoint(&ckpt, opts))
}

/// Inspects an opened checkpoint.
pub fn inspect_checkpoint(ckpt: &Checkpoint, opts: &InspectOptions) -> Inspection {
    let archive = ckpt.archive();
    let format = ckpt.container().kind();
    let era = format.era().to_string();
    let zip_root = ckpt.container().zip_prefix().map(str::to_string);
    let mut warnings = Vec::new();
    let fopts = FlattenOptions {
        include_numpy: opts.include_numpy,
        ..Default::default()
    };

    // The default selection (or `key`), exactly as `convert` would make it.
    // The names convert writes (tensors and their aliases), relative to the selected key.
    let mut written: std::collections::HashSet<String> = std::collections::HashSet::new();
    let selection = match ckpt.select_with(opts.key.as_deref(), false, &fopts) {
        Ok(sel) => SelectionSummary {
            key: sel.key.clone(),
            tensors: sel.tensors.len(),
            aliases: sel.aliases.len(),
            non_tensors: sel.skipped.len(),
            bytes: sel.tensors.iter().map(|t| t.nbytes).sum(),
            error: None,
        }
        .with_names(&sel, &mut written),
        Err(e) => {
            let key = tree::select(ckpt.root(), opts.key.as_deref())
                .map(|(k, _)| k)
                .unwrap_or_else(|_| opts.key.clone().unwrap_or_default());
            SelectionSummary {
                key,
                error: Some(e.kind.to_string()),
                ..Default::default()
            }
        }
    };
    if let Some(e) = &selection.error {
        warnings.push(format!("convert would fail: {e}"));
    }

    // The rows: the whole tree, or the `key` subtree named as the output would be.
    let subtree = match &opts.key {
        None => Some(ckpt.root().clone()),
        Some(k) => tree::get_path(ckpt.root(), k),
    };
    let mut tensors = Vec::new();
    let mut non_tensors = Vec::new();
    let mut storages = std::collections::HashSet::new();
    if let Some(sub) = subtree {
        match tree::flatten_with(&sub, "", &fopts) {
            Ok(flat) => {
                let mut first: HashMap<ViewKey, String> = HashMap::new();
                for (name, leaf) in flat.leaves {
                    let name = if name.is_empty() {
                        "tensor".to_string()
                    } else {
                        name
                    };
                    // Marked when convert writes it (a TorchScript module's plain tensor
                    // attributes, for one, are below the key but left out).
                    let relative = match &opts.key {
                        Some(_) => Some(name.as_str()),
                        None if selection.key.is_empty() => Some(name.as_str()),
                        None if in_subtree(&name, &selection.key) => {
                            name.get(selection.key.len() + 1..)
                        }
                        None => None,
                    };
                    let selected =
                        selection.error.is_none() && relative.is_some_and(|r| written.contains(r));
                    let row = match leaf {
                        Leaf::Tensor(t) => {
                            storages.insert(t.storage.key.clone());
                            let alias_of = match first.get(&ViewKey::of(&t)) {
                                Some(kept) => Some(kept.clone()),
                                None => {
                                    first.insert(ViewKey::of(&t), name.clone());
                                    None
                                }
                            };
                            tensor_row(name, &t, alias_of, selected)
                        }
                        Leaf::NotATensor(n) => TensorRow {
                            name,
                            dtype: n.dtype.clone().unwrap_or_else(|| "?".into()),
                            safetensors_dtype: None,
                            shape: Vec::new(),
                            bytes: 0,
                            storage: None,
                            offset: None,
                            stride: None,
                            layout: "none",
                            data_offsets: None,
                            alias_of: None,
                            selected,
                            problem: Some(format!(
                                "a {} tensor, which safetensors cannot hold",
                                n.kind
                            )),
                        },
                    };
                    tensors.push(row);
                }
                non_tensors = flat
                    .skipped
                    .into_iter()
                    .map(|(path, type_name)| NonTensor { path, type_name })
                    .collect();
            }
            Err(e) => warnings.push(format!("the object tree cannot be listed: {e}")),
        }
    }
    for t in &tensors {
        if let Some(p) = &t.problem {
            warnings.push(format!("tensor {:?}: {p}", t.name));
        }
    }
    if let Container::TorchScript { .. } = ckpt.container()
        && archive.constants.is_some()
    {
        warnings.push("TorchScript constants (constants.pkl) are not listed; only the module's attributes are".into());
    }

    let mut globals: Vec<GlobalRow> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for g in &ckpt.globals {
        let name = g.global.to_string();
        match at.get(&name) {
            Some(&i) => globals[i].count += 1,
            None => {
                at.insert(name.clone(), globals.len());
                globals.push(GlobalRow {
                    name,
                    class: classify_global(&g.global),
                    count: 1,
                    first_offset: g.offset,
                });
            }
        }
    }

    let totals = totals(&tensors, storages.len());
    Inspection {
        schema: SCHEMA,
        file: archive.path.display().to_string(),
        file_bytes: archive.file_len,
        format,
        era,
        zip_root,
        pickle_protocol: Some(ckpt.protocol),
        byte_order: Some(match archive.byte_order {
            ByteOrder::Little => "little",
            ByteOrder::Big => "big",
        }),
        records: records(&archive.info),
        header_bytes: None,
        metadata: None,
        tensors,
        totals,
        non_tensors,
        selection: Some(selection),
        globals,
        warnings,
    }
}

/// The container's records, each name/value pair once.
fn records(info: &[(String, String)]) -> Vec<InfoRecord> {
    let mut out: Vec<InfoRecord> = Vec::new();
    for (name, value) in info {
        if !out.iter().any(|r| &r.name == name && &r.value == value) {
            out.push(InfoRecord {
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    out
}

impl SelectionSummary {
    /// Records in `written` every name `sel` writes (tensors and aliases).
    fn with_names(
        self,
        sel: &crate::Selection,
        written: &mut std::collections::HashSet<String>,
    ) -> Self {
        written.extend(sel.tensors.iter().map(|t| t.name.clone()));
        written.extend(sel.aliases.iter().map(|(alias, _)| alias.clone()));
        self
    }
}

fn in_subtree(name: &str, key: &str) -> bool {
    key.is_empty() || name == key || name.strip_prefix(key).is_some_and(|r| r.starts_with('.'))
}

fn tensor_row(name: String, t: &TensorRef, alias_of: Option<String>, selected: bool) -> TensorRow {
    let item = t.dtype.itemsize();
    let bytes = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(item));
    let mut expect = 1u64;
    let mut contiguous = true;
    for (&n, &st) in t.shape.iter().zip(&t.stride).rev() {
        if n != 1 && st != expect {
            contiguous = false;
        }
        expect = expect.saturating_mul(n);
    }
    let problem = if let Some(why) = t.dtype.refusal() {
        Some(format!("dtype {} cannot be written: {why}", t.dtype))
    } else if t.neg && !crate::layout::negation_supported(t.dtype) {
        Some(format!(
            "a negated view of dtype {} cannot be resolved bit-exactly",
            t.dtype
        ))
    } else if bytes.is_none() {
        Some("its size overflows".into())
    } else {
        None
    };
    TensorRow {
        name,
        dtype: t.dtype.name().to_string(),
        safetensors_dtype: t.dtype.info().safetensors.map(|d| d.to_string()),
        shape: t.shape.to_vec(),
        bytes: bytes.unwrap_or(u64::MAX),
        storage: Some(t.storage.key.to_string()),
        offset: Some(t.offset),
        stride: Some(t.stride.to_vec()),
        layout: if contiguous { "contiguous" } else { "view" },
        data_offsets: None,
        alias_of,
        selected,
        problem,
    }
}

fn totals(rows: &[TensorRow], storages: usize) -> Totals {
    let mut t = Totals {
        tensors: rows.len(),
        storages,
        ..Default::default()
    };
    for r in rows {
        if r.alias_of.is_some() {
            t.aliases += 1;
            continue;
        }
        t.written += 1;
        t.bytes = t.bytes.saturating_add(r.bytes);
        let d = t.by_dtype.entry(r.dtype.clone()).or_default();
        d.tensors += 1;
        d.bytes = d.bytes.saturating_add(r.bytes);
    }
    t
}

/// Reads a safetensors file's header (and nothing else): its tensors in file order, with
/// `__metadata__` aliases (`alias -> kept`) shown as rows of their own.
fn inspect_safetensors(
    path: &Path,
    file: &File,
    file_len: u64,
) -> std::result::Result<Inspection, ErrorKind> {
    let header = read_safetensors_header(file, file_len)?;
    let mut warnings = Vec::new();
    let expected = 8 + header.json_len + header.data_len;
    if file_len != expected {
        let what = if file_len < expected {
            "truncated"
        } else {
            "trailing bytes"
        };
        warnings.push(format!(
            "{what}: the header needs a file of {expected} bytes, found {file_len}"
        ));
    }
    let mut tensors: Vec<TensorRow> = header
        .tensors
        .iter()
        .map(|t| TensorRow {
            name: t.name.clone(),
            dtype: t.dtype.to_string(),
            safetensors_dtype: Some(t.dtype.to_string()),
            shape: t.shape.clone(),
            bytes: t.end - t.begin,
            storage: None,
            offset: None,
            stride: None,
            layout: "contiguous",
            data_offsets: Some([t.begin, t.end]),
            alias_of: None,
            selected: true,
            problem: None,
        })
        .collect();
    for (alias, kept) in header.aliases() {
        if let Some(base) = tensors.iter().find(|r| r.name == kept).cloned() {
            tensors.push(TensorRow {
                name: alias.to_string(),
                alias_of: Some(kept.to_string()),
                ..base
            });
        }
    }
    let totals = totals(&tensors, 0);
    Ok(Inspection {
        schema: SCHEMA,
        file: path.display().to_string(),
        file_bytes: file_len,
        format: Kind::Safetensors,
        era: "safetensors file".into(),
        zip_root: None,
        pickle_protocol: None,
        byte_order: Some("little"),
        records: Vec::new(),
        header_bytes: Some(header.json_len),
        metadata: Some(header.metadata.clone()),
        tensors,
        totals,
        non_tensors: Vec::new(),
        selection: None,
        globals: Vec::new(),
        warnings,
    })
}

#[cfg(test)]
mod tests;
