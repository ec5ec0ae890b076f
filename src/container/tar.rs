//! The tar container of torch <= 0.1.9 (`tarfile` PAX format, "generation 2" layout, the one
//! today's `torch.load` still reads). Members:
//!
//! * `storages`: `pickle(count)`, then per storage `pickle((key, location, storage_type))` and
//!   `[u64 little-endian count][count * element size bytes]`, then
//!   `pickle([(view_key, root_key, offset, numel), …])`;
//! * `tensors`: `pickle(count)`, then per tensor `pickle((key, storage_key, tensor_type))`,
//!   `i32 ndim`, 4 pad bytes, `ndim × i64` sizes, `ndim × i64` strides, `i64` storage offset;
//! * `pickle`: the object, whose persistent ids are plain keys into those two tables;
//! * `sys_info`: informational.
//!
//! Tar headers are parsed here (ustar, PAX `x`/`g` records, GNU `L` long names); storage data is
//! located as absolute file ranges and never copied.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{
    Archive, ByteOrder, Container, Record, RecordMethod, Records, StorageIndex, pickle_too_large,
};
use crate::dtype::DType;
use crate::error::{ErrorKind, io};
use crate::pickle::{Limits, NoHost, Value, load, ops::pickle_end};

const BLOCK: u64 = 512;

/// A storage of the `storages` member (a root storage, or a view of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarStorage {
    /// Key of the root storage (the record holding the bytes).
    pub root: String,
    /// Element type.
    pub dtype: DType,
    /// Elements of the root storage.
    pub numel: u64,
    /// Device the storage was saved from (informational).
    pub location: String,
    /// `(offset, numel)` in elements of the root, when this key names a view.
    pub view: Option<(u64, u64)>,
}

/// A tensor of the `tensors` member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarTensor {
    /// Key of the storage (root or view) it views.
    pub storage: String,
    /// The tensor class it was saved as (`torch.FloatTensor`), informational.
    pub tensor_type: String,
    /// Offset in elements.
    pub offset: u64,
    /// Sizes.
    pub shape: Vec<u64>,
    /// Strides in elements.
    pub stride: Vec<u64>,
}

/// The tables the `pickle` member's persistent ids refer to, keyed by canonical key
/// ([`canonical_key`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarTables {
    /// Storages and storage views.
    pub storages: HashMap<String, TarStorage>,
    /// Tensors.
    pub tensors: HashMap<String, TarTensor>,
    /// The small pickles of the table members, `(member, absolute offset, bytes)`, for scans.
    pub pickles: Vec<(String, u64, Vec<u8>)>,
}

/// The key a table entry or persistent id stands for: torch looks ids up as `int(saved_id)`, so
/// `'140230'` and `140230` are the same key.
pub fn canonical_key(v: &Value) -> Option<String> {
    match v {
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(b) => Some((*b as i64).to_string()),
        Value::Str(s) => Some(match s.trim().parse::<i64>() {
            Ok(i) => i.to_string(),
            Err(_) => s.to_string(),
        }),
        Value::Bytes(b) => canonical_key(&Value::str(&String::from_utf8_lossy(b))),
        _ => None,
    }
}

/// True when the first block looks like a tar header (`ustar` magic at byte 257).
pub fn is_tar(head: &[u8]) -> bool {
    head.len() >= 263 && &head[257..262] == b"ustar"
}

/// One regular-file member: where its bytes are.
#[derive(Debug, Clone, Copy)]
struct Member {
    offset: u64,
    len: u64,
}

