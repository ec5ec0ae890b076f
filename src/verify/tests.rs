//! `verify` on the committed golden pairs and on outputs the test damages on purpose (always
//! temporary copies: the fixtures are never modified).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn ckpt(name: &str) -> PathBuf {
    repo(&format!("tests/fixtures/ckpt/{name}"))
}

fn golden_path(name: &str) -> PathBuf {
    repo(&format!("tests/fixtures/golden/{name}.safetensors"))
}

/// One tensor of a safetensors file to write.
#[derive(Clone)]
struct T {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    bytes: Vec<u8>,
}

/// A safetensors file as tensors (file order) and metadata.
#[derive(Clone)]
struct St {
    tensors: Vec<T>,
    metadata: BTreeMap<String, String>,
}

impl St {
    fn read(path: &Path) -> St {
        let f = File::open(path).unwrap();
        let len = f.metadata().unwrap().len();
        let h = read_safetensors_header(&f, len).unwrap();
        let all = std::fs::read(path).unwrap();
        let start = h.data_start() as usize;
        St {
            tensors: h
                .tensors
                .iter()
                .map(|t| T {
                    name: t.name.clone(),
                    dtype: t.dtype.to_string(),
                    shape: t.shape.clone(),
                    bytes: all[start + t.begin as usize..start + t.end as usize].to_vec(),
                })
                .collect(),
            metadata: h.metadata.clone(),
        }
    }

    fn tensor(&mut self, name: &str) -> &mut T {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// Writes the file with contiguous offsets in the order of `tensors`.
    fn write(&self, path: &Path) {
        let mut header = serde_json::Map::new();
        if !self.metadata.is_empty() {
            header.insert(
                "__metadata__".into(),
                serde_json::to_value(&self.metadata).unwrap(),
            );
        }
        let mut data = Vec::new();
        for t in &self.tensors {
            let begin = data.len();
            data.extend_from_slice(&t.bytes);
            header.insert(
                t.name.clone(),
                serde_json::json!({
                    "dtype": t.dtype,
                    "shape": t.shape,
                    "data_offsets": [begin, data.len()],
                }),
            );
        }
        let json = serde_json::to_vec(&header).unwrap();
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        out.extend_from_slice(&data);
        std::fs::write(path, out).unwrap();
    }
}

/// The golden of `aliases.pt`, to damage: F32 `layers.0.w` [4, 3], `layers.0.w_t` [3, 4],
/// `layers.0.w_tail` [3, 3], `tok_embeddings.weight` [5, 3], I8 `a_same_object` [3], and five
/// aliases in `__metadata__`.
fn aliases_golden() -> St {
    St::read(&golden_path("aliases"))
}

fn verify_against(source: &str, st: &St) -> VerifyReport {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    st.write(&out);
    verify(&ckpt(source), &out, &VerifyOptions::default(), &|_| {}).unwrap()
}

fn diffs(r: &VerifyReport) -> Vec<(String, DiffKind, String)> {
    r.differences
        .iter()
        .map(|d| (d.tensor.clone(), d.kind, d.detail.clone()))
        .collect()
}

fn diff(tensor: &str, kind: DiffKind, detail: &str) -> (String, DiffKind, String) {
    (tensor.to_string(), kind, detail.to_string())
}

#[test]
fn a_golden_pair_verifies_with_every_tensor_hashed_alike() {
    let src = ckpt("views_zip.pt");
    let out = golden_path("views_zip");
    let moved = AtomicU64::new(0);
    let r = verify(&src, &out, &VerifyOptions::default(), &|n| {
        moved.fetch_add(n, Ordering::Relaxed);
    })
    .unwrap();
    assert!(r.ok, "{:?}", r.differences);
    assert_eq!(r.schema, "safetensorize.verify/1");
    assert_eq!(r.source, src.display().to_string());
    assert_eq!(r.output, out.display().to_string());
    assert_eq!(r.key, "");
    assert_eq!(r.difference_count, 0);
    assert!(r.differences.is_empty());
    let golden = St::read(&out);
    assert_eq!(r.tensors, golden.tensors.len());
    assert_eq!(r.aliases, 0);
    let total: u64 = golden.tensors.iter().map(|t| t.bytes.len() as u64).sum();
    assert_eq!(r.bytes, total);
    assert_eq!(
        moved.load(Ordering::Relaxed),
        total,
        "progress reports every byte"
    );
    assert_eq!(r.checked.len(), golden.tensors.len());
    for c in &r.checked {
        assert_eq!(c.source_xxh3, c.output_xxh3, "{}", c.name);
        assert_eq!(c.source_xxh3.len(), 16);
        let g = golden.tensors.iter().find(|t| t.name == c.name).unwrap();
        assert_eq!(c.bytes, g.bytes.len() as u64);
        assert_eq!(
            c.output_xxh3,
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&g.bytes)),
            "{}",
            c.name
        );
    }
}

