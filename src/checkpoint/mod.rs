//! An opened checkpoint: its object tree, the tensors of a selection with every extent checked,
//! and the plan that turns them into a safetensors file.

mod read;

pub use read::{READ_CHUNK, TensorReader};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::container::{
    Archive, ByteOrder, Container, Record, RecordMethod, Records, record_to_temp,
};
use crate::dtype::DType;
use crate::error::{Error, ErrorKind, Result, io};
use crate::layout::{Strided, Transform, negation_supported};
use crate::pickle::{GlobalUse, Limits, MemoReads, Value, load_with_reads};
use crate::torch::{StorageRef, TensorRef, TorchHost};
use crate::tree::{self, FlattenOptions, Leaf};
use crate::writer::{self, HeaderEntry, Job, JobKind};

/// Largest single tensor written (a stride-0 view cannot make a petabyte tensor).
pub const MAX_TENSOR_BYTES: u64 = 1 << 40;

/// A checkpoint opened and unpickled; no tensor data has been read.
pub struct Checkpoint {
    archive: Archive,
    root: Value,
    storages: Vec<Rc<StorageRef>>,
    /// Storage bytes that live inside the pickle, by key.
    memory: HashMap<String, Rc<[u8]>>,
    /// Pickle protocol of the main pickle.
    pub protocol: u8,
    /// Globals the main pickle names.
    pub globals: Vec<GlobalUse>,
    /// What the run of the main pickle showed besides its value.
    pub main_run: MainRun,
}

/// What the VM saw running the main pickle, beyond the value it built: enough for the policy
/// to tell whether the run alone answers its question (see `scan::policy_check`).
#[derive(Debug, Clone, Copy)]
pub struct MainRun {
    /// Offset just past the STOP opcode (the pickle's length when nothing follows it).
    pub end: usize,
    /// String or bytes values that could themselves be pickles.
    pub embedded_pickles: usize,
    /// A Python 2 module name was mapped to its Python 3 name.
    pub renamed_globals: bool,
}

/// One tensor of a selection, checked against its storage.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Output name.
    pub name: String,
    /// torch dtype.
    pub dtype: DType,
    /// Shape (boxed, as the other per-tensor lists: no spare capacity kept).
    pub shape: Box<[u64]>,
    /// Strides in elements.
    pub stride: Box<[u64]>,
    /// Offset into the storage in elements.
    pub offset: u64,
    /// Storage key.
    pub storage: String,
    /// The whole storage as the pickle declares it: `(elements, bytes per element)`.
    pub storage_declared: (u64, u64),
    /// Byte offset of the storage view this tensor uses within the stored record (non-zero only
    /// for legacy storage views).
    pub storage_base: u64,
    /// Bytes of the row-major tensor.
    pub nbytes: u64,
    /// True when the stored bytes are already row-major.
    pub contiguous: bool,
    /// The stored values must be conjugated.
    pub conj: bool,
    /// The stored values must be negated.
    pub neg: bool,
}

impl TensorInfo {
    /// What must be done to the stored bytes to get the logical little-endian values.
    pub fn transform(&self, order: ByteOrder) -> Transform {
        Transform {
            swap_unit: match order {
                ByteOrder::Big => Some(self.dtype.info().swap_unit).filter(|u| *u > 1),
                ByteOrder::Little => None,
            },
            conj: self.conj,
            neg: self.neg,
        }
    }

    /// The view this tensor reads, with `base` the byte offset of its storage's record.
    pub fn strided(&self, base: u64) -> Strided {
        Strided {
            base: base + self.storage_base,
            offset: self.offset,
            shape: self.shape.to_vec(),
            stride: self.stride.to_vec(),
            itemsize: self.dtype.itemsize(),
        }
    }
}

/// A selection of tensors ready to be planned.
#[derive(Debug)]
pub struct Selection {
    /// The dotted path selected (empty: the whole tree).
    pub key: String,
    /// Tensors to write, in checkpoint order.
    pub tensors: Vec<TensorInfo>,
    /// `(alias, kept)` pairs left out of the data.
    pub aliases: Vec<(String, String)>,
    /// Non-tensor leaves left out, with their types.
    pub skipped: Vec<(String, String)>,
}

/// Settings for opening a checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Bounds on the pickle VM.
    pub limits: Limits,
}

impl Checkpoint {
    /// Opens and unpickles `path` with default limits.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// Opens and unpickles `path`.
    ///
    /// A torch zip's pickle usually is its first record: it is read from there and run while the
    /// archive's directory is read and audited on another thread. The run is kept only when its
    /// bytes are exactly the pickle the audited archive names; otherwise the archive's pickle is
    /// run afterwards, as for every other file. What the VM makes depends on those bytes alone.
    pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Checkpoint> {
        Self::open_checked(path, opts, &|| Ok(()))
    }

