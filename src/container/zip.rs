//! torch.save zip archives: find `data.pkl` under whatever root folder the archive uses and map
//! every `data/<key>` record to its absolute byte range in the file.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;

use zip::CompressionMethod;
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
}

fn zip_err(e: zip::result::ZipError) -> ErrorKind {
    ErrorKind::Malformed(format!("the zip archive cannot be read: {e}"))
}

/// Reads the central directory and classifies the records.
pub fn read_layout(file: &File, file_len: u64) -> Result<ZipLayout, ErrorKind> {
    let reader = BufReader::new(file);
    let config = Config { archive_offset: ArchiveOffset::Known(0) };
    let mut zip = ZipArchive::with_config(config, reader).map_err(|e| {
        ErrorKind::Malformed(format!("the file starts like a zip archive but its central directory cannot be read ({e}); the file may be truncated"))
    })?;
    if zip.has_duplicate_names() {
        return Err(ErrorKind::Malformed("the zip archive has duplicate entry names; refusing an ambiguous archive".into()));
    }
    let mut members = HashMap::new();
    for i in 0..zip.len() {
        let f = zip.by_index_raw(i).map_err(zip_err)?;
        let name = String::from_utf8_lossy(f.name_raw()).into_owned();
        let method = match f.compression() {
            CompressionMethod::Stored => RecordMethod::Stored,
            CompressionMethod::Deflated => RecordMethod::Deflated,
            other => RecordMethod::Other(other.to_string()),
        };
        let start = f.data_start().ok_or_else(|| ErrorKind::Malformed(format!("zip entry {name}: no data offset")))?;
        let rec = Record { name: name.clone(), offset: start, stored_len: f.compressed_size(), len: f.size(), method };
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
            let sample: Vec<&str> = members.keys().take(5).map(|s| s.as_str()).collect();
            return Err(ErrorKind::NotACheckpoint(format!(
                "a zip archive without a data.pkl record (entries such as {sample:?}); torch.save archives hold <root>/data.pkl"
            )));
        }
        many => {
            let mut many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
            many.sort();
            return Err(ErrorKind::Malformed(format!("the zip archive holds several data.pkl records ({many:?}); refusing an ambiguous archive")));
        }
    };
    let prefix = pickle_name[..pickle_name.len() - "data.pkl".len()].to_string();
    let mut storages = HashMap::new();
    let mut has_code = false;
    for (name, rec) in &members {
        let Some(rest) = name.strip_prefix(&prefix) else { continue };
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
    Ok(ZipLayout { prefix, pickle, constants, has_code, storages, members })
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