fn octal(field: &[u8], what: &str, at: u64) -> Result<u64, ErrorKind> {
    // GNU base-256 for large values: high bit of the first byte set.
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return Err(ErrorKind::Malformed(format!(
                "tar header at byte {at}: negative {what}"
            )));
        }
        let mut v: u64 = (field[0] & 0x3f) as u64;
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(b as u64))
                .ok_or_else(|| {
                    ErrorKind::Malformed(format!(
                        "tar header at byte {at}: {what} overflows 64 bits"
                    ))
                })?;
        }
        return Ok(v);
    }
    let text: Vec<u8> = field.iter().copied().take_while(|b| *b != 0).collect();
    let text = std::str::from_utf8(&text).unwrap_or("").trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| {
        ErrorKind::Malformed(format!(
            "tar header at byte {at}: {what} {text:?} is not an octal number"
        ))
    })
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// PAX extended header records: `"<len> <key>=<value>\n"`.
fn pax_records(data: &[u8], at: u64) -> Result<Vec<(String, Vec<u8>)>, ErrorKind> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let bad = |why: &str| ErrorKind::Malformed(format!("PAX header at byte {at}: {why}"));
    while pos < data.len() {
        if data[pos] == 0 {
            break;
        }
        let sp = data[pos..]
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("a record without a length"))?;
        let len: usize = std::str::from_utf8(&data[pos..pos + sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("a record length is not a number"))?;
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= data.len() && len > sp + 1)
            .ok_or_else(|| bad("a record runs past the header"))?;
        let rec = &data[pos + sp + 1..end];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("a record without '='"))?;
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        pos = end;
    }
    Ok(out)
}

/// Lists the regular-file members (the last of equal names wins, as in `tarfile`).
fn members(file: &File, file_len: u64) -> Result<HashMap<String, Member>, ErrorKind> {
    let mut out = HashMap::new();
    let mut pos = 0u64;
    let mut next_name: Option<String> = None;
    let mut next_size: Option<u64> = None;
    let mut zero_blocks = 0;
    loop {
        if pos.checked_add(BLOCK).is_none_or(|e| e > file_len) {
            if pos >= file_len && !out.is_empty() {
                // A tar without its end-of-archive blocks: `tarfile` accepts it.
                break;
            }
            return Err(ErrorKind::Malformed(format!(
                "tar: expected a 512-byte header at byte {pos}, but the file ends at {file_len} (truncated)"
            )));
        }
        let mut h = [0u8; BLOCK as usize];
        file.read_exact_at(&mut h, pos)
            .map_err(io("cannot read a tar header"))?;
        if h.iter().all(|b| *b == 0) {
            zero_blocks += 1;
            pos += BLOCK;
            if zero_blocks == 2 || pos >= file_len {
                break;
            }
            continue;
        }
        zero_blocks = 0;
        let stored = octal(&h[148..156], "checksum", pos)?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    b' ' as u64
                } else {
                    *b as u64
                }
            })
            .sum();
        if stored != sum {
            return Err(ErrorKind::Malformed(format!(
                "tar header at byte {pos}: checksum {stored} but the header sums to {sum} (corrupt)"
            )));
        }
        let header_size = octal(&h[124..136], "size", pos)?;
        let size = next_size.take().unwrap_or(header_size);
        let data = pos + BLOCK;
        let end = data
            .checked_add(size)
            .filter(|e| *e <= file_len)
            .ok_or_else(|| ErrorKind::Malformed(format!(
                "tar member at byte {pos} declares {size} bytes from byte {data}, but the file ends at {file_len} (truncated)"
            )))?;
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() && &h[257..263] == b"ustar\0" {
                name = format!("{prefix}/{name}");
            }
        }
        let read_small = |limit: u64, what: &str| -> Result<Vec<u8>, ErrorKind> {
            if size > limit {
                return Err(ErrorKind::Malformed(format!(
                    "tar {what} at byte {pos} is {size} bytes, more than the {limit} accepted"
                )));
            }
            let mut b = vec![0u8; size as usize];
            file.read_exact_at(&mut b, data)
                .map_err(io(format!("cannot read the tar {what}")))?;
            Ok(b)
        };
        match h[156] {
            b'x' => {
                for (k, v) in pax_records(&read_small(1 << 20, "PAX header")?, pos)? {
                    match k.as_str() {
                        "path" => next_name = Some(String::from_utf8_lossy(&v).into_owned()),
                        "size" => {
                            let s = std::str::from_utf8(&v)
                                .ok()
                                .and_then(|s| s.trim().parse::<u64>().ok());
                            next_size = Some(s.ok_or_else(|| {
                                ErrorKind::Malformed(format!(
                                    "PAX header at byte {pos}: size is not a number"
                                ))
                            })?);
                        }
                        _ => {}
                    }
                }
            }
            b'L' => {
                let b = read_small(1 << 20, "GNU long name")?;
                next_name = Some(cstr(&b));
            }
            b'0' | 0 | b'7' => {
                let name = next_name.take().unwrap_or(name);
                let name = name.trim_start_matches("./").to_string();
                out.insert(
                    name,
                    Member {
                        offset: data,
                        len: size,
                    },
                );
            }
            // Global PAX headers, directories, links, …: nothing torch reads.
            _ => {
                next_name = None;
            }
        }
        let padded = size
            .div_ceil(BLOCK)
            .checked_mul(BLOCK)
            .ok_or_else(|| ErrorKind::Malformed("tar member size overflows".into()))?;
        let _ = end;
        pos = data
            .checked_add(padded)
            .ok_or_else(|| ErrorKind::Malformed("tar member size overflows".into()))?;
    }
    Ok(out)
}