#[test]
fn aliases_recorded_in_the_metadata_are_accounted_for_without_their_own_bytes() {
    let r = verify(
        &ckpt("aliases.pt"),
        &golden_path("aliases"),
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert!(r.ok, "{:?}", r.differences);
    // 5 written tensors + 5 aliases.
    assert_eq!(r.tensors, 10);
    assert_eq!(r.aliases, 5);
    assert_eq!(r.checked.len(), 5);
}

#[test]
fn the_default_selection_and_an_explicit_key_are_verified_as_convert_made_them() {
    let r = verify(
        &ckpt("sel_state_dict.pt"),
        &golden_path("sel_state_dict"),
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert!(r.ok, "{:?}", r.differences);
    assert_eq!(r.key, "state_dict");
    let opts = VerifyOptions {
        key: Some("model".into()),
        ..VerifyOptions::default()
    };
    let r = verify(
        &ckpt("sel_key_model.pt"),
        &golden_path("sel_key_model"),
        &opts,
        &|_| {},
    )
    .unwrap();
    assert!(r.ok, "{:?}", r.differences);
    assert_eq!(r.key, "model");
    // Without the key, the default rule picks another subtree: the output does not match.
    let r = verify(
        &ckpt("sel_key_model.pt"),
        &golden_path("sel_key_model"),
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert!(!r.ok);
    assert_eq!(r.key, "state_dict");
}

#[test]
fn a_flipped_byte_is_a_bytes_difference_naming_the_tensor_the_byte_and_both_elements() {
    let mut st = aliases_golden();
    let t = st.tensor("tok_embeddings.weight");
    let original = t.bytes.clone();
    t.bytes[22] ^= 0x01;
    let flipped = t.bytes.clone();
    let r = verify_against("aliases.pt", &st);
    assert!(!r.ok);
    assert_eq!(r.difference_count, 1);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        diffs(&r),
        [diff(
            "tok_embeddings.weight",
            DiffKind::Bytes,
            &format!(
                "1 of 60 bytes differ; first at byte 22 (element 5): source {}, output {}",
                hex(&original[20..24]),
                hex(&flipped[20..24])
            )
        )]
    );
    let c = r
        .checked
        .iter()
        .find(|c| c.name == "tok_embeddings.weight")
        .unwrap();
    assert_ne!(c.source_xxh3, c.output_xxh3);
    assert_eq!(
        c.source_xxh3,
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&original))
    );
    // Every other tensor still matches.
    assert!(
        r.checked
            .iter()
            .filter(|c| c.name != "tok_embeddings.weight")
            .all(|c| c.source_xxh3 == c.output_xxh3)
    );
}

#[test]
fn every_differing_byte_is_counted_but_the_first_is_reported() {
    let mut st = aliases_golden();
    let t = st.tensor("layers.0.w");
    for b in &mut t.bytes[8..16] {
        *b ^= 0xFF;
    }
    let r = verify_against("aliases.pt", &st);
    let d = &r.differences[0];
    assert_eq!(d.tensor, "layers.0.w");
    assert!(
        d.detail
            .starts_with("8 of 48 bytes differ; first at byte 8 (element 2): source "),
        "{}",
        d.detail
    );
}

#[test]
fn a_tensor_absent_from_the_output_is_missing() {
    let mut st = aliases_golden();
    st.tensors.retain(|t| t.name != "layers.0.w_tail");
    let r = verify_against("aliases.pt", &st);
    assert!(!r.ok);
    assert_eq!(
        diffs(&r),
        [diff(
            "layers.0.w_tail",
            DiffKind::Missing,
            "float32 [3, 3] in the source, absent from the output"
        )]
    );
}

#[test]
fn a_tensor_the_source_does_not_hold_is_extra() {
    let mut st = aliases_golden();
    st.tensors.push(T {
        name: "bogus".into(),
        dtype: "U8".into(),
        shape: vec![2],
        bytes: vec![1, 2],
    });
    let r = verify_against("aliases.pt", &st);
    assert_eq!(
        diffs(&r),
        [diff(
            "bogus",
            DiffKind::Extra,
            "U8 [2] in the output, not in the source"
        )]
    );
}

