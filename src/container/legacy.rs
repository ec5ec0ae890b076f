//! The legacy stream of torch < 1.6 (and `_use_new_zipfile_serialization=False`): five pickles
//! (magic number, protocol 1001, sys_info, the object, the storage keys), then for each key in
//! list order `[u64 little-endian count][count * element size bytes]`.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{
    Archive, ByteOrder, Container, Record, RecordMethod, Records, StorageIndex, pickle_too_large,
};
use crate::error::{ErrorKind, io};
use crate::pickle::{Limits, NoHost, Value, load, ops::pickle_end};

/// `0x1950A86A20F9469CFC6C`, the first pickle of every legacy stream.
pub const LEGACY_MAGIC: i128 = 0x1950A86A20F9469CFC6C;

/// True when a value is the legacy magic number.
pub fn is_legacy_magic(v: &Value) -> bool {
    match v {
        Value::BigInt(b) if b.len() <= 16 => {
            let neg = b.last().is_some_and(|x| x & 0x80 != 0);
            let mut a = if neg { [0xffu8; 16] } else { [0u8; 16] };
            a[..b.len()].copy_from_slice(b);
            i128::from_le_bytes(a) == LEGACY_MAGIC
        }
        _ => false,
    }
}

/// True when `b` starts with a pickle of the legacy magic number, as every legacy stream does
/// (whatever protocol wrote it). Runs only that first pickle, under tight bounds.
pub fn starts_with_magic(b: &[u8]) -> bool {
    let head = &b[..b.len().min(4096)];
    load(head, 0, &mut NoHost, &head_limits()).is_ok_and(|first| is_legacy_magic(&first.value))
}

/// The tight bounds for running the first pickle of a file's head (sniffing its kind).
pub(super) fn head_limits() -> Limits {
    Limits {
        max_ops: 10_000,
        max_stack: 10_000,
        max_memo: 10_000,
        max_string: 4096,
        ..Limits::default()
    }
}

/// Why `b` is not a well-formed legacy torch stream (the magic number first, then four more
/// pickles), or `None` when it is one. The one wording for `convert` and `scan`.
pub fn stream_problem(b: &[u8], limits: &Limits) -> Option<String> {
    if !starts_with_magic(b) {
        let head: String = b.iter().take(8).map(|c| format!("{c:02x}")).collect();
        return Some(format!(
            "expected a legacy torch stream (a pickle of torch's magic number first), found {} bytes starting with 0x{head}",
            b.len()
        ));
    }
    let mut pos = 0usize;
    for k in 1..=5 {
        match pickle_end(b, pos, limits.max_string) {
            Ok(Some(e)) => pos = e,
            Ok(None) => {
                return Some(format!(
                    "expected a legacy torch stream of five pickles, but pickle #{k} at byte {pos} is truncated"
                ));
            }
            Err(e) => {
                return Some(format!(
                    "expected a legacy torch stream of five pickles, but pickle #{k} does not decode ({e})"
                ));
            }
        }
    }
    None
}

/// The head of the file, read as far as needed.
struct Head<'f> {
    file: &'f File,
    file_len: u64,
    buf: Vec<u8>,
    limits: &'f Limits,
}

impl Head<'_> {
    /// Returns the end of the pickle starting at `pos`, reading more of the file as needed.
    fn pickle_end(&mut self, pos: usize, what: &str) -> Result<usize, ErrorKind> {
        loop {
            let max = self.limits.max_pickle_bytes;
            match pickle_end(&self.buf, pos, self.limits.max_string) {
                Ok(Some(end)) => return Ok(end),
                Ok(None) => {
                    let have = self.buf.len() as u64;
                    if have >= self.file_len {
                        return Err(ErrorKind::Malformed(format!(
                            "the {what} pickle starting at byte {pos} does not end before the end of the file ({} bytes); the file is truncated",
                            self.file_len
                        )));
                    }
                    if have >= max {
                        return Err(pickle_too_large(
                            &format!("the {what} pickle (still open at byte {have})"),
                            have,
                            self.limits,
                        ));
                    }
                    let want = (have * 2).max(1 << 20).min(self.file_len).min(max);
                    let mut more = vec![0u8; (want - have) as usize];
                    self.file
                        .read_exact_at(&mut more, have)
                        .map_err(io("cannot read the legacy stream"))?;
                    self.buf.extend_from_slice(&more);
                }
                Err(e) => {
                    return Err(ErrorKind::Pickle {
                        member: format!("{what} pickle"),
                        source: e,
                    });
                }
            }
        }
    }

    fn plain(&mut self, pos: usize, what: &str) -> Result<(Value, usize), ErrorKind> {
        let end = self.pickle_end(pos, what)?;
        let loaded = load(&self.buf[..end], pos, &mut NoHost, self.limits).map_err(|e| {
            ErrorKind::Pickle {
                member: format!("{what} pickle"),
                source: e,
            }
        })?;
        Ok((loaded.value, end))
    }
}