/// Reads member bytes `[pos, end)` sequentially, pickle by pickle.
struct Cursor<'f> {
    file: &'f File,
    member: &'static str,
    pos: u64,
    end: u64,
    /// Every pickle read so far, kept even when a later step fails (for scans).
    pickles: &'f mut Vec<(String, u64, Vec<u8>)>,
    /// The caller's VM limits.
    limits: &'f Limits,
}

impl<'f> Cursor<'f> {
    /// A cursor at the start of member `m`.
    fn over(
        file: &'f File,
        member: &'static str,
        m: &Member,
        pickles: &'f mut Vec<(String, u64, Vec<u8>)>,
        limits: &'f Limits,
    ) -> Self {
        Cursor {
            file,
            member,
            pos: m.offset,
            end: m.offset + m.len,
            pickles,
            limits,
        }
    }

    fn pickle(&mut self, what: &str) -> Result<Value, ErrorKind> {
        let avail = self.end - self.pos;
        let mut want = avail.min(1 << 16);
        loop {
            let mut buf = vec![0u8; want as usize];
            self.file
                .read_exact_at(&mut buf, self.pos)
                .map_err(io(format!("cannot read tar member {}", self.member)))?;
            let err = |e| ErrorKind::Pickle {
                member: format!("tar member {} ({what}, at byte {})", self.member, self.pos),
                source: e,
            };
            let max = self.limits.max_pickle_bytes;
            match pickle_end(&buf, 0, self.limits.max_string).map_err(err)? {
                Some(e) => {
                    let value = load(&buf[..e], 0, &mut NoHost, self.limits)
                        .map_err(err)?
                        .value;
                    buf.truncate(e);
                    self.pickles.push((self.member.to_string(), self.pos, buf));
                    self.pos += e as u64;
                    return Ok(value);
                }
                None if want >= avail => {
                    return Err(ErrorKind::Malformed(format!(
                        "tar member {}: the {what} pickle at byte {} does not end before the member ends at byte {} (truncated)",
                        self.member, self.pos, self.end
                    )));
                }
                None if want >= max => {
                    return Err(pickle_too_large(
                        &format!("tar member {}: the {what} pickle", self.member),
                        want,
                        self.limits,
                    ));
                }
                None => want = (want * 4).min(avail).min(max),
            }
        }
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ErrorKind> {
        let mut b = [0u8; N];
        if self.pos.checked_add(N as u64).is_none_or(|e| e > self.end) {
            return Err(ErrorKind::Malformed(format!(
                "tar member {}: expected {N} bytes ({what}) at byte {}, but the member ends at byte {} (truncated)",
                self.member, self.pos, self.end
            )));
        }
        self.file
            .read_exact_at(&mut b, self.pos)
            .map_err(io(format!("cannot read tar member {}", self.member)))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn count(&mut self, what: &str) -> Result<u64, ErrorKind> {
        let v = self.pickle(what)?;
        match v {
            Value::Int(i) if i >= 0 => Ok(i as u64),
            other => Err(ErrorKind::Malformed(format!(
                "tar member {}: {what} is a {}, expected a non-negative int",
                self.member,
                other.type_name()
            ))),
        }
    }
}

fn key_of(v: Option<&Value>, member: &str, what: &str) -> Result<String, ErrorKind> {
    v.and_then(canonical_key).ok_or_else(|| {
        ErrorKind::Malformed(format!(
            "tar member {member}: {what} is a {}, expected an int or string key",
            v.map_or("nothing".into(), |v| v.type_name())
        ))
    })
}

fn non_negative(v: Option<&Value>, member: &str, what: &str) -> Result<u64, ErrorKind> {
    match v {
        Some(Value::Int(i)) if *i >= 0 => Ok(*i as u64),
        other => Err(ErrorKind::Malformed(format!(
            "tar member {member}: {what} is {}, expected a non-negative int",
            other.map_or("missing".into(), |v| match v {
                Value::Int(i) => format!("{i}"),
                v => format!("a {}", v.type_name()),
            })
        ))),
    }
}

/// The `storages` member: root storages with their byte ranges, then the views.
fn read_storages(
    file: &File,
    m: Member,
    tables: &mut TarTables,
    records: &mut Records,
    pickles: &mut Vec<(String, u64, Vec<u8>)>,
    limits: &Limits,
) -> Result<(), ErrorKind> {
    const MEMBER: &str = "storages";
    let mut c = Cursor::over(file, MEMBER, &m, pickles, limits);
    let n = c.count("storage count")?;
    for i in 0..n {
        let entry = c.pickle("storage header")?;
        let items = entry.as_seq().filter(|s| s.len() == 3).ok_or_else(|| {
            ErrorKind::Malformed(format!("tar member storages: storage #{i} header is a {}, expected (key, location, storage_type)", entry.type_name()))
        })?;
        let key = key_of(items.first(), MEMBER, &format!("storage #{i} key"))?;
        let location = items
            .get(1)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let dtype = match items.get(2) {
            Some(Value::Global(g)) if g.module == "torch" || g.module == "torch.cuda" => DType::from_storage_name(&g.name),
            _ => None,
        }
        .ok_or_else(|| {
            ErrorKind::Malformed(format!(
                "tar member storages: storage {key:?} has type {}, expected a torch storage class such as torch.FloatStorage",
                items.get(2).map_or("nothing".into(), |v| v.type_name())
            ))
        })?;
        let count =
            u64::from_le_bytes(c.bytes::<8>(&format!("the element count of storage {key:?}"))?);
        let unit = dtype.itemsize();
        let len = count
            .checked_mul(unit)
            .ok_or_else(|| ErrorKind::Malformed(format!("tar member storages: storage {key:?} declares {count} elements of {unit} bytes, which overflows")))?;
        let start = c.pos;
        let end = start.checked_add(len).filter(|e| *e <= c.end).ok_or_else(|| {
            ErrorKind::Malformed(format!(
                "tar member storages: storage {key:?} ({dtype}) declares {count} elements = {len} bytes from byte {start}, but the member ends at byte {} ({} bytes available; truncated)",
                c.end,
                c.end - start
            ))
        })?;
        records.insert(
            key.clone(),
            Record {
                name: format!("tar storage {key}").into(),
                offset: start,
                stored_len: len,
                len,
                method: RecordMethod::Stored,
            },
        );
        tables.storages.insert(
            key.clone(),
            TarStorage {
                root: key,
                dtype,
                numel: count,
                location,
                view: None,
            },
        );
        c.pos = end;
    }
    let views = c.pickle("storage views")?;
    let views = views.as_seq().ok_or_else(|| {
        ErrorKind::Malformed(format!(
            "tar member storages: the storage view list is a {}, expected a list",
            views.type_name()
        ))
    })?;
    for (i, v) in views.iter().enumerate() {
        let t = v.as_seq().filter(|s| s.len() == 4).ok_or_else(|| {
            ErrorKind::Malformed(format!("tar member storages: storage view #{i} is a {}, expected (key, root_key, offset, numel)", v.type_name()))
        })?;
        let key = key_of(t.first(), MEMBER, &format!("storage view #{i} key"))?;
        let root_key = key_of(t.get(1), MEMBER, &format!("storage view {key:?} root key"))?;
        let offset = non_negative(t.get(2), MEMBER, &format!("storage view {key:?} offset"))?;
        let numel = non_negative(t.get(3), MEMBER, &format!("storage view {key:?} size"))?;
        let root = tables.storages.get(&root_key).filter(|r| r.view.is_none()).cloned().ok_or_else(|| {
            ErrorKind::Malformed(format!("tar member storages: storage view {key:?} refers to root storage {root_key:?}, which the member does not hold"))
        })?;
        if offset.checked_add(numel).is_none_or(|e| e > root.numel) {
            return Err(ErrorKind::Malformed(format!(
                "tar member storages: storage view {key:?} covers elements [{offset}, {offset}+{numel}) but its root storage {root_key:?} holds {} elements",
                root.numel
            )));
        }
        tables.storages.insert(
            key,
            TarStorage {
                view: Some((offset, numel)),
                ..root
            },
        );
    }
    Ok(())
}

/// The `tensors` member.
fn read_tensors(
    file: &File,
    m: Member,
    tables: &mut TarTables,
    pickles: &mut Vec<(String, u64, Vec<u8>)>,
    limits: &Limits,
) -> Result<(), ErrorKind> {
    const MEMBER: &str = "tensors";
    let mut c = Cursor::over(file, MEMBER, &m, pickles, limits);
    let n = c.count("tensor count")?;
    for i in 0..n {
        let entry = c.pickle("tensor header")?;
        let items = entry.as_seq().filter(|s| s.len() == 3).ok_or_else(|| {
            ErrorKind::Malformed(format!("tar member tensors: tensor #{i} header is a {}, expected (key, storage_key, tensor_type)", entry.type_name()))
        })?;
        let key = key_of(items.first(), MEMBER, &format!("tensor #{i} key"))?;
        let storage = match items.get(1) {
            Some(Value::None) => {
                return Err(ErrorKind::Malformed(format!(
                    "tar member tensors: tensor {key:?} has no storage (None), which torch cannot load either"
                )));
            }
            v => key_of(v, MEMBER, &format!("tensor {key:?} storage key"))?,
        };
        let tensor_type = match items.get(2) {
            Some(Value::Global(g)) => format!("{}.{}", g.module, g.name),
            Some(other) => other.type_name(),
            None => String::new(),
        };
        let ndim = i32::from_le_bytes(c.bytes::<4>(&format!("ndim of tensor {key:?}"))?);
        let _pad = c.bytes::<4>(&format!("padding of tensor {key:?}"))?;
        if !(0..=64).contains(&ndim) {
            return Err(ErrorKind::Malformed(format!(
                "tar member tensors: tensor {key:?} declares {ndim} dimensions, expected 0 to 64"
            )));
        }
        let mut dims = |what: &str| -> Result<Vec<u64>, ErrorKind> {
            (0..ndim)
                .map(|d| {
                    let v = i64::from_le_bytes(c.bytes::<8>(&format!("{what} {d} of tensor {key:?}"))?);
                    u64::try_from(v).map_err(|_| ErrorKind::Malformed(format!("tar member tensors: tensor {key:?} has {what} {v} in dimension {d}, expected >= 0")))
                })
                .collect()
        };
        let shape = dims("size")?;
        let stride = dims("stride")?;
        let off = i64::from_le_bytes(c.bytes::<8>(&format!("storage offset of tensor {key:?}"))?);
        let offset = u64::try_from(off).map_err(|_| {
            ErrorKind::Malformed(format!(
                "tar member tensors: tensor {key:?} has storage offset {off}, expected >= 0"
            ))
        })?;
        if !tables.storages.contains_key(&storage) {
            return Err(ErrorKind::Malformed(format!(
                "tar member tensors: tensor {key:?} views storage {storage:?}, which the storages member does not hold"
            )));
        }
        tables.tensors.insert(
            key,
            TarTensor {
                storage,
                tensor_type,
                offset,
                shape,
                stride,
            },
        );
    }
    Ok(())
}

/// Opens a tar checkpoint: the tables parsed, storages located, the object pickle in memory.
pub fn open(path: &Path, file: File, file_len: u64, limits: &Limits) -> Result<Archive, ErrorKind> {
    let members = members(&file, file_len)?;
    let get = |name: &str| {
        members.get(name).copied().ok_or_else(|| {
            let mut have: Vec<&str> = members.keys().map(String::as_str).collect();
            have.sort_unstable();
            ErrorKind::Malformed(format!(
                "a tar archive without a `{name}` member, so not a torch <= 0.1.9 checkpoint (members: {})",
                have.join(", ")
            ))
        })
    };
    let (m_storages, m_tensors, m_pickle) = (get("storages")?, get("tensors")?, get("pickle")?);
    let mut tables = TarTables::default();
    let mut records = Records::default();
    let mut pickles = Vec::new();
    read_storages(
        &file,
        m_storages,
        &mut tables,
        &mut records,
        &mut pickles,
        limits,
    )?;
    read_tensors(&file, m_tensors, &mut tables, &mut pickles, limits)?;
    let mut info = Vec::new();
    if let Some(m) = members.get("sys_info") {
        let mut c = Cursor {
            file: &file,
            member: "sys_info",
            pos: m.offset,
            end: m.offset + m.len,
            pickles: &mut pickles,
            limits,
        };
        // Informational only (torch ignores it too).
        if let Ok(Value::Dict(d)) = c.pickle("sys_info") {
            for (k, v) in d.borrow().entries() {
                if let Some(k) = k.as_str() {
                    info.push((k.to_string(), format!("{v:?}")));
                }
            }
        }
    }
    tables.pickles = pickles;
    if m_pickle.len > limits.max_pickle_bytes {
        return Err(pickle_too_large("tar member pickle", m_pickle.len, limits));
    }
    let mut pickle = vec![0u8; m_pickle.len as usize];
    file.read_exact_at(&mut pickle, m_pickle.offset)
        .map_err(io("cannot read tar member pickle"))?;
    Ok(Archive {
        path: path.to_path_buf(),
        file,
        file_len,
        container: Container::Tar,
        pickle,
        pickle_name: "tar member pickle".into(),
        constants: None,
        // The writer stored little-endian data (`_write_file`).
        byte_order: ByteOrder::Little,
        storages: StorageIndex::Tar { records, tables },
        info,
        zip_audit: None,
    })
}

/// Best effort for scans of a tar that cannot be opened: the `pickle` and `sys_info` members
/// whole, and the table pickles of `storages` and `tensors` read before any failure, each as
/// `(member, absolute offset, bytes)`. Empty when the tar headers themselves are unreadable.
pub fn raw_pickles(file: &File, file_len: u64, limits: &Limits) -> Vec<(String, u64, Vec<u8>)> {
    let Ok(members) = members(file, file_len) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut tables = TarTables::default();
    if let Some(m) = members.get("storages") {
        let _ = read_storages(
            file,
            *m,
            &mut tables,
            &mut Records::default(),
            &mut out,
            limits,
        );
    }
    if let Some(m) = members.get("tensors") {
        let _ = read_tensors(file, *m, &mut tables, &mut out, limits);
    }
    for name in ["pickle", "sys_info"] {
        if let Some(m) = members
            .get(name)
            .filter(|m| m.len <= limits.max_pickle_bytes)
        {
            let mut b = vec![0u8; m.len as usize];
            if file.read_exact_at(&mut b, m.offset).is_ok() {
                out.push((name.to_string(), m.offset, b));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_as_torch_does() {
        assert_eq!(canonical_key(&Value::Int(140230)), Some("140230".into()));
        assert_eq!(canonical_key(&Value::str("140230")), Some("140230".into()));
        assert_eq!(canonical_key(&Value::str("abc")), Some("abc".into()));
        assert_eq!(canonical_key(&Value::None), None);
    }

    #[test]
    fn octal_fields() {
        assert_eq!(octal(b"00000001750\0", "size", 0).unwrap(), 1000);
        assert_eq!(octal(b"\0\0\0", "size", 0).unwrap(), 0);
        assert!(octal(b"0009\0", "size", 0).is_err());
        assert_eq!(
            octal(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "size", 0).unwrap(),
            256
        );
    }
}
