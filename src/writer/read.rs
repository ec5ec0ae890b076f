//! Reading a safetensors header back: the one parser of the format's header, used by `inspect`,
//! `verify` and `migrate` (which trust nothing they did not re-read).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::MAX_HEADER;
use crate::error::{ErrorKind, io};

/// True when the first bytes are a safetensors header: a little-endian length that fits the
/// file, then `{`.
pub fn looks_like_safetensors(head: &[u8], file_len: u64) -> bool {
    if head.len() < 9 {
        return false;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&head[..8]);
    let n = u64::from_le_bytes(n);
    head[8] == b'{' && n > 1 && n.checked_add(8).is_some_and(|e| e <= file_len)
}

/// One tensor of a safetensors header.
#[derive(Debug, Clone)]
pub struct HeaderTensor {
    /// Name.
    pub name: String,
    /// Dtype.
    pub dtype: safetensors::Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Start of its bytes, relative to the data section.
    pub begin: u64,
    /// End of its bytes, relative to the data section.
    pub end: u64,
}

/// A safetensors header, validated by the safetensors crate (offsets contiguous, sizes matching
/// dtype and shape).
#[derive(Debug, Clone)]
pub struct SafetensorsHeader {
    /// Bytes of the JSON header (after the 8-byte length).
    pub json_len: u64,
    /// Bytes of the data section the header declares.
    pub data_len: u64,
    /// Tensors in file order.
    pub tensors: Vec<HeaderTensor>,
    /// `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsHeader {
    /// Absolute file offset of the data section.
    pub fn data_start(&self) -> u64 {
        8 + self.json_len
    }

    /// `__metadata__` entries that name a tensor of the file (`alias`, `kept`), as `convert`
    /// records tensors that share one view. Other entries (`format`, …) are not aliases.
    pub fn aliases(&self) -> Vec<(&str, &str)> {
        self.metadata
            .iter()
            .filter(|(k, v)| {
                k.as_str() != "format"
                    && self.tensors.iter().all(|t| &t.name != *k)
                    && self.tensors.iter().any(|t| &t.name == *v)
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// Reads and validates the header of the safetensors file `file` (no tensor data is read).
pub fn read_safetensors_header(
    file: &File,
    file_len: u64,
) -> std::result::Result<SafetensorsHeader, ErrorKind> {
    let bad = |m: String| ErrorKind::Malformed(format!("invalid safetensors header: {m}"));
    if file_len < 8 {
        return Err(bad(format!(
            "the file has {file_len} bytes, fewer than the 8-byte header length"
        )));
    }
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0)
        .map_err(io("cannot read the safetensors header length"))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER as u64 {
        return Err(bad(format!(
            "a header of {n} bytes, more than the {} readers accept",
            MAX_HEADER
        )));
    }
    if 8 + n > file_len {
        return Err(bad(format!(
            "truncated: the header alone needs {} bytes, found {file_len}",
            8 + n
        )));
    }
    let mut json = vec![0u8; n as usize];
    file.read_exact_at(&mut json, 8)
        .map_err(io("cannot read the safetensors header"))?;
    let text = std::str::from_utf8(&json).map_err(|e| bad(format!("not UTF-8 ({e})")))?;
    let meta: safetensors::tensor::Metadata =
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let tensors = meta
        .offset_keys()
        .into_iter()
        .filter_map(|name| {
            let info = meta.info(&name)?;
            Some(HeaderTensor {
                name,
                dtype: info.dtype,
                shape: info.shape.iter().map(|&d| d as u64).collect(),
                begin: info.data_offsets.0 as u64,
                end: info.data_offsets.1 as u64,
            })
        })
        .collect();
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(SafetensorsHeader {
        json_len: n,
        data_len: meta.data_len() as u64,
        tensors,
        metadata,
    })
}
