//! Synthetic torch.save checkpoints, written without torch: the zip format of torch >= 1.6 and the
//! legacy stream of torch < 1.6, with the pickles torch's protocol-2 pickler would emit.
//!
//! Shared by the `bench` example and the ignored `large_zip64` test. Storage bytes are a
//! deterministic function of the storage index and byte offset ([`fill`]), so a reader can check
//! any byte range without keeping a copy.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

/// Element types the generator writes (torch's legacy typed storages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dt {
    /// float32, `torch.FloatStorage`.
    F32,
    /// bfloat16, `torch.BFloat16Storage`.
    Bf16,
}

impl Dt {
    /// Bytes per element.
    pub fn itemsize(self) -> u64 {
        match self {
            Dt::F32 => 4,
            Dt::Bf16 => 2,
        }
    }

    fn storage_global(self) -> &'static str {
        match self {
            Dt::F32 => "FloatStorage",
            Dt::Bf16 => "BFloat16Storage",
        }
    }
}

/// One tensor with a storage of its own.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    /// State-dict key.
    pub name: String,
    /// Element type.
    pub dtype: Dt,
    /// Sizes.
    pub shape: Vec<u64>,
    /// Strides, in elements.
    pub stride: Vec<u64>,
}

impl TensorSpec {
    /// A row-major tensor.
    pub fn contiguous(name: impl Into<String>, dtype: Dt, shape: &[u64]) -> TensorSpec {
        let mut stride = vec![1u64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1];
        }
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            stride,
        }
    }

    /// The transpose of a row-major `cols x rows` matrix: shape `(rows, cols)`, stride `(1, rows)`.
    pub fn transposed(name: impl Into<String>, dtype: Dt, rows: u64, cols: u64) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: vec![rows, cols],
            stride: vec![1, rows],
        }
    }

    /// Elements in the storage (every view here starts at offset 0).
    pub fn storage_numel(&self) -> u64 {
        if self.shape.contains(&0) {
            return 0;
        }
        1 + self
            .shape
            .iter()
            .zip(&self.stride)
            .map(|(n, s)| (n - 1) * s)
            .sum::<u64>()
    }

    /// Bytes in the storage.
    pub fn storage_bytes(&self) -> u64 {
        self.storage_numel() * self.dtype.itemsize()
    }
}

/// Total storage bytes of a checkpoint.
pub fn total_bytes(tensors: &[TensorSpec]) -> u64 {
    tensors.iter().map(TensorSpec::storage_bytes).sum()
}

/// A transformer-like state dict of about `target` bytes: 10 layers of 12 tensors plus
/// embeddings, final norm and head (123 tensors), attention in f32 and the rest in bf16.
pub fn model_like(target: u64) -> Vec<TensorSpec> {
    // Bytes are about 373 * h^2 for hidden size h (see the shapes below).
    let h = (((target as f64 / 373.0).sqrt() / 64.0).round() as u64).max(1) * 64;
    let inter = h * 11 / 4;
    let vocab = h * 8;
    let mut t = vec![TensorSpec::contiguous(
        "model.embed_tokens.weight",
        Dt::Bf16,
        &[vocab, h],
    )];
    for l in 0..10 {
        let p = format!("model.layers.{l}");
        for w in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            t.push(TensorSpec::contiguous(
                format!("{p}.self_attn.{w}.weight"),
                Dt::F32,
                &[h, h],
            ));
        }
        for b in ["q_proj", "k_proj", "v_proj"] {
            t.push(TensorSpec::contiguous(
                format!("{p}.self_attn.{b}.bias"),
                Dt::F32,
                &[h],
            ));
        }
        t.push(TensorSpec::contiguous(
            format!("{p}.mlp.gate_proj.weight"),
            Dt::Bf16,
            &[inter, h],
        ));
        t.push(TensorSpec::contiguous(
            format!("{p}.mlp.up_proj.weight"),
            Dt::Bf16,
            &[inter, h],
        ));
        t.push(TensorSpec::contiguous(
            format!("{p}.mlp.down_proj.weight"),
            Dt::Bf16,
            &[h, inter],
        ));
        t.push(TensorSpec::contiguous(
            format!("{p}.input_layernorm.weight"),
            Dt::F32,
            &[h],
        ));
        t.push(TensorSpec::contiguous(
            format!("{p}.post_attention_layernorm.weight"),
            Dt::F32,
            &[h],
        ));
    }
    t.push(TensorSpec::contiguous("model.norm.weight", Dt::F32, &[h]));
    t.push(TensorSpec::contiguous(
        "lm_head.weight",
        Dt::F32,
        &[vocab, h],
    ));
    t
}