    /// [`Checkpoint::open_with`] after `check` (e.g. the pipeline's preflight of the container's
    /// sizes), whose error comes first. `check` runs with the archive's opening, on its thread
    /// when the pickle runs meanwhile: that run is bounded by the VM's own limits.
    pub fn open_checked(
        path: &Path,
        opts: &OpenOptions,
        check: &(dyn Fn() -> Result<()> + Sync),
    ) -> Result<Checkpoint> {
        let limits = &opts.limits;
        let open = |expected: Option<&[u8]>| {
            check()?;
            Archive::open_expecting(path, limits, expected)
                .map_err(|k| Error::new(path, k.limit_first()))
        };
        let (archive, host, loaded) = match Archive::pickle_guess(path, limits) {
            None => {
                let (archive, _) = open(None)?;
                let (host, loaded) = run_pickle(&archive.pickle, tar_tables(&archive), limits);
                (archive, host, loaded)
            }
            Some(guess) => {
                let reads = std::sync::OnceLock::new();
                let (host, early, opened) = std::thread::scope(|s| {
                    // The reader compares the archive's pickle with the guess as it reads it,
                    // so the bytes are held once. First it finds which memo entries the pickle
                    // reads back, which the run needs only to free the others early: the run
                    // starts at once and keeps every value until the answer arrives.
                    let opening = s.spawn(|| {
                        let _ = reads.set(MemoReads::of(&guess, 0));
                        open(Some(&guess))
                    });
                    // Not a tar (a tar's pickle is never guessed): no tables to hand the host.
                    let (host, early) = run_pickle_with(&guess, None, limits, Some(&reads));
                    let opened = opening.join().unwrap_or_else(|_| {
                        Err(Error::new(
                            path,
                            ErrorKind::Unsupported("internal: the archive reader stopped".into()),
                        ))
                    });
                    (host, early, opened)
                });
                let (mut archive, matched) = opened?;
                let confirmed = matched
                    && !matches!(archive.storages, crate::container::StorageIndex::Tar { .. });
                if confirmed {
                    archive.pickle = guess;
                    (archive, host, early)
                } else {
                    drop((early, host, guess));
                    let (host, loaded) = run_pickle(&archive.pickle, tar_tables(&archive), limits);
                    (archive, host, loaded)
                }
            }
        };
        let loaded = loaded.map_err(|e| {
            Error::new(
                path,
                ErrorKind::Pickle {
                    member: archive.pickle_name.clone(),
                    source: e,
                }
                .limit_first(),
            )
        })?;
        Ok(Checkpoint {
            root: loaded.value,
            storages: host.storages,
            memory: host.memory,
            protocol: loaded.protocol,
            globals: loaded.globals,
            main_run: MainRun {
                end: loaded.end,
                embedded_pickles: loaded.embedded_pickles,
                renamed_globals: loaded.renamed_globals,
            },
            archive,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.archive.path
    }

    /// The opened container: the exact pickle bytes the VM ran, for `scan` and the policy.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// The container kind.
    pub fn container(&self) -> &Container {
        &self.archive.container
    }

    /// The unpickled object tree (`None` after [`Checkpoint::release_tree`]).
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Drops the unpickled object tree once a selection is made: writing needs only the
    /// selection, the storages and the archive, and the tree of a checkpoint of many tensors
    /// is most of its memory. [`Checkpoint::root`] is `None` afterwards.
    pub fn release_tree(&mut self) {
        self.root = Value::None;
        // Each selected tensor carries its storage's declared size; only a legacy stream needs
        // every storage's, to walk them.
        if !self.archive.storages_need_sizes() {
            self.storages = Vec::new();
        }
    }

    /// Drops the pickle's bytes once the policy has judged them: writing needs the tree (or the
    /// selection) and the archive's records, not the pickle. [`Archive::pickle`] is empty
    /// afterwards.
    pub fn release_pickle(&mut self) {
        self.archive.pickle = Vec::new();
    }

    /// Drops the zip structure audit once the policy has judged the archive: selecting needs
    /// it only for a TorchScript archive's `code/` records, writing not at all. A TorchScript
    /// archive keeps it unless `even_torchscript`. Scanning the checkpoint afterwards would
    /// read the directory again.
    pub fn release_audit(&mut self, even_torchscript: bool) {
        if even_torchscript || !matches!(self.archive.container, Container::TorchScript { .. }) {
            self.archive.zip_audit = None;
        }
    }

    fn err(&self, kind: ErrorKind) -> Error {
        Error::new(&self.archive.path, kind)
    }

    /// Selects tensors (`key`, or the default rule) and checks each against its storage.
    pub fn select(&self, key: Option<&str>, keep_aliases: bool) -> Result<Selection> {
        self.select_with(key, keep_aliases, &FlattenOptions::default())
    }

    /// [`Checkpoint::select`] with leaf options (e.g. numpy arrays as tensors).
    pub fn select_with(
        &self,
        key: Option<&str>,
        keep_aliases: bool,
        fopts: &FlattenOptions,
    ) -> Result<Selection> {
        let picked = self.select_tensors(key, keep_aliases, fopts)?;
        self.checked(picked, &size_conflicts(&self.storages))
    }

    /// [`Checkpoint::select_with`] then [`Checkpoint::release_tree`] (also when the selection
    /// fails), with the tree dropped as soon as the selected tensors are known: each tensor's
    /// declaration is then freed once its [`TensorInfo`] is made, so the tree and the selection
    /// never take memory at once. The selection is the one `select_with` makes.
    pub fn select_releasing(
        &mut self,
        key: Option<&str>,
        keep_aliases: bool,
        fopts: &FlattenOptions,
    ) -> Result<Selection> {
        self.select_releasing_with(key, keep_aliases, fopts, &|| {})
    }

    /// [`Checkpoint::select_releasing`], calling `released` once the tree is freed and before
    /// the selection's entries are made: a binary that owns its allocator may return the
    /// freed memory to the system there, so the entries do not take memory on top of it.
    pub fn select_releasing_with(
        &mut self,
        key: Option<&str>,
        keep_aliases: bool,
        fopts: &FlattenOptions,
        released: &dyn Fn(),
    ) -> Result<Selection> {
        let picked = self.select_tensors(key, keep_aliases, fopts);
        let conflicts = size_conflicts(&self.storages);
        self.release_tree();
        released();
        // Each declaration is dropped as its entry is made, its last reference once the tree
        // is gone.
        self.checked(picked?, &conflicts)
    }

    /// The selection of `picked` (from [`Checkpoint::select_tensors`]), every tensor checked.
    fn checked(&self, picked: Picked, conflicts: &SizeConflicts) -> Result<Selection> {
        let (key, (kept, aliases), skipped) = picked;
        let mut tensors = Vec::with_capacity(kept.len());
        for (n, t) in kept {
            tensors.push(self.check_tensor(n, &t, conflicts)?);
        }
        Ok(Selection {
            key,
            tensors,
            aliases,
            skipped,
        })
    }

    /// The selected tensors, named and deduplicated (kept, aliases), and the skipped leaves.
    fn select_tensors(
        &self,
        key: Option<&str>,
        keep_aliases: bool,
        fopts: &FlattenOptions,
    ) -> Result<Picked> {
        let (key, sub) = tree::select(&self.root, key).map_err(|k| self.err(k))?;
        let flat = self.flatten(&sub, fopts).map_err(|k| self.err(k))?;
        // A selection that is one tensor has no name of its own.
        fn shown(name: &str) -> &str {
            if name.is_empty() { "tensor" } else { name }
        }
        {
            let mut names: foldhash::HashSet<&str> =
                foldhash::HashSet::with_capacity_and_hasher(flat.leaves.len(), Default::default());
            for (name, leaf) in &flat.leaves {
                let name = shown(name);
                if !names.insert(name) {
                    return Err(self.err(ErrorKind::Tensor {
                        name: name.to_string(),
                        storage: None,
                        msg: "two tensors get this same name after flattening".into(),
                    }));
                }
                if let Leaf::NotATensor(n) = leaf {
                    let dtype = n
                        .dtype
                        .as_deref()
                        .map(|d| format!(" with dtype {d}"))
                        .unwrap_or_default();
                    return Err(self.err(ErrorKind::Tensor {
                        name: name.to_string(),
                        storage: None,
                        msg: format!("a {} tensor{dtype}, which safetensors cannot hold", n.kind),
                    }));
                }
            }
        }
        // Every leaf is a tensor now. Names are moved, not copied.
        let tensors: Vec<tree::Named> = flat
            .leaves
            .into_iter()
            .filter_map(|(name, leaf)| match leaf {
                Leaf::Tensor(t) if name.is_empty() => Some((shown(&name).to_string(), t)),
                Leaf::Tensor(t) => Some((name, t)),
                Leaf::NotATensor(_) => None,
            })
            .collect();
        if tensors.is_empty() {
            if key.is_empty() && self.archive.container == Container::Pickle {
                return Err(self.err(ErrorKind::NotACheckpoint(format!(
                    "a plain Python pickle with no tensors ({} other values), not written by torch.save; there is nothing to convert",
                    flat.skipped.len()
                ))));
            }
            let what = if key.is_empty() {
                "the checkpoint".to_string()
            } else {
                format!("the selected key {key:?}")
            };
            return Err(self.err(ErrorKind::Selection(format!(
                "{what} holds no tensors ({} non-tensor values); use --key to pick another part",
                flat.skipped.len()
            ))));
        }
        let picked = if keep_aliases {
            (tensors, Vec::new())
        } else {
            tree::dedupe(tensors)
        };
        Ok((key, picked, flat.skipped))
    }

    /// The leaves of the selected value: a TorchScript module as its `state_dict()` (from the
    /// archive's own declarations), anything else by the generic walk.
    fn flatten(
        &self,
        sub: &Value,
        fopts: &FlattenOptions,
    ) -> std::result::Result<tree::Flattened, ErrorKind> {
        if !matches!(self.archive.container, Container::TorchScript { .. })
            || tree::script_class_name(sub).is_none()
        {
            return tree::flatten_with(sub, "", fopts);
        }
        let script = self
            .archive
            .script_classes()
            .and_then(|classes| tree::flatten_script(sub, &classes, fopts));
        match script {
            Ok(tree::ScriptFlat::Module(flat)) => Ok(flat),
            Ok(tree::ScriptFlat::NotAModule) => tree::flatten_with(sub, "", fopts),
            // Every tensor attribute was asked for: the declarations are not needed for that.
            Err(_) if fopts.torchscript_attributes => tree::flatten_with(sub, "", fopts),
            Err(e) => Err(ErrorKind::Malformed(format!(
                "cannot tell this TorchScript module's parameters and buffers from its other attributes: {e}; --torchscript-attributes writes every tensor attribute instead"
            ))),
        }
    }

    fn check_tensor(
        &self,
        name: String,
        t: &TensorRef,
        conflicts: &SizeConflicts,
    ) -> Result<TensorInfo> {
        let fail = |msg: String| {
            self.err(ErrorKind::Tensor {
                name: name.clone(),
                storage: Some(t.storage.key.to_string()),
                msg,
            })
        };
        if let Some(why) = t.dtype.refusal() {
            return Err(fail(format!("dtype {} cannot be written: {why}", t.dtype)));
        }
        if t.neg && !negation_supported(t.dtype) {
            return Err(fail(format!(
                "a negated view of dtype {} cannot be resolved bit-exactly",
                t.dtype
            )));
        }
        let s = &t.storage;
        let root_bytes = s
            .nbytes()
            .ok_or_else(|| fail("storage size overflows".into()))?;
        let (vbase, vbytes) = match s.view.as_deref() {
            None => (0, root_bytes),
            Some(&(off, n)) => {
                let end = off.checked_add(n).filter(|e| *e <= s.numel).ok_or_else(|| {
                    fail(format!("storage view [{off}, +{n}) lies outside its root storage of {} elements", s.numel))
                })?;
                let _ = end;
                (off * s.unit(), n * s.unit())
            }
        };
        let item = t.dtype.itemsize();
        let avail = vbytes / item;
        let numel = t
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| fail("element count overflows".into()))?;
        let nbytes = numel
            .checked_mul(item)
            .filter(|b| *b <= MAX_TENSOR_BYTES)
            .ok_or_else(|| {
                fail(format!(
                    "the tensor would need more than {MAX_TENSOR_BYTES} bytes (shape {:?})",
                    t.shape
                ))
            })?;
        if numel == 0 {
            if t.offset > avail {
                return Err(fail(format!(
                    "empty tensor at element offset {} beyond its storage of {avail} elements",
                    t.offset
                )));
            }
        } else {
            let reach = t
                .shape
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |a, (&n, &st)| {
                    (n - 1).checked_mul(st).and_then(|x| a.checked_add(x))
                })
                .and_then(|x| x.checked_add(1))
                .ok_or_else(|| fail("the view's extent overflows".into()))?;
            if reach > avail {
                return Err(fail(format!(
                    "the view (offset {}, shape {:?}, stride {:?}) needs {reach} elements of {} but the storage holds {avail}",
                    t.offset, t.shape, t.stride, t.dtype
                )));
            }
        }
        if let Some((a, b)) = conflicts.get(&*s.key) {
            return Err(fail(format!(
                "the storage is declared with two different sizes ({a:?} and {b:?} bytes)"
            )));
        }
        let mut expect = 1u64;
        let mut contiguous = true;
        for (&n, &st) in t.shape.iter().zip(&t.stride).rev() {
            if n != 1 && st != expect {
                contiguous = false;
            }
            expect = expect.saturating_mul(n);
        }
        Ok(TensorInfo {
            name,
            dtype: t.dtype,
            shape: t.shape.clone(),
            stride: t.stride.clone(),
            offset: t.offset,
            storage: String::from(&*s.key),
            storage_declared: (s.numel, s.unit()),
            storage_base: vbase,
            nbytes,
            contiguous,
            conj: t.conj && t.dtype == DType::C64,
            neg: t.neg,
        })
    }

