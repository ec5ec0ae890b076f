//! torch.save zip archives: find `data.pkl` under whatever root folder the archive uses and map
//! every `data/<key>` record to its absolute byte range in the file.

use std::fs::File;
use std::io::BufReader;

use zip::read::{ArchiveOffset, Config, ZipArchive};

use super::{ByteOrder, Record, RecordMethod, Records};
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
    pub storages: Records,
    /// Every other record by full name (for small members such as `byteorder`).
    pub members: Records,
    /// The structural audit the layout was checked with.
    pub audit: ZipAudit,
}

/// True for a `data.pkl` record at any depth: an archive holding one is laid out as torch's.
pub fn is_any_pickle_name(n: &[u8]) -> bool {
    n == b"data.pkl" || n.ends_with(b"/data.pkl")
}

/// True for the name of a torch archive's main pickle: `data.pkl` at the root or in the one
/// root folder.
pub fn is_main_pickle_name(n: &[u8]) -> bool {
    n == b"data.pkl" || (n.ends_with(b"/data.pkl") && n.iter().filter(|&&c| c == b'/').count() == 1)
}

/// The zip crate's reading of the archive, for one that the audit did not read plainly: its
/// error for a broken archive, then duplicate names and an archive without a `data.pkl`;
/// otherwise the number of entries it lists.
fn second_reading(file: &File, file_len: u64) -> Result<usize, ErrorKind> {
    // The central directory of a million records is tens of megabytes: read it in large pieces.
    let reader = BufReader::with_capacity(1 << 20, file);
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
    if !zip.file_names_raw().any(is_any_pickle_name) {
        let names: Vec<String> = zip
            .file_names_raw()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        return Err(ErrorKind::NotACheckpoint(super::sniff::describe_zip(
            &names,
        )));
    }
    Ok(zip.len())
}

/// Reads the central directory and classifies the records.
pub fn read_layout(file: &File, file_len: u64) -> Result<ZipLayout, ErrorKind> {
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
    );
    // An archive the audit reads plainly (every structure check passed, a `data.pkl` in it) is
    // taken from the audit alone. Any other is first read by the zip crate too, whose verdict
    // comes first: it names the damage of a broken archive (and is what says so for a
    // truncated download), then duplicates and a zip that is no checkpoint. Its table of a
    // few hundred bytes per entry is not built for the plain archives, which are nearly all.
    let plain = audited.as_ref().is_ok_and(|a| {
        a.first_ambiguity().is_none()
            && a.entries
                .iter()
                .any(|e| is_any_pickle_name(e.name.as_bytes()))
    });
    let second_count = if plain {
        None
    } else {
        Some(second_reading(file, file_len)?)
    };
    let audited = audited?;
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
    // When the zip crate read the central directory too, both must list the same entries; the
    // data offsets come from the audit, which read every local header.
    if let Some(zip_len) = second_count
        && audited.entries.len() != zip_len
    {
        return Err(ErrorKind::Malformed(format!(
            "the zip archive lists {zip_len} entries to one reader and {} to another; refusing it",
            audited.entries.len()
        )));
    }
    // Every entry is checked before any is classified; the records are then made straight
    // into their maps (no list of them all in between).
    for e in &audited.entries {
        let Some(start) = e.data_offset else {
            return Err(ErrorKind::Malformed(format!(
                "zip entry {}: no local header",
                e.name
            )));
        };
        let name = &e.name;
        let end = start.checked_add(e.compressed);
        if end.is_none_or(|e| e > file_len) {
            return Err(ErrorKind::Malformed(format!(
                "zip entry {name} needs bytes {start}..{} but the file has only {file_len} bytes (truncated?)",
                start as u128 + e.compressed as u128
            )));
        }
        if e.method == 0 && e.compressed != e.size {
            return Err(ErrorKind::Malformed(format!(
                "zip entry {name} is stored uncompressed but declares {} bytes stored and {} bytes of data",
                e.compressed, e.size
            )));
        }
    }
    // Names are unique here (duplicates were refused above).
    let pickles: Vec<&str> = audited
        .entries
        .iter()
        .map(|e| &*e.name)
        .filter(|n| is_main_pickle_name(n.as_bytes()))
        .collect();
    let pickle_name = match pickles.as_slice() {
        [one] => one.to_string(),
        [] => {
            let names: Vec<String> = audited.entries.iter().map(|e| e.name.to_string()).collect();
            return Err(ErrorKind::NotACheckpoint(super::sniff::describe_zip(
                &names,
            )));
        }
        many => {
            let mut many: Vec<&str> = many.to_vec();
            many.sort();
            return Err(ErrorKind::Malformed(format!(
                "the zip archive holds several data.pkl records ({many:?}); refusing an ambiguous archive"
            )));
        }
    };
    let prefix = pickle_name[..pickle_name.len() - "data.pkl".len()].to_string();
    // Storage records go to `storages`, the others to `members` (one copy of each).
    let mut storages = Records::with_capacity(audited.entries.len());
    let mut has_code = false;
    let mut members = Records::default();
    // Every entry has its local header (checked above).
    for rec in audited.entries.iter().filter_map(AuditEntry::record) {
        let rest = rec.name.strip_prefix(&prefix);
        match rest.map(role) {
            Some(Role::Storage(key)) => {
                storages.insert(key.to_string(), rec);
                continue;
            }
            Some(Role::TorchScript) if rest.is_some_and(|r| r.starts_with("code/")) => {
                has_code = true
            }
            _ => {}
        }
        members.insert(rec.name.to_string(), rec);
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

/// The small text records torch writes beside `data.pkl` that reports show (`version`, …).
pub const INFO_RECORDS: [&str; 5] = [
    "version",
    ".data/version",
    ".format_version",
    ".storage_alignment",
    "byteorder",
];

/// What a record of a torch zip archive is, by its name below the archive's root folder: the
/// one description of the layout, for the reader and the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    /// `data.pkl`, the main pickle.
    Pickle,
    /// `data/<key>`: the bytes of storage `key`.
    Storage(&'a str),
    /// `constants.pkl`: a TorchScript archive's constants (a pickle).
    Constants,
    /// TorchScript's other records: `code/…`, `model.json`, `bytecode.pkl`, `extra/…`.
    TorchScript,
    /// A small record torch writes ([`INFO_RECORDS`], `.data/serialization_id`).
    Info,
    /// Anything else: no torch writer makes it.
    Other,
}

/// The [`Role`] of the record `rest` (its name with the root folder removed).
pub fn role(rest: &str) -> Role<'_> {
    match rest {
        "data.pkl" => Role::Pickle,
        "constants.pkl" => Role::Constants,
        "model.json" | "bytecode.pkl" => Role::TorchScript,
        ".data/serialization_id" => Role::Info,
        r if INFO_RECORDS.contains(&r) => Role::Info,
        r if r.starts_with("code/") || r.starts_with("extra/") => Role::TorchScript,
        r => match r.strip_prefix("data/") {
            Some(key) if !key.is_empty() => Role::Storage(key),
            _ => Role::Other,
        },
    }
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
    /// Entry name (lossy UTF-8), shared with its [`Record`].
    pub name: std::sync::Arc<str>,
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
                other => RecordMethod::Other(other),
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
            // A central directory entry is at least 46 bytes: 256 MiB holds over 5 million.
            max_directory_bytes: (l.max_zip_entries.saturating_mul(128)).max(256 << 20),
        }
    }
}

impl Default for ZipLimits {
    fn default() -> Self {
        ZipLimits::from(&crate::pickle::Limits::default())
    }
}

/// The bytes of the pickle a torch zip most likely holds, read through the first entry of its
/// central directory alone: torch writes `<prefix>/data.pkl` first, stored. `None` when that
/// entry is not such a record, is larger than `max` bytes, or anything on the way does not read
/// plainly (a comment after the directory, a compressed pickle). This is a guess, made without
/// reading the whole directory so that the pickle can run while the directory is audited: only
/// the audited archive's own pickle bytes may confirm it.
pub fn first_pickle_guess(file: &File, file_len: u64, max: u64) -> Option<Vec<u8>> {
    let at = |offset: u64, len: usize| read_at(file, offset, len).ok();
    let tail = at(file_len.checked_sub(22)?, 22)?;
    if le32(&tail, 0) != 0x0605_4b50 {
        return None;
    }
    let mut directory = u64::from(le32(&tail, 16));
    if directory == u64::from(u32::MAX) {
        let locator = at(file_len.checked_sub(42)?, 20)?;
        if le32(&locator, 0) != 0x0706_4b50 {
            return None;
        }
        let end64 = at(le64(&locator, 8), 56)?;
        if le32(&end64, 0) != 0x0606_4b50 {
            return None;
        }
        directory = le64(&end64, 48);
    }
    let entry = at(directory, 46)?;
    if le32(&entry, 0) != 0x0201_4b50 || le16(&entry, 10) != 0 {
        return None;
    }
    let (name_len, extra_len) = (le16(&entry, 28) as usize, le16(&entry, 30) as usize);
    let rest = at(directory + 46, name_len + extra_len)?;
    let (name, extra) = rest.split_at(name_len);
    let (mut size, mut stored, mut local) = (
        u64::from(le32(&entry, 24)),
        u64::from(le32(&entry, 20)),
        u64::from(le32(&entry, 42)),
    );
    if read_extras(extra, [&mut size, &mut stored, &mut local])
        .overrun
        .is_some()
    {
        return None;
    }
    let is_pickle = is_main_pickle_name(name);
    let unread = [size, stored, local].contains(&u64::from(u32::MAX));
    if !is_pickle || size != stored || size > max || unread {
        return None;
    }
    let head = at(local, 30)?;
    if le32(&head, 0) != 0x0403_4b50 || le16(&head, 26) as usize != name_len {
        return None;
    }
    let start = local + 30 + u64::from(le16(&head, 26)) + u64::from(le16(&head, 28));
    if start.checked_add(size)? > file_len {
        return None;
    }
    at(start, usize::try_from(size).ok()?)
}

/// What an entry's extra fields say besides its zip64 sizes.
#[derive(Default)]
struct Extras<'a> {
    /// The id of a field whose declared length runs past the extra fields (the walk stops there).
    overrun: Option<u16>,
    /// The name an Info-ZIP Unicode path field (0x7075) gives the entry.
    unicode_name: Option<&'a [u8]>,
}

