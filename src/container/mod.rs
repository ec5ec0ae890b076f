//! Bytes on disk to (pickle bytes, where each storage's bytes are). The format is detected from
//! the content, never from the extension.

mod legacy;
mod sniff;
pub mod tar;
pub mod torchscript;
mod zip;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use legacy::{LEGACY_MAGIC, starts_with_magic, stream_problem};
pub use sniff::sniff;
pub use torchscript::{ScriptClass, ScriptClasses};
pub use zip::{
    AuditEntry, INFO_RECORDS, Role, ZipAnomaly, ZipAudit, ZipLimits, audit as audit_zip,
    audit_with as audit_zip_with, crc_matches, is_any_pickle_name, is_main_pickle_name, role,
};

use crate::error::{ErrorKind, io};
use crate::pickle::Limits;

/// How the bytes of one record are kept in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordMethod {
    /// Stored as is.
    Stored,
    /// Deflate-compressed (a user re-zipped the checkpoint).
    Deflated,
    /// Another zip method (its number), which torch never writes.
    Other(u16),
}

/// Where one record's bytes are.
#[derive(Debug, Clone)]
pub struct Record {
    /// The record's name (zip entry name, or `storage <key>` for legacy streams), shared with
    /// the zip audit's entry.
    pub name: std::sync::Arc<str>,
    /// Absolute offset of the (possibly compressed) bytes.
    pub offset: u64,
    /// Bytes occupied in the file.
    pub stored_len: u64,
    /// Bytes of data once decompressed.
    pub len: u64,
    /// How the bytes are kept.
    pub method: RecordMethod,
}

/// Records by name (or storage key). torch numbers its storages `0`, `1`, …: such a key is an
/// index into a vector (no hash table and no key string per record: a million storages took a
/// 200 MB table); any other key (a name, a key far past the others) is looked up in a map
/// (foldhash, per-process seeds).
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// `dense[i]`: the record of key `i` (decimal, as torch writes it).
    dense: Vec<Option<Record>>,
    /// How many of `dense` are set.
    dense_set: usize,
    /// Every other key.
    other: foldhash::HashMap<String, Record>,
}

/// Keys up to this far past the dense records' end still go to the vector.
const DENSE_SLACK: usize = 4096;

impl Records {
    /// Room for `n` records numbered as torch numbers its storages.
    pub fn with_capacity(n: usize) -> Records {
        Records {
            dense: Vec::with_capacity(n),
            ..Records::default()
        }
    }

    /// The index of a key written as a plain decimal number (no sign, no leading zero): the
    /// one number whose decimal spelling is exactly `key`.
    pub(crate) fn dense_index(key: &str) -> Option<usize> {
        let b = key.as_bytes();
        if b.is_empty() || b.len() > 9 || (b.len() > 1 && b[0] == b'0') {
            return None;
        }
        if !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        key.parse().ok()
    }

    /// Sets the record of `key`, returning the one it replaces.
    pub fn insert(&mut self, key: String, rec: Record) -> Option<Record> {
        let reach = self
            .dense
            .len()
            .saturating_mul(2)
            .saturating_add(DENSE_SLACK);
        match Self::dense_index(&key).filter(|&i| i < reach) {
            Some(i) => {
                // A key goes to one place: one the map took while the vector was shorter
                // moves over.
                let moved = if self.other.is_empty() {
                    None
                } else {
                    self.other.remove(&key)
                };
                if i >= self.dense.len() {
                    self.dense.resize(i + 1, None);
                }
                let old = self.dense[i].replace(rec);
                if old.is_none() {
                    self.dense_set += 1;
                }
                old.or(moved)
            }
            None => self.other.insert(key, rec),
        }
    }

    /// The record of `key`.
    pub fn get(&self, key: &str) -> Option<&Record> {
        let dense = Self::dense_index(key).and_then(|i| self.dense.get(i)?.as_ref());
        dense.or_else(|| self.other.get(key))
    }