/// Reads the head of a legacy stream.
pub fn open(path: &Path, file: File, file_len: u64, limits: &Limits) -> Result<Archive, ErrorKind> {
    let mut head = Head {
        file: &file,
        file_len,
        buf: Vec::new(),
        limits,
    };
    let (magic, p) = head.plain(0, "magic number")?;
    if !is_legacy_magic(&magic) {
        return Err(ErrorKind::NotACheckpoint(
            "the first pickle is not torch's legacy magic number".into(),
        ));
    }
    let (proto, p) = head.plain(p, "protocol version")?;
    if proto.as_int() != Some(1001) {
        return Err(ErrorKind::Malformed(format!(
            "legacy protocol version: expected 1001, found {proto:?}"
        )));
    }
    let (sys_info, p) = head.plain(p, "sys_info")?;
    let mut info = vec![("protocol_version".to_string(), "1001".to_string())];
    if let Value::Dict(d) = &sys_info {
        for (k, v) in d.borrow().entries() {
            if let Some(k) = k.as_str() {
                info.push((k.to_string(), format!("{v:?}")));
            }
        }
    }
    let main_start = p;
    let main_end = head.pickle_end(main_start, "main")?;
    let (keys, data_start) = head.plain(main_end, "storage keys")?;
    let keys = keys
        .as_seq()
        .ok_or_else(|| {
            ErrorKind::Malformed(format!(
                "the storage key list is a {}, expected a list",
                keys.type_name()
            ))
        })?
        .iter()
        .map(|k| match k {
            Value::Str(s) => Ok(s.to_string()),
            Value::Int(i) => Ok(i.to_string()),
            other => Err(ErrorKind::Malformed(format!(
                "a storage key is a {}, expected a string",
                other.type_name()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pickle = head.buf[main_start..main_end].to_vec();
    drop(head);
    Ok(Archive {
        path: path.to_path_buf(),
        file,
        file_len,
        container: Container::Legacy,
        pickle,
        pickle_name: "main pickle".into(),
        constants: None,
        // The legacy writer always stores little-endian data.
        byte_order: ByteOrder::Little,
        storages: StorageIndex::Legacy {
            keys,
            data_start: data_start as u64,
        },
        info,
        zip_audit: None,
    })
}

/// Walks the storage section in key-list order, checking each count against the pickle.
pub fn walk_storages(
    file: &File,
    file_len: u64,
    keys: &[String],
    data_start: u64,
    declared: &HashMap<String, (u64, u64)>,
) -> Result<Records, ErrorKind> {
    let mut out = Records::with_capacity(keys.len());
    let mut pos = data_start;
    for key in keys {
        let &(unit, numel) = declared.get(key).ok_or_else(|| {
            ErrorKind::Malformed(format!("storage {key:?} is listed in the stream but no tensor in the pickle declares it, so its element size is unknown"))
        })?;
        let mut hdr = [0u8; 8];
        if pos.checked_add(8).is_none_or(|e| e > file_len) {
            return Err(ErrorKind::Malformed(format!(
                "storage {key:?}: expected an 8-byte element count at byte {pos}, but the file ends at {file_len} (truncated)"
            )));
        }
        file.read_exact_at(&mut hdr, pos)
            .map_err(io(format!("cannot read storage {key:?}")))?;
        let count = u64::from_le_bytes(hdr);
        if count != numel {
            return Err(ErrorKind::Malformed(format!(
                "storage {key:?}: the stream declares {count} elements but the pickle declares {numel}"
            )));
        }
        let len = count
            .checked_mul(unit)
            .ok_or_else(|| ErrorKind::Malformed(format!("storage {key:?}: size overflows")))?;
        let start = pos + 8;
        let end = start.checked_add(len).filter(|e| *e <= file_len).ok_or_else(|| {
            ErrorKind::Malformed(format!(
                "storage {key:?}: expected {len} bytes at byte {start}, but the file ends at {file_len} ({} bytes missing; truncated)",
                (start as u128 + len as u128).saturating_sub(file_len as u128)
            ))
        })?;
        out.insert(
            key.clone(),
            Record {
                name: format!("storage {key}").into(),
                offset: start,
                stored_len: len,
                len,
                method: RecordMethod::Stored,
            },
        );
        pos = end;
    }
    Ok(out)
}
