//! torch.save zip archives: find `data.pkl` under whatever root folder the archive uses and map
//! every `data/<key>` record to its absolute byte range in the file.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;

use zip::read::{ArchiveOffset, Config, ZipArchive};

use super::{ByteOrder, Record, RecordMethod};
use crate::error::ErrorKind;

/// What the zip layer found.
pub struct ZipLayout {
    /// The root folder including its trailing `/` (empty when records sit at the root).
    pub prefix: String,
    /// `data.pkl`.
    pub pickle: Record,
    /// `constants.pkl`, present in TorchScript archives.
    pub constants: Option<Record>,
    /// True when the archive holds TorchScript `code/`.
    pub has_code: bool,
    /// Storage records by key.
    pub storages: HashMap<String, Record>,
    /// Every record by full name (for small members such as `byteorder`).
    pub members: HashMap<String, Record>,
    /// The structural audit the layout was checked with.
    pub audit: ZipAudit,
}

/// Reads the central directory and classifies the records.
pub fn read_layout(file: &File, file_len: u64) -> Result<ZipLayout, ErrorKind> {
    let reader = BufReader::new(file);
    let config = Config {
        archive_offset: ArchiveOffset::Known(0),
    };
    let zip = ZipArchive::with_config(config, reader).map_err(|e| {
        ErrorKind::Malformed(format!(
            "{} (zip reader: {e})",
            super::sniff::describe_broken_zip(file, file_len)
        ))
    })?;
    if zip.has_duplicate_names() {
        return Err(ErrorKind::Malformed(
            "the zip archive has duplicate entry names; refusing an ambiguous archive".into(),
        ));
    }
    // Not a torch archive at all (.npz, .keras, a zipped SavedModel): say what it is.
    let names: Vec<String> = zip
        .file_names_raw()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    if !names
        .iter()
        .any(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
    {
        return Err(ErrorKind::NotACheckpoint(super::sniff::describe_zip(
            &names,
        )));
    }
    // Readers disagree on ambiguous archives (torch looks names up case-insensitively and ignores
    // local headers): refuse rather than pick one reading.
    // Entry-count limits are the caller's (`scan::preflight`); here only the structure.
    let audited = audit(
        file,
        file_len,
        &ZipLimits {
            max_entries: u64::MAX,
            max_directory_bytes: u64::MAX,
        },
    )?;
    if let Some(a) = audited.first_ambiguity() {
        let at = a
            .offset
            .map(|o| format!(" at byte {o}"))
            .unwrap_or_default();
        return Err(ErrorKind::Malformed(format!(
            "ambiguous zip archive ({}{at}): {}; refusing it",
            a.kind, a.detail
        )));
    }
    // The pickle is what decides everything: its bytes must be the ones its CRC vouches for
    // (torch ignores CRCs; Python's zipfile does not, so the two could read different files).
    for e in audited
        .entries
        .iter()
        .filter(|e| e.name.ends_with("data.pkl") && e.size <= 1 << 30)
    {
        if crc_matches(file, e) == Some(false) {
            return Err(ErrorKind::Malformed(format!(
                "zip entry {} does not match its CRC-32 {:08x}; refusing a tampered pickle",
                e.name, e.crc
            )));
        }
    }
    // The zip crate read the central directory; the audit also read every local header, so
    // the data offsets come from it (one read per entry, not several).
    if audited.entries.len() != zip.len() {
        return Err(ErrorKind::Malformed(format!(
            "the zip archive lists {} entries to one reader and {} to another; refusing it",
            zip.len(),
            audited.entries.len()
        )));
    }
    let mut members = HashMap::new();
    for e in &audited.entries {
        let name = e.name.clone();
        let rec = e
            .record()
            .ok_or_else(|| ErrorKind::Malformed(format!("zip entry {name}: no local header")))?;
        let start = rec.offset;
        let end = start.checked_add(rec.stored_len);
        if end.is_none_or(|e| e > file_len) {
            return Err(ErrorKind::Malformed(format!(
                "zip entry {name} needs bytes {start}..{} but the file has only {file_len} bytes (truncated?)",
                start as u128 + rec.stored_len as u128
            )));
        }
        if rec.method == RecordMethod::Stored && rec.stored_len != rec.len {
            return Err(ErrorKind::Malformed(format!(
                "zip entry {name} is stored uncompressed but declares {} bytes stored and {} bytes of data",
                rec.stored_len, rec.len
            )));
        }
        members.insert(name, rec);
    }
    let pickles: Vec<&String> = members
        .keys()
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .collect();
    let pickle_name = match pickles.as_slice() {
        [one] => (*one).clone(),
        [] => {
            let names: Vec<String> = members.keys().cloned().collect();
            return Err(ErrorKind::NotACheckpoint(super::sniff::describe_zip(
                &names,
            )));
        }
        many => {
            let mut many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
            many.sort();
            return Err(ErrorKind::Malformed(format!(
                "the zip archive holds several data.pkl records ({many:?}); refusing an ambiguous archive"
            )));
        }
    };
    let prefix = pickle_name[..pickle_name.len() - "data.pkl".len()].to_string();
    let mut storages = HashMap::new();
    let mut has_code = false;
    for (name, rec) in &members {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(key) = rest.strip_prefix("data/") {
            if !key.is_empty() {
                storages.insert(key.to_string(), rec.clone());
            }
        } else if rest.starts_with("code/") {
            has_code = true;
        }
    }
    let pickle = members[&pickle_name].clone();
    let constants = members.get(&format!("{prefix}constants.pkl")).cloned();
    Ok(ZipLayout {
        prefix,
        pickle,
        constants,
        has_code,
        storages,
        members,
        audit: audited,
    })
}

/// Parses the `byteorder` record's text.
pub fn parse_byteorder(text: &[u8]) -> Result<ByteOrder, ErrorKind> {
    match text.trim_ascii() {
        b"little" => Ok(ByteOrder::Little),
        b"big" => Ok(ByteOrder::Big),
        other => Err(ErrorKind::Malformed(format!(
            "the byteorder record says {:?}; expected \"little\" or \"big\"",
            String::from_utf8_lossy(&other[..other.len().min(40)])
        ))),
    }
}

/// One entry of the central directory, as the raw bytes declare it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    /// Entry name (lossy UTF-8).
    pub name: String,
    /// Compression method.
    pub method: u16,
    /// General-purpose flags.
    pub flags: u16,
    /// Declared CRC-32.
    pub crc: u32,
    /// Bytes in the file.
    pub compressed: u64,
    /// Bytes once inflated.
    pub size: u64,
    /// Offset of the local header.
    pub local_offset: u64,
    /// Offset of the entry's data (after the local header), when the local header is readable.
    pub data_offset: Option<u64>,
}