    /// Storage bytes held inside the pickle (embedded legacy streams, numpy arrays), by key.
    pub(crate) fn memory_storage(&self, key: &str) -> Option<&Rc<[u8]>> {
        self.memory.get(key)
    }

    /// Locates the storages of `sel` and checks each declared size against its record. Also
    /// gives, per tensor of `sel`, the offset of its record's bytes when they are stored as they
    /// are in the file (`None` for a deflated or in-pickle one), so that a caller does not look
    /// each record up again.
    pub(crate) fn records(
        &self,
        sel: &Selection,
    ) -> Result<(std::borrow::Cow<'_, Records>, Vec<Option<u64>>)> {
        let mut declared: HashMap<String, (u64, u64)> = HashMap::new();
        if self.archive.storages_need_sizes() {
            for s in &self.storages {
                declared
                    .entry(String::from(&*s.key))
                    .or_insert((s.unit(), s.numel));
            }
        }
        let mut records = self
            .archive
            .locate_storages(&declared)
            .map_err(|k| self.err(k))?;
        if !self.memory.is_empty() {
            let records = records.to_mut();
            for (key, bytes) in &self.memory {
                let len = bytes.len() as u64;
                records.insert(
                    key.clone(),
                    Record {
                        name: key.as_str().into(),
                        offset: 0,
                        stored_len: len,
                        len,
                        method: RecordMethod::Stored,
                    },
                );
            }
        }
        let mut stored = Vec::with_capacity(sel.tensors.len());
        for t in &sel.tensors {
            let rec = records.get(&t.storage).ok_or_else(|| {
                self.err(ErrorKind::Tensor {
                    name: t.name.clone(),
                    storage: Some(t.storage.clone()),
                    msg: format!(
                        "the storage record ({}) is missing from the file",
                        self.record_name(&t.storage)
                    ),
                })
            })?;
            // `check_tensor` refused a storage whose size overflows.
            let (numel, unit) = t.storage_declared;
            let want = numel.saturating_mul(unit);
            if rec.len != want {
                return Err(self.err(ErrorKind::Tensor {
                    name: t.name.clone(),
                    storage: Some(t.storage.clone()),
                    msg: format!(
                        "the pickle declares {numel} elements of {unit} bytes ({want} bytes) but record {} holds {} bytes",
                        rec.name,
                        rec.len
                    ),
                }));
            }
            let in_file = !self.memory.contains_key(&t.storage);
            stored.push((in_file && rec.method == RecordMethod::Stored).then_some(rec.offset));
        }
        Ok((records, stored))
    }

