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

    /// Refuses a file of `file_len` bytes that is not exactly as long as this header
    /// describes (cut short, or with bytes after the data).
    pub fn check_len(&self, file_len: u64) -> std::result::Result<(), ErrorKind> {
        let expected = self.data_start() + self.data_len;
        if file_len == expected {
            return Ok(());
        }
        let what = if file_len < expected {
            "truncated"
        } else {
            "longer than its header says"
        };
        Err(ErrorKind::Malformed(format!(
            "the safetensors file is {what}: its header needs {expected} bytes, found {file_len}"
        )))
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

#[cfg(test)]
mod tests {
    //! The safetensors header reader on files built in the test: what is accepted, what each
    //! kind of damage is reported as.

    use super::*;
    use std::io::Write;

    /// `[u64 n][json][data_len zero bytes]`.
    fn file_bytes(json: &str, data_len: usize) -> Vec<u8> {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(json.as_bytes());
        b.resize(b.len() + data_len, 0);
        b
    }

    fn read(bytes: &[u8]) -> Result<SafetensorsHeader, ErrorKind> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        read_safetensors_header(&f, bytes.len() as u64)
    }

    fn read_err(bytes: &[u8]) -> String {
        read(bytes).unwrap_err().to_string()
    }

    const TWO: &str = r#"{"__metadata__":{"format":"pt","b.alias":"a"},"b":{"dtype":"I8","shape":[3],"data_offsets":[8,11]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;

    #[test]
    fn a_valid_header_lists_tensors_in_file_order_with_their_metadata() {
        let h = read(&file_bytes(TWO, 11)).unwrap();
        assert_eq!(h.json_len, TWO.len() as u64);
        assert_eq!(h.data_start(), 8 + TWO.len() as u64);
        assert_eq!(h.data_len, 11);
        let rows: Vec<(&str, String, Vec<u64>, u64, u64)> = h
            .tensors
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.dtype.to_string(),
                    t.shape.clone(),
                    t.begin,
                    t.end,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("a", "F32".to_string(), vec![2], 0, 8),
                ("b", "I8".to_string(), vec![3], 8, 11)
            ]
        );
        assert_eq!(h.metadata.len(), 2);
        assert_eq!(h.metadata["format"], "pt");
        assert_eq!(h.metadata["b.alias"], "a");
    }

    #[test]
    fn aliases_are_metadata_entries_naming_a_tensor_except_format_and_tensor_names() {
        let json = r#"{"__metadata__":{"format":"a","x":"a","a":"b","note":"not a tensor"},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
        let h = read(&file_bytes(json, 2)).unwrap();
        assert_eq!(h.aliases(), [("x", "a")]);
    }

    #[test]
    fn a_header_without_metadata_has_an_empty_map_and_no_aliases() {
        let json = r#"{"t":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}"#;
        let h = read(&file_bytes(json, 8)).unwrap();
        assert!(h.metadata.is_empty());
        assert!(h.aliases().is_empty());
        assert_eq!(h.tensors[0].shape, [2, 2]);
    }

    #[test]
    fn an_empty_header_holds_no_tensors() {
        let h = read(&file_bytes("{}", 0)).unwrap();
        assert!(h.tensors.is_empty());
        assert_eq!((h.json_len, h.data_len), (2, 0));
    }

    #[test]
    fn the_header_reader_does_not_require_the_data_to_be_present() {
        // Callers (inspect, verify) compare the file length with data_start + data_len.
        let h = read(&file_bytes(TWO, 0)).unwrap();
        assert_eq!(h.data_len, 11);
    }

    #[test]
    fn a_file_shorter_than_the_length_prefix_is_refused() {
        assert_eq!(
            read_err(&[1, 0, 0, 0, 0]),
            "invalid safetensors header: the file has 5 bytes, fewer than the 8-byte header length"
        );
    }

    #[test]
    fn a_header_length_past_the_readers_limit_is_refused_before_reading() {
        let mut b = (MAX_HEADER as u64 + 1).to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        assert_eq!(
            read_err(&b),
            "invalid safetensors header: a header of 100000001 bytes, more than the 100000000 readers accept"
        );
    }

    #[test]
    fn a_header_longer_than_the_file_is_truncated() {
        let mut b = file_bytes(TWO, 11);
        b.truncate(8 + 10);
        assert_eq!(
            read_err(&b),
            format!(
                "invalid safetensors header: truncated: the header alone needs {} bytes, found 18",
                8 + TWO.len()
            )
        );
    }

    #[test]
    fn a_header_that_is_not_utf8_is_refused() {
        let mut b = 4u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{\xff}");
        b.push(b' ');
        assert_eq!(
            read_err(&b),
            "invalid safetensors header: not UTF-8 (invalid utf-8 sequence of 1 bytes from index 1)"
        );
    }

    #[test]
    fn a_header_that_is_not_json_is_refused() {
        assert_eq!(
            read_err(&file_bytes("{not json}", 0)),
            "invalid safetensors header: key must be a string at line 1 column 2"
        );
    }

    #[test]
    fn a_tensor_whose_offsets_do_not_match_its_shape_is_refused() {
        let json = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,7]}}"#;
        // The safetensors crate's message does not name the tensor.
        assert_eq!(
            read_err(&file_bytes(json, 7)),
            "invalid safetensors header: invalid shape, data type, or offset for tensor"
        );
    }

    #[test]
    fn overlapping_tensor_offsets_are_refused() {
        let json = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
        assert_eq!(
            read_err(&file_bytes(json, 6)),
            "invalid safetensors header: invalid offset for tensor `b`"
        );
    }

    #[test]
    fn a_hole_between_tensor_offsets_is_refused() {
        let json = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}}"#;
        assert_eq!(
            read_err(&file_bytes(json, 10)),
            "invalid safetensors header: invalid offset for tensor `b`"
        );
    }

    #[test]
    fn an_unknown_dtype_is_refused() {
        let json = r#"{"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}"#;
        let e = read_err(&file_bytes(json, 4));
        assert!(
            e.starts_with("invalid safetensors header: unknown variant `F31`, expected one of "),
            "{e}"
        );
        assert!(e.ends_with(" at line 1 column 54"), "{e}");
    }

    #[test]
    fn a_safetensors_file_is_recognised_by_its_length_prefix_and_brace() {
        let b = file_bytes(TWO, 11);
        assert!(looks_like_safetensors(&b[..16], b.len() as u64));
        // The header may end exactly at the end of the file.
        assert!(looks_like_safetensors(&b, (8 + TWO.len()) as u64));
    }

    #[test]
    fn not_safetensors_when_too_short_not_a_brace_too_long_or_trivially_short() {
        let b = file_bytes(TWO, 11);
        assert!(!looks_like_safetensors(&b[..8], b.len() as u64), "8 bytes");
        assert!(
            !looks_like_safetensors(&b, (8 + TWO.len()) as u64 - 1),
            "header past the end"
        );
        let mut bracket = b.clone();
        bracket[8] = b'[';
        assert!(!looks_like_safetensors(&bracket, b.len() as u64), "not {{");
        let mut one = 1u64.to_le_bytes().to_vec();
        one.push(b'{');
        assert!(!looks_like_safetensors(&one, 9), "a 1-byte header");
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.push(b'{');
        assert!(
            !looks_like_safetensors(&huge, u64::MAX),
            "overflowing length"
        );
        // A zip or a pickle.
        assert!(!looks_like_safetensors(
            b"PK\x03\x04\x14\x00\x00\x00\x00",
            1000
        ));
        assert!(!looks_like_safetensors(b"\x80\x02}q\x00(X\x01\x00", 1000));
    }

    #[test]
    fn the_committed_golden_files_have_valid_headers_that_fill_the_file() {
        for name in ["aliases", "views_zip", "dtypes_zip"] {
            let path = format!("tests/fixtures/golden/{name}.safetensors");
            let f = File::open(&path).unwrap();
            let len = f.metadata().unwrap().len();
            let h = read_safetensors_header(&f, len).unwrap();
            assert_eq!(h.data_start() + h.data_len, len, "{path}");
            assert_eq!(
                h.metadata.get("format").map(String::as_str),
                Some("pt"),
                "{path}"
            );
            let mut end = 0;
            for t in &h.tensors {
                assert_eq!(t.begin, end, "{path}: {} is not contiguous", t.name);
                end = t.end;
            }
            assert_eq!(end, h.data_len, "{path}");
        }
    }
}