impl AuditEntry {
    /// Where the entry's bytes are, as a [`Record`]; `None` when its local header is unreadable.
    pub fn record(&self) -> Option<Record> {
        Some(Record {
            name: self.name.clone(),
            offset: self.data_offset?,
            stored_len: self.compressed,
            len: self.size,
            method: match self.method {
                0 => RecordMethod::Stored,
                8 => RecordMethod::Deflated,
                other => RecordMethod::Other(format!("method {other}")),
            },
        })
    }
}

/// An ambiguity or oddity in the archive's structure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ZipAnomaly {
    /// A stable identifier (`duplicate-name`, `case-variant-name`, `local-central-mismatch`, …).
    pub kind: &'static str,
    /// Where (byte offset in the file), when it has one place.
    pub offset: Option<u64>,
    /// What exactly.
    pub detail: String,
    /// True when readers may disagree on the archive's content: `convert` refuses it.
    pub ambiguous: bool,
}

/// The raw structure of a zip archive, read without trusting any one reader's leniency.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ZipAudit {
    /// Central directory entries, in order.
    pub entries: Vec<AuditEntry>,
    /// Everything odd, in the order found.
    pub anomalies: Vec<ZipAnomaly>,
}

impl ZipAudit {
    fn flag(&mut self, kind: &'static str, offset: Option<u64>, detail: String, ambiguous: bool) {
        self.anomalies.push(ZipAnomaly {
            kind,
            offset,
            detail,
            ambiguous,
        });
    }

