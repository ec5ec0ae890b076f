//! The safetensors header, planned before any data is read: the same tensor order, offsets,
//! JSON and padding as the reference serializer, with `__metadata__` keys sorted.

use std::borrow::Cow;
use std::collections::BTreeMap;

use safetensors::Dtype;

use crate::error::ErrorKind;

/// Largest header safetensors readers accept.
pub const MAX_HEADER: usize = 100_000_000;

/// One tensor as the header declares it. Name and shape are usually borrowed from the
/// selection (no copy per tensor).
#[derive(Debug, Clone)]
pub struct HeaderEntry<'a> {
    /// Name.
    pub name: Cow<'a, str>,
    /// Dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Cow<'a, [u64]>,
    /// Data bytes.
    pub nbytes: u64,
}

/// The planned file: header bytes (with the 8-byte length prefix) and each tensor's offset.
#[derive(Debug)]
pub struct HeaderPlan {
    /// `[u64 N][N bytes of JSON padded with spaces]`.
    pub bytes: Vec<u8>,
    /// In file order, each entry's position in the list given to [`plan_header`].
    pub order: Vec<usize>,
    /// In file order, each entry's `(begin, end)` relative to the data section.
    pub offsets: Vec<(u64, u64)>,
    /// Total file size.
    pub total_len: u64,
}

/// Plans the header. Tensors are sorted as `safetensors::serialize` sorts them: dtype
/// descending (largest alignment first), then name.
///
/// The JSON is written straight into the returned buffer (no string per entry; a large
/// header's second half on another thread); it is the reference serializer's, byte for byte
/// (see the tests).
pub fn plan_header(
    entries: Vec<HeaderEntry<'_>>,
    metadata: &BTreeMap<String, String>,
) -> Result<HeaderPlan, ErrorKind> {
    let entries = sorted(entries);
    // Offsets first (a running sum in file order), then the JSON.
    let mut offset = 0u64;
    let mut order = Vec::with_capacity(entries.len());
    let mut offsets = Vec::with_capacity(entries.len());
    for (i, e) in &entries {
        if e.name == "__metadata__" {
            return Err(ErrorKind::Unsupported(
                "a tensor is named \"__metadata__\", which safetensors reserves".into(),
            ));
        }
        let end = offset.checked_add(e.nbytes).ok_or_else(|| {
            ErrorKind::Unsupported("the output would be larger than 2^64 bytes".into())
        })?;
        order.push(*i);
        offsets.push((offset, end));
        offset = end;
    }
    // About 70 bytes of JSON per tensor besides its name.
    let guess = |part: &[(usize, HeaderEntry<'_>)]| {
        part.iter()
            .map(|(_, e)| e.name.len() + 64 + 4 * e.shape.len())
            .sum::<usize>()
            .saturating_add(64)
            .min(MAX_HEADER + 16)
    };
    // A large header's second half is written on another thread (the JSON of 100,000 entries
    // is about 5% of such a conversion, all of it on the critical path); the halves are joined
    // byte for byte as one pass would have written them.
    let split = if entries.len() >= PARALLEL_ENTRIES {
        entries.len() / 2
    } else {
        entries.len()
    };
    let (head, tail) = (&entries[..split], &entries[split..]);
    let (head_at, tail_at) = offsets.split_at(split);
    let mut bytes = Vec::with_capacity(8 + guess(head) + guess(tail));
    // The length prefix, filled in at the end.
    bytes.extend_from_slice(&[0; 8]);
    bytes.push(b'{');
    let mut first = true;
    if !metadata.is_empty() {
        bytes.extend_from_slice(b"\"__metadata__\":");
        to_json(&mut bytes, metadata)?;
        first = false;
    }
    if tail.is_empty() {
        entries_json(&mut bytes, head, head_at, first)?;
    } else {
        let mut tail_json = Vec::with_capacity(guess(tail));
        std::thread::scope(|s| {
            let other = s.spawn(|| entries_json(&mut tail_json, tail, tail_at, false));
            let mine = entries_json(&mut bytes, head, head_at, first);
            let theirs = other.join().unwrap_or_else(|_| {
                Err(ErrorKind::Unsupported(
                    "internal: the header writer's thread stopped".into(),
                ))
            });
            mine.and(theirs)
        })?;
        bytes.extend_from_slice(&tail_json);
    }
    bytes.push(b'}');
    let padded = (bytes.len() - 8).next_multiple_of(8);
    if padded > MAX_HEADER {
        return Err(ErrorKind::Unsupported(format!(
            "the safetensors header would be {padded} bytes, more than the {MAX_HEADER} readers accept"
        )));
    }
    bytes[..8].copy_from_slice(&(padded as u64).to_le_bytes());
    bytes.resize(8 + padded, b' ');
    // The reference parser must accept what we planned. The tests (debug builds) check every
    // header they plan; release builds trust the one-pass writer, which is compared with
    // `safetensors::serialize` byte for byte.
    #[cfg(debug_assertions)]
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
        order,
        offsets,
        total_len,
    })
}