    /// True when `key` has a record.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.dense_set + self.other.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key (numbered ones first, in order; the others in no particular order).
    pub fn keys(&self) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
        let dense = self
            .dense
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_some())
            .map(|(i, _)| std::borrow::Cow::Owned(i.to_string()));
        dense.chain(
            self.other
                .keys()
                .map(|k| std::borrow::Cow::Borrowed(k.as_str())),
        )
    }
}

impl std::ops::Index<&str> for Records {
    type Output = Record;
    fn index(&self, key: &str) -> &Record {
        match self.get(key) {
            Some(r) => r,
            None => panic!("no record {key:?}"),
        }
    }
}

/// Byte order of the storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Little-endian, as safetensors.
    Little,
    /// Big-endian: every element must be swapped.
    Big,
}

/// The kinds of file this tool reads, by one name each (`zip`, `torchscript`, `legacy`,
/// `pickle`, `tar`, `safetensors`), as every report spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// torch >= 1.6 `torch.save` zip archive.
    Zip,
    /// A TorchScript archive (`torch.jit.save`).
    TorchScript,
    /// The legacy `torch.save` stream (torch < 1.6).
    Legacy,
    /// A plain pickle (`pickle.dump`) with storages embedded as legacy streams.
    Pickle,
    /// The tar container of torch <= 0.1.9.
    Tar,
    /// A safetensors file.
    Safetensors,
}

impl Kind {
    /// The lowercase name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Zip => "zip",
            Kind::TorchScript => "torchscript",
            Kind::Legacy => "legacy",
            Kind::Pickle => "pickle",
            Kind::Tar => "tar",
            Kind::Safetensors => "safetensors",
        }
    }

    /// Which writer and torch versions make this kind of file.
    pub fn era(self) -> &'static str {
        match self {
            Kind::Zip => "torch.save zip archive (torch >= 1.6)",
            Kind::TorchScript => "TorchScript archive (torch.jit.save)",
            Kind::Legacy => {
                "legacy torch.save stream (torch < 1.6, or _use_new_zipfile_serialization=False)"
            }
            Kind::Pickle => "plain pickle (pickle.dump) with storages embedded as legacy streams",
            Kind::Tar => "tar archive of torch <= 0.1.9",
            Kind::Safetensors => "safetensors",
        }
    }
}

/// Which container the checkpoint uses, with what locating its records needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    /// torch >= 1.6 zip archive, with its root folder.
    Zip {
        /// Root folder of the records, with its trailing `/`.
        prefix: String,
    },
    /// TorchScript archive (`torch.jit.save`).
    TorchScript {
        /// Root folder of the records, with its trailing `/`.
        prefix: String,
    },
    /// The legacy stream of torch < 1.6.
    Legacy,
    /// A plain pickle whose storages are embedded legacy streams.
    Pickle,
    /// The tar container of torch <= 0.1.9.
    Tar,
}

impl Container {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Container::Zip { .. } => Kind::Zip,
            Container::TorchScript { .. } => Kind::TorchScript,
            Container::Legacy => Kind::Legacy,
            Container::Pickle => Kind::Pickle,
            Container::Tar => Kind::Tar,
        }
    }

    /// The root folder of a zip archive's records (with its trailing `/`).
    pub fn zip_prefix(&self) -> Option<&str> {
        match self {
            Container::Zip { prefix } | Container::TorchScript { prefix } => Some(prefix),
            _ => None,
        }
    }
}

/// How storage keys map to records.
#[derive(Debug)]
pub enum StorageIndex {
    /// Zip: one record per key.
    Zip(Records),
    /// Legacy: the key list and where the first storage starts; records are found by walking
    /// the stream once the element size of each storage is known from the pickle.
    Legacy {
        /// Keys in data order.
        keys: Vec<String>,
        /// Offset of the first `[u64 count]` header.
        data_start: u64,
    },
    /// Tar (torch <= 0.1.9): root storages located by key, and the tables the pickle's
    /// persistent ids refer to.
    Tar {
        /// One record per root storage key.
        records: Records,
        /// Tensors and storages (views included) by key.
        tables: tar::TarTables,
    },
}