    fn record_name(&self, key: &str) -> String {
        match &self.archive.container {
            Container::Zip { prefix } | Container::TorchScript { prefix } => {
                format!("{prefix}data/{key}")
            }
            Container::Legacy => format!("legacy storage {key}"),
            Container::Pickle => format!("embedded storage {key}"),
            Container::Tar => format!("tar storage {key}"),
        }
    }

    /// Converts `sel` into `output`.
    pub fn write(
        &self,
        sel: &Selection,
        output: &Path,
        opts: &ConvertOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<ConvertReport> {
        let bytes = write_merged(&[(self, sel)], output, opts, progress)?;
        Ok(ConvertReport {
            input: self.archive.path.clone(),
            output: output.to_path_buf(),
            key: sel.key.clone(),
            tensors: sel.tensors.len(),
            aliases: sel.aliases.clone(),
            skipped: sel.skipped.clone(),
            bytes,
        })
    }

    /// Opens the files holding `sel`'s storages (the checkpoint itself, plus temp files for
    /// deflated records and in-pickle data) and appends them to `sources`. Returns, per storage
    /// key, the source index and the offset of the storage's bytes in it.
    fn open_sources(
        &self,
        sel: &Selection,
        out_dir: &Path,
        sources: &mut Vec<File>,
    ) -> std::result::Result<Vec<(usize, u64)>, ErrorKind> {
        let (records, stored) = self.records(sel).map_err(|e| e.kind)?;
        let main = sources.len();
        sources.push(
            self.archive
                .file
                .try_clone()
                .map_err(io("cannot reopen the input"))?,
        );
        // Per tensor, in selection order. Storages copied to a temporary file (in-pickle bytes,
        // deflated records) are copied once, whatever the number of tensors viewing them.
        let mut source_of = Vec::with_capacity(sel.tensors.len());
        let mut temporary: HashMap<&str, (usize, u64)> = HashMap::new();
        for (t, stored) in sel.tensors.iter().zip(stored) {
            if let Some(offset) = stored {
                source_of.push((main, offset));
                continue;
            }
            if let Some(&src) = temporary.get(t.storage.as_str()) {
                source_of.push(src);
                continue;
            }
            if let Some(bytes) = self.memory.get(&t.storage) {
                sources.push(memory_to_temp(bytes, out_dir)?);
                let src = (sources.len() - 1, 0);
                temporary.insert(&t.storage, src);
                source_of.push(src);
                continue;
            }
            let rec = records.get(&t.storage).ok_or_else(|| {
                ErrorKind::Unsupported(format!("internal: storage {:?} was not located", t.storage))
            })?;
            let src = match &rec.method {
                RecordMethod::Stored => (main, rec.offset),
                // Deflated, or a method torch never writes (refused there).
                RecordMethod::Deflated | RecordMethod::Other(_) => {
                    sources.push(record_to_temp(&self.archive.file, rec, Some(out_dir))?);
                    let src = (sources.len() - 1, 0);
                    temporary.insert(&t.storage, src);
                    src
                }
            };
            source_of.push(src);
        }
        Ok(source_of)
    }
}

/// Writes the tensors of several selections (of one or more checkpoints) into one safetensors
/// file, e.g. to regroup small shards. Names must be unique across the parts. Returns the bytes
/// written.
pub fn write_merged(
    parts: &[(&Checkpoint, &Selection)],
    output: &Path,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let out_err = |k| Error::new(output, k);
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let count = parts.iter().map(|(_, sel)| sel.tensors.len()).sum();
    let mut entries = Vec::with_capacity(count);
    // Names are unique within a selection; across parts they must be checked.
    let mut names: HashSet<&str> = HashSet::new();
    for (ckpt, sel) in parts {
        for (alias, kept) in &sel.aliases {
            metadata.insert(alias.clone(), kept.clone());
        }
        for t in &sel.tensors {
            if parts.len() > 1 && !names.insert(t.name.as_str()) {
                return Err(ckpt.err(ErrorKind::Tensor {
                    name: t.name.clone(),
                    storage: Some(t.storage.clone()),
                    msg: "two parts of one output hold a tensor of this name".into(),
                }));
            }
            entries.push(HeaderEntry {
                name: t.name.as_str().into(),
                // `check_tensor` refused every dtype without a safetensors type.
                dtype: t.dtype.info().safetensors.unwrap_or(safetensors::Dtype::U8),
                shape: (&*t.shape).into(),
                nbytes: t.nbytes,
            });
        }
    }
    drop(names);
    let writer::HeaderPlan {
        bytes: header,
        order,
        offsets,
        total_len,
    } = writer::plan_header(entries, &metadata).map_err(out_err)?;
    let data_start = header.len() as u64;
    // The header is written first and freed before the jobs are built (at 100,000 tensors it
    // is 8.5 MB, the jobs 6.4 MB).
    let file = writer::start_file(output, &header, total_len, progress).map_err(out_err)?;
    drop(header);
    let out_dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut sources = Vec::new();
    let mut source_of = Vec::with_capacity(parts.len());
    for (ckpt, sel) in parts {
        source_of.push(
            ckpt.open_sources(sel, out_dir, &mut sources)
                .map_err(|k| ckpt.err(k))?,
        );
    }
    // Where each part's entries start in the list planned: entry `k` is tensor `k - starts[p]`
    // of the last part `p` starting at or before `k` (parts without tensors share the next
    // part's start).
    let starts: Vec<usize> = parts
        .iter()
        .scan(0, |n, (_, sel)| {
            let start = *n;
            *n += sel.tensors.len();
            Some(start)
        })
        .collect();
    let mut jobs = Vec::with_capacity(order.len());
    for (&k, &(begin, _end)) in order.iter().zip(&offsets) {
        let located = starts
            .partition_point(|&s| s <= k)
            .checked_sub(1)
            .and_then(|p| {
                let i = k - starts[p];
                Some((p, i, parts.get(p)?.1.tensors.get(i)?))
            });
        let Some((p, i, t)) = located else {
            return Err(out_err(ErrorKind::Unsupported(format!(
                "internal: the source of planned entry {k} not found while planning"
            ))));
        };
        if t.nbytes == 0 {
            continue;
        }
        let &(source, rec_off) = source_of.get(p).and_then(|m| m.get(i)).ok_or_else(|| {
            out_err(ErrorKind::Unsupported(format!(
                "internal: the storage of tensor {:?} not found while planning",
                t.name
            )))
        })?;
        let base = rec_off + t.storage_base;
        let transform = t.transform(parts[p].0.archive.byte_order);
        let item = t.dtype.itemsize();
        let kind = if t.contiguous && transform.is_identity() {
            JobKind::Copy {
                src_off: base + t.offset * item,
            }
        } else if t.contiguous {
            JobKind::Transformed {
                src_off: base + t.offset * item,
                dtype: t.dtype,
                transform,
            }
        } else {
            JobKind::Strided {
                view: Box::new(t.strided(rec_off)),
                dtype: t.dtype,
                transform,
            }
        };
        jobs.push(Job {
            source,
            kind,
            dst: data_start + begin,
            len: t.nbytes,
            tensor: &t.name,
        });
    }
    // Not needed by the copy, which holds every job until the end.
    drop((order, offsets, source_of));
    let wopts = writer::WriteOptions {
        overwrite: opts.overwrite,
        threads: opts.threads,
        sync_folder: !opts.defer_folder_sync,
    };
    file.finish(jobs, &sources, wopts, progress)
        .map_err(out_err)?;
    Ok(total_len)
}

/// A selection before its tensors are checked: the key, the tensors kept and the aliases
/// (alias, kept name), and the skipped leaves.
type Picked = (
    String,
    (Vec<tree::Named>, Vec<(String, String)>),
    Vec<(String, String)>,
);

/// Storage keys and the two sizes (in bytes) first met for them, for each key the pickle
/// declares with two different sizes: every reference to a key must agree on its size. Owned
/// (a key is copied only when it conflicts), so the storages can be freed before it is used.
type SizeConflicts = foldhash::HashMap<String, (Option<u64>, Option<u64>)>;

/// Notes that storage `s`, whose key was first declared with `first` bytes, disagrees.
fn note_conflict(conflicts: &mut SizeConflicts, s: &StorageRef, first: Option<u64>) {
    if first != s.nbytes() && !conflicts.contains_key(&*s.key) {
        conflicts.insert(String::from(&*s.key), (first, s.nbytes()));
    }
}

/// The storage keys that `storages` declare with two different sizes.
fn size_conflicts(storages: &[Rc<StorageRef>]) -> SizeConflicts {
    numbered_size_conflicts(storages).unwrap_or_else(|| mapped_size_conflicts(storages))
}

/// [`size_conflicts`] for any keys, through a table of every key's first size.
fn mapped_size_conflicts(storages: &[Rc<StorageRef>]) -> SizeConflicts {
    let mut sizes: foldhash::HashMap<&str, Option<u64>> =
        foldhash::HashMap::with_capacity_and_hasher(storages.len(), Default::default());
    let mut conflicts = SizeConflicts::default();
    for s in storages {
        let first = *sizes.entry(&*s.key).or_insert(s.nbytes());
        note_conflict(&mut conflicts, s, first);
    }
    conflicts
}

/// [`size_conflicts`] when the keys are torch's own: `0`, `1`, … numbered in order of first
/// appearance, a key met again naming an earlier number. The first sizes are then a vector
/// filled in order (no table touched at random for every storage); `None` as soon as a key is
/// not of that form.
fn numbered_size_conflicts(storages: &[Rc<StorageRef>]) -> Option<SizeConflicts> {
    let mut sizes: Vec<Option<u64>> = Vec::with_capacity(storages.len());
    let mut conflicts = SizeConflicts::default();
    let mut next = itoa::Buffer::new();
    for s in storages {
        if *s.key == *next.format(sizes.len()) {
            sizes.push(s.nbytes());
            continue;
        }
        let first = *sizes.get(Records::dense_index(&s.key)?)?;
        note_conflict(&mut conflicts, s, first);
    }
    Some(conflicts)
}

/// Runs `pickle` on a new host, given a tar archive's tables (the one thing a host takes from
/// its archive). The one place a checkpoint's pickle is run, guessed or opened.
fn run_pickle(
    pickle: &[u8],
    tar: Option<&crate::container::tar::TarTables>,
    limits: &Limits,
) -> (
    TorchHost,
    std::result::Result<crate::pickle::Loaded, crate::pickle::PickleError>,
) {
    run_pickle_with(pickle, tar, limits, None)
}

/// [`run_pickle`] with the memo reads found by another thread ([`crate::pickle::load_with_reads`]).
fn run_pickle_with(
    pickle: &[u8],
    tar: Option<&crate::container::tar::TarTables>,
    limits: &Limits,
    reads: Option<&std::sync::OnceLock<MemoReads>>,
) -> (
    TorchHost,
    std::result::Result<crate::pickle::Loaded, crate::pickle::PickleError>,
) {
    let mut host = TorchHost::with_limits(*limits);
    host.tar = tar.cloned();
    let loaded = load_with_reads(pickle, 0, &mut host, limits, reads);
    (host, loaded)
}

/// A tar archive's tables, for its pickle's host.
fn tar_tables(archive: &Archive) -> Option<&crate::container::tar::TarTables> {
    match &archive.storages {
        crate::container::StorageIndex::Tar { tables, .. } => Some(tables),
        _ => None,
    }
}

fn memory_to_temp(bytes: &[u8], dir: &Path) -> std::result::Result<File, ErrorKind> {
    use std::io::Write;
    let mut tmp = tempfile::tempfile_in(dir).map_err(io(format!(
        "cannot create a temporary file in {}",
        dir.display()
    )))?;
    tmp.write_all(bytes)
        .map_err(io("cannot write a temporary file"))?;
    Ok(tmp)
}

/// Options of [`crate::convert`] and of a [`crate::Pipeline`]'s write.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Dotted path of the subtree to convert (`Some("")` = the whole tree; `None` = default rule).
    pub key: Option<String>,
    /// Write every alias with its own copy instead of recording it in `__metadata__`.
    pub keep_aliases: bool,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Write numeric numpy arrays found in the tree as tensors.
    pub include_numpy: bool,
    /// TorchScript archives: also write tensor attributes that are not parameters or buffers
    /// (after the `state_dict()` entries).
    pub torchscript_attributes: bool,
    /// Leave flushing the output's folder to the caller (`migrate` flushes each folder once,
    /// at the end and before removing any source): a crash before then can lose a new name,
    /// never leave a partial file under it.
    pub defer_folder_sync: bool,
}

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// Source file.
    pub input: PathBuf,
    /// Output file.
    pub output: PathBuf,
    /// The dotted path converted (empty: the whole tree).
    pub key: String,
    /// Tensors written.
    pub tensors: usize,
    /// `(alias, kept)` names recorded in metadata.
    pub aliases: Vec<(String, String)>,
    /// Non-tensor leaves left out, with their types.
    pub skipped: Vec<(String, String)>,
    /// Bytes of the output file.
    pub bytes: u64,
}