/// Headers of at least this many entries are written in two halves on two threads.
const PARALLEL_ENTRIES: usize = 16_384;

/// Appends the JSON of `entries` (sorted) at their `offsets`, each after a comma but the first
/// when `first`. Stops early once `out` is past what readers accept (the caller refuses it).
fn entries_json(
    out: &mut Vec<u8>,
    entries: &[(usize, HeaderEntry<'_>)],
    offsets: &[(u64, u64)],
    mut first: bool,
) -> Result<(), ErrorKind> {
    // The entries are sorted by dtype: its JSON is encoded once per run of one dtype.
    let mut dtype_json: Option<(Dtype, Vec<u8>)> = None;
    for ((_, e), &(begin, end)) in entries.iter().zip(offsets) {
        if !first {
            out.push(b',');
        }
        first = false;
        push_str(out, &e.name)?;
        out.extend_from_slice(b":{\"dtype\":");
        match &dtype_json {
            Some((d, json)) if *d == e.dtype => out.extend_from_slice(json),
            _ => {
                let mut json = Vec::new();
                to_json(&mut json, &e.dtype)?;
                out.extend_from_slice(&json);
                dtype_json = Some((e.dtype, json));
            }
        }
        out.extend_from_slice(b",\"shape\":[");
        for (i, &d) in e.shape.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_u64(out, d);
        }
        out.extend_from_slice(b"],\"data_offsets\":[");
        push_u64(out, begin);
        out.push(b',');
        push_u64(out, end);
        out.extend_from_slice(b"]}");
        if out.len() > 8 + MAX_HEADER {
            // Stop early: the caller refuses it anyway.
            break;
        }
    }
    Ok(())
}

/// `entries` in `safetensors::serialize`'s order, stably, each with its input position.
/// Sorting the entries themselves measured fastest at 100,000 entries: sorting bare indices
/// (two pointers chased per comparison) took 2.5 times as long, sorting (dtype, name, index)
/// keys 1.2 times; the unstable sort 1.7 times (a checkpoint's order is often nearly sorted,
/// which the stable sort's runs take advantage of).
fn sorted(entries: Vec<HeaderEntry<'_>>) -> Vec<(usize, HeaderEntry<'_>)> {
    let mut entries: Vec<(usize, HeaderEntry)> = entries.into_iter().enumerate().collect();
    entries.sort_by(|(_, l), (_, r)| r.dtype.cmp(&l.dtype).then_with(|| l.name.cmp(&r.name)));
    entries
}

/// Appends `s` as a JSON string; names that need no escape (the usual case) are copied as is.
fn push_str(out: &mut Vec<u8>, s: &str) -> Result<(), ErrorKind> {
    // serde_json escapes exactly the control characters, the quote and the backslash.
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        return to_json(out, s);
    }
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

fn to_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), ErrorKind> {
    serde_json::to_writer(out, v)
        .map_err(|e| ErrorKind::Unsupported(format!("internal: cannot encode the header: {e}")))
}