/// An opened checkpoint: the main pickle in memory, the storages located but not read.
#[derive(Debug)]
pub struct Archive {
    /// The file.
    pub path: PathBuf,
    /// Open handle, read with positional reads only.
    pub file: File,
    /// File size.
    pub file_len: u64,
    /// Which container.
    pub container: Container,
    /// The main pickle (`data.pkl` or the legacy stream's object pickle).
    pub pickle: Vec<u8>,
    /// The name of the main pickle, for messages.
    pub pickle_name: String,
    /// TorchScript `constants.pkl`, when present.
    pub constants: Option<Vec<u8>>,
    /// Storage byte order.
    pub byte_order: ByteOrder,
    /// Where storages are.
    pub storages: StorageIndex,
    /// Informational records (`version`, `.format_version`, legacy `sys_info`, …).
    pub info: Vec<(String, String)>,
    /// The zip structure audit, for zip archives (so `scan` need not read it again).
    pub zip_audit: Option<ZipAudit>,
}

/// Opens a checkpoint for reading with `O_NOATIME` where the system allows it (the file's
/// owner, or a privileged process; elsewhere a plain open): converting, scanning or
/// inspecting a checkpoint then changes nothing about it, not even its access time, and each
/// read skips the access-time check. A transposed matrix is read in hundreds of thousands of
/// short reads, and that check was about 4% of their CPU time. The flag is set on the open
/// file description, so every clone of the file shares it.
pub fn open_source(path: &Path) -> std::io::Result<File> {
    let file = File::open(path)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: plain fcntl calls on an open descriptor; they read no user memory. A refusal
        // (EPERM for a file of another user) leaves the flags as they were.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 && flags & libc::O_NOATIME == 0 {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NOATIME);
            }
        }
    }
    Ok(file)
}

/// The error for a pickle larger than the caller's `--max-pickle-bytes`.
pub fn pickle_too_large(what: &str, bytes: u64, limits: &Limits) -> ErrorKind {
    ErrorKind::LimitExceeded(format!(
        "{what} is {bytes} bytes, more than the limit of {} (--max-pickle-bytes)",
        limits.max_pickle_bytes
    ))
}

/// Reads a record that holds a pickle, within `--max-pickle-bytes`.
fn read_pickle_record(file: &File, rec: &Record, limits: &Limits) -> Result<Vec<u8>, ErrorKind> {
    if rec.len > limits.max_pickle_bytes {
        return Err(pickle_too_large(&rec.name, rec.len, limits));
    }
    read_record(file, rec, limits.max_pickle_bytes)
}

impl Archive {
    /// Opens `path`, detects its format and reads its pickle, with the default limits.
    pub fn open(path: &Path) -> Result<Archive, ErrorKind> {
        Self::open_with(path, &Limits::default())
    }

    /// [`Archive::open`] with the caller's limits (pickle sizes, and the machine's bounds for
    /// the container's own pickles).
    pub fn open_with(path: &Path, limits: &Limits) -> Result<Archive, ErrorKind> {
        Self::open_expecting(path, limits, None).map(|(a, _)| a)
    }