    /// The first anomaly that makes the archive's meaning depend on the reader.
    pub fn first_ambiguity(&self) -> Option<&ZipAnomaly> {
        self.anomalies.iter().find(|a| a.ambiguous)
    }
}

/// Bounds on the central directory read by [`audit`].
#[derive(Debug, Clone, Copy)]
pub struct ZipLimits {
    /// Entries in the central directory.
    pub max_entries: u64,
    /// Bytes of the central directory.
    pub max_directory_bytes: u64,
}

impl From<&crate::pickle::Limits> for ZipLimits {
    fn from(l: &crate::pickle::Limits) -> Self {
        ZipLimits {
            max_entries: l.max_zip_entries,
            ..ZipLimits::default()
        }
    }
}

impl Default for ZipLimits {
    fn default() -> Self {
        ZipLimits {
            max_entries: 1_000_000,
            max_directory_bytes: 256 << 20,
        }
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, ErrorKind> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(crate::error::io(format!(
            "cannot read {len} bytes at offset {offset} of the zip archive"
        )))?;
    Ok(buf)
}

/// Reads the archive's structure byte by byte (EOCD, zip64 records, central directory, every
/// local header) and lists every ambiguity: duplicate or case-variant names, local/central
/// disagreement, overlapping entries, data before the first entry or after the directory,
/// several end records, encryption flags, entries outside one root folder. Errors only when the
/// structure cannot be read at all or exceeds `limits`.
pub fn audit(file: &File, file_len: u64, limits: &ZipLimits) -> Result<ZipAudit, ErrorKind> {
    audit_with(file, file_len, limits, true)
}

/// [`audit`], optionally without reading the local headers (the end records and the central
/// directory only: enough for entry counts and sizes).
pub fn audit_with(
    file: &File,
    file_len: u64,
    limits: &ZipLimits,
    local_headers: bool,
) -> Result<ZipAudit, ErrorKind> {
    let mut out = ZipAudit::default();
    let tail_len = file_len.min(22 + 65535 + 20 + 56) as usize;
    let tail_start = file_len - tail_len as u64;
    let tail = read_at(file, tail_start, tail_len)?;
    let eocds: Vec<usize> = (0..tail.len().saturating_sub(21))
        .filter(|&i| tail[i..].starts_with(b"PK\x05\x06"))
        .collect();
    // The real end record is the last one whose comment reaches the end of the file exactly.
    let Some(&eocd) = eocds
        .iter()
        .rev()
        .find(|&&i| i + 22 + le16(&tail, i + 20) as usize <= tail.len())
        .or(eocds.last())
    else {
        return Err(ErrorKind::Malformed(
            "the zip archive has no end-of-central-directory record (truncated?)".into(),
        ));
    };
    let eocd_abs = tail_start + eocd as u64;
    if eocds.len() > 1 {
        out.flag(
            "multiple-end-records",
            Some(eocd_abs),
            format!(
                "{} end-of-central-directory signatures near the end of the file",
                eocds.len()
            ),
            true,
        );
    }
    let comment_len = le16(&tail, eocd + 20) as u64;
    let eocd_end = eocd_abs + 22 + comment_len;
    if eocd_end != file_len {
        out.flag(
            "trailing-data",
            Some(eocd_end.min(file_len)),
            format!("the end record and its {comment_len}-byte comment end at byte {eocd_end} but the file has {file_len} bytes"),
            true,
        );
    }
    let mut count = le16(&tail, eocd + 10) as u64;
    let mut cd_size = le32(&tail, eocd + 12) as u64;
    let mut cd_offset = le32(&tail, eocd + 16) as u64;
    let mut cd_end_expected = eocd_abs;
    if eocd >= 20 && tail[eocd - 20..].starts_with(b"PK\x06\x07") {
        let z64 = le64(&tail, eocd - 20 + 8);
        let rec = if z64 >= tail_start && z64 + 56 <= eocd_abs {
            Some(tail[(z64 - tail_start) as usize..].to_vec())
        } else {
            read_at(file, z64, 56).ok()
        };
        match rec {
            Some(r) if r.starts_with(b"PK\x06\x06") => {
                count = le64(&r, 32);
                cd_size = le64(&r, 40);
                cd_offset = le64(&r, 48);
                cd_end_expected = z64;
                if z64 + 56 + (le64(&r, 4).saturating_sub(44)) != eocd_abs - 20 {
                    out.flag(
                        "zip64-layout",
                        Some(z64),
                        "the zip64 end record does not sit right before its locator".into(),
                        true,
                    );
                }
            }
            _ => out.flag(
                "zip64-layout",
                Some(eocd_abs - 20),
                format!("the zip64 locator points at byte {z64}, which holds no zip64 end record"),
                true,
            ),
        }
    }
    if count > limits.max_entries {
        return Err(ErrorKind::LimitExceeded(format!(
            "the zip archive declares {count} entries, more than the limit of {} (--max-zip-entries)",
            limits.max_entries
        )));
    }
    if cd_size > limits.max_directory_bytes {
        return Err(ErrorKind::Malformed(format!(
            "the zip central directory is {cd_size} bytes, more than the limit of {}",
            limits.max_directory_bytes
        )));
    }
    if cd_offset
        .checked_add(cd_size)
        .is_none_or(|e| e > cd_end_expected)
    {
        return Err(ErrorKind::Malformed(format!(
            "the zip central directory ({cd_size} bytes at {cd_offset}) does not fit before its end record at {cd_end_expected}"
        )));
    }
    if cd_offset + cd_size != cd_end_expected {
        out.flag(
            "directory-gap",
            Some(cd_offset + cd_size),
            format!(
                "{} bytes between the central directory and its end record",
                cd_end_expected - cd_offset - cd_size
            ),
            true,
        );
    }
    let cd = read_at(file, cd_offset, cd_size as usize)?;
    let mut p = 0usize;
    for i in 0..count {
        if !cd[p.min(cd.len())..].starts_with(b"PK\x01\x02") || p + 46 > cd.len() {
            return Err(ErrorKind::Malformed(format!(
                "zip central directory entry {i} at byte {} is not a valid header",
                cd_offset + p as u64
            )));
        }
        let flags = le16(&cd, p + 8);
        let method = le16(&cd, p + 10);
        let crc = le32(&cd, p + 16);
        let mut compressed = le32(&cd, p + 20) as u64;
        let mut size = le32(&cd, p + 24) as u64;
        let (nlen, xlen, clen) = (
            le16(&cd, p + 28) as usize,
            le16(&cd, p + 30) as usize,
            le16(&cd, p + 32) as usize,
        );
        let mut local_offset = le32(&cd, p + 42) as u64;
        let next = p + 46 + nlen + xlen + clen;
        if next > cd.len() {
            return Err(ErrorKind::Malformed(format!(
                "zip central directory entry {i} runs past the directory"
            )));
        }
        let name_raw = &cd[p + 46..p + 46 + nlen];
        let name = String::from_utf8_lossy(name_raw).into_owned();
        // zip64 extra field: the 0xFFFFFFFF fields in order.
        let mut x = p + 46 + nlen;
        let xend = x + xlen;
        while x + 4 <= xend {
            let (id, len) = (le16(&cd, x), le16(&cd, x + 2) as usize);
            if id == 1 {
                let mut q = x + 4;
                for field in [&mut size, &mut compressed, &mut local_offset] {
                    if *field == 0xFFFF_FFFF && q + 8 <= x + 4 + len {
                        *field = le64(&cd, q);
                        q += 8;
                    }
                }
            }
            x += 4 + len;
        }
        if flags & 0x61 != 0 {
            out.flag(
                "encrypted-entry",
                Some(cd_offset + p as u64),
                format!("entry {name:?} has flags 0x{flags:04x} (encryption or patched data)"),
                true,
            );
        }
        let mut data_offset = None;
        if local_headers {
            // The local header and (usually) its name in one read.
            let want = (30 + nlen) as u64;
            let have = file_len.saturating_sub(local_offset).min(want) as usize;
            match read_at(file, local_offset, have) {
                Ok(lh) if lh.len() >= 30 && lh.starts_with(b"PK\x03\x04") => {
                    let (lnlen, lxlen) = (le16(&lh, 26) as usize, le16(&lh, 28) as usize);
                    let lname = match lh.get(30..30 + lnlen) {
                        Some(n) => n.to_vec(),
                        None => read_at(file, local_offset + 30, lnlen).unwrap_or_default(),
                    };
                    let (lflags, lmethod, lcrc, lcsize, lsize) = (
                        le16(&lh, 6),
                        le16(&lh, 8),
                        le32(&lh, 14),
                        le32(&lh, 18),
                        le32(&lh, 22),
                    );
                    let mut why = Vec::new();
                    if lname != name_raw {
                        why.push(format!("local name {:?}", String::from_utf8_lossy(&lname)));
                    }
                    if lmethod != method {
                        why.push(format!("local method {lmethod} vs central {method}"));
                    }
                    if (lflags ^ flags) & 0x61 != 0 || lflags & 0x61 != 0 {
                        why.push(format!(
                            "local flags 0x{lflags:04x} vs central 0x{flags:04x}"
                        ));
                    }
                    if lflags & 0x08 == 0 {
                        if lcrc != 0 && lcrc != crc {
                            why.push(format!("local CRC {lcrc:08x} vs central {crc:08x}"));
                        }
                        if lcsize != 0 && lcsize != 0xFFFF_FFFF && lcsize as u64 != compressed {
                            why.push(format!(
                                "local compressed size {lcsize} vs central {compressed}"
                            ));
                        }
                        if lsize != 0 && lsize != 0xFFFF_FFFF && lsize as u64 != size {
                            why.push(format!("local size {lsize} vs central {size}"));
                        }
                    }
                    if !why.is_empty() {
                        out.flag(
                            "local-central-mismatch",
                            Some(local_offset),
                            format!("entry {name:?}: {}", why.join(", ")),
                            true,
                        );
                    }
                    data_offset = Some(local_offset + 30 + lnlen as u64 + lxlen as u64);
                }
                _ => out.flag(
                    "missing-local-header",
                    Some(local_offset),
                    format!(
                        "entry {name:?} points at byte {local_offset}, which holds no local header"
                    ),
                    true,
                ),
            }
        }
        out.entries.push(AuditEntry {
            name,
            method,
            flags,
            crc,
            compressed,
            size,
            local_offset,
            data_offset,
        });
        p = next;
    }
    if p != cd.len() {
        out.flag(
            "directory-gap",
            Some(cd_offset + p as u64),
            format!(
                "{} unexplained bytes inside the central directory",
                cd.len() - p
            ),
            true,
        );
    }
    // Names: exact duplicates, case variants, one root folder.
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut dup = Vec::new();
    for e in &out.entries {
        if let Some(prev) = seen.insert(e.name.to_lowercase(), &e.name) {
            let kind = if prev == e.name {
                "duplicate-name"
            } else {
                "case-variant-name"
            };
            dup.push((kind, e.local_offset, format!("{prev:?} and {:?}", e.name)));
        }
    }
    for (kind, off, d) in dup {
        out.flag(kind, Some(off), d, true);
    }
    let roots: std::collections::BTreeSet<&str> = out
        .entries
        .iter()
        .map(|e| e.name.split_once('/').map_or("", |(r, _)| r))
        .collect();
    // An archive whose records sit at the top level (`data.pkl`, `data/0`, …) has no root
    // folder at all; otherwise every entry must share one.
    let top_level = out.entries.iter().any(|e| e.name == "data.pkl");
    if !top_level && (roots.len() > 1 || roots.contains("")) {
        let list: Vec<&str> = roots.iter().take(5).copied().collect();
        out.flag(
            "several-roots",
            None,
            format!("entries are not all under one root folder (roots {list:?})"),
            true,
        );
    }
    let unsafe_names: Vec<(u64, String)> = out
        .entries
        .iter()
        .filter(|e| {
            e.name.split('/').any(|c| c == "..")
                || e.name.starts_with('/')
                || e.name.contains('\\')
                || e.name.chars().any(|c| c.is_control())
        })
        .map(|e| (e.local_offset, format!("entry name {:?}", e.name)))
        .collect();
    for (o, d) in unsafe_names {
        out.flag("unsafe-name", Some(o), d, true);
    }
    // Layout: entries must tile the file from byte 0 without overlapping.
    let mut spans: Vec<(u64, u64, &str)> = out
        .entries
        .iter()
        .map(|e| {
            let end = e
                .data_offset
                .unwrap_or(e.local_offset)
                .saturating_add(e.compressed);
            (
                e.local_offset,
                end.saturating_add(descriptor_len(file, e, end)),
                e.name.as_str(),
            )
        })
        .collect();
    spans.sort();
    let mut extra = Vec::new();
    match spans.first() {
        Some(&(first, _, _)) if first > 0 => extra.push((
            "prepended-data",
            0,
            format!("{first} bytes before the first entry"),
            true,
        )),
        _ => {}
    }
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            extra.push((
                "overlapping-entries",
                w[1].0,
                format!("entries {:?} and {:?} share bytes", w[0].2, w[1].2),
                true,
            ));
        } else if w[1].0 > w[0].1 {
            extra.push((
                "gap",
                w[0].1,
                format!(
                    "{} unreferenced bytes after entry {:?}",
                    w[1].0 - w[0].1,
                    w[0].2
                ),
                false,
            ));
        }
    }
    if let Some(&(_, end, name)) = spans.last() {
        if end > cd_offset {
            extra.push((
                "overlapping-entries",
                cd_offset,
                format!("entry {name:?} runs into the central directory"),
                true,
            ));
        } else if end < cd_offset {
            extra.push((
                "gap",
                end,
                format!(
                    "{} unreferenced bytes before the central directory",
                    cd_offset - end
                ),
                false,
            ));
        }
    }
    for (k, o, d, a) in extra {
        out.flag(k, Some(o), d, a);
    }
    Ok(out)
}

/// Bytes of the data descriptor after an entry's data (flag bit 3): optional signature, CRC,
/// then 4- or 8-byte sizes.
fn descriptor_len(file: &File, e: &AuditEntry, end: u64) -> u64 {
    if e.flags & 0x08 == 0 {
        return 0;
    }
    let sig = read_at(file, end, 4)
        .map(|b| b == b"PK\x07\x08")
        .unwrap_or(false);
    let sizes = if e.size >= 0xFFFF_FFFF || e.compressed >= 0xFFFF_FFFF {
        16
    } else {
        8
    };
    4 + sizes + if sig { 4 } else { 0 }
}

/// Checks an entry's CRC-32 by reading its stored bytes (stored entries only). `None` when the
/// entry is compressed or declares no CRC (torch's `compute_crc32=False`).
pub fn crc_matches(file: &File, e: &AuditEntry) -> Option<bool> {
    if e.method != 0 || e.crc == 0 {
        return None;
    }
    let mut r = super::record_reader(file, &e.record()?).ok()?;
    let mut crc = flate2::Crc::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => crc.update(&buf[..n]),
            Err(_) => return Some(false),
        }
    }
    Some(crc.sum() == e.crc)
}