#[test]
fn an_alias_the_source_does_not_hold_is_extra() {
    let mut st = aliases_golden();
    st.metadata.insert("ghost".into(), "layers.0.w".into());
    let r = verify_against("aliases.pt", &st);
    assert_eq!(
        diffs(&r),
        [diff(
            "ghost",
            DiffKind::Extra,
            "recorded as an alias of \"layers.0.w\" in the output, not in the source"
        )]
    );
}

#[test]
fn a_different_dtype_is_reported_and_its_bytes_are_not_compared() {
    let mut st = aliases_golden();
    st.tensor("layers.0.w").dtype = "I32".into();
    let r = verify_against("aliases.pt", &st);
    assert_eq!(
        diffs(&r),
        // Its alias `layers.0.w_view` is the same view: it differs the same way.
        [
            diff(
                "layers.0.w",
                DiffKind::Dtype,
                "source float32 (F32), output I32"
            ),
            diff(
                "layers.0.w_view",
                DiffKind::Dtype,
                "source float32 (F32), output I32"
            )
        ]
    );
    assert!(r.checked.iter().all(|c| c.name != "layers.0.w"));
}

#[test]
fn a_different_shape_is_reported_and_its_bytes_are_not_compared() {
    let mut st = aliases_golden();
    st.tensor("layers.0.w").shape = vec![3, 4];
    let r = verify_against("aliases.pt", &st);
    assert_eq!(
        diffs(&r),
        [
            diff(
                "layers.0.w",
                DiffKind::Shape,
                "source [4, 3], output [3, 4]"
            ),
            diff(
                "layers.0.w_view",
                DiffKind::Shape,
                "source [4, 3], output [3, 4]"
            )
        ]
    );
    assert_eq!(r.checked.len(), 4);
    assert_eq!(r.bytes, 60 + 48 + 36 + 3);
}

#[test]
fn an_alias_naming_a_tensor_the_output_lacks_is_an_alias_difference() {
    let mut st = aliases_golden();
    st.metadata
        .insert("output.weight".into(), "no.such.tensor".into());
    let r = verify_against("aliases.pt", &st);
    assert_eq!(
        diffs(&r),
        [diff(
            "output.weight",
            DiffKind::Alias,
            "recorded as an alias of \"no.such.tensor\", which the output does not hold"
        )]
    );
}

#[test]
fn an_alias_of_a_different_source_tensor_is_an_alias_difference() {
    let mut st = aliases_golden();
    st.metadata
        .insert("output.weight".into(), "layers.0.w".into());
    let r = verify_against("aliases.pt", &st);
    assert_eq!(
        diffs(&r),
        [diff(
            "output.weight",
            DiffKind::Alias,
            "recorded as an alias of \"layers.0.w\", but in the source they are different tensors"
        )]
    );
}