    /// [`Archive::open_with`] for a caller that already holds the bytes the main pickle most
    /// likely is (a [`Archive::pickle_guess`]): the record is compared with `expected` as it is
    /// read instead of being kept a second time. When it matches, the second value is true and
    /// the archive's [`Archive::pickle`] is left empty for the caller to fill with `expected`,
    /// which are then exactly its bytes; otherwise the pickle is read as usual.
    pub fn open_expecting(
        path: &Path,
        limits: &Limits,
        expected: Option<&[u8]>,
    ) -> Result<(Archive, bool), ErrorKind> {
        let meta = std::fs::metadata(path).map_err(io("cannot read the file's metadata"))?;
        if meta.is_dir() {
            return Err(ErrorKind::NotACheckpoint(sniff::describe_dir(path)));
        }
        let file = open_source(path).map_err(io("cannot open the file"))?;
        let file_len = file
            .metadata()
            .map_err(io("cannot read the file's size"))?
            .len();
        match sniff(&file, file_len)? {
            Kind::Zip | Kind::TorchScript => Self::open_zip(path, file, file_len, limits, expected),
            Kind::Legacy => legacy::open(path, file, file_len, limits).map(|a| (a, false)),
            Kind::Pickle => Self::open_pickle(path, file, file_len, limits).map(|a| (a, false)),
            Kind::Tar => tar::open(path, file, file_len, limits).map(|a| (a, false)),
            Kind::Safetensors => Err(ErrorKind::NotACheckpoint(
                "a safetensors file, already converted".into(),
            )),
        }
    }

    /// The pickle `path` most likely holds, when it is a torch zip whose first record is its
    /// pickle (see [`Archive::open_with`] for the real one). Cheap: a few small reads (the end
    /// record, the directory's first entry, the local header) and the pickle's bytes, not the
    /// whole directory. A caller may run these bytes while the archive is opened, and must keep
    /// the result only if they equal the opened archive's [`Archive::pickle`].
    pub fn pickle_guess(path: &Path, limits: &Limits) -> Option<Vec<u8>> {
        let file = open_source(path).ok()?;
        let len = file.metadata().ok()?.len();
        zip::first_pickle_guess(&file, len, limits.max_pickle_bytes)
    }

    /// A plain pickle: the whole file is the pickle and storages come from inside it.
    fn open_pickle(
        path: &Path,
        file: File,
        file_len: u64,
        limits: &Limits,
    ) -> Result<Archive, ErrorKind> {
        if file_len > limits.max_pickle_bytes {
            return Err(pickle_too_large("the pickle", file_len, limits));
        }
        let mut pickle = vec![0u8; file_len as usize];
        file.read_exact_at(&mut pickle, 0)
            .map_err(io("cannot read the pickle"))?;
        Ok(Archive {
            path: path.to_path_buf(),
            file,
            file_len,
            container: Container::Pickle,
            pickle,
            pickle_name: "pickle".into(),
            constants: None,
            byte_order: ByteOrder::Little,
            storages: StorageIndex::Zip(Records::default()),
            info: Vec::new(),
            zip_audit: None,
        })
    }

    /// Opens a legacy stream held in memory (`torch.storage._load_from_bytes`).
    pub fn from_legacy_bytes(bytes: &[u8], limits: &Limits) -> Result<Archive, ErrorKind> {
        use std::io::Write;
        let mut tmp = tempfile::tempfile().map_err(io("cannot create a temporary file"))?;
        tmp.write_all(bytes)
            .map_err(io("cannot write a temporary file"))?;
        let file_len = bytes.len() as u64;
        if !legacy::starts_with_magic(bytes) {
            return Err(ErrorKind::Malformed(
                legacy::stream_problem(bytes, limits).unwrap_or_default(),
            ));
        }
        legacy::open(Path::new("<embedded storage>"), tmp, file_len, limits)
    }