/// Walks an entry's extra fields (`extra`, exactly the bytes its header declares) and replaces
/// the central-directory fields that read 0xFFFFFFFF (uncompressed size, compressed size, local
/// header offset, in that order) by their values in the zip64 field. A value is read only from
/// within both the zip64 field's declared length and the extra fields: a field with no room
/// for it keeps 0xFFFFFFFF, and a field that claims more bytes than there are is reported
/// rather than read past.
fn read_extras<'a>(extra: &'a [u8], mut fields: [&mut u64; 3]) -> Extras<'a> {
    let mut out = Extras::default();
    let mut x = 0;
    // Fewer than 4 bytes left are padding, as readers treat them.
    while x + 4 <= extra.len() {
        let (id, len) = (le16(extra, x), le16(extra, x + 2) as usize);
        let Some(body) = extra.get(x + 4..x + 4 + len) else {
            out.overrun = Some(id);
            break;
        };
        match id {
            1 => {
                let mut q = 0;
                for field in fields.iter_mut() {
                    if **field == 0xFFFF_FFFF && q + 8 <= body.len() {
                        **field = le64(body, q);
                        q += 8;
                    }
                }
            }
            // Version (1 byte), the CRC-32 of the header's name (4), the UTF-8 name.
            0x7075 if body.len() >= 5 => out.unicode_name = Some(&body[5..]),
            _ => {}
        }
        x += 4 + len;
    }
    out
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