/// The output name `convert` uses by default: beside the input, with Hugging Face's names
/// (`pytorch_model.bin` → `model.safetensors`, `pytorch_model-00001-of-00002.bin` →
/// `model-00001-of-00002.safetensors`), otherwise the extension replaced by `.safetensors`.
pub fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match stem.strip_prefix("pytorch_model") {
        Some(rest) if rest.is_empty() || rest.starts_with('-') => {
            format!("model{rest}.safetensors")
        }
        _ => format!("{stem}.safetensors"),
    };
    input.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_keys_find_the_same_size_conflicts_as_the_table() {
        let storage = |key: &str, numel: u64| {
            Rc::new(StorageRef {
                key: key.into(),
                dtype: Some(DType::F32),
                numel,
                location: Rc::from("cpu"),
                view: None,
            })
        };
        let sorted = |c: SizeConflicts| {
            let mut v: Vec<_> = c.into_iter().collect();
            v.sort();
            v
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let (mut numbered, mut conflicting) = (0, 0);
        for _ in 0..2000 {
            let mut storages = Vec::new();
            let mut next = 0u64;
            for _ in 0..rnd(12) {
                let key = match rnd(20) {
                    // Mostly torch's own numbering: the next number, or one met before.
                    0..=11 => {
                        next += 1;
                        (next - 1).to_string()
                    }
                    12..=16 if next > 0 => rnd(next).to_string(),
                    17 => format!("0{}", rnd(3)),
                    18 => (next + 1 + rnd(3)).to_string(),
                    _ => ["x", "", "-1", "+1", " 1"][rnd(5) as usize].to_string(),
                };
                storages.push(storage(&key, 1 + rnd(3)));
            }
            let table = sorted(mapped_size_conflicts(&storages));
            if let Some(found) = numbered_size_conflicts(&storages) {
                assert_eq!(sorted(found), table, "{storages:?}");
                numbered += 1;
                conflicting += usize::from(!table.is_empty());
            }
            assert_eq!(sorted(size_conflicts(&storages)), table);
        }
        // The numbered path is taken often, with and without conflicts.
        assert!(
            numbered > 300 && conflicting > 100,
            "{numbered} {conflicting}"
        );
    }

    #[test]
    fn a_releasing_selection_is_the_plain_one_and_frees_the_tree() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ckpt");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let (mut compared, mut aliased) = (0, 0);
        for f in &files {
            for keep_aliases in [false, true] {
                for include_numpy in [false, true] {
                    let fopts = FlattenOptions {
                        include_numpy,
                        ..FlattenOptions::default()
                    };
                    let Ok(mut ckpt) = Checkpoint::open(f) else {
                        continue;
                    };
                    let plain = ckpt.select_with(None, keep_aliases, &fopts);
                    let released = ckpt.select_releasing(None, keep_aliases, &fopts);
                    let show = |r: &Result<Selection>| match r {
                        Ok(s) => format!("{s:?}"),
                        Err(e) => format!("error: {e:#}"),
                    };
                    assert_eq!(show(&plain), show(&released), "{}", f.display());
                    assert!(matches!(ckpt.root(), Value::None), "{}", f.display());
                    compared += 1;
                    aliased += usize::from(plain.is_ok_and(|s| !s.aliases.is_empty()));
                }
            }
        }
        // Most fixtures open, and some of them have aliases to dedupe.
        assert!(compared > 150 && aliased >= 4, "{compared} {aliased}");
    }

    #[test]
    fn default_output_follows_hugging_face_names() {
        let cases = [
            ("m/pytorch_model.bin", "m/model.safetensors"),
            (
                "m/pytorch_model-00001-of-00002.bin",
                "m/model-00001-of-00002.safetensors",
            ),
            (
                "m/diffusion_pytorch_model.bin",
                "m/diffusion_pytorch_model.safetensors",
            ),
            ("m/adapter_model.bin", "m/adapter_model.safetensors"),
            ("ckpt/last.ckpt", "ckpt/last.safetensors"),
            ("pytorch_model_v2.pt", "pytorch_model_v2.safetensors"),
        ];
        for (i, o) in cases {
            assert_eq!(default_output(Path::new(i)), PathBuf::from(o), "{i}");
        }
    }
}