    fn open_zip(
        path: &Path,
        file: File,
        file_len: u64,
        limits: &Limits,
        expected: Option<&[u8]>,
    ) -> Result<(Archive, bool), ErrorKind> {
        let layout = zip::read_layout(&file, file_len)?;
        let matched = match expected {
            Some(bytes) if layout.pickle.len <= limits.max_pickle_bytes => {
                record_equals(&file, &layout.pickle, bytes)?
            }
            _ => false,
        };
        let pickle = if matched {
            Vec::new()
        } else {
            read_pickle_record(&file, &layout.pickle, limits)?
        };
        let byte_order = match layout.members.get(&format!("{}byteorder", layout.prefix)) {
            Some(r) => zip::parse_byteorder(&read_record(&file, r, 64)?)?,
            None => ByteOrder::Little,
        };
        let mut info = Vec::new();
        for name in zip::INFO_RECORDS {
            if let Some(r) = layout.members.get(&format!("{}{name}", layout.prefix))
                && let Ok(b) = read_record(&file, r, 64)
            {
                info.push((
                    name.to_string(),
                    String::from_utf8_lossy(&b).trim().to_string(),
                ));
            }
        }
        let constants = match &layout.constants {
            Some(r) => Some(read_pickle_record(&file, r, limits)?),
            None => None,
        };
        let container = if layout.constants.is_some() || layout.has_code {
            Container::TorchScript {
                prefix: layout.prefix.clone(),
            }
        } else {
            Container::Zip {
                prefix: layout.prefix.clone(),
            }
        };
        let archive = Archive {
            path: path.to_path_buf(),
            file,
            file_len,
            container,
            pickle,
            pickle_name: format!("{}data.pkl", layout.prefix),
            constants,
            byte_order,
            storages: StorageIndex::Zip(layout.storages),
            info,
            zip_audit: Some(layout.audit),
        };
        Ok((archive, matched))
    }

    /// Locates every storage's bytes. `declared` gives, per key, the bytes per element and the
    /// element count the pickle declared (needed to walk legacy streams).
    pub fn locate_storages(
        &self,
        declared: &HashMap<String, (u64, u64)>,
    ) -> Result<std::borrow::Cow<'_, Records>, ErrorKind> {
        match &self.storages {
            StorageIndex::Zip(records) | StorageIndex::Tar { records, .. } => {
                Ok(std::borrow::Cow::Borrowed(records))
            }
            StorageIndex::Legacy { keys, data_start } => {
                legacy::walk_storages(&self.file, self.file_len, keys, *data_start, declared)
                    .map(std::borrow::Cow::Owned)
            }
        }
    }

    /// True when [`Archive::locate_storages`] needs the declared storage sizes (a legacy stream,
    /// whose storages are found by walking them in order).
    pub fn storages_need_sizes(&self) -> bool {
        matches!(self.storages, StorageIndex::Legacy { .. })
    }
}

impl Archive {
    /// The class declarations of a TorchScript archive's `code/` records (`*.py`), read as text
    /// within [`torchscript::MAX_CODE_RECORD_BYTES`] per record and
    /// [`torchscript::MAX_CODE_BYTES`] in all; nothing in them is run. An error when this is not
    /// a TorchScript archive or a record cannot be read or parsed.
    pub fn script_classes(&self) -> Result<ScriptClasses, ErrorKind> {
        let (Container::TorchScript { prefix }, Some(audit)) = (&self.container, &self.zip_audit)
        else {
            return Err(ErrorKind::Unsupported(
                "not a TorchScript archive: it has no code/ records".into(),
            ));
        };
        let code = format!("{prefix}code/");
        let mut classes = ScriptClasses::default();
        let mut total = 0u64;
        let mut records = 0usize;
        for e in &audit.entries {
            let Some(under) = e.name.strip_prefix(&code) else {
                continue;
            };
            if !under.ends_with(".py") {
                continue;
            }
            let module = torchscript::module_of(under).ok_or_else(|| {
                ErrorKind::Malformed(format!(
                    "TorchScript code record {} has a path that names no module",
                    e.name
                ))
            })?;
            let rec = e.record().ok_or_else(|| {
                ErrorKind::Malformed(format!("zip entry {}: no local header", e.name))
            })?;
            total = total.saturating_add(rec.len);
            if total > torchscript::MAX_CODE_BYTES {
                return Err(ErrorKind::Malformed(format!(
                    "the TorchScript code/ records hold more than {} bytes",
                    torchscript::MAX_CODE_BYTES
                )));
            }
            let bytes = read_record(&self.file, &rec, torchscript::MAX_CODE_RECORD_BYTES)?;
            let text = std::str::from_utf8(&bytes).map_err(|err| {
                ErrorKind::Malformed(format!(
                    "TorchScript code record {} is not UTF-8 text ({err})",
                    e.name
                ))
            })?;
            classes.add_source(&module, text).map_err(|m| {
                ErrorKind::Malformed(format!("TorchScript code record {}: {m}", e.name))
            })?;
            records += 1;
        }
        if records == 0 {
            return Err(ErrorKind::Malformed(format!(
                "the TorchScript archive has no {code}*.py records declaring its classes"
            )));
        }
        Ok(classes)
    }
}