/// Appends `n` in decimal, as serde_json writes integers (with the crate it uses for them).
fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let plan = plan_of(&tensors, &md);
        assert_eq!(&reference[..plan.bytes.len()], &plan.bytes[..]);
        assert_eq!(reference.len() as u64, plan.total_len);
        // Each placed entry says where it was in the input: b a z é"q c -> z b a c é"q.
        assert_eq!(plan.order, [2, 0, 1, 4, 3]);
        assert_eq!(
            plan.offsets,
            [(0, 8), (8, 16), (16, 22), (22, 27), (27, 27)]
        );
    }

    /// A header large enough to be written in two halves is the reference's, byte for byte,
    /// with the halves meeting inside a run of one dtype and between two dtypes, with and
    /// without metadata.
    #[test]
    fn a_header_written_in_two_halves_matches_the_reference() {
        for (n, dtypes, with_md) in [
            (PARALLEL_ENTRIES, &[Dtype::F32][..], true),
            (PARALLEL_ENTRIES + 1, &[Dtype::F16, Dtype::F32][..], false),
            (
                3 * PARALLEL_ENTRIES / 2 + 7,
                &[Dtype::I64, Dtype::BF16, Dtype::U8][..],
                true,
            ),
        ] {
            let tensors: Vec<(String, Raw)> = (0..n)
                .map(|i| {
                    let dtype = dtypes[i % dtypes.len()];
                    let size = dtype.bitsize() / 8;
                    let shape = vec![1 + i % 3, 2];
                    let len = shape.iter().product::<usize>() * size;
                    (
                        format!("layer.{i}.w\"{}", i % 7),
                        Raw(dtype, shape, vec![0; len]),
                    )
                })
                .collect();
            let mut md = BTreeMap::new();
            if with_md {
                md.insert("format".to_string(), "pt".to_string());
            }
            let reference = reference(&tensors, &md);
            let plan = plan_of(&tensors, &md);
            assert!(plan.order.len() >= PARALLEL_ENTRIES);
            assert_eq!(
                &reference[..plan.bytes.len()],
                &plan.bytes[..],
                "{n} entries"
            );
            assert_eq!(reference.len() as u64, plan.total_len, "{n} entries");
        }
    }

    fn plan_of(tensors: &[(String, Raw)], md: &BTreeMap<String, String>) -> HeaderPlan {
        plan_header(
            tensors
                .iter()
                .map(|(n, r)| HeaderEntry {
                    name: n.as_str().into(),
                    dtype: r.0,
                    shape: r.1.iter().map(|&d| d as u64).collect::<Vec<_>>().into(),
                    nbytes: r.2.len() as u64,
                })
                .collect(),
            md,
        )
        .unwrap()
    }

    fn reference(tensors: &[(String, Raw)], md: &BTreeMap<String, String>) -> Vec<u8> {
        let md = (!md.is_empty()).then(|| md.clone().into_iter().collect());
        safetensors::serialize(tensors.iter().map(|(n, r)| (n.clone(), r)), md).unwrap()
    }

    #[test]
    fn awkward_names_and_shapes_match_the_reference_and_parse() {
        let names = [
            "",
            "\"",
            "\\",
            "a\"b\\c",
            "\\\"",
            "\u{0}",
            "nl\nq\rt\tb\u{8}f\u{c}",
            "\u{1}\u{1f}\u{7f}",
            "é",
            "名前.重み",
            "🦀.weight",
            "\u{2028}\u{2029}",
            "/",
            "</script>",
            " ",
            "x".repeat(300).leak(),
        ];
        let dtypes = [
            Dtype::BOOL,
            Dtype::U8,
            Dtype::I8,
            Dtype::I16,
            Dtype::U16,
            Dtype::F16,
            Dtype::BF16,
            Dtype::I32,
            Dtype::U32,
            Dtype::F32,
            Dtype::F64,
            Dtype::I64,
            Dtype::U64,
        ];
        let mut tensors = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let dtype = dtypes[i % dtypes.len()];
            let size = dtype.bitsize() / 8;
            let (shape, len) = match i % 4 {
                0 => (vec![], size),
                1 => (vec![0], 0),
                2 => (vec![3, 0, 2], 0),
                _ => (vec![2, 1, 3], 6 * size),
            };
            tensors.push((n.to_string(), Raw(dtype, shape, vec![7; len])));
        }
        for md in [
            BTreeMap::new(),
            // One key: the reference serializer keeps metadata in a hash map, whose order is
            // not ours (sorted), so several keys are checked by parsing below.
            BTreeMap::from([("k\"\\\n\u{1}".to_string(), "v\u{0}é🦀".to_string())]),
        ] {
            let plan = plan_of(&tensors, &md);
            let reference = reference(&tensors, &md);
            assert_eq!(
                String::from_utf8_lossy(&reference[..plan.bytes.len()]),
                String::from_utf8_lossy(&plan.bytes)
            );
            assert_eq!(&reference[..plan.bytes.len()], &plan.bytes[..]);
            assert_eq!(reference.len() as u64, plan.total_len);
            // The reference reader accepts it and sees every name, shape and offset.
            let st = safetensors::SafeTensors::deserialize(&reference).unwrap();
            for (n, r) in &tensors {
                let v = st.tensor(n).unwrap();
                assert_eq!(v.shape(), &r.1[..]);
                assert_eq!(v.dtype(), r.0);
            }
            let (n, parsed) = safetensors::SafeTensors::read_metadata(&reference).unwrap();
            assert_eq!(n + 8, plan.bytes.len());
            assert_eq!(parsed.tensors().len(), tensors.len());
            assert_eq!(plan.order.len(), tensors.len());
            for (&i, (begin, end)) in plan.order.iter().zip(&plan.offsets) {
                let info = parsed.info(&tensors[i].0).unwrap();
                assert_eq!(info.data_offsets, (*begin as usize, *end as usize));
            }
        }
    }

    #[test]
    fn metadata_keys_are_sorted_and_read_back() {
        let md = BTreeMap::from([
            ("format".to_string(), "pt".to_string()),
            ("k\"\\\n".to_string(), "v\u{0}é🦀".to_string()),
            (String::new(), String::new()),
        ]);
        let tensors = [("w".to_string(), Raw(Dtype::F32, vec![1], vec![0; 4]))];
        let plan = plan_of(&tensors, &md);
        let json = std::str::from_utf8(&plan.bytes[8..]).unwrap();
        assert!(
            json.starts_with(
                "{\"__metadata__\":{\"\":\"\",\"format\":\"pt\",\"k\\\"\\\\\\n\":\"v\\u0000é🦀\"},"
            ),
            "{json}"
        );
        let mut file = plan.bytes.clone();
        file.extend_from_slice(&[0; 4]);
        let (_, parsed) = safetensors::SafeTensors::read_metadata(&file).unwrap();
        let back: BTreeMap<String, String> =
            parsed.metadata().clone().unwrap().into_iter().collect();
        assert_eq!(back, md);
    }

    #[test]
    fn no_tensors_and_only_metadata() {
        let md = BTreeMap::from([("a".to_string(), "b".to_string())]);
        for md in [BTreeMap::new(), md] {
            let plan = plan_of(&[], &md);
            assert_eq!(&reference(&[], &md)[..], &plan.bytes[..]);
        }
    }

    #[test]
    fn integers_are_written_as_serde_json_writes_them() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn large_shapes_and_offsets_are_spelled_in_full() {
        let e = |name: &'static str, nbytes| HeaderEntry {
            name: name.into(),
            dtype: Dtype::U8,
            shape: vec![nbytes, 1].into(),
            nbytes,
        };
        let big = 1u64 << 40;
        let plan = plan_header(vec![e("a", big), e("b", big + 3)], &BTreeMap::new()).unwrap();
        let json = std::str::from_utf8(&plan.bytes[8..]).unwrap().trim_end();
        assert_eq!(
            json,
            format!(
                "{{\"a\":{{\"dtype\":\"U8\",\"shape\":[{big},1],\"data_offsets\":[0,{big}]}},\
                 \"b\":{{\"dtype\":\"U8\",\"shape\":[{},1],\"data_offsets\":[{big},{}]}}}}",
                big + 3,
                2 * big + 3
            )
        );
        assert_eq!(plan.total_len, plan.bytes.len() as u64 + 2 * big + 3);
        assert_eq!(plan.bytes.len() % 8, 0);
    }

    #[test]
    fn an_output_past_two_to_the_64_is_refused() {
        let e = |name: &'static str| HeaderEntry {
            name: name.into(),
            dtype: Dtype::U8,
            shape: vec![u64::MAX].into(),
            nbytes: u64::MAX,
        };
        assert!(plan_header(vec![e("a"), e("b")], &BTreeMap::new()).is_err());
        assert!(plan_header(vec![e("a")], &BTreeMap::new()).is_err());
    }

    #[test]
    fn a_tensor_named_metadata_is_refused() {
        let e = HeaderEntry {
            name: "__metadata__".into(),
            dtype: Dtype::U8,
            shape: vec![1].into(),
            nbytes: 1,
        };
        assert!(plan_header(vec![e], &BTreeMap::new()).is_err());
    }
}
