//! The safetensors header, planned before any data is read: the same tensor order, offsets,
//! JSON and padding as the reference serializer, with `__metadata__` keys sorted.

use std::collections::BTreeMap;

use safetensors::Dtype;

use crate::error::ErrorKind;

/// Largest header safetensors readers accept.
pub const MAX_HEADER: usize = 100_000_000;

/// One tensor as the header declares it.
#[derive(Debug, Clone)]
pub struct HeaderEntry {
    /// Name.
    pub name: String,
    /// Dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Data bytes.
    pub nbytes: u64,
}

/// The planned file: header bytes (with the 8-byte length prefix) and each tensor's offset.
#[derive(Debug)]
pub struct HeaderPlan {
    /// `[u64 N][N bytes of JSON padded with spaces]`.
    pub bytes: Vec<u8>,
    /// Entries in file order, each with its `(begin, end)` relative to the data section.
    pub entries: Vec<(HeaderEntry, u64, u64)>,
    /// Total file size.
    pub total_len: u64,
}

/// Plans the header. Tensors are sorted as `safetensors::serialize` sorts them: dtype
/// descending (largest alignment first), then name.
pub fn plan_header(
    mut entries: Vec<HeaderEntry>,
    metadata: &BTreeMap<String, String>,
) -> Result<HeaderPlan, ErrorKind> {
    entries.sort_by(|l, r| r.dtype.cmp(&l.dtype).then_with(|| l.name.cmp(&r.name)));
    let mut json = String::from("{");
    let mut first = true;
    if !metadata.is_empty() {
        json.push_str("\"__metadata__\":");
        json.push_str(&to_json(metadata)?);
        first = false;
    }
    let mut offset = 0u64;
    let mut placed = Vec::with_capacity(entries.len());
    for e in entries {
        if e.name == "__metadata__" {
            return Err(ErrorKind::Unsupported(
                "a tensor is named \"__metadata__\", which safetensors reserves".into(),
            ));
        }
        let end = offset.checked_add(e.nbytes).ok_or_else(|| {
            ErrorKind::Unsupported("the output would be larger than 2^64 bytes".into())
        })?;
        if !first {
            json.push(',');
        }
        first = false;
        json.push_str(&to_json(&e.name)?);
        json.push_str(":{\"dtype\":");
        json.push_str(&to_json(&e.dtype)?);
        json.push_str(",\"shape\":");
        json.push_str(&to_json(&e.shape)?);
        json.push_str(&format!(",\"data_offsets\":[{offset},{end}]}}"));
        placed.push((e, offset, end));
        offset = end;
    }
    json.push('}');
    let padded = json.len().next_multiple_of(8);
    if padded > MAX_HEADER {
        return Err(ErrorKind::Unsupported(format!(
            "the safetensors header would be {padded} bytes, more than the {MAX_HEADER} readers accept"
        )));
    }
    let mut bytes = Vec::with_capacity(8 + padded);
    bytes.extend_from_slice(&(padded as u64).to_le_bytes());
    bytes.extend_from_slice(json.as_bytes());
    bytes.resize(8 + padded, b' ');
    // The reference parser must accept what we planned.
    serde_json::from_slice::<safetensors::tensor::Metadata>(&bytes[8..]).map_err(|e| {
        ErrorKind::Unsupported(format!(
            "internal: the planned header is not valid safetensors: {e}"
        ))
    })?;
    let total_len = (8 + padded as u64).checked_add(offset).ok_or_else(|| {
        ErrorKind::Unsupported("the output would be larger than 2^64 bytes".into())
    })?;
    Ok(HeaderPlan {
        bytes,
        entries: placed,
        total_len,
    })
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, ErrorKind> {
    serde_json::to_string(v)
        .map_err(|e| ErrorKind::Unsupported(format!("internal: cannot encode the header: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    struct Raw(Dtype, Vec<usize>, Vec<u8>);
    impl safetensors::View for &Raw {
        fn dtype(&self) -> Dtype {
            self.0
        }
        fn shape(&self) -> &[usize] {
            &self.1
        }
        fn data(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(&self.2)
        }
        fn data_len(&self) -> usize {
            self.2.len()
        }
    }

    #[test]
    fn header_matches_the_reference_serializer_byte_for_byte() {
        let tensors = [
            ("b".to_string(), Raw(Dtype::F32, vec![2], vec![0; 8])),
            ("a".to_string(), Raw(Dtype::BF16, vec![3, 1], vec![0; 6])),
            ("z".to_string(), Raw(Dtype::I64, vec![], vec![0; 8])),
            ("é\"q".to_string(), Raw(Dtype::BOOL, vec![0, 4], vec![])),
            ("c".to_string(), Raw(Dtype::U8, vec![5], vec![0; 5])),
        ];
        let mut md = BTreeMap::new();
        md.insert("format".to_string(), "pt".to_string());
        let reference = safetensors::serialize(
            tensors.iter().map(|(n, r)| (n.clone(), r)),
            Some(md.clone().into_iter().collect()),
        )
        .unwrap();
        let plan = plan_header(
            tensors
                .iter()
                .map(|(n, r)| HeaderEntry {
                    name: n.clone(),
                    dtype: r.0,
                    shape: r.1.iter().map(|&d| d as u64).collect(),
                    nbytes: r.2.len() as u64,
                })
                .collect(),
            &md,
        )
        .unwrap();
        assert_eq!(&reference[..plan.bytes.len()], &plan.bytes[..]);
        assert_eq!(reference.len() as u64, plan.total_len);
    }

    #[test]
    fn a_tensor_named_metadata_is_refused() {
        let e = HeaderEntry {
            name: "__metadata__".into(),
            dtype: Dtype::U8,
            shape: vec![1],
            nbytes: 1,
        };
        assert!(plan_header(vec![e], &BTreeMap::new()).is_err());
    }
}