#[test]
fn differences_come_in_source_order_then_extras_and_the_count_stays_exact() {
    let mut st = aliases_golden();
    st.tensors.retain(|t| t.name != "a_same_object");
    st.tensor("layers.0.w_t").shape = vec![12];
    st.tensor("layers.0.w").dtype = "I32".into();
    st.tensors.push(T {
        name: "bogus".into(),
        dtype: "U8".into(),
        shape: vec![1],
        bytes: vec![0],
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    st.write(&out);
    let r = verify(
        &ckpt("aliases.pt"),
        &out,
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap();
    let order: Vec<(&str, DiffKind)> = r
        .differences
        .iter()
        .map(|d| (d.tensor.as_str(), d.kind))
        .collect();
    // The source's order: layers.0.w, layers.0.w_t, ..., a_same_object; the aliases of
    // a_same_object are then aliases of a tensor the output lacks.
    assert_eq!(r.difference_count, order.len());
    assert_eq!(order[0], ("layers.0.w", DiffKind::Dtype));
    assert_eq!(order[1], ("layers.0.w_t", DiffKind::Shape));
    assert_eq!(*order.last().unwrap(), ("bogus", DiffKind::Extra));
    assert!(order.contains(&("a_same_object", DiffKind::Missing)));
    let limited = verify(
        &ckpt("aliases.pt"),
        &out,
        &VerifyOptions {
            max_differences: 2,
            ..VerifyOptions::default()
        },
        &|_| {},
    )
    .unwrap();
    assert_eq!(limited.difference_count, r.difference_count);
    assert_eq!(limited.differences.len(), 2);
    assert_eq!(limited.differences[1].tensor, "layers.0.w_t");
}

#[test]
fn a_truncated_output_is_refused_before_any_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let mut bytes = std::fs::read(golden_path("aliases")).unwrap();
    let full = bytes.len();
    bytes.truncate(full - 1);
    std::fs::write(&out, &bytes).unwrap();
    let e = verify(
        &ckpt("aliases.pt"),
        &out,
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert_eq!(e.path, out);
    assert_eq!(
        e.kind.to_string(),
        format!(
            "the safetensors file is truncated: its header needs {full} bytes, found {}",
            full - 1
        )
    );
}

#[test]
fn an_output_longer_than_its_header_says_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let mut bytes = std::fs::read(golden_path("aliases")).unwrap();
    let full = bytes.len();
    bytes.push(0);
    std::fs::write(&out, &bytes).unwrap();
    let e = verify(
        &ckpt("aliases.pt"),
        &out,
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert_eq!(
        e.kind.to_string(),
        format!(
            "the safetensors file is longer than its header says: its header needs {full} bytes, found {}",
            full + 1
        )
    );
}

#[test]
fn a_directory_as_output_is_not_a_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = verify(
        &ckpt("aliases.pt"),
        dir.path(),
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NotACheckpoint(_)), "{e:?}");
    assert_eq!(
        e.kind.to_string(),
        "not a PyTorch checkpoint: this is a directory; verify takes the safetensors file convert wrote"
    );
}

#[test]
fn a_source_that_is_not_a_checkpoint_fails_naming_the_source() {
    let src = ckpt("mal_text.pt");
    let e = verify(
        &src,
        &golden_path("aliases"),
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert_eq!(e.path, src);
    assert!(matches!(e.kind, ErrorKind::NotACheckpoint(_)), "{e:?}");
}

#[test]
fn an_output_that_is_not_safetensors_fails_naming_the_output() {
    let out = ckpt("aliases.pt");
    let e = verify(
        &ckpt("aliases.pt"),
        &out,
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert_eq!(e.path, out);
    assert!(
        e.kind
            .to_string()
            .starts_with("invalid safetensors header: "),
        "{e}"
    );
}

#[test]
fn difference_kinds_have_stable_lowercase_names() {
    let all = [
        (DiffKind::Missing, "missing"),
        (DiffKind::Extra, "extra"),
        (DiffKind::Dtype, "dtype"),
        (DiffKind::Shape, "shape"),
        (DiffKind::Bytes, "bytes"),
        (DiffKind::Alias, "alias"),
    ];
    for (k, name) in all {
        assert_eq!(k.as_str(), name);
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{name}\""));
    }
}

#[test]
fn the_default_options_compare_everything_with_twenty_differences_kept() {
    let o = VerifyOptions::default();
    assert_eq!(o.key, None);
    assert!(!o.include_numpy);
    assert_eq!(o.threads, 0);
    assert_eq!(o.max_differences, 20);
}

#[test]
fn numpy_arrays_are_compared_only_when_asked() {
    let with = VerifyOptions {
        include_numpy: true,
        ..VerifyOptions::default()
    };
    let r = verify(
        &ckpt("numpy_arrays.pt"),
        &golden_path("numpy_arrays"),
        &with,
        &|_| {},
    )
    .unwrap();
    assert!(r.ok, "{:?}", r.differences);
    let r = verify(
        &ckpt("numpy_arrays.pt"),
        &golden_path("numpy_skipped"),
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert!(r.ok, "{:?}", r.differences);
    let r = verify(
        &ckpt("numpy_arrays.pt"),
        &golden_path("numpy_arrays"),
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert!(!r.ok);
    assert!(r.differences.iter().all(|d| d.kind == DiffKind::Extra));
}

#[test]
fn one_worker_thread_gives_the_same_report_as_many() {
    let one = VerifyOptions {
        threads: 1,
        ..VerifyOptions::default()
    };
    let a = verify(
        &ckpt("many_tensors.pt"),
        &golden_path("many_tensors"),
        &one,
        &|_| {},
    )
    .unwrap();
    let b = verify(
        &ckpt("many_tensors.pt"),
        &golden_path("many_tensors"),
        &VerifyOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert!(a.ok && b.ok);
    assert_eq!(a.tensors, 300);
    let hashes = |r: &VerifyReport| -> Vec<(String, String, String)> {
        r.checked
            .iter()
            .map(|c| (c.name.clone(), c.source_xxh3.clone(), c.output_xxh3.clone()))
            .collect()
    };
    // Checked tensors come in source order whatever the scheduling.
    assert_eq!(hashes(&a), hashes(&b));
}