/// `n` small f32 tensors of `bytes` bytes each.
pub fn many_small(n: usize, bytes: u64) -> Vec<TensorSpec> {
    (0..n)
        .map(|i| TensorSpec::contiguous(format!("blocks.{i}.weight"), Dt::F32, &[bytes / 4]))
        .collect()
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Storage `storage`'s bytes from byte `start` on: little-endian word `k` of the storage is
/// `splitmix64(storage << 40 | k)`.
pub fn fill(storage: u64, start: u64, buf: &mut [u8]) {
    let base = storage << 40;
    let mut word = start / 8;
    let skip = (start % 8) as usize;
    let mut rest: &mut [u8] = buf;
    if skip != 0 {
        let w = splitmix64(base | word).to_le_bytes();
        let n = (8 - skip).min(rest.len());
        rest[..n].copy_from_slice(&w[skip..skip + n]);
        rest = &mut rest[n..];
        word += 1;
    }
    let mut chunks = rest.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&splitmix64(base | word).to_le_bytes());
        word += 1;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&splitmix64(base | word).to_le_bytes()[..n]);
    }
}

/// Streams storage `storage`'s `len` bytes into `w` through a bounded buffer.
fn write_storage(w: &mut impl Write, storage: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; len.min(8 << 20) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        fill(storage, done, &mut buf[..n]);
        w.write_all(&buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// The small subset of Python's protocol-2 pickler that torch.save exercises, memoizing as
/// `pickle.Pickler` does (every string, global, non-empty tuple and reduced object gets a PUT;
/// repeated strings and globals are fetched with GET).
pub struct Pickler {
    out: Vec<u8>,
    memo: HashMap<String, u32>,
    next: u32,
}

impl Default for Pickler {
    fn default() -> Self {
        Self::new()
    }
}

impl Pickler {
    /// Starts a pickle with `PROTO 2`.
    pub fn new() -> Pickler {
        Pickler {
            out: vec![0x80, 2],
            memo: HashMap::new(),
            next: 0,
        }
    }

    /// Ends with `STOP` and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }

    fn put(&mut self) -> u32 {
        let i = self.next;
        self.next += 1;
        if i < 256 {
            self.out.extend_from_slice(&[b'q', i as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
        i
    }

    fn get(&mut self, i: u32) {
        if i < 256 {
            self.out.extend_from_slice(&[b'h', i as u8]);
        } else {
            self.out.push(b'j');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    fn memoized(&mut self, key: String, write: impl FnOnce(&mut Vec<u8>)) {
        if let Some(&i) = self.memo.get(&key) {
            self.get(i);
        } else {
            write(&mut self.out);
            let i = self.put();
            self.memo.insert(key, i);
        }
    }

    /// `GLOBAL module name`.
    pub fn global(&mut self, module: &str, name: &str) {
        self.memoized(format!("g{module}\n{name}"), |o| {
            o.push(b'c');
            o.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        });
    }

    /// A `str` (`BINUNICODE`).
    pub fn str(&mut self, s: &str) {
        self.memoized(format!("s{s}"), |o| {
            o.push(b'X');
            o.extend_from_slice(&(s.len() as u32).to_le_bytes());
            o.extend_from_slice(s.as_bytes());
        });
    }

    /// A non-negative `int`: `BININT1`, `BININT2`, `BININT` or `LONG1`, as Python chooses.
    pub fn int(&mut self, v: u128) {
        if v <= 0xff {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if v <= 0xffff {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= 0x7fff_ffff {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            // Minimal two's complement, little-endian: a set top bit needs one more zero byte.
            let bytes = v.to_le_bytes();
            let mut n = 16 - (v.leading_zeros() / 8) as usize;
            if bytes[n - 1] & 0x80 != 0 {
                n += 1;
            }
            self.out.extend_from_slice(&[0x8a, n as u8]);
            self.out.extend_from_slice(&bytes[..n]);
        }
    }

    /// `NEWTRUE` / `NEWFALSE`.
    pub fn bool(&mut self, b: bool) {
        self.out.push(if b { 0x88 } else { 0x89 });
    }

    /// `NONE`.
    pub fn none(&mut self) {
        self.out.push(b'N');
    }

    /// `MARK`.
    pub fn mark(&mut self) {
        self.out.push(b'(');
    }

    /// Closes a tuple of `n` items already pushed (after a `MARK` when `n > 3`) and memoizes it.
    pub fn tuple(&mut self, n: usize) {
        match n {
            0 => {
                self.out.push(b')');
                return;
            }
            1 => self.out.push(0x85),
            2 => self.out.push(0x86),
            3 => self.out.push(0x87),
            _ => self.out.push(b't'),
        }
        self.put();
    }

    /// A tuple of ints.
    pub fn int_tuple(&mut self, items: &[u64]) {
        if items.len() > 3 {
            self.mark();
        }
        for &i in items {
            self.int(i as u128);
        }
        self.tuple(items.len());
    }

    /// `REDUCE`, memoizing the result.
    pub fn reduce(&mut self) {
        self.out.push(b'R');
        self.put();
    }

    /// `EMPTY_DICT`, memoized.
    pub fn empty_dict(&mut self) {
        self.out.push(b'}');
        self.put();
    }

    /// `EMPTY_LIST`, memoized.
    pub fn empty_list(&mut self) {
        self.out.push(b']');
        self.put();
    }

    /// `OrderedDict()`: `GLOBAL collections OrderedDict`, `EMPTY_TUPLE`, `REDUCE`.
    pub fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.tuple(0);
        self.reduce();
    }

    /// Adds `n` key/value pairs pushed by `item(self, i)` to the dict on the stack, in batches
    /// of 1000 as Python does (`SETITEM` for a batch of one).
    pub fn set_items(&mut self, n: usize, mut item: impl FnMut(&mut Pickler, usize)) {
        let mut i = 0;
        while i < n {
            let batch = (n - i).min(1000);
            if batch > 1 {
                self.mark();
            }
            for j in i..i + batch {
                item(self, j);
            }
            self.out.push(if batch > 1 { b'u' } else { b's' });
            i += batch;
        }
    }

    /// Appends `n` items pushed by `item(self, i)` to the list on the stack, in batches of 1000.
    pub fn append_items(&mut self, n: usize, mut item: impl FnMut(&mut Pickler, usize)) {
        let mut i = 0;
        while i < n {
            let batch = (n - i).min(1000);
            if batch > 1 {
                self.mark();
            }
            for j in i..i + batch {
                item(self, j);
            }
            self.out.push(if batch > 1 { b'e' } else { b'a' });
            i += batch;
        }
    }

    /// `BINPERSID`.
    pub fn persid(&mut self) {
        self.out.push(b'Q');
    }

    /// `BUILD`.
    pub fn build(&mut self) {
        self.out.push(b'b');
    }
}

/// Which container a pickle is for: the zip format's 5-tuple persistent ids or the legacy
/// stream's 6-tuples ending in `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pids {
    Zip,
    Legacy,
}

/// `OrderedDict` of `_rebuild_tensor_v2` tensors with a `_metadata` attribute, as
/// `torch.save(model.state_dict())` pickles it.
fn state_dict_pickle(tensors: &[TensorSpec], keys: &[String], pids: Pids) -> Vec<u8> {
    let mut p = Pickler::new();
    p.ordered_dict();
    p.set_items(tensors.len(), |p, i| {
        let t = &tensors[i];
        p.str(&t.name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.mark();
        // The storage: BINPERSID of ('storage', torch.<X>Storage, key, 'cpu', numel[, None]).
        p.mark();
        p.str("storage");
        p.global("torch", t.dtype.storage_global());
        p.str(&keys[i]);
        p.str("cpu");
        p.int(t.storage_numel() as u128);
        if pids == Pids::Legacy {
            p.none();
            p.tuple(6);
        } else {
            p.tuple(5);
        }
        p.persid();
        p.int(0);
        p.int_tuple(&t.shape);
        p.int_tuple(&t.stride);
        p.bool(false);
        p.ordered_dict();
        p.tuple(6);
        p.reduce();
    });
    // state.__dict__ = {'_metadata': OrderedDict({'': {'version': 1}})}
    p.empty_dict();
    p.str("_metadata");
    p.ordered_dict();
    p.str("");
    p.empty_dict();
    p.str("version");
    p.int(1);
    p.out.push(b's');
    p.out.push(b's');
    p.out.push(b's');
    p.build();
    p.finish()
}

/// Writes a torch.save zip archive under the root folder `root`: `data.pkl`,
/// `.format_version`, `.storage_alignment`, `byteorder`, `data/<i>`, `version`; every record
/// stored, its data 64-byte aligned (an `FB` extra field, as torch pads), zip64 where needed.
pub fn write_zip(path: &Path, root: &str, tensors: &[TensorSpec]) -> io::Result<()> {
    let keys: Vec<String> = (0..tensors.len()).map(|i| i.to_string()).collect();
    let pickle = state_dict_pickle(tensors, &keys, Pids::Zip);
    let file = File::create(path)?;
    let mut zip = ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    let base = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .with_alignment_and_header_id(64, u16::from_le_bytes(*b"FB"));
    let small = |zip: &mut ZipWriter<_>, name: &str, bytes: &[u8]| -> io::Result<()> {
        zip.start_file(format!("{root}/{name}"), base)
            .map_err(io::Error::other)?;
        zip.write_all(bytes)
    };
    small(&mut zip, "data.pkl", &pickle)?;
    small(&mut zip, ".format_version", b"1")?;
    small(&mut zip, ".storage_alignment", b"64")?;
    small(&mut zip, "byteorder", b"little")?;
    for (i, t) in tensors.iter().enumerate() {
        let len = t.storage_bytes();
        let opts = base.large_file(len >= u32::MAX as u64);
        zip.start_file(format!("{root}/data/{}", keys[i]), opts)
            .map_err(io::Error::other)?;
        write_storage(&mut zip, i as u64, len)?;
    }
    small(&mut zip, "version", b"3\n")?;
    let mut out = zip.finish().map_err(io::Error::other)?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Where each storage's bytes start in an archive written by [`write_zip`] (storage `i` holds
/// tensor `i`), read back from its zip headers.
pub fn zip_data_starts(path: &Path, root: &str, n: usize) -> io::Result<Vec<u64>> {
    let mut zip = zip::ZipArchive::new(File::open(path)?).map_err(io::Error::other)?;
    (0..n)
        .map(|i| {
            let name = format!("{root}/data/{i}");
            let f = zip.by_name(&name).map_err(io::Error::other)?;
            f.data_start()
                .ok_or_else(|| io::Error::other(format!("{name}: no data offset")))
        })
        .collect()
}

/// Where each storage's bytes start in a stream written by [`write_legacy`]: the storages end
/// the file, each an 8-byte element count and its bytes.
pub fn legacy_data_starts(path: &Path, tensors: &[TensorSpec]) -> io::Result<Vec<u64>> {
    let mut end = std::fs::metadata(path)?.len();
    let mut starts = vec![0; tensors.len()];
    for (i, t) in tensors.iter().enumerate().rev() {
        let start = end
            .checked_sub(t.storage_bytes())
            .ok_or_else(|| io::Error::other("file shorter than its storages"))?;
        starts[i] = start;
        end = start
            .checked_sub(8)
            .ok_or_else(|| io::Error::other("file shorter than its storages"))?;
    }
    Ok(starts)
}

/// Storage keys of a legacy stream: decimal "addresses", listed in string order.
fn legacy_keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| (94_340_341_200_128u64 + i as u64 * 4096).to_string())
        .collect()
}

/// Writes the legacy twin: magic pickle, protocol 1001, sys_info, the state dict with 6-tuple
/// persistent ids, the key list, then per key `[u64 LE element count][bytes]`.
pub fn write_legacy(path: &Path, tensors: &[TensorSpec]) -> io::Result<()> {
    let keys = legacy_keys(tensors.len());
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut magic = Pickler::new();
    magic.int(0x1950A86A20F9469CFC6C);
    w.write_all(&magic.finish())?;
    let mut proto = Pickler::new();
    proto.int(1001);
    w.write_all(&proto.finish())?;
    let mut info = Pickler::new();
    info.empty_dict();
    info.set_items(3, |p, i| match i {
        0 => {
            p.str("protocol_version");
            p.int(1001);
        }
        1 => {
            p.str("little_endian");
            p.bool(true);
        }
        _ => {
            p.str("type_sizes");
            p.empty_dict();
            p.set_items(3, |p, j| {
                let (k, v) = [("short", 2), ("int", 4), ("long", 4)][j];
                p.str(k);
                p.int(v);
            });
        }
    });
    w.write_all(&info.finish())?;
    w.write_all(&state_dict_pickle(tensors, &keys, Pids::Legacy))?;
    // Keys are all the same length, so string order is index order.
    let mut list = Pickler::new();
    list.empty_list();
    list.append_items(keys.len(), |p, i| p.str(&keys[i]));
    w.write_all(&list.finish())?;
    for (i, t) in tensors.iter().enumerate() {
        w.write_all(&t.storage_numel().to_le_bytes())?;
        write_storage(&mut w, i as u64, t.storage_bytes())?;
    }
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// One file of a model folder.
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// Name inside the folder.
    pub name: String,
    /// Written as a legacy stream instead of a zip archive.
    pub legacy: bool,
    /// Its tensors (storage `i` of the file is tensor `i`).
    pub tensors: Vec<TensorSpec>,
}

/// A Hugging Face-like model folder: `config.json` plus one checkpoint, or shards and their
/// `pytorch_model.bin.index.json`.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// Folder name.
    pub name: String,
    /// The checkpoint files (several: shards named by an index).
    pub files: Vec<ModelFile>,
    /// Sub-folder the weights live in (`""`, or `unet` for a diffusers-like layout).
    pub sub: &'static str,
}

impl ModelDir {
    /// True when the files are shards of one model, with an index.
    pub fn sharded(&self) -> bool {
        self.files.len() > 1
    }
}

/// A tree of `n` model folders of mixed shapes totalling about `total` bytes: mostly single
/// `pytorch_model.bin` zip files of sizes spread over two orders of magnitude, every 8th sharded
/// in 2 to 4 shards with an index, every 10th in the legacy format, every 13th (from the 6th)
/// 4,000 tensors of 1 KB, and every 9th (from the 4th) a diffusers-like `unet/` sub-folder.
pub fn migrate_tree(n: usize, total: u64) -> Vec<ModelDir> {
    // Relative sizes 1, 2, 4, ..., 64, cycling (small models dominate in count, large in bytes).
    let weight = |k: usize| 1u64 << (k % 7);
    let small = |k: usize| k % 13 == 5;
    let small_bytes = 4_000 * 1024;
    let budget: u64 =
        total.saturating_sub((0..n).filter(|&k| small(k)).count() as u64 * small_bytes);
    let sum: u64 = (0..n)
        .filter(|&k| !small(k))
        .map(weight)
        .sum::<u64>()
        .max(1);
    (0..n)
        .map(|k| {
            let name = format!("m{k:02}");
            let sub = if k % 9 == 3 { "unet" } else { "" };
            let stem = if sub.is_empty() {
                "pytorch_model"
            } else {
                "diffusion_pytorch_model"
            };
            if small(k) {
                return ModelDir {
                    name,
                    sub,
                    files: vec![ModelFile {
                        name: format!("{stem}.bin"),
                        legacy: false,
                        tensors: many_small(4_000, 1024),
                    }],
                };
            }
            let tensors = model_like(budget * weight(k) / sum);
            let legacy = k % 10 == 7;
            if k % 8 == 2 {
                let shards = 2 + k % 3;
                let per = tensors.len().div_ceil(shards);
                let files = tensors
                    .chunks(per)
                    .enumerate()
                    .map(|(i, c)| ModelFile {
                        name: format!("{stem}-{:05}-of-{shards:05}.bin", i + 1),
                        legacy,
                        tensors: c.to_vec(),
                    })
                    .collect::<Vec<_>>();
                debug_assert_eq!(files.len(), shards);
                return ModelDir { name, sub, files };
            }
            ModelDir {
                name,
                sub,
                files: vec![ModelFile {
                    name: format!("{stem}.bin"),
                    legacy,
                    tensors,
                }],
            }
        })
        .collect()
}

/// Writes `model` under `root`: `config.json`, its checkpoint files and, when sharded, the
/// index (`metadata.total_size` and a `weight_map` naming every tensor's shard).
pub fn write_model_dir(root: &Path, model: &ModelDir) -> io::Result<()> {
    let top = root.join(&model.name);
    let dir = top.join(model.sub);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        top.join("config.json"),
        format!(
            "{{\"model_type\": \"synthetic\", \"name\": \"{}\"}}\n",
            model.name
        ),
    )?;
    for f in &model.files {
        let path = dir.join(&f.name);
        if f.legacy {
            write_legacy(&path, &f.tensors)?;
        } else {
            write_zip(&path, "archive", &f.tensors)?;
        }
    }
    if model.sharded() {
        let mut map = serde_json::Map::new();
        let mut total = 0;
        for f in &model.files {
            for t in &f.tensors {
                map.insert(t.name.clone(), f.name.clone().into());
                total += t.storage_bytes();
            }
        }
        let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": map});
        let stem = model.files[0]
            .name
            .split('-')
            .next()
            .unwrap_or("pytorch_model");
        std::fs::write(
            dir.join(format!("{stem}.bin.index.json")),
            serde_json::to_vec_pretty(&index).map_err(io::Error::other)?,
        )?;
    }
    Ok(())
}