/// The one way a zip member's bytes are read: its stored bytes, or inflated when deflated.
pub fn record_reader<'a>(file: &'a File, rec: &Record) -> Result<Box<dyn Read + 'a>, ErrorKind> {
    let raw = PositionalReader {
        file,
        pos: rec.offset,
        end: rec.offset.saturating_add(rec.stored_len),
    };
    match &rec.method {
        RecordMethod::Stored => Ok(Box::new(raw)),
        RecordMethod::Deflated => Ok(Box::new(flate2::read::DeflateDecoder::new(raw))),
        RecordMethod::Other(m) => Err(ErrorKind::Unsupported(format!(
            "record {} uses zip compression method {m}, which torch never writes",
            rec.name
        ))),
    }
}

/// Streams a record's bytes into `out` and checks that they are exactly the `len` it declares
/// (a deflated record that inflates to more or less is malformed). Returns the bytes copied.
pub fn copy_record(file: &File, rec: &Record, out: &mut dyn Write) -> Result<u64, ErrorKind> {
    let verb = match rec.method {
        RecordMethod::Deflated => "inflate",
        _ => "read",
    };
    let mut r = record_reader(file, rec)?.take(rec.len.saturating_add(1));
    let n = std::io::copy(&mut r, out).map_err(io(format!("cannot {verb} record {}", rec.name)))?;
    if n != rec.len {
        let holds = match rec.method {
            RecordMethod::Deflated => "inflates to",
            _ => "holds",
        };
        return Err(ErrorKind::Malformed(format!(
            "record {} {holds} {n} bytes but declares {}",
            rec.name, rec.len
        )));
    }
    Ok(n)
}

/// True when a record's bytes are exactly `expected`, read in pieces and compared as they come
/// (nothing is kept). A record that cannot be read as declared is an error, as for
/// [`read_record`].
fn record_equals(file: &File, rec: &Record, expected: &[u8]) -> Result<bool, ErrorKind> {
    struct Compare<'a> {
        rest: &'a [u8],
        same: bool,
    }
    impl Write for Compare<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.same {
                match self.rest.split_at_checked(buf.len()) {
                    Some((head, tail)) if head == buf => self.rest = tail,
                    _ => self.same = false,
                }
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    if rec.len != expected.len() as u64 {
        return Ok(false);
    }
    let mut cmp = Compare {
        rest: expected,
        same: true,
    };
    copy_record(file, rec, &mut cmp)?;
    Ok(cmp.same && cmp.rest.is_empty())
}

/// Reads a whole (small) record into memory, inflating it if needed; one of more than `limit`
/// declared bytes is refused before anything is read.
pub fn read_record(file: &File, rec: &Record, limit: u64) -> Result<Vec<u8>, ErrorKind> {
    if rec.len > limit {
        return Err(ErrorKind::Malformed(format!(
            "record {} holds {} bytes, more than the {limit} accepted",
            rec.name, rec.len
        )));
    }
    // A stored record's length is checked against the file when the archive is opened, so it
    // is reserved at once; an inflated one grows as it inflates (its declared size may lie).
    let reserve = match rec.method {
        RecordMethod::Stored => rec.len.min(rec.stored_len),
        _ => rec.len.min(1 << 20),
    };
    let mut out = Vec::with_capacity(reserve as usize);
    copy_record(file, rec, &mut out)?;
    Ok(out)
}