/// Reads small pieces of the file through one window: the local headers of an archive of many
/// small records sit a few hundred bytes apart, and one read of [`LocalReader::WINDOW`] bytes
/// serves dozens of them (100,000 records took 100,000 reads).
struct LocalReader<'f> {
    file: &'f File,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<'f> LocalReader<'f> {
    const WINDOW: u64 = 16 << 10;

    fn new(file: &'f File, file_len: u64) -> Self {
        LocalReader {
            file,
            file_len,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file), or `None` when they
    /// cannot be read.
    fn get(&mut self, offset: u64, len: usize) -> Option<&[u8]> {
        use std::os::unix::fs::FileExt;
        let len = self.file_len.saturating_sub(offset).min(len as u64);
        let end = offset.checked_add(len)?;
        let inside = offset >= self.start && end <= self.start + self.buf.len() as u64;
        if !inside {
            let n = self
                .file_len
                .saturating_sub(offset)
                .min(len.max(Self::WINDOW));
            self.buf.resize(usize::try_from(n).ok()?, 0);
            if self.file.read_exact_at(&mut self.buf, offset).is_err() {
                self.buf.clear();
                return None;
            }
            self.start = offset;
        }
        let from = usize::try_from(offset - self.start).ok()?;
        self.buf.get(from..from + usize::try_from(len).ok()?)
    }
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
/// directory only: enough for entry counts and sizes; the name and layout checks, which need
/// the local headers or serve only the full audit, are then skipped).
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
    // (this disk, the directory's disk, the entries on this disk, disks in all): a spanned
    // archive's parts are not all here.
    let mut disks = (
        le16(&tail, eocd + 4) as u64,
        le16(&tail, eocd + 6) as u64,
        le16(&tail, eocd + 8) as u64,
        1,
    );
    if eocd >= 20 && tail[eocd - 20..].starts_with(b"PK\x06\x07") {
        let z64 = le64(&tail, eocd - 20 + 8);
        // Offsets from the file are untrusted: near u64::MAX they must not wrap.
        let rec = if z64 >= tail_start && z64.checked_add(56).is_some_and(|e| e <= eocd_abs) {
            Some(tail[(z64 - tail_start) as usize..].to_vec())
        } else {
            read_at(file, z64, 56).ok()
        };
        match rec {
            Some(r) if r.starts_with(b"PK\x06\x06") => {
                let locator = eocd - 20;
                let wide = (
                    le32(&r, 16) as u64,
                    le32(&r, 20) as u64,
                    le64(&r, 24),
                    le64(&r, 32),
                    le64(&r, 40),
                    le64(&r, 48),
                );
                // The end record's own fields either say "see the zip64 record" (all ones) or
                // agree with it: a reader that ignores zip64 must not find another archive.
                let narrow = [
                    ("disk number", disks.0, 0xFFFF, wide.0),
                    ("directory disk", disks.1, 0xFFFF, wide.1),
                    ("entries on this disk", disks.2, 0xFFFF, wide.2),
                    ("entry count", count, 0xFFFF, wide.3),
                    ("directory size", cd_size, 0xFFFF_FFFF, wide.4),
                    ("directory offset", cd_offset, 0xFFFF_FFFF, wide.5),
                ];
                for (what, mine, all_ones, theirs) in narrow {
                    if mine != all_ones && mine != theirs {
                        out.flag(
                            "zip64-mismatch",
                            Some(eocd_abs),
                            format!(
                                "the end record gives the {what} as {mine}, the zip64 end record as {theirs}"
                            ),
                            true,
                        );
                    }
                }
                disks = (
                    wide.0 | le32(&tail, locator + 4) as u64,
                    wide.1,
                    wide.2,
                    le32(&tail, locator + 16) as u64,
                );
                count = wide.3;
                cd_size = wide.4;
                cd_offset = wide.5;
                cd_end_expected = z64;
                // The record's size counts the bytes after its first 12.
                let size = le64(&r, 4);
                let declared_end = z64.checked_add(12).and_then(|e| e.checked_add(size));
                if size < 44 || declared_end != Some(eocd_abs - 20) {
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
    if disks.0 != 0 || disks.1 != 0 || disks.2 != count || disks.3 > 1 {
        out.flag(
            "multi-disk",
            Some(eocd_abs),
            format!(
                "the end record describes a spanned archive (disk {}, directory on disk {}, {} of {count} entries on this disk, {} disks)",
                disks.0, disks.1, disks.2, disks.3
            ),
            true,
        );
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
    let mut local = LocalReader::new(file, file_len);
    // Sized at once (a million entries are ~90 MB: growing by doubling would copy that and
    // briefly hold twice as much); a count the directory's bytes cannot hold is not believed.
    out.entries
        .reserve_exact(count.min(cd.len() as u64 / 46) as usize);
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
        // Valid UTF-8 (nearly every name) is validated once and copied; the rest is decoded
        // lossily as before.
        let name = match std::str::from_utf8(name_raw) {
            Ok(n) => n.to_owned(),
            Err(_) => String::from_utf8_lossy(name_raw).into_owned(),
        };
        let extras = read_extras(
            &cd[p + 46 + nlen..p + 46 + nlen + xlen],
            [&mut size, &mut compressed, &mut local_offset],
        );
        if let Some(id) = extras.overrun {
            out.flag(
                "extra-field-overrun",
                Some(cd_offset + p as u64),
                format!(
                    "entry {name:?}: extra field 0x{id:04x} declares more bytes than the entry's {xlen} bytes of extra fields"
                ),
                true,
            );
        }
        if let Some(u) = extras.unicode_name.filter(|u| *u != name_raw) {
            out.flag(
                "unicode-path-name",
                Some(cd_offset + p as u64),
                format!(
                    "entry {name:?} carries a Unicode path field naming it {:?}: readers that honour the field see another name",
                    String::from_utf8_lossy(u)
                ),
                true,
            );
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
            match local.get(local_offset, 30 + nlen) {
                Some(lh) if lh.len() >= 30 && lh.starts_with(b"PK\x03\x04") => {
                    let (lnlen, lxlen) = (le16(lh, 26) as usize, le16(lh, 28) as usize);
                    let mut head = [0u8; 30];
                    head.copy_from_slice(&lh[..30]);
                    let lh = head;
                    // A name cut short by the end of the file is no name.
                    fn local_name<'l>(
                        local: &'l mut LocalReader<'_>,
                        at: u64,
                        len: usize,
                    ) -> Option<&'l [u8]> {
                        local.get(at, len).filter(|n| n.len() == len)
                    }
                    let same_name = local_name(&mut local, local_offset + 30, lnlen)
                        .unwrap_or_default()
                        == name_raw;
                    let (lflags, lmethod, lcrc, lcsize, lsize) = (
                        le16(&lh, 6),
                        le16(&lh, 8),
                        le32(&lh, 14),
                        le32(&lh, 18),
                        le32(&lh, 22),
                    );
                    let mut why = Vec::new();
                    if !same_name {
                        let lname =
                            local_name(&mut local, local_offset + 30, lnlen).unwrap_or_default();
                        why.push(format!("local name {:?}", String::from_utf8_lossy(lname)));
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
            name: name.into(),
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
    // The directory's bytes (~70 per entry) are not needed by the checks below, which make
    // tables of their own: freed first, the audit's peak is the larger of the two, not both.
    drop((cd, local));
    // Without the local headers the audit is for counts and sizes (the preflight's): the name
    // and layout checks are left to the full audit the container makes.
    if !local_headers {
        return Ok(out);
    }
    // Names: exact duplicates, case variants, one root folder.
    let mut dup = Vec::new();
    for (prev, e) in case_collisions(&out.entries) {
        let kind = if prev == &*e.name {
            "duplicate-name"
        } else {
            "case-variant-name"
        };
        dup.push((kind, e.local_offset, format!("{prev:?} and {:?}", e.name)));
    }
    for (kind, off, d) in dup {
        out.flag(kind, Some(off), d, true);
    }
    fn root(e: &AuditEntry) -> &str {
        e.name.split_once('/').map_or("", |(r, _)| r)
    }
    // An archive whose records sit at the top level (`data.pkl`, `data/0`, …) has no root
    // folder at all; otherwise every entry must share one.
    let top_level = out.entries.iter().any(|e| &*e.name == "data.pkl");
    let one_root = out
        .entries
        .first()
        .map(root)
        .is_none_or(|first| !first.is_empty() && out.entries.iter().all(|e| root(e) == first));
    if !top_level && !one_root {
        let roots: std::collections::BTreeSet<&str> = out.entries.iter().map(root).collect();
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
        .filter(|e| unsafe_name(&e.name))
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
                &*e.name,
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
/// A name that climbs out of the folder it is extracted to (a `..` component), is absolute,
/// has a backslash or a control character.
fn unsafe_name(name: &str) -> bool {
    let b = name.as_bytes();
    let control = if name.is_ascii() {
        b.iter().any(|&c| c < 0x20 || c == 0x7f)
    } else {
        name.chars().any(char::is_control)
    };
    control
        || b.first() == Some(&b'/')
        || b.contains(&b'\\')
        || (b.windows(2).any(|w| w == b"..") && name.split('/').any(|c| c == ".."))
}

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

/// Each entry whose name equals an earlier one's under `str::to_lowercase` (torch looks names
/// up case-insensitively), with the latest such earlier name. An ASCII name's lowercase is its
/// ASCII lowercase: it is hashed and compared in place, with no lowercase copy; other names
/// are folded with `to_lowercase`.
fn case_collisions(entries: &[AuditEntry]) -> Vec<(&str, &AuditEntry)> {
    // The folded bytes of entry `i`, in pieces of at most 64 (the same pieces for the same
    // bytes, however they are folded, so that equal names hash alike).
    fn pieces(name: &str, other: Option<&String>, mut f: impl FnMut(&[u8])) {
        let mut buf = [0u8; 64];
        let bytes = other.map_or(name.as_bytes(), |o| o.as_bytes());
        for chunk in bytes.chunks(64) {
            let piece = &mut buf[..chunk.len()];
            piece.copy_from_slice(chunk);
            if other.is_none() {
                piece.make_ascii_lowercase();
            }
            f(piece);
        }
    }
    let folded: foldhash::HashMap<usize, String> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.name.is_ascii())
        .map(|(i, e)| (i, e.name.to_lowercase()))
        .collect();
    let seeds = foldhash::fast::RandomState::default();
    let hash = |i: usize| {
        let mut h = std::hash::BuildHasher::build_hasher(&seeds);
        pieces(&entries[i].name, folded.get(&i), |p| {
            std::hash::Hasher::write(&mut h, p)
        });
        std::hash::Hasher::finish(&h)
    };
    let same = |a: usize, b: usize| match (folded.get(&a), folded.get(&b)) {
        (None, None) => entries[a].name.eq_ignore_ascii_case(&entries[b].name),
        (fa, fb) => {
            let mut x = Vec::new();
            let mut y = Vec::new();
            pieces(&entries[a].name, fa, |p| x.extend_from_slice(p));
            pieces(&entries[b].name, fb, |p| y.extend_from_slice(p));
            x == y
        }
    };
    let mut seen: hashbrown::HashTable<usize> = hashbrown::HashTable::with_capacity(entries.len());
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let h = hash(i);
        match seen.entry(h, |&j| same(i, j), |&j| hash(j)) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                out.push((&*entries[*o.get()].name, e));
                *o.get_mut() = i;
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
    }
    out
}

/// Checks an entry's CRC-32 by reading its stored bytes (stored entries only). `None` when the
/// entry is compressed or declares no CRC (torch's `compute_crc32=False`).
pub fn crc_matches(file: &File, e: &AuditEntry) -> Option<bool> {
    if e.method != 0 || e.crc == 0 {
        return None;
    }
    let mut r = super::record_reader(file, &e.record()?).ok()?;
    // crc32fast (the zip crate's) picks the CPU's carry-less multiply at run time: about 20
    // times fewer instructions than flate2's portable CRC on a 10 MB pickle.
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => crc.update(&buf[..n]),
            Err(_) => return Some(false),
        }
    }
    Some(crc.finalize() == e.crc)
}

#[cfg(test)]
mod tests {
    //! The zip audit and reader, on archives assembled byte by byte so that every field (and
    //! every disagreement between local header and central directory) is under the test's
    //! control.

    use super::*;
    use std::io::Write;

    /// One member of a hand-built archive.
    #[derive(Clone)]
    struct Member {
        name: String,
        data: Vec<u8>,
        method: u16,
        /// Flag bit 3: sizes and CRC in a data descriptor after the data (with or without its
        /// `PK\x07\x08` signature).
        descriptor: Option<bool>,
        /// Sizes as 0xFFFFFFFF with the real ones in a zip64 extra field.
        zip64: bool,
    }

    fn member(name: &str, data: &[u8]) -> Member {
        Member {
            name: name.into(),
            data: data.to_vec(),
            method: 0,
            descriptor: None,
            zip64: false,
        }
    }

    /// What was built, and where each structure sits.
    struct Built {
        bytes: Vec<u8>,
        local: Vec<usize>,
        central: Vec<usize>,
        cd_offset: usize,
        eocd: usize,
    }

    #[derive(Default)]
    struct Options {
        /// Bytes before the first local header (offsets stay absolute).
        prefix: Vec<u8>,
        /// Bytes between the first and the second entry.
        gap_after_first: Vec<u8>,
        /// The end record's comment.
        comment: Vec<u8>,
        /// Write a zip64 end record and locator before the end record.
        zip64_end: bool,
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = flate2::Crc::new();
        c.update(data);
        c.sum()
    }

    fn put16(b: &mut Vec<u8>, v: u16) {
        b.extend_from_slice(&v.to_le_bytes());
    }
    fn put32(b: &mut Vec<u8>, v: u32) {
        b.extend_from_slice(&v.to_le_bytes());
    }
    fn put64(b: &mut Vec<u8>, v: u64) {
        b.extend_from_slice(&v.to_le_bytes());
    }
    fn set16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn set32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn build_with(members: &[Member], opts: &Options) -> Built {
        let mut b = opts.prefix.clone();
        let mut local = Vec::new();
        for (i, m) in members.iter().enumerate() {
            local.push(b.len());
            let crc = crc32(&m.data);
            let flags = if m.descriptor.is_some() { 0x08 } else { 0 };
            b.extend_from_slice(b"PK\x03\x04");
            put16(&mut b, if m.zip64 { 45 } else { 20 });
            put16(&mut b, flags);
            put16(&mut b, m.method);
            put32(&mut b, 0); // time and date
            let n = m.data.len() as u32;
            let (lcrc, lsize) = match (m.descriptor.is_some(), m.zip64) {
                (true, _) => (0, 0),
                (false, true) => (crc, 0xFFFF_FFFF),
                (false, false) => (crc, n),
            };
            put32(&mut b, lcrc);
            put32(&mut b, lsize);
            put32(&mut b, lsize);
            put16(&mut b, m.name.len() as u16);
            put16(&mut b, if m.zip64 { 20 } else { 0 });
            b.extend_from_slice(m.name.as_bytes());
            if m.zip64 {
                put16(&mut b, 1);
                put16(&mut b, 16);
                put64(&mut b, m.data.len() as u64);
                put64(&mut b, m.data.len() as u64);
            }
            b.extend_from_slice(&m.data);
            if let Some(signature) = m.descriptor {
                if signature {
                    b.extend_from_slice(b"PK\x07\x08");
                }
                put32(&mut b, crc);
                put32(&mut b, n);
                put32(&mut b, n);
            }
            if i == 0 {
                b.extend_from_slice(&opts.gap_after_first);
            }
        }
        let cd_offset = b.len();
        let mut central = Vec::new();
        for (m, &at) in members.iter().zip(&local) {
            central.push(b.len());
            b.extend_from_slice(b"PK\x01\x02");
            put16(&mut b, 20);
            put16(&mut b, if m.zip64 { 45 } else { 20 });
            put16(&mut b, if m.descriptor.is_some() { 0x08 } else { 0 });
            put16(&mut b, m.method);
            put32(&mut b, 0);
            put32(&mut b, crc32(&m.data));
            let n = if m.zip64 {
                0xFFFF_FFFF
            } else {
                m.data.len() as u32
            };
            put32(&mut b, n);
            put32(&mut b, n);
            put16(&mut b, m.name.len() as u16);
            put16(&mut b, if m.zip64 { 20 } else { 0 });
            put16(&mut b, 0); // comment
            put16(&mut b, 0); // disk
            put16(&mut b, 0); // internal attributes
            put32(&mut b, 0); // external attributes
            put32(&mut b, at as u32);
            b.extend_from_slice(m.name.as_bytes());
            if m.zip64 {
                put16(&mut b, 1);
                put16(&mut b, 16);
                put64(&mut b, m.data.len() as u64);
                put64(&mut b, m.data.len() as u64);
            }
        }
        let cd_size = b.len() - cd_offset;
        if opts.zip64_end {
            let z64 = b.len();
            b.extend_from_slice(b"PK\x06\x06");
            put64(&mut b, 44);
            put16(&mut b, 45);
            put16(&mut b, 45);
            put32(&mut b, 0);
            put32(&mut b, 0);
            put64(&mut b, members.len() as u64);
            put64(&mut b, members.len() as u64);
            put64(&mut b, cd_size as u64);
            put64(&mut b, cd_offset as u64);
            b.extend_from_slice(b"PK\x06\x07");
            put32(&mut b, 0);
            put64(&mut b, z64 as u64);
            put32(&mut b, 1);
        }
        let eocd = b.len();
        b.extend_from_slice(b"PK\x05\x06");
        put16(&mut b, 0);
        put16(&mut b, 0);
        let count = if opts.zip64_end {
            0xFFFF
        } else {
            members.len() as u16
        };
        put16(&mut b, count);
        put16(&mut b, count);
        put32(
            &mut b,
            if opts.zip64_end {
                0xFFFF_FFFF
            } else {
                cd_size as u32
            },
        );
        put32(
            &mut b,
            if opts.zip64_end {
                0xFFFF_FFFF
            } else {
                cd_offset as u32
            },
        );
        put16(&mut b, opts.comment.len() as u16);
        b.extend_from_slice(&opts.comment);
        Built {
            bytes: b,
            local,
            central,
            cd_offset,
            eocd,
        }
    }

    fn build(members: &[Member]) -> Built {
        build_with(members, &Options::default())
    }

    /// A small torch-like archive: `archive/data.pkl`, `archive/byteorder`, `archive/data/0`.
    fn torch_members() -> Vec<Member> {
        vec![
            member("archive/data.pkl", b"\x80\x02}q\x00."),
            member("archive/byteorder", b"little"),
            member("archive/data/0", &[1, 2, 3, 4, 5, 6, 7, 8]),
        ]
    }

    fn file_of(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn audit_bytes(bytes: &[u8]) -> Result<ZipAudit, ErrorKind> {
        audit(&file_of(bytes), bytes.len() as u64, &ZipLimits::default())
    }

    fn layout_bytes(bytes: &[u8]) -> Result<ZipLayout, ErrorKind> {
        read_layout(&file_of(bytes), bytes.len() as u64)
    }

    fn kinds(a: &ZipAudit) -> Vec<&'static str> {
        a.anomalies.iter().map(|x| x.kind).collect()
    }

    fn anomaly<'a>(a: &'a ZipAudit, kind: &str) -> &'a ZipAnomaly {
        a.anomalies
            .iter()
            .find(|x| x.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} anomaly in {:?}", a.anomalies))
    }

    fn message(e: ErrorKind) -> String {
        e.to_string()
    }

    #[test]
    fn a_well_formed_archive_audits_clean_with_every_entry_as_declared() {
        let z = build(&torch_members());
        let a = audit_bytes(&z.bytes).unwrap();
        assert!(a.anomalies.is_empty(), "{:?}", a.anomalies);
        assert_eq!(a.first_ambiguity().map(|x| x.kind), None);
        let names: Vec<&str> = a.entries.iter().map(|e| &*e.name).collect();
        assert_eq!(
            names,
            ["archive/data.pkl", "archive/byteorder", "archive/data/0"]
        );
        let e = &a.entries[2];
        assert_eq!(e.method, 0);
        assert_eq!(e.flags, 0);
        assert_eq!(e.crc, crc32(&[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!((e.compressed, e.size), (8, 8));
        assert_eq!(e.local_offset, z.local[2] as u64);
        assert_eq!(
            e.data_offset,
            Some((z.local[2] + 30 + "archive/data/0".len()) as u64)
        );
    }

    #[test]
    fn the_layout_maps_the_root_folder_the_pickle_and_each_storage_to_its_bytes() {
        let z = build(&torch_members());
        let l = layout_bytes(&z.bytes).unwrap();
        assert_eq!(l.prefix, "archive/");
        assert_eq!(&*l.pickle.name, "archive/data.pkl");
        assert_eq!(l.pickle.offset, (z.local[0] + 30 + 16) as u64);
        assert_eq!((l.pickle.len, l.pickle.stored_len), (6, 6));
        assert_eq!(l.pickle.method, RecordMethod::Stored);
        assert!(l.constants.is_none());
        assert!(!l.has_code);
        let keys: Vec<String> = l.storages.keys().map(String::from).collect();
        assert_eq!(keys, ["0"]);
        let s = &l.storages["0"];
        assert_eq!(s.offset, (z.local[2] + 30 + 14) as u64);
        assert_eq!(
            &z.bytes[s.offset as usize..(s.offset + s.len) as usize],
            &[1, 2, 3, 4, 5, 6, 7, 8]
        );
        // The other records; the storage is in `storages` only.
        assert_eq!(l.members.len(), 2);
        assert!(!l.members.contains_key("archive/data/0"));
        assert_eq!(l.members["archive/byteorder"].len, 6);
        assert_eq!(l.audit.entries.len(), 3);
    }

    #[test]
    fn records_at_the_top_level_give_an_empty_prefix() {
        let z = build(&[member("data.pkl", b"\x80\x02N."), member("data/7", b"abcd")]);
        let l = layout_bytes(&z.bytes).unwrap();
        assert_eq!(l.prefix, "");
        assert_eq!(&*l.pickle.name, "data.pkl");
        assert_eq!(l.storages["7"].len, 4);
        assert!(l.audit.anomalies.is_empty(), "{:?}", l.audit.anomalies);
    }

    #[test]
    fn a_torchscript_archive_reports_its_code_folder_and_constants_pickle() {
        let z = build(&[
            member("m/data.pkl", b"\x80\x02N."),
            member("m/constants.pkl", b"\x80\x02)."),
            member("m/code/__torch__.py", b"def f(): pass"),
        ]);
        let l = layout_bytes(&z.bytes).unwrap();
        assert!(l.has_code);
        assert_eq!(
            l.constants.as_ref().map(|c| &*c.name),
            Some("m/constants.pkl")
        );
        assert!(l.storages.is_empty());
    }

    #[test]
    fn an_empty_data_folder_entry_is_not_a_storage() {
        let z = build(&[
            member("a/data.pkl", b"\x80\x02N."),
            member("a/data/", b""),
            member("a/data/1", b"xy"),
        ]);
        let l = layout_bytes(&z.bytes).unwrap();
        let mut keys: Vec<String> = l.storages.keys().map(String::from).collect();
        keys.sort();
        assert_eq!(keys, ["1"]);
    }

    #[test]
    fn rejects_a_zip_whose_local_header_names_another_file_than_the_central_directory() {
        let mut z = build(&torch_members());
        // archive/data/0 -> archive/data/1 in the local header only.
        let at = z.local[2] + 30 + "archive/data/".len();
        z.bytes[at] = b'1';
        let a = audit_bytes(&z.bytes).unwrap();
        let m = anomaly(&a, "local-central-mismatch");
        assert_eq!(m.offset, Some(z.local[2] as u64));
        assert_eq!(
            m.detail,
            "entry \"archive/data/0\": local name \"archive/data/1\""
        );
        assert!(m.ambiguous);
        let err = message(layout_bytes(&z.bytes).err().unwrap());
        assert_eq!(
            err,
            format!(
                "ambiguous zip archive (local-central-mismatch at byte {}): entry \"archive/data/0\": local name \"archive/data/1\"; refusing it",
                z.local[2]
            )
        );
    }

    #[test]
    fn rejects_a_zip_whose_local_header_disagrees_on_method_crc_and_sizes() {
        let mut z = build(&torch_members());
        let l = z.local[2];
        set16(&mut z.bytes, l + 8, 8);
        set32(&mut z.bytes, l + 14, 0xDEAD_BEEF);
        set32(&mut z.bytes, l + 18, 9);
        set32(&mut z.bytes, l + 22, 10);
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(kinds(&a), ["local-central-mismatch"]);
        let crc = crc32(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            a.anomalies[0].detail,
            format!(
                "entry \"archive/data/0\": local method 8 vs central 0, local CRC deadbeef vs central {crc:08x}, local compressed size 9 vs central 8, local size 10 vs central 8"
            )
        );
    }

    #[test]
    fn zero_sizes_and_crc_in_a_local_header_are_not_a_disagreement() {
        // Some writers leave the local fields zero; only a non-zero value that differs counts.
        let mut z = build(&torch_members());
        let l = z.local[1];
        set32(&mut z.bytes, l + 14, 0);
        set32(&mut z.bytes, l + 18, 0);
        set32(&mut z.bytes, l + 22, 0);
        let a = audit_bytes(&z.bytes).unwrap();
        assert!(a.anomalies.is_empty(), "{:?}", a.anomalies);
    }

    #[test]
    fn entries_with_data_descriptors_tile_the_file_with_or_without_the_descriptor_signature() {
        let mut m = torch_members();
        m[1].descriptor = Some(true);
        m[2].descriptor = Some(false);
        let z = build(&m);
        let a = audit_bytes(&z.bytes).unwrap();
        assert!(a.anomalies.is_empty(), "{:?}", a.anomalies);
        assert_eq!(a.entries[1].flags, 0x08);
        assert_eq!(a.entries[1].size, 6);
        let l = layout_bytes(&z.bytes).unwrap();
        assert_eq!(l.storages["0"].len, 8);
    }

    #[test]
    fn a_data_descriptor_entry_ignores_the_zero_local_sizes_but_not_the_local_name() {
        let mut m = torch_members();
        m[2].descriptor = Some(true);
        let mut z = build(&m);
        let at = z.local[2] + 30 + "archive/".len();
        z.bytes[at] = b'D';
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(kinds(&a), ["local-central-mismatch"]);
        assert_eq!(
            a.anomalies[0].detail,
            "entry \"archive/data/0\": local name \"archive/Data/0\""
        );
    }

    #[test]
    fn rejects_duplicate_entry_names() {
        let z = build(&[
            member("a/data.pkl", b"\x80\x02N."),
            member("a/data/0", b"1234"),
            member("a/data/0", b"5678"),
        ]);
        let a = audit_bytes(&z.bytes).unwrap();
        let d = anomaly(&a, "duplicate-name");
        assert_eq!(d.detail, "\"a/data/0\" and \"a/data/0\"");
        assert_eq!(d.offset, Some(z.local[2] as u64));
        assert!(d.ambiguous);
        assert_eq!(
            message(layout_bytes(&z.bytes).err().unwrap()),
            "the zip archive has duplicate entry names; refusing an ambiguous archive"
        );
    }

    /// The case-variant search finds exactly the pairs that comparing `to_lowercase` copies
    /// finds (the rule it replaces), in the same order: ASCII and other names, a Kelvin sign
    /// that lowercases to an ASCII `k`, a dotted capital I that lowercases to two characters,
    /// names longer than one 64-byte hashing piece that differ past it, three-way collisions
    /// and exact duplicates.
    #[test]
    fn case_collisions_are_the_pairs_lowercase_copies_find() {
        let long = "x".repeat(70);
        let names: Vec<String> = vec![
            "a/data/0".into(),
            "a/DATA/0".into(),
            "a/Data/0".into(),
            "a/data/0".into(),
            "a/\u{212a}ey".into(),
            "a/Key".into(),
            "a/key".into(),
            "a/\u{130}d".into(),
            "a/i\u{307}d".into(),
            "a/id".into(),
            "a/\u{c9}t\u{e9}".into(),
            "a/\u{e9}T\u{c9}".into(),
            format!("a/{long}A"),
            format!("a/{long}B"),
            format!("a/{}a", long.to_uppercase()),
            "a/data.pkl".into(),
            "".into(),
            "".into(),
        ];
        let entries: Vec<AuditEntry> = names
            .iter()
            .map(|n| AuditEntry {
                name: n.as_str().into(),
                method: 0,
                flags: 0,
                crc: 0,
                compressed: 0,
                size: 0,
                local_offset: 0,
                data_offset: None,
            })
            .collect();
        let mut seen: std::collections::HashMap<String, &str> = Default::default();
        let mut want = Vec::new();
        for e in &entries {
            if let Some(prev) = seen.insert(e.name.to_lowercase(), &e.name) {
                want.push((prev.to_string(), e.name.to_string()));
            }
        }
        let got: Vec<(String, String)> = case_collisions(&entries)
            .into_iter()
            .map(|(p, e)| (p.to_string(), e.name.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(want.len(), 9);
    }

    #[test]
    fn rejects_names_that_differ_only_in_case() {
        // torch looks names up case-insensitively: `data/0` and `DATA/0` could be either.
        let z = build(&[
            member("a/data.pkl", b"\x80\x02N."),
            member("a/data/0", b"1234"),
            member("a/DATA/0", b"5678"),
        ]);
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(kinds(&a), ["case-variant-name"]);
        assert_eq!(a.anomalies[0].detail, "\"a/data/0\" and \"a/DATA/0\"");
        assert_eq!(
            message(layout_bytes(&z.bytes).err().unwrap()),
            format!(
                "ambiguous zip archive (case-variant-name at byte {}): \"a/data/0\" and \"a/DATA/0\"; refusing it",
                z.local[2]
            )
        );
    }

    #[test]
    fn an_encrypted_entry_is_ambiguous() {
        let mut z = build(&torch_members());
        set16(&mut z.bytes, z.central[2] + 8, 0x01);
        set16(&mut z.bytes, z.local[2] + 6, 0x01);
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(kinds(&a), ["encrypted-entry", "local-central-mismatch"]);
        let e = anomaly(&a, "encrypted-entry");
        assert_eq!(e.offset, Some(z.central[2] as u64));
        assert_eq!(
            e.detail,
            "entry \"archive/data/0\" has flags 0x0001 (encryption or patched data)"
        );
        assert_eq!(
            a.anomalies[1].detail,
            "entry \"archive/data/0\": local flags 0x0001 vs central 0x0001"
        );
    }

    #[test]
    fn the_entry_count_limit_is_checked_before_the_directory_is_read() {
        let z = build(&torch_members());
        let limits = ZipLimits {
            max_entries: 2,
            ..ZipLimits::default()
        };
        let err = audit(&file_of(&z.bytes), z.bytes.len() as u64, &limits).unwrap_err();
        assert!(matches!(err, ErrorKind::LimitExceeded(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the zip archive declares 3 entries, more than the limit of 2 (--max-zip-entries)"
        );
        let at_limit = ZipLimits {
            max_entries: 3,
            ..ZipLimits::default()
        };
        let ok = audit(&file_of(&z.bytes), z.bytes.len() as u64, &at_limit).unwrap();
        assert_eq!(ok.entries.len(), 3);
    }

    #[test]
    fn a_central_directory_larger_than_its_limit_is_refused() {
        let z = build(&torch_members());
        let cd_size = z.eocd - z.cd_offset;
        let limits = ZipLimits {
            max_directory_bytes: cd_size as u64 - 1,
            ..ZipLimits::default()
        };
        let err = audit(&file_of(&z.bytes), z.bytes.len() as u64, &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the zip central directory is {cd_size} bytes, more than the limit of {}",
                cd_size - 1
            )
        );
    }

    #[test]
    fn the_default_limits_are_ten_million_entries_and_128_bytes_of_directory_each() {
        let d = ZipLimits::default();
        assert_eq!(d.max_entries, 10_000_000);
        assert_eq!(d.max_directory_bytes, 1_280_000_000);
        let small = ZipLimits::from(&crate::pickle::Limits {
            max_zip_entries: 10,
            ..Default::default()
        });
        assert_eq!(
            (small.max_entries, small.max_directory_bytes),
            (10, 256 << 20)
        );
    }

    #[test]
    fn a_file_without_an_end_record_is_reported_as_truncated() {
        let z = build(&torch_members());
        let err = audit_bytes(&z.bytes[..z.eocd]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the zip archive has no end-of-central-directory record (truncated?)"
        );
    }

    #[test]
    fn a_truncated_archive_fails_to_open_with_the_broken_zip_description() {
        let z = build(&torch_members());
        let err = layout_bytes(&z.bytes[..z.cd_offset]).err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, ErrorKind::Malformed(_)));
        // The sniffer's account of what is there, then the zip crate's own words.
        let n = z.cd_offset;
        assert!(
            msg.starts_with(&format!(
                "the file is truncated: it ends after 3 complete zip entries, before the central directory (expected more than {n} bytes, found {n}); download or copy it again (zip reader: "
            )),
            "{msg}"
        );
    }

    #[test]
    fn bytes_after_the_end_record_are_trailing_data() {
        let z = build(&torch_members());
        let mut bytes = z.bytes.clone();
        bytes.extend_from_slice(b"junk");
        let a = audit_bytes(&bytes).unwrap();
        let t = anomaly(&a, "trailing-data");
        assert_eq!(t.offset, Some(z.bytes.len() as u64));
        assert_eq!(
            t.detail,
            format!(
                "the end record and its 0-byte comment end at byte {} but the file has {} bytes",
                z.bytes.len(),
                bytes.len()
            )
        );
        assert!(t.ambiguous);
    }

    #[test]
    fn an_end_record_comment_is_part_of_the_archive() {
        let z = build_with(
            &torch_members(),
            &Options {
                comment: b"made by hand".to_vec(),
                ..Options::default()
            },
        );
        let a = audit_bytes(&z.bytes).unwrap();
        assert!(a.anomalies.is_empty(), "{:?}", a.anomalies);
    }

    #[test]
    fn a_second_end_signature_hidden_in_the_comment_is_flagged() {
        let mut fake = b"PK\x05\x06".to_vec();
        fake.extend_from_slice(&[0u8; 18]);
        let z = build_with(
            &torch_members(),
            &Options {
                comment: fake,
                ..Options::default()
            },
        );
        let a = audit_bytes(&z.bytes).unwrap();
        let m = anomaly(&a, "multiple-end-records");
        assert_eq!(
            m.detail,
            "2 end-of-central-directory signatures near the end of the file"
        );
        assert!(m.ambiguous);
    }

    #[test]
    fn bytes_before_the_first_entry_are_prepended_data() {
        let z = build_with(
            &torch_members(),
            &Options {
                prefix: b"#!/bin/sh\nexit 0\n".to_vec(),
                ..Options::default()
            },
        );
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(kinds(&a), ["prepended-data"]);
        assert_eq!(a.anomalies[0].offset, Some(0));
        assert_eq!(a.anomalies[0].detail, "17 bytes before the first entry");
        assert!(a.anomalies[0].ambiguous);
    }

    #[test]
    fn unreferenced_bytes_between_entries_are_a_gap_but_not_an_ambiguity() {
        let z = build_with(
            &torch_members(),
            &Options {
                gap_after_first: vec![0u8; 5],
                ..Options::default()
            },
        );
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(kinds(&a), ["gap"]);
        let g = &a.anomalies[0];
        assert_eq!(
            g.detail,
            "5 unreferenced bytes after entry \"archive/data.pkl\""
        );
        assert_eq!(g.offset, Some(z.local[1] as u64 - 5));
        assert!(!g.ambiguous);
        assert!(a.first_ambiguity().is_none());
        // The reader accepts it.
        let l = layout_bytes(&z.bytes).unwrap();
        assert_eq!(l.storages["0"].len, 8);
    }

    #[test]
    fn an_entry_whose_data_runs_into_the_next_one_overlaps_it() {
        let mut z = build(&torch_members());
        // Central says data.pkl has 20 bytes; its local header agrees.
        set32(&mut z.bytes, z.central[0] + 20, 20);
        set32(&mut z.bytes, z.central[0] + 24, 20);
        set32(&mut z.bytes, z.local[0] + 18, 20);
        set32(&mut z.bytes, z.local[0] + 22, 20);
        let a = audit_bytes(&z.bytes).unwrap();
        let o = anomaly(&a, "overlapping-entries");
        assert_eq!(
            o.detail,
            "entries \"archive/data.pkl\" and \"archive/byteorder\" share bytes"
        );
        assert_eq!(o.offset, Some(z.local[1] as u64));
        assert!(o.ambiguous);
    }

    #[test]
    fn the_last_entry_running_into_the_central_directory_overlaps_it() {
        let mut z = build(&torch_members());
        set32(&mut z.bytes, z.central[2] + 20, 9);
        set32(&mut z.bytes, z.central[2] + 24, 9);
        set32(&mut z.bytes, z.local[2] + 18, 9);
        set32(&mut z.bytes, z.local[2] + 22, 9);
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(kinds(&a), ["overlapping-entries"]);
        assert_eq!(a.anomalies[0].offset, Some(z.cd_offset as u64));
        assert_eq!(
            a.anomalies[0].detail,
            "entry \"archive/data/0\" runs into the central directory"
        );
    }

    #[test]
    fn entries_under_several_root_folders_are_ambiguous() {
        let z = build(&[
            member("a/data.pkl", b"\x80\x02N."),
            member("b/data/0", b"1234"),
        ]);
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(kinds(&a), ["several-roots"]);
        assert_eq!(a.anomalies[0].offset, None);
        assert_eq!(
            a.anomalies[0].detail,
            "entries are not all under one root folder (roots [\"a\", \"b\"])"
        );
        assert_eq!(
            message(layout_bytes(&z.bytes).err().unwrap()),
            "ambiguous zip archive (several-roots): entries are not all under one root folder (roots [\"a\", \"b\"]); refusing it"
        );
    }

    #[test]
    fn a_root_folder_archive_with_a_top_level_file_has_several_roots() {
        let z = build(&[
            member("a/data.pkl", b"\x80\x02N."),
            member("version", b"3\n"),
        ]);
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(
            anomaly(&a, "several-roots").detail,
            "entries are not all under one root folder (roots [\"\", \"a\"])"
        );
    }

    #[test]
    fn names_that_escape_the_archive_are_unsafe() {
        let z = build(&[
            member("data.pkl", b"\x80\x02N."),
            member("../evil", b"x"),
            member("/abs", b"x"),
            member("back\\slash", b"x"),
            member("bell\x07", b"x"),
        ]);
        let a = audit_bytes(&z.bytes).unwrap();
        let unsafe_names: Vec<&str> = a
            .anomalies
            .iter()
            .filter(|x| x.kind == "unsafe-name")
            .map(|x| x.detail.as_str())
            .collect();
        assert_eq!(
            unsafe_names,
            [
                "entry name \"../evil\"",
                "entry name \"/abs\"",
                "entry name \"back\\\\slash\"",
                "entry name \"bell\\u{7}\""
            ]
        );
        assert_eq!(kinds(&a), ["unsafe-name"; 4]);
    }

    #[test]
    fn a_central_entry_pointing_at_no_local_header_is_flagged_and_refused() {
        let mut z = build(&torch_members());
        // data/0's local header offset now points into the middle of data.pkl's data.
        set32(&mut z.bytes, z.central[2] + 42, (z.local[0] + 31) as u32);
        let a = audit_bytes(&z.bytes).unwrap();
        let m = anomaly(&a, "missing-local-header");
        assert_eq!(m.offset, Some(z.local[0] as u64 + 31));
        assert_eq!(
            m.detail,
            format!(
                "entry \"archive/data/0\" points at byte {}, which holds no local header",
                z.local[0] + 31
            )
        );
        assert_eq!(a.entries[2].data_offset, None);
        assert!(layout_bytes(&z.bytes).is_err());
    }

    #[test]
    fn a_central_directory_that_does_not_fit_before_its_end_record_is_malformed() {
        let mut z = build(&torch_members());
        let cd_size = z.eocd - z.cd_offset;
        set32(&mut z.bytes, z.eocd + 12, cd_size as u32 + 1);
        let err = audit_bytes(&z.bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the zip central directory ({} bytes at {}) does not fit before its end record at {}",
                cd_size + 1,
                z.cd_offset,
                z.eocd
            )
        );
    }

    #[test]
    fn a_central_directory_shorter_than_the_space_before_the_end_record_leaves_a_gap() {
        let mut z = build(&torch_members());
        // Declare one entry less: the last header becomes unexplained bytes.
        set16(&mut z.bytes, z.eocd + 8, 2);
        set16(&mut z.bytes, z.eocd + 10, 2);
        let a = audit_bytes(&z.bytes).unwrap();
        let g = anomaly(&a, "directory-gap");
        assert_eq!(g.offset, Some(z.central[2] as u64));
        assert_eq!(
            g.detail,
            format!(
                "{} unexplained bytes inside the central directory",
                z.eocd - z.central[2]
            )
        );
        assert_eq!(a.entries.len(), 2);
    }

    #[test]
    fn a_central_header_with_a_bad_signature_is_malformed() {
        let mut z = build(&torch_members());
        z.bytes[z.central[1] + 3] = 0x09;
        let err = audit_bytes(&z.bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "zip central directory entry 1 at byte {} is not a valid header",
                z.central[1]
            )
        );
    }

    #[test]
    fn a_central_entry_whose_name_runs_past_the_directory_is_malformed() {
        let mut z = build(&torch_members());
        set16(&mut z.bytes, z.central[2] + 28, 500);
        let err = audit_bytes(&z.bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "zip central directory entry 2 runs past the directory"
        );
    }

    #[test]
    fn zip64_end_records_and_extra_fields_give_the_real_counts_and_sizes() {
        let mut m = torch_members();
        m[2].zip64 = true;
        let z = build_with(
            &m,
            &Options {
                zip64_end: true,
                ..Options::default()
            },
        );
        let a = audit_bytes(&z.bytes).unwrap();
        assert!(a.anomalies.is_empty(), "{:?}", a.anomalies);
        assert_eq!(a.entries.len(), 3);
        let e = &a.entries[2];
        assert_eq!((e.compressed, e.size), (8, 8));
        assert_eq!(
            e.data_offset,
            Some((z.local[2] + 30 + "archive/data/0".len() + 20) as u64)
        );
        let l = layout_bytes(&z.bytes).unwrap();
        let s = &l.storages["0"];
        assert_eq!(
            &z.bytes[s.offset as usize..(s.offset + s.len) as usize],
            &[1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn a_zip64_locator_pointing_at_nothing_is_a_layout_anomaly() {
        let mut z = build_with(
            &torch_members(),
            &Options {
                zip64_end: true,
                ..Options::default()
            },
        );
        // The locator sits right before the end record; point it at byte 1.
        let loc = z.eocd - 20;
        z.bytes[loc + 8..loc + 16].copy_from_slice(&1u64.to_le_bytes());
        // With the end record's 32-bit fields saturated, nothing says where the directory is.
        let cd_size = loc - 56 - z.cd_offset;
        assert_eq!(
            audit_bytes(&z.bytes).unwrap_err().to_string(),
            "the zip central directory is 4294967295 bytes, more than the limit of 1280000000"
        );
        // With real values in the end record, the audit goes on and flags the locator.
        set16(&mut z.bytes, z.eocd + 8, 3);
        set16(&mut z.bytes, z.eocd + 10, 3);
        set32(&mut z.bytes, z.eocd + 12, cd_size as u32);
        set32(&mut z.bytes, z.eocd + 16, z.cd_offset as u32);
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(a.entries.len(), 3);
        let m = anomaly(&a, "zip64-layout");
        assert_eq!(m.offset, Some(loc as u64));
        assert_eq!(
            m.detail,
            "the zip64 locator points at byte 1, which holds no zip64 end record"
        );
        assert!(m.ambiguous);
    }

    #[test]
    fn a_zip64_end_record_separated_from_its_locator_is_a_layout_anomaly() {
        let mut z = build_with(
            &torch_members(),
            &Options {
                zip64_end: true,
                ..Options::default()
            },
        );
        // Claim a record 8 bytes longer than the 44 it has.
        let z64 = z.eocd - 20 - 56;
        z.bytes[z64 + 4..z64 + 12].copy_from_slice(&52u64.to_le_bytes());
        let a = audit_bytes(&z.bytes).unwrap();
        let m = anomaly(&a, "zip64-layout");
        assert_eq!(m.offset, Some(z64 as u64));
        assert_eq!(
            m.detail,
            "the zip64 end record does not sit right before its locator"
        );
    }

    #[test]
    fn auditing_without_local_headers_reads_only_the_central_directory() {
        let mut z = build(&torch_members());
        // A broken local header is not looked at.
        z.bytes[z.local[2]] = b'X';
        let a = audit_with(
            &file_of(&z.bytes),
            z.bytes.len() as u64,
            &ZipLimits::default(),
            false,
        )
        .unwrap();
        assert_eq!(a.entries.len(), 3);
        assert!(a.entries.iter().all(|e| e.data_offset.is_none()));
        assert!(
            !kinds(&a)
                .iter()
                .any(|k| *k == "missing-local-header" || *k == "local-central-mismatch"),
            "{:?}",
            a.anomalies
        );
        let full = audit_bytes(&z.bytes).unwrap();
        assert_eq!(
            anomaly(&full, "missing-local-header").offset,
            Some(z.local[2] as u64)
        );
    }

    #[test]
    fn a_pickle_whose_bytes_do_not_match_its_crc_is_refused_as_tampered() {
        let mut z = build(&torch_members());
        // Flip one byte of data.pkl's data; local and central CRCs still agree.
        let at = z.local[0] + 30 + 16 + 3;
        z.bytes[at] ^= 0xFF;
        let crc = crc32(b"\x80\x02}q\x00.");
        let a = audit_bytes(&z.bytes).unwrap();
        assert!(a.anomalies.is_empty(), "{:?}", a.anomalies);
        assert_eq!(crc_matches(&file_of(&z.bytes), &a.entries[0]), Some(false));
        assert_eq!(
            message(layout_bytes(&z.bytes).err().unwrap()),
            format!(
                "zip entry archive/data.pkl does not match its CRC-32 {crc:08x}; refusing a tampered pickle"
            )
        );
    }

    #[test]
    fn crc_is_checked_only_for_stored_entries_that_declare_one() {
        let z = build(&torch_members());
        let f = file_of(&z.bytes);
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(crc_matches(&f, &a.entries[2]), Some(true));
        let mut no_crc = a.entries[2].clone();
        no_crc.crc = 0;
        assert_eq!(crc_matches(&f, &no_crc), None);
        let mut deflated = a.entries[2].clone();
        deflated.method = 8;
        assert_eq!(crc_matches(&f, &deflated), None);
        let mut unlocated = a.entries[2].clone();
        unlocated.data_offset = None;
        assert_eq!(crc_matches(&f, &unlocated), None);
        let mut wrong = a.entries[2].clone();
        wrong.crc ^= 1;
        assert_eq!(crc_matches(&f, &wrong), Some(false));
    }

    #[test]
    fn a_storage_entry_with_a_bad_crc_is_still_mapped() {
        // Only the pickle's CRC is checked when the layout is read.
        let mut z = build(&torch_members());
        let at = z.local[2] + 30 + 14;
        z.bytes[at] ^= 0xFF;
        let l = layout_bytes(&z.bytes).unwrap();
        assert_eq!(l.storages["0"].offset, at as u64);
    }

    #[test]
    fn a_stored_entry_whose_sizes_differ_is_refused() {
        let mut z = build(&torch_members());
        // data/0: 8 bytes stored, 7 bytes of data, in both headers.
        set32(&mut z.bytes, z.central[2] + 24, 7);
        set32(&mut z.bytes, z.local[2] + 22, 7);
        assert!(audit_bytes(&z.bytes).unwrap().anomalies.is_empty());
        let err = layout_bytes(&z.bytes).err().unwrap();
        assert_eq!(
            err.to_string(),
            "zip entry archive/data/0 is stored uncompressed but declares 8 bytes stored and 7 bytes of data"
        );
    }

    #[test]
    fn methods_other_than_stored_and_deflate_are_kept_as_other() {
        let mut m = torch_members();
        m[2].method = 12;
        let z = build(&m);
        let l = layout_bytes(&z.bytes).unwrap();
        assert_eq!(l.storages["0"].method, RecordMethod::Other(12));
        assert_eq!(l.pickle.method, RecordMethod::Stored);
    }

    #[test]
    fn a_deflated_entry_is_mapped_as_deflated_with_both_sizes() {
        let data = vec![7u8; 64];
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&data).unwrap();
        let packed = enc.finish().unwrap();
        let mut m = torch_members();
        m[2] = Member {
            method: 8,
            ..member("archive/data/0", &packed)
        };
        let mut z = build(&m);
        // Sizes as stored are the packed ones; the inflated size and CRC are the data's.
        let crc = crc32(&data);
        for (at, size_at) in [
            (z.central[2] + 16, z.central[2] + 24),
            (z.local[2] + 14, z.local[2] + 22),
        ] {
            set32(&mut z.bytes, at, crc);
            set32(&mut z.bytes, size_at, 64);
        }
        let l = layout_bytes(&z.bytes).unwrap();
        let s = &l.storages["0"];
        assert_eq!(s.method, RecordMethod::Deflated);
        assert_eq!((s.stored_len, s.len), (packed.len() as u64, 64));
    }

    #[test]
    fn an_archive_without_data_pkl_says_what_it_is() {
        let z = build(&[member("arr_0.npy", b"\x93NUMPY"), member("arr_1.npy", b"x")]);
        let err = layout_bytes(&z.bytes).err().unwrap();
        assert!(matches!(err, ErrorKind::NotACheckpoint(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "not a PyTorch checkpoint: a NumPy .npz archive (arrays [\"arr_0.npy\", \"arr_1.npy\"]), not a PyTorch checkpoint; load it with numpy.load and save the arrays with safetensors.numpy.save_file"
        );
    }

    #[test]
    fn a_data_pkl_nested_two_folders_deep_is_not_the_pickle() {
        let z = build(&[member("a/b/data.pkl", b"\x80\x02N.")]);
        let err = layout_bytes(&z.bytes).err().unwrap();
        assert_eq!(
            err.to_string(),
            "not a PyTorch checkpoint: a zip archive without a data.pkl record (entries such as [\"a/b/data.pkl\"]); torch.save archives hold <root>/data.pkl"
        );
    }

    #[test]
    fn rejects_an_archive_with_two_candidate_pickles() {
        let z = build(&[
            member("data.pkl", b"\x80\x02N."),
            member("x/data.pkl", b"\x80\x02N."),
        ]);
        let err = layout_bytes(&z.bytes).err().unwrap();
        assert_eq!(
            err.to_string(),
            "the zip archive holds several data.pkl records ([\"data.pkl\", \"x/data.pkl\"]); refusing an ambiguous archive"
        );
    }

    #[test]
    fn the_byteorder_record_is_little_or_big_with_surrounding_whitespace_ignored() {
        assert_eq!(parse_byteorder(b"little").unwrap(), ByteOrder::Little);
        assert_eq!(parse_byteorder(b"big\n").unwrap(), ByteOrder::Big);
        assert_eq!(
            parse_byteorder(b"  little \r\n").unwrap(),
            ByteOrder::Little
        );
        assert_eq!(
            parse_byteorder(b"Little").unwrap_err().to_string(),
            "the byteorder record says \"Little\"; expected \"little\" or \"big\""
        );
        let long = [b'x'; 100];
        assert_eq!(
            parse_byteorder(&long).unwrap_err().to_string(),
            format!(
                "the byteorder record says {:?}; expected \"little\" or \"big\"",
                "x".repeat(40)
            )
        );
    }

    #[test]
    fn an_archive_with_no_entries_audits_clean_but_is_not_a_checkpoint() {
        let z = build(&[]);
        let a = audit_bytes(&z.bytes).unwrap();
        assert!(a.entries.is_empty());
        assert!(a.anomalies.is_empty(), "{:?}", a.anomalies);
        assert_eq!(
            layout_bytes(&z.bytes).err().unwrap().to_string(),
            "not a PyTorch checkpoint: a zip archive without a data.pkl record (entries such as []); torch.save archives hold <root>/data.pkl"
        );
    }

    #[test]
    fn a_file_too_short_for_an_end_record_has_none() {
        assert_eq!(
            audit_bytes(b"PK\x05\x06").unwrap_err().to_string(),
            "the zip archive has no end-of-central-directory record (truncated?)"
        );
    }

    /// A zip with a zip64 locator whose record offset is `z64`, and real values in the end
    /// record (so the audit can go on without the zip64 record).
    fn with_locator_at(z64: u64) -> Built {
        let mut z = build_with(
            &torch_members(),
            &Options {
                zip64_end: true,
                ..Options::default()
            },
        );
        let loc = z.eocd - 20;
        let cd_size = loc - 56 - z.cd_offset;
        z.bytes[loc + 8..loc + 16].copy_from_slice(&z64.to_le_bytes());
        set16(&mut z.bytes, z.eocd + 8, 3);
        set16(&mut z.bytes, z.eocd + 10, 3);
        set32(&mut z.bytes, z.eocd + 12, cd_size as u32);
        set32(&mut z.bytes, z.eocd + 16, z.cd_offset as u32);
        z
    }

    #[test]
    fn a_zip64_locator_pointing_past_the_end_of_the_address_space_is_an_anomaly_not_a_panic() {
        let z64 = u64::MAX - 10;
        let z = with_locator_at(z64);
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(
            anomaly(&a, "zip64-layout").detail,
            format!("the zip64 locator points at byte {z64}, which holds no zip64 end record")
        );
    }

    #[test]
    fn a_zip64_end_record_declaring_a_huge_size_is_an_anomaly_not_a_panic() {
        let mut z = build_with(
            &torch_members(),
            &Options {
                zip64_end: true,
                ..Options::default()
            },
        );
        let z64 = z.eocd - 20 - 56;
        z.bytes[z64 + 4..z64 + 12].copy_from_slice(&u64::MAX.to_le_bytes());
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(
            anomaly(&a, "zip64-layout").detail,
            "the zip64 end record does not sit right before its locator"
        );
    }

    #[test]
    fn a_zip64_locator_pointing_inside_the_file_at_no_record_is_an_anomaly() {
        // The same shape as the ignored overflow test, with an offset that does not overflow.
        let z = with_locator_at(3);
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(
            anomaly(&a, "zip64-layout").detail,
            "the zip64 locator points at byte 3, which holds no zip64 end record"
        );
    }

    /// Every (offset, pattern) at which overwriting `base` with a saturated field makes the
    /// audit or the layout reader panic.
    fn panicking_mutations(base: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let patterns: [Vec<u8>; 5] = [
            vec![0xFF; 2],
            vec![0xFF; 4],
            0x7FFF_FFFFu32.to_le_bytes().to_vec(),
            vec![0xFF; 8],
            (u64::MAX - 10).to_le_bytes().to_vec(),
        ];
        let mut panics = Vec::new();
        for at in 0..base.len() {
            for pat in &patterns {
                if at + pat.len() > base.len() {
                    continue;
                }
                let mut b = base.to_vec();
                b[at..at + pat.len()].copy_from_slice(pat);
                let r = std::panic::catch_unwind(|| {
                    let _ = audit_bytes(&b);
                    let _ = layout_bytes(&b);
                });
                if r.is_err() {
                    panics.push((at, pat.clone()));
                }
            }
        }
        panics
    }

    #[test]
    fn no_saturated_field_anywhere_in_a_small_archive_makes_the_reader_panic() {
        let mut m = torch_members();
        m[1].descriptor = Some(true);
        let z = build(&m);
        assert_eq!(panicking_mutations(&z.bytes), []);
    }

    #[test]
    fn no_saturated_field_anywhere_in_a_small_zip64_archive_makes_the_reader_panic() {
        let mut m = torch_members();
        m[1].descriptor = Some(true);
        m[2].zip64 = true;
        let z = build_with(
            &m,
            &Options {
                zip64_end: true,
                ..Options::default()
            },
        );
        assert_eq!(panicking_mutations(&z.bytes), []);
    }

    #[test]
    fn every_record_name_torch_writes_has_its_role() {
        assert_eq!(role("data.pkl"), Role::Pickle);
        assert_eq!(role("data/0"), Role::Storage("0"));
        assert_eq!(role("data/140230"), Role::Storage("140230"));
        assert_eq!(role("constants.pkl"), Role::Constants);
        for r in [
            "code/__torch__.py",
            "code/__torch__/m.py.debug_pkl",
            "model.json",
            "bytecode.pkl",
            "extra/x",
        ] {
            assert_eq!(role(r), Role::TorchScript, "{r}");
        }
        for r in INFO_RECORDS.iter().chain(&[".data/serialization_id"]) {
            assert_eq!(role(r), Role::Info, "{r}");
        }
        for r in [
            "data/",
            "data",
            "evil.pkl",
            "Data.pkl",
            "x/data.pkl",
            ".data/other",
        ] {
            assert_eq!(role(r), Role::Other, "{r}");
        }
    }

    #[test]
    fn an_expected_pickle_is_kept_only_when_every_byte_matches_the_record() {
        let z = build(&torch_members());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pt");
        std::fs::write(&path, &z.bytes).unwrap();
        let real = b"\x80\x02}q\x00.".to_vec();
        let open = |expected: &[u8]| {
            super::super::Archive::open_expecting(
                &path,
                &crate::pickle::Limits::default(),
                Some(expected),
            )
            .unwrap()
        };
        // A match: the archive leaves its pickle for the caller to fill.
        let (a, matched) = open(&real);
        assert!(matched);
        assert!(a.pickle.is_empty());
        // One byte off (first, last), one byte short or long: read as usual.
        let mut first = real.clone();
        first[0] ^= 1;
        let mut last = real.clone();
        *last.last_mut().unwrap() ^= 1;
        let long = [&real[..], b"."].concat();
        for wrong in [first, last, real[..real.len() - 1].to_vec(), long] {
            let (a, matched) = open(&wrong);
            assert!(!matched, "{wrong:?}");
            assert_eq!(a.pickle, real);
        }
        // Without an expectation the pickle is read.
        let (a, matched) =
            super::super::Archive::open_expecting(&path, &crate::pickle::Limits::default(), None)
                .unwrap();
        assert!(!matched);
        assert_eq!(a.pickle, real);
    }

    #[test]
    fn the_first_pickle_guess_reads_a_leading_stored_pickle_and_nothing_else() {
        let guess =
            |z: &Built| first_pickle_guess(&file_of(&z.bytes), z.bytes.len() as u64, u64::MAX);
        let layout_pickle = |z: &Built| {
            let l = layout_bytes(&z.bytes).unwrap();
            z.bytes[l.pickle.offset as usize..(l.pickle.offset + l.pickle.len) as usize].to_vec()
        };
        // Read through the directory's first entry: plain, with a data descriptor (zero sizes
        // in the local header, as torch writes), with zip64 sizes, with a zip64 end record.
        let mut cases = Vec::new();
        cases.push(build(&torch_members()));
        for (descriptor, zip64) in [(Some(true), false), (Some(false), false), (None, true)] {
            let mut m = torch_members();
            m[0].descriptor = descriptor;
            m[0].zip64 = zip64;
            cases.push(build(&m));
        }
        cases.push(build_with(
            &torch_members(),
            &Options {
                zip64_end: true,
                ..Options::default()
            },
        ));
        for z in &cases {
            assert_eq!(guess(z).as_deref(), Some(&layout_pickle(z)[..]));
        }
        // No guess: the pickle is not first, is compressed, is over the bound, or the end record
        // has a comment.
        let mut m = torch_members();
        m.swap(0, 1);
        assert_eq!(guess(&build(&m)), None);
        let mut m = torch_members();
        m[0].method = 8;
        assert_eq!(guess(&build(&m)), None);
        let z = build(&torch_members());
        assert_eq!(
            first_pickle_guess(&file_of(&z.bytes), z.bytes.len() as u64, 5),
            None
        );
        let z = build_with(
            &torch_members(),
            &Options {
                comment: b"hi".to_vec(),
                ..Options::default()
            },
        );
        assert_eq!(guess(&z), None);
        // Nor on a file that is not a zip, or is too short for an end record.
        assert_eq!(first_pickle_guess(&file_of(b"PK"), 2, u64::MAX), None);
        assert_eq!(first_pickle_guess(&file_of(&[0u8; 64]), 64, u64::MAX), None);
    }

    fn zip64_archive() -> Built {
        let mut m = torch_members();
        m[2].zip64 = true;
        build_with(
            &m,
            &Options {
                zip64_end: true,
                ..Options::default()
            },
        )
    }

    #[test]
    fn end_records_that_tell_two_stories_are_ambiguous() {
        // A spanned archive: the end record says it is not the first disk.
        let mut z = build(&torch_members());
        z.bytes[z.eocd + 4] = 1;
        let a = audit_bytes(&z.bytes).unwrap();
        assert_eq!(a.first_ambiguity().map(|x| x.kind), Some("multi-disk"));
        assert!(layout_bytes(&z.bytes).is_err());
        // The end record counts 2 entries, the zip64 end record 3: a reader that ignores zip64
        // would read another archive.
        let mut z = zip64_archive();
        assert!(audit_bytes(&z.bytes).unwrap().anomalies.is_empty());
        z.bytes[z.eocd + 10..z.eocd + 12].copy_from_slice(&[2, 0]);
        let a = audit_bytes(&z.bytes).unwrap();
        let first = a.first_ambiguity().unwrap();
        assert_eq!(first.kind, "zip64-mismatch");
        assert!(
            first.detail.contains("entry count as 2"),
            "{}",
            first.detail
        );
        let err = layout_bytes(&z.bytes).err().unwrap().to_string();
        assert!(err.contains("zip64-mismatch"), "{err}");
        // A zip64 end record whose size field is below the 44 bytes it must count.
        let mut z = zip64_archive();
        let record = z.eocd - 20 - 56;
        assert!(z.bytes[record..].starts_with(b"PK\x06\x06"));
        z.bytes[record + 4] = 0;
        assert_eq!(
            audit_bytes(&z.bytes)
                .unwrap()
                .first_ambiguity()
                .map(|x| x.kind),
            Some("zip64-layout")
        );
        // The locator names another disk for the zip64 end record.
        let mut z = zip64_archive();
        z.bytes[z.eocd - 20 + 4] = 1;
        assert_eq!(
            audit_bytes(&z.bytes)
                .unwrap()
                .first_ambiguity()
                .map(|x| x.kind),
            Some("multi-disk")
        );
    }

    #[test]
    fn an_extra_field_is_read_within_its_own_bytes_only() {
        let mut z = zip64_archive();
        // The zip64 field claims 24 bytes of the entry's 20 bytes of extra fields: the values
        // after them (the next header) are not taken for sizes.
        let field = z.central[2] + 46 + "archive/data/0".len();
        assert_eq!(le16(&z.bytes, field), 1);
        z.bytes[field + 2] = 24;
        let a = audit_bytes(&z.bytes).unwrap();
        assert!(
            kinds(&a).contains(&"extra-field-overrun"),
            "{:?}",
            kinds(&a)
        );
        assert_eq!(a.entries[2].size, 0xFFFF_FFFF);
        assert!(layout_bytes(&z.bytes).is_err());
        // The first-record guess does not read past one either.
        let mut size = 0xFFFF_FFFF;
        let (mut stored, mut local) = (0xFFFF_FFFF, 5);
        let mut extra = vec![1, 0, 24, 0];
        extra.extend_from_slice(&[9; 16]);
        let e = read_extras(&extra, [&mut size, &mut stored, &mut local]);
        assert_eq!(
            (e.overrun, size, stored, local),
            (Some(1), 0xFFFF_FFFF, 0xFFFF_FFFF, 5)
        );
        extra[2] = 16;
        let e = read_extras(&extra, [&mut size, &mut stored, &mut local]);
        let nines = u64::from_le_bytes([9; 8]);
        assert_eq!((e.overrun, size, stored, local), (None, nines, nines, 5));
    }

    #[test]
    fn a_unicode_path_field_naming_another_entry_is_ambiguous() {
        let mut z = zip64_archive();
        // Replace the 20-byte zip64 field by a Unicode path field (version, CRC, name) that
        // renames `archive/data/0` to `archive/zzz` for the readers that honour it.
        let field = z.central[2] + 46 + "archive/data/0".len();
        let mut unicode = vec![0x75, 0x70, 16, 0, 1, 0, 0, 0, 0];
        unicode.extend_from_slice(b"archive/zzz");
        z.bytes[field..field + 20].copy_from_slice(&unicode);
        let a = audit_bytes(&z.bytes).unwrap();
        let u = a
            .anomalies
            .iter()
            .find(|x| x.kind == "unicode-path-name")
            .unwrap();
        assert!(
            u.ambiguous && u.detail.contains("archive/zzz"),
            "{}",
            u.detail
        );
        // The field's name is what is compared with the header's (the audit flags a
        // difference only).
        let mut field = vec![0x75, 0x70, 19, 0, 1, 0, 0, 0, 0];
        field.extend_from_slice(b"archive/data/0");
        let mut none = [u64::MAX; 3];
        let [a, b, c] = &mut none;
        let e = read_extras(&field, [a, b, c]);
        assert_eq!(e.unicode_name, Some(&b"archive/data/0"[..]));
    }

    /// What the zip crate reads from `bytes`, entry by entry, when it opens them at all:
    /// (raw name, local header offset, compressed size, size, data offset) for each entry whose
    /// local header it accepts, `None` for the others.
    type CrateEntry = Option<(Vec<u8>, u64, u64, u64, Option<u64>)>;

    fn crate_reading(bytes: &[u8]) -> Result<(bool, Vec<CrateEntry>), String> {
        let config = Config {
            archive_offset: ArchiveOffset::Known(0),
        };
        let mut zip = ZipArchive::with_config(config, std::io::Cursor::new(bytes))
            .map_err(|e| e.to_string())?;
        let duplicates = zip.has_duplicate_names();
        let entries = (0..zip.len())
            .map(|i| {
                let f = zip.by_index_raw(i).ok()?;
                Some((
                    f.name_raw().to_vec(),
                    f.header_start(),
                    f.compressed_size(),
                    f.size(),
                    f.data_start(),
                ))
            })
            .collect();
        Ok((duplicates, entries))
    }

    /// `read_layout` asks the zip crate nothing about an archive the audit reads plainly. That is
    /// sound only if the crate would have accepted every such archive and read it the same way:
    /// checked here on thousands of deterministic mutations of a real torch archive and of a
    /// zip64 one (1 to 3 bytes changed, mostly in the directory and end records, where the
    /// readers' rules live). Each mutant the audit reads plainly must open in the crate without
    /// duplicate names, and list the same entries at the same offsets and sizes.
    #[test]
    fn an_archive_the_audit_reads_plainly_reads_the_same_in_the_zip_crate() {
        let torch = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ckpt/root_list.pt"
        ))
        .unwrap();
        let mut big = member("archive/data/0", &[7u8; 40]);
        big.zip64 = true;
        let z64 = build_with(
            &[member("archive/data.pkl", b"\x80\x02K\x01."), big],
            &Options {
                zip64_end: true,
                ..Options::default()
            },
        );
        // A small xorshift: the same mutants on every run.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut plain, mut tried) = (0, 0);
        for (base, directory) in [
            (&torch, torch_directory_start(&torch)),
            (&z64.bytes, z64.cd_offset),
        ] {
            for _ in 0..4000 {
                let mut b = base.clone();
                for _ in 0..1 + next() % 3 {
                    let at = if next() % 10 < 8 {
                        directory + (next() as usize) % (b.len() - directory)
                    } else {
                        (next() as usize) % b.len()
                    };
                    b[at] = match next() % 5 {
                        0 => 0,
                        1 => 0xFF,
                        2 => b[at].wrapping_add(1),
                        3 => b[at].wrapping_sub(1),
                        _ => next() as u8,
                    };
                }
                tried += 1;
                let file = file_of(&b);
                let Ok(a) = audit(&file, b.len() as u64, &ZipLimits::default()) else {
                    continue;
                };
                let has_pickle = a
                    .entries
                    .iter()
                    .any(|e| is_any_pickle_name(e.name.as_bytes()));
                if a.first_ambiguity().is_some() || !has_pickle {
                    continue;
                }
                plain += 1;
                let (duplicates, entries) = crate_reading(&b).unwrap_or_else(|e| {
                    panic!("the audit reads a mutant plainly that the zip crate refuses: {e}")
                });
                assert!(!duplicates, "duplicate names the audit missed");
                assert_eq!(entries.len(), a.entries.len(), "entry counts differ");
                for (ours, theirs) in a.entries.iter().zip(&entries) {
                    // An entry whose local header the crate refuses: a check `read_layout`
                    // never asked the crate for (it opened the archive, read no entry).
                    let Some((name, local, compressed, size, data)) = theirs else {
                        continue;
                    };
                    assert_eq!(ours.name.as_bytes(), &name[..]);
                    assert_eq!(
                        (
                            ours.local_offset,
                            ours.compressed,
                            ours.size,
                            ours.data_offset
                        ),
                        (*local, *compressed, *size, *data),
                        "entry {}",
                        ours.name
                    );
                }
            }
        }
        // The mutations must leave plain archives to compare, and must break most.
        assert!(plain > 200 && plain < tried / 2, "{plain} plain of {tried}");
    }

    /// Where the central directory of `bytes` starts (from its end record).
    fn torch_directory_start(bytes: &[u8]) -> usize {
        let eocd = bytes.len() - 22;
        assert!(bytes[eocd..].starts_with(b"PK\x05\x06"));
        le32(bytes, eocd + 16) as usize
    }
}