#[cfg(test)]
mod record_tests {
    //! Tensor records taken whole ([`crate::pickle::TensorRecord`]) against the same pickle
    //! run one opcode at a time.
    use super::*;
    use crate::pickle::{GlobalUse, Host, Loaded, ObjectOrigin, PickleError, Refusal};
    use crate::torch::{NotATensor, TensorRef};

    /// A host that counts the tensor records it took whole.
    struct Counting<'h> {
        host: &'h mut TorchHost,
        taken: usize,
    }

    impl Host for Counting<'_> {
        fn persistent_load(&mut self, pid: Value) -> std::result::Result<Value, Refusal> {
            self.host.persistent_load(pid)
        }
        fn call(
            &mut self,
            callable: &Value,
            args: &Value,
            origin: ObjectOrigin,
        ) -> std::result::Result<Option<Value>, Refusal> {
            self.host.call(callable, args, origin)
        }
        fn build(&mut self, target: &Value, state: &Value) -> std::result::Result<bool, Refusal> {
            self.host.build(target, state)
        }
        fn tensor_record(
            &mut self,
            rec: &crate::pickle::TensorRecord<'_, '_, Value>,
            key: &str,
        ) -> Option<Value> {
            let v = self.host.tensor_record(rec, key)?;
            self.taken += 1;
            Some(v)
        }
    }

    /// Everything a value is, to any depth (a container met again is named, not shown again).
    fn show(v: &Value, seen: &mut HashMap<usize, usize>, out: &mut String) {
        use std::fmt::Write;
        if let Some(p) = crate::tree::node_id(v) {
            let n = seen.len();
            match seen.entry(p) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    let _ = write!(out, "#{}", e.get());
                    return;
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(n);
                }
            }
        }
        match v {
            Value::Tuple(t) => {
                out.push('(');
                for c in t.iter() {
                    show(c, seen, out);
                    out.push(',');
                }
                out.push(')');
            }
            Value::List(l) | Value::Set(l) => {
                out.push('[');
                for c in l.borrow().iter() {
                    show(c, seen, out);
                    out.push(',');
                }
                out.push(']');
            }
            Value::Dict(d) => {
                out.push('{');
                for (k, c) in d.borrow().entries() {
                    show(k, seen, out);
                    out.push(':');
                    show(c, seen, out);
                    out.push(',');
                }
                out.push('}');
            }
            Value::Object(o) => {
                out.push_str("obj<");
                show(&o.callable, seen, out);
                show(&o.args, seen, out);
                if let Some(s) = &*o.state.borrow() {
                    show(s, seen, out);
                }
                for (k, c) in o.items.borrow().entries() {
                    show(k, seen, out);
                    show(c, seen, out);
                }
                for c in o.list.borrow().iter() {
                    show(c, seen, out);
                }
                out.push('>');
            }
            Value::Ext(e) => {
                if let Some(t) = e.downcast_ref::<TensorRef>() {
                    let _ = write!(out, "{t:?}");
                } else if let Some(s) = e.downcast_ref::<StorageRef>() {
                    let _ = write!(out, "{s:?}");
                } else if let Some(n) = e.downcast_ref::<NotATensor>() {
                    let _ = write!(out, "{n:?}");
                } else {
                    out.push_str("ext");
                }
            }
            Value::Str(s) => {
                let _ = write!(out, "{s:?}");
            }
            Value::Bytes(b) | Value::BigInt(b) => {
                let _ = write!(out, "{b:?}");
            }
            Value::Global(g) => {
                let _ = write!(out, "<{g}>");
            }
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => {
                let _ = write!(out, "{:?}", f.to_bits());
            }
            Value::Complex(a, b) => {
                let _ = write!(out, "{:?}", (a.to_bits(), b.to_bits()));
            }
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Value::None => out.push_str("None"),
        }
    }

    /// The whole outcome of one run: its value, its globals, its counts, the host's storages.
    fn outcome(r: &std::result::Result<Loaded, PickleError>, host: &TorchHost) -> String {
        let mut out = match r {
            Ok(l) => {
                let mut s = String::new();
                show(&l.value, &mut HashMap::new(), &mut s);
                let globals: Vec<(String, usize)> = l
                    .globals
                    .iter()
                    .map(|GlobalUse { global, offset }| (global.to_string(), *offset))
                    .collect();
                format!(
                    "{s}\nend {} protocol {} globals {globals:?} embedded {} renamed {}",
                    l.end, l.protocol, l.embedded_pickles, l.renamed_globals
                )
            }
            Err(e) => format!("error: {e}"),
        };
        out.push_str(&format!("\nstorages {:?}", host.storages));
        out
    }

    /// Runs `pickle` both ways; returns how many records were taken whole.
    fn compare(pickle: &[u8], limits: &Limits, what: &str) -> usize {
        let mut whole = TorchHost::with_limits(*limits);
        let mut counting = Counting {
            host: &mut whole,
            taken: 0,
        };
        let a = crate::pickle::load(pickle, 0, &mut counting, limits);
        let taken = counting.taken;
        let mut single = TorchHost::with_limits(*limits);
        let b = crate::pickle::load_opcode_by_opcode(pickle, 0, &mut single, limits);
        assert_eq!(outcome(&a, &whole), outcome(&b, &single), "{what}");
        taken
    }

    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    fn pickle_of(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ckpt")
            .join(name);
        crate::container::Archive::open(&path)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
            .pickle
    }

    #[test]
    fn every_fixture_loads_the_same_with_tensor_records_taken_whole() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ckpt");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let (mut compared, mut taken) = (0, 0);
        for f in &files {
            let Ok(archive) = crate::container::Archive::open(f) else {
                continue;
            };
            taken += compare(
                &archive.pickle,
                &Limits::default(),
                &f.display().to_string(),
            );
            compared += 1;
        }
        // Most fixtures open, and the zip and legacy ones written by torch have records.
        assert!(compared > 40 && taken > 100, "{compared} {taken}");
    }

    /// A record whose storage key is memoized at the very index its location then reads back
    /// (a crafted file): the location is the key, as opcode by opcode.
    #[test]
    fn a_record_that_reads_back_its_own_key_loads_the_same() {
        let mut pickle = pickle_of("many_tensors.pt");
        // `X len key q put h get`: a key, its memo write and the location's memo read.
        let at = (0..pickle.len() - 16)
            .find(|&i| {
                pickle[i] == b'X'
                    && pickle[i + 1..i + 5] == [1, 0, 0, 0]
                    && pickle[i + 6] == b'q'
                    && pickle[i + 8] == b'h'
                    && i > 200
            })
            .expect("a record with a one-byte key");
        pickle[at + 7] = pickle[at + 9];
        let taken = compare(&pickle, &Limits::default(), "key read back as location");
        assert!(taken > 0);
    }

    /// Mutants of torch's own pickles (bytes changed inside and around the records, the
    /// limits tightened) load the same either way, or fail with the same error.
    #[test]
    fn mutated_pickles_load_the_same_with_tensor_records_taken_whole() {
        let mut rng = 0x5eed_u64;
        let mut taken = 0;
        for name in [
            "proto2_zip.pt",
            "views_zip.pt",
            "aliases.pt",
            "many_tensors.pt",
            "proto2_legacy.pt",
            "aliases_legacy.pt",
        ] {
            let pickle = pickle_of(name);
            assert!(
                compare(&pickle, &Limits::default(), name) > 0,
                "{name}: no record"
            );
            for k in 0..1500 {
                let mut m = pickle.clone();
                // A memo write or read (BINPUT, BINGET) made to use the index of another one
                // near it: values read back inside a record, keys and tensors memoized twice.
                let width = if lcg(&mut rng).is_multiple_of(2) {
                    1
                } else {
                    4
                };
                let codes: &[u8] = if width == 1 { b"qh" } else { b"rj" };
                let memo_ops: Vec<usize> = (0..m.len().saturating_sub(width))
                    .filter(|&i| codes.contains(&m[i]))
                    .collect();
                if k % 3 == 0 && memo_ops.len() > 64 {
                    let a = (lcg(&mut rng) as usize) % memo_ops.len();
                    let near = (a + 1 + (lcg(&mut rng) as usize) % 8).min(memo_ops.len() - 1);
                    let (from, to) = (memo_ops[near], memo_ops[a]);
                    let arg = m[from + 1..from + 1 + width].to_vec();
                    m[to + 1..to + 1 + width].copy_from_slice(&arg);
                }
                for _ in 0..1 + lcg(&mut rng) % 3 {
                    let at = (lcg(&mut rng) as usize) % m.len();
                    m[at] = match lcg(&mut rng) % 4 {
                        // An opcode byte a record reads, or a small number.
                        0 => {
                            let ops = b"hjqrKMJ()tRQ\x85\x86\x87\x88\x89X";
                            ops[(lcg(&mut rng) as usize) % ops.len()]
                        }
                        1 => m[at].wrapping_add(1),
                        2 => m[at].wrapping_sub(1),
                        _ => lcg(&mut rng) as u8,
                    };
                }
                let mut limits = Limits::default();
                match k % 5 {
                    0 => limits.max_ops = lcg(&mut rng) % 4000,
                    1 => limits.max_memo = (lcg(&mut rng) % 200) as usize,
                    2 => limits.max_stack = (lcg(&mut rng) % 120) as usize,
                    3 => limits.max_string = lcg(&mut rng) % 12,
                    _ => {}
                }
                taken += compare(&m, &limits, &format!("{name} mutant {k}"));
            }
        }
        assert!(taken > 5000, "{taken}");
    }
}