/// Reads at most `cap` bytes of a record, whatever length it declares (the scan looks at what a
/// loader would see, even in a member whose header lies).
pub fn read_record_capped(file: &File, rec: &Record, cap: u64) -> Result<Vec<u8>, ErrorKind> {
    let mut out = Vec::new();
    record_reader(file, rec)?
        .take(cap)
        .read_to_end(&mut out)
        .map_err(io(format!("cannot read record {}", rec.name)))?;
    Ok(out)
}

/// A deflated record's bytes in an unnamed temporary file in `dir` (the system's temporary
/// folder when `None`), so the copy pool can read them by offset like any other source.
pub fn record_to_temp(file: &File, rec: &Record, dir: Option<&Path>) -> Result<File, ErrorKind> {
    let mut tmp = match dir {
        Some(dir) => tempfile::tempfile_in(dir).map_err(io(format!(
            "cannot create a temporary file in {}",
            dir.display()
        )))?,
        None => tempfile::tempfile().map_err(io("cannot create a temporary file"))?,
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut tmp);
    copy_record(file, rec, &mut w)?;
    w.flush().map_err(io("cannot write a temporary file"))?;
    drop(w);
    Ok(tmp)
}

/// A `Read` over a byte range of a file, by positional reads (the file's cursor is untouched).
pub struct PositionalReader<'a> {
    /// The file.
    pub file: &'a File,
    /// Next offset to read.
    pub pos: u64,
    /// End of the range.
    pub end: u64,
}

impl Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file ended inside a record",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the keys (torch's numbers, names, numbers written another way, numbers far past
    /// the others that the vector reaches later), the records behave as a map from key to
    /// record: the same replacements, lookups, count and keys.
    #[test]
    fn records_are_a_map_whichever_way_each_key_is_kept() {
        let rec = |n: u64| Record {
            name: format!("r{n}").into(),
            offset: n,
            stored_len: n,
            len: n,
            method: RecordMethod::Stored,
        };
        let far = (2 * 3 + DENSE_SLACK + 10).to_string();
        let keys: Vec<String> = [
            "0", "1", "2", "00", "01", "+1", "-1", "1e3", "", " 3", "a/b",
        ]
        .iter()
        .map(|k| k.to_string())
        .chain([far.clone(), "4294967296".into(), "999999999".into()])
        .chain((3..6000).map(|i| i.to_string()))
        .chain([far.clone(), "1".into(), "00".into()])
        .collect();
        let mut r = Records::with_capacity(4);
        let mut want: std::collections::HashMap<String, Record> = Default::default();
        for (n, k) in keys.iter().enumerate() {
            let old = r.insert(k.clone(), rec(n as u64));
            let want_old = want.insert(k.clone(), rec(n as u64));
            assert_eq!(
                old.map(|o| o.offset),
                want_old.map(|o| o.offset),
                "key {k:?}"
            );
            assert_eq!(r.len(), want.len(), "after {k:?}");
        }
        for k in keys.iter().chain(&["7000".to_string(), "x".to_string()]) {
            assert_eq!(
                r.get(k).map(|o| o.offset),
                want.get(k).map(|o| o.offset),
                "key {k:?}"
            );
            assert_eq!(r.contains_key(k), want.contains_key(k));
        }
        let mut got: Vec<String> = r.keys().map(String::from).collect();
        let mut all: Vec<String> = want.keys().cloned().collect();
        got.sort();
        all.sort();
        assert_eq!(got, all);
        // The far key was first kept in the map, then moved to the vector: in one place only.
        assert!(!r.other.contains_key(&far));
        assert!(r.other.contains_key("00") && r.other.contains_key("4294967296"));
        assert!(!r.is_empty());
        assert!(Records::default().is_empty());
    }
}
