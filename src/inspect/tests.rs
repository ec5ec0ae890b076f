//! What `inspect` reports, on the committed fixtures: checkpoints of every container, a
//! safetensors file, and files that are neither. Where a golden file exists, the report is
//! checked against it (names, dtypes, shapes, aliases), not against itself.

use std::path::PathBuf;

use super::*;
use crate::writer::read_safetensors_header;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn inspect_default(rel: &str) -> Inspection {
    inspect(&fixture(rel), &InspectOptions::default()).unwrap()
}

fn row<'a>(i: &'a Inspection, name: &str) -> &'a TensorRow {
    i.tensors
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no row {name} in {:?}", names(i)))
}

fn names(i: &Inspection) -> Vec<&str> {
    i.tensors.iter().map(|t| t.name.as_str()).collect()
}

/// (aliases, kept) of a golden file's `__metadata__`, sorted.
fn golden_aliases(name: &str) -> Vec<(String, String)> {
    let f = File::open(fixture(&format!("golden/{name}.safetensors"))).unwrap();
    let len = f.metadata().unwrap().len();
    let h = read_safetensors_header(&f, len).unwrap();
    let mut a: Vec<(String, String)> = h
        .aliases()
        .into_iter()
        .map(|(a, k)| (a.to_string(), k.to_string()))
        .collect();
    a.sort();
    a
}

#[test]
fn a_zip_checkpoint_reports_its_format_root_protocol_records_and_globals() {
    let i = inspect_default("ckpt/aliases.pt");
    assert_eq!(i.schema, "safetensorize.inspect/1");
    assert_eq!(i.format, Kind::Zip);
    assert_eq!(i.era, "torch.save zip archive (torch >= 1.6)");
    assert_eq!(i.zip_root.as_deref(), Some("aliases/"));
    assert_eq!(i.pickle_protocol, Some(2));
    assert_eq!(i.byte_order, Some("little"));
    assert_eq!(
        i.file_bytes,
        std::fs::metadata(fixture("ckpt/aliases.pt")).unwrap().len()
    );
    let records: Vec<(&str, &str)> = i
        .records
        .iter()
        .map(|r| (r.name.as_str(), r.value.as_str()))
        .collect();
    assert!(records.contains(&("byteorder", "little")), "{records:?}");
    assert!(records.contains(&("version", "3")), "{records:?}");
    assert_eq!(i.header_bytes, None);
    assert!(i.metadata.is_none());
    let rebuild = i
        .globals
        .iter()
        .find(|g| g.name == "torch._utils._rebuild_tensor_v2")
        .unwrap();
    assert_eq!(rebuild.class, GlobalClass::Interpreted);
    assert!(rebuild.count >= 1);
    assert!(i.globals.iter().all(|g| g.class != GlobalClass::Dangerous));
    assert!(i.warnings.is_empty(), "{:?}", i.warnings);
}

#[test]
fn exact_aliases_are_the_rows_convert_records_in_the_metadata() {
    let i = inspect_default("ckpt/aliases.pt");
    let mut aliases: Vec<(String, String)> = i
        .tensors
        .iter()
        .filter_map(|t| t.alias_of.clone().map(|k| (t.name.clone(), k)))
        .collect();
    aliases.sort();
    assert_eq!(aliases, golden_aliases("aliases"));
    assert_eq!(i.totals.tensors, 10);
    assert_eq!(i.totals.aliases, 5);
    assert_eq!(i.totals.written, 5);
    // The golden's data section: 48 + 48 + 36 + 60 + 3 bytes.
    assert_eq!(i.totals.bytes, 195);
    assert_eq!(i.totals.by_dtype["float32"].tensors, 4);
    assert_eq!(i.totals.by_dtype["float32"].bytes, 192);
    assert_eq!(i.totals.by_dtype["int8"].tensors, 1);
    let sel = i.selection.as_ref().unwrap();
    assert_eq!(
        (sel.key.as_str(), sel.tensors, sel.aliases, sel.bytes),
        ("", 5, 5, 195)
    );
    assert_eq!(sel.error, None);
    // An alias row has the kept tensor's dtype and shape.
    let out = row(&i, "output.weight");
    let kept = row(&i, "tok_embeddings.weight");
    assert_eq!(out.alias_of.as_deref(), Some("tok_embeddings.weight"));
    assert_eq!((&out.dtype, &out.shape), (&kept.dtype, &kept.shape));
    assert!(out.selected);
}

#[test]
fn tensor_rows_describe_storage_offset_stride_and_layout() {
    let i = inspect_default("ckpt/aliases.pt");
    let tail = row(&i, "layers.0.w_tail");
    assert_eq!(tail.dtype, "float32");
    assert_eq!(tail.safetensors_dtype.as_deref(), Some("F32"));
    assert_eq!(tail.shape, [3, 3]);
    assert_eq!(tail.bytes, 36);
    assert_eq!(tail.storage, row(&i, "layers.0.w").storage);
    assert_eq!(tail.offset, Some(3));
    assert_eq!(tail.stride.as_deref(), Some(&[3u64, 1][..]));
    assert_eq!(tail.layout, "contiguous");
    assert_eq!(tail.data_offsets, None);
    assert_eq!(tail.problem, None);
    let t = row(&i, "layers.0.w_t");
    assert_eq!(t.layout, "view");
    assert_eq!(t.stride.as_deref(), Some(&[1u64, 3][..]));
}

#[test]
fn the_layout_column_agrees_with_what_convert_gathers() {
    // Two implementations of "row-major": inspect's row and the selection's TensorInfo.
    for f in [
        "ckpt/views_zip.pt",
        "ckpt/views_legacy.pt",
        "ckpt/tar_v2.pt",
    ] {
        let ckpt = Checkpoint::open(&fixture(f)).unwrap();
        let sel = ckpt.select(None, true).unwrap();
        let i = inspect_checkpoint(&ckpt, &InspectOptions::default());
        assert!(i.tensors.iter().any(|t| t.layout == "view"), "{f}");
        for t in &sel.tensors {
            let r = row(&i, &t.name);
            let want = if t.contiguous { "contiguous" } else { "view" };
            assert_eq!(r.layout, want, "{f}: {}", t.name);
            assert_eq!(r.bytes, t.nbytes, "{f}: {}", t.name);
        }
    }
}

#[test]
fn a_safetensors_file_is_described_from_its_header_with_aliases_as_rows() {
    let path = fixture("golden/aliases.safetensors");
    let i = inspect(&path, &InspectOptions::default()).unwrap();
    assert_eq!(i.format, Kind::Safetensors);
    assert_eq!(i.era, "safetensors file");
    assert_eq!(i.zip_root, None);
    assert_eq!(i.pickle_protocol, None);
    assert_eq!(i.byte_order, Some("little"));
    assert_eq!(i.header_bytes, Some(560));
    assert!(i.selection.is_none());
    assert!(i.globals.is_empty());
    assert!(i.records.is_empty());
    assert!(i.non_tensors.is_empty());
    assert!(i.warnings.is_empty(), "{:?}", i.warnings);
    let md = i.metadata.as_ref().unwrap();
    assert_eq!(md["format"], "pt");
    // Rows in file order, then one per alias.
    assert_eq!(
        &names(&i)[..5],
        [
            "layers.0.w",
            "layers.0.w_t",
            "layers.0.w_tail",
            "tok_embeddings.weight",
            "a_same_object"
        ]
    );
    let w = row(&i, "layers.0.w");
    assert_eq!(
        (w.dtype.as_str(), w.safetensors_dtype.as_deref()),
        ("F32", Some("F32"))
    );
    assert_eq!(w.data_offsets, Some([0, 48]));
    assert_eq!(
        (w.storage.as_ref(), w.offset, w.stride.as_ref()),
        (None, None, None)
    );
    let mut aliases: Vec<(String, String)> = i.tensors[5..]
        .iter()
        .map(|t| (t.name.clone(), t.alias_of.clone().unwrap()))
        .collect();
    aliases.sort();
    assert_eq!(aliases, golden_aliases("aliases"));
    let view = row(&i, "layers.0.w_view");
    assert_eq!(view.data_offsets, Some([0, 48]));
    assert_eq!(
        (i.totals.tensors, i.totals.written, i.totals.aliases),
        (10, 5, 5)
    );
    assert_eq!(i.totals.bytes, 195);
    assert_eq!(i.totals.storages, 0);
    assert_eq!(i.totals.by_dtype["F32"].bytes, 192);
}

#[test]
fn a_truncated_or_overlong_safetensors_file_is_inspected_with_a_warning() {
    let golden = std::fs::read(fixture("golden/aliases.safetensors")).unwrap();
    let n = golden.len();
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.safetensors");
    std::fs::write(&short, &golden[..n - 10]).unwrap();
    let i = inspect(&short, &InspectOptions::default()).unwrap();
    assert_eq!(
        i.warnings,
        [format!(
            "truncated: the header needs a file of {n} bytes, found {}",
            n - 10
        )]
    );
    assert_eq!(i.tensors.len(), 10);
    let long = dir.path().join("long.safetensors");
    let mut bytes = golden.clone();
    bytes.extend_from_slice(b"xyz");
    std::fs::write(&long, &bytes).unwrap();
    let i = inspect(&long, &InspectOptions::default()).unwrap();
    assert_eq!(
        i.warnings,
        [format!(
            "trailing bytes: the header needs a file of {n} bytes, found {}",
            n + 3
        )]
    );
}

#[test]
fn a_safetensors_file_with_a_broken_header_is_an_error_naming_the_file() {
    let golden = std::fs::read(fixture("golden/aliases.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    let mut bytes = golden.clone();
    // Still `{` after the length, but no longer JSON.
    bytes[8 + 3] = b'\x01';
    std::fs::write(&bad, &bytes).unwrap();
    let e = inspect(&bad, &InspectOptions::default()).unwrap_err();
    assert_eq!(e.path, bad);
    assert!(
        e.kind
            .to_string()
            .starts_with("invalid safetensors header: "),
        "{e}"
    );
}

#[test]
fn files_that_are_not_checkpoints_are_errors_that_say_what_they_are() {
    for (f, want) in [
        (
            "ckpt/mal_text.pt",
            "not a PyTorch checkpoint: a text file (36 bytes), not a checkpoint",
        ),
        (
            "ckpt/mal_empty.pt",
            "not a PyTorch checkpoint: the file is empty (0 bytes); a failed or interrupted download?",
        ),
    ] {
        let e = inspect(&fixture(f), &InspectOptions::default()).unwrap_err();
        assert_eq!(e.path, fixture(f));
        assert_eq!(e.kind.to_string(), want, "{f}");
    }
    let e = inspect(&fixture("ckpt/mal_random.bin"), &InspectOptions::default()).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NotACheckpoint(_)), "{e:?}");
    assert!(
        e.kind
            .to_string()
            .contains("unrecognised content (512 bytes"),
        "{e}"
    );
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let path = fixture("ckpt/no_such_file.pt");
    let e = inspect(&path, &InspectOptions::default()).unwrap_err();
    assert_eq!(e.path, path);
}

#[test]
fn each_container_is_named_with_the_torch_versions_that_write_it() {
    for (f, format, era) in [
        (
            "ckpt/proto2_legacy.pt",
            Kind::Legacy,
            "legacy torch.save stream (torch < 1.6, or _use_new_zipfile_serialization=False)",
        ),
        (
            "ckpt/torchscript.pt",
            Kind::TorchScript,
            "TorchScript archive (torch.jit.save)",
        ),
        (
            "ckpt/pickle_dumps_p2.pkl",
            Kind::Pickle,
            "plain pickle (pickle.dump) with storages embedded as legacy streams",
        ),
        ("ckpt/tar_v2.pt", Kind::Tar, "tar archive of torch <= 0.1.9"),
    ] {
        let i = inspect_default(f);
        assert_eq!(i.format, format, "{f}");
        assert_eq!(i.era, era, "{f}");
        assert_eq!(i.selection.as_ref().unwrap().error, None, "{f}");
    }
    assert_eq!(inspect_default("ckpt/proto2_legacy.pt").zip_root, None);
    assert_eq!(
        inspect_default("ckpt/torchscript.pt").zip_root.as_deref(),
        Some("torchscript/")
    );
}

#[test]
fn a_legacy_stream_reports_its_sys_info_records() {
    let i = inspect_default("ckpt/proto2_legacy.pt");
    let records: Vec<(&str, &str)> = i
        .records
        .iter()
        .map(|r| (r.name.as_str(), r.value.as_str()))
        .collect();
    assert!(
        records.contains(&("protocol_version", "1001")),
        "{records:?}"
    );
    assert!(records.contains(&("little_endian", "true")), "{records:?}");
}

#[test]
fn torchscript_constants_are_said_to_be_left_out() {
    let i = inspect_default("ckpt/torchscript.pt");
    assert_eq!(
        i.warnings,
        ["TorchScript constants (constants.pkl) are not listed; only the module's attributes are"]
    );
}

#[test]
fn a_big_endian_checkpoint_says_so() {
    assert_eq!(
        inspect_default("ckpt/big_endian.pt").byte_order,
        Some("big")
    );
}

#[test]
fn the_default_selection_is_marked_and_non_tensors_are_listed() {
    let i = inspect_default("ckpt/sel_state_dict.pt");
    let sel = i.selection.as_ref().unwrap();
    assert_eq!(sel.key, "state_dict");
    for t in &i.tensors {
        assert_eq!(t.selected, t.name.starts_with("state_dict."), "{}", t.name);
    }
    assert!(i.tensors.iter().any(|t| t.name.starts_with("optimizer.")));
    assert_eq!(sel.tensors, i.tensors.iter().filter(|t| t.selected).count());
    let epoch = i.non_tensors.iter().find(|n| n.path == "epoch").unwrap();
    assert_eq!(epoch.type_name, "int");
    assert!(
        i.non_tensors
            .iter()
            .any(|n| n.path == "optimizer.param_groups.0.lr" && n.type_name == "float")
    );
}

#[test]
fn a_key_shows_only_that_subtree_named_as_convert_would_name_it() {
    let opts = InspectOptions {
        key: Some("model.encoder".into()),
        ..InspectOptions::default()
    };
    let i = inspect(&fixture("ckpt/sel_key_dotted.pt"), &opts).unwrap();
    let sel = i.selection.as_ref().unwrap();
    assert_eq!(sel.key, "model.encoder");
    assert_eq!(sel.error, None);
    let f = File::open(fixture("golden/sel_key_dotted.safetensors")).unwrap();
    let len = f.metadata().unwrap().len();
    let golden = read_safetensors_header(&f, len).unwrap();
    let mut want: Vec<&str> = golden.tensors.iter().map(|t| t.name.as_str()).collect();
    want.sort();
    let mut got = names(&i);
    got.sort();
    assert_eq!(got, want);
    assert!(i.tensors.iter().all(|t| t.selected));
}

#[test]
fn a_key_that_does_not_exist_is_reported_as_the_selection_error() {
    let opts = InspectOptions {
        key: Some("nope".into()),
        ..InspectOptions::default()
    };
    let i = inspect(&fixture("ckpt/sel_state_dict.pt"), &opts).unwrap();
    let sel = i.selection.as_ref().unwrap();
    assert_eq!(sel.key, "nope");
    let err = sel.error.as_deref().unwrap();
    assert!(
        err.starts_with("--key \"nope\" does not exist in the checkpoint; top-level keys are ["),
        "{err}"
    );
    assert!(err.contains("\"state_dict\""), "{err}");
    assert_eq!(i.warnings, [format!("convert would fail: {err}")]);
    assert!(i.tensors.is_empty());
}

#[test]
fn a_dtype_safetensors_lacks_is_a_problem_and_makes_convert_fail() {
    let i = inspect_default("ckpt/refuse_complex128.pt");
    let bad = row(&i, "bad_c128");
    assert_eq!(bad.dtype, "complex128");
    assert_eq!(bad.safetensors_dtype, None);
    let problem = bad.problem.as_deref().unwrap();
    assert!(
        problem.starts_with("dtype complex128 cannot be written: "),
        "{problem}"
    );
    assert_eq!(row(&i, "fine").problem, None);
    // Convert would fail, so nothing is selected.
    assert!(i.tensors.iter().all(|t| !t.selected));
    let sel = i.selection.as_ref().unwrap();
    let err = sel.error.as_deref().unwrap();
    assert!(
        err.contains("bad_c128") && err.contains("complex128"),
        "{err}"
    );
    assert_eq!(sel.tensors, 0);
    assert_eq!(
        i.warnings,
        [
            format!("convert would fail: {err}"),
            format!("tensor \"bad_c128\": {problem}")
        ]
    );
}

#[test]
fn a_quantized_tensor_is_a_row_without_data_and_with_a_problem() {
    let i = inspect_default("ckpt/refuse_quint8.pt");
    let q = row(&i, "bad_q");
    assert_eq!(q.dtype, "quint8");
    assert_eq!(q.layout, "none");
    assert_eq!((q.bytes, q.shape.len()), (0, 0));
    assert_eq!(q.storage, None);
    assert_eq!(
        q.problem.as_deref(),
        Some("a quantized tensor, which safetensors cannot hold")
    );
    assert!(
        i.warnings.contains(
            &"tensor \"bad_q\": a quantized tensor, which safetensors cannot hold".into()
        )
    );
}

#[test]
fn numpy_arrays_are_tensors_only_with_include_numpy() {
    let without = inspect_default("ckpt/numpy_arrays.pt");
    let np: Vec<&str> = without
        .non_tensors
        .iter()
        .filter(|n| n.type_name == "numpy.ndarray")
        .map(|n| n.path.as_str())
        .collect();
    assert_eq!(np, ["np_f32", "np_i64", "nested.np_u8"]);
    assert!(without.tensors.iter().all(|t| !t.name.starts_with("np_")));
    let with = inspect(
        &fixture("ckpt/numpy_arrays.pt"),
        &InspectOptions {
            include_numpy: true,
            ..InspectOptions::default()
        },
    )
    .unwrap();
    for n in np {
        assert!(with.tensors.iter().any(|t| t.name == n), "{n}");
        assert!(with.non_tensors.iter().all(|t| t.path != n), "{n}");
    }
    assert_eq!(
        with.selection.as_ref().unwrap().tensors,
        without.selection.as_ref().unwrap().tensors + 3
    );
}

#[test]
fn storages_are_counted_once_however_many_views_share_them() {
    let i = inspect_default("ckpt/aliases.pt");
    let distinct: std::collections::HashSet<&str> = i
        .tensors
        .iter()
        .filter_map(|t| t.storage.as_deref())
        .collect();
    assert_eq!(i.totals.storages, distinct.len());
    assert!(i.totals.storages < i.totals.tensors);
}

#[test]
fn records_are_listed_once_per_name_and_value() {
    let info = vec![
        ("a".to_string(), "1".to_string()),
        ("a".to_string(), "1".to_string()),
        ("a".to_string(), "2".to_string()),
        ("b".to_string(), "1".to_string()),
    ];
    let r: Vec<(String, String)> = records(&info)
        .into_iter()
        .map(|r| (r.name, r.value))
        .collect();
    assert_eq!(
        r,
        [
            ("a".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
            ("b".to_string(), "1".to_string())
        ]
    );
}

#[test]
fn a_name_is_in_a_subtree_when_it_is_the_key_or_below_it() {
    assert!(in_subtree("anything", ""));
    assert!(in_subtree("state_dict", "state_dict"));
    assert!(in_subtree("state_dict.fc.weight", "state_dict"));
    assert!(!in_subtree("state_dict_ema.fc.weight", "state_dict"));
    assert!(!in_subtree("state", "state_dict"));
    assert!(in_subtree("model.encoder.w", "model.encoder"));
    assert!(!in_subtree("model.encoder2.w", "model.encoder"));
}

#[test]
fn totals_leave_aliases_out_of_bytes_and_dtype_counts() {
    let base = TensorRow {
        name: "a".into(),
        dtype: "float32".into(),
        safetensors_dtype: Some("F32".into()),
        shape: vec![2],
        bytes: 8,
        storage: Some("0".into()),
        offset: Some(0),
        stride: Some(vec![1]),
        layout: "contiguous",
        data_offsets: None,
        alias_of: None,
        selected: true,
        problem: None,
    };
    let rows = vec![
        base.clone(),
        TensorRow {
            name: "b".into(),
            alias_of: Some("a".into()),
            ..base.clone()
        },
        TensorRow {
            name: "c".into(),
            dtype: "int8".into(),
            bytes: 3,
            ..base.clone()
        },
    ];
    let t = totals(&rows, 7);
    assert_eq!(
        (t.tensors, t.written, t.aliases, t.bytes, t.storages),
        (3, 2, 1, 11, 7)
    );
    assert_eq!(t.by_dtype.len(), 2);
    assert_eq!(
        (t.by_dtype["float32"].tensors, t.by_dtype["float32"].bytes),
        (1, 8)
    );
    assert_eq!(
        (t.by_dtype["int8"].tensors, t.by_dtype["int8"].bytes),
        (1, 3)
    );
}

#[test]
fn format_names_are_stable_in_text_and_json() {
    for (f, name) in [
        (Kind::Zip, "zip"),
        (Kind::Legacy, "legacy"),
        (Kind::TorchScript, "torchscript"),
        (Kind::Pickle, "pickle"),
        (Kind::Tar, "tar"),
        (Kind::Safetensors, "safetensors"),
    ] {
        assert_eq!(f.as_str(), name);
        assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{name}\""));
    }
}

#[test]
fn the_json_report_has_exactly_the_documented_fields() {
    let v = serde_json::to_value(inspect_default("ckpt/aliases.pt")).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    let mut documented = vec![
        "schema",
        "file",
        "file_bytes",
        "format",
        "era",
        "zip_root",
        "pickle_protocol",
        "byte_order",
        "records",
        "header_bytes",
        "metadata",
        "tensors",
        "totals",
        "non_tensors",
        "selection",
        "globals",
        "warnings",
    ];
    documented.sort();
    assert_eq!(keys, documented);
    let mut tensor_keys: Vec<&str> = v["tensors"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    tensor_keys.sort();
    let mut want = vec![
        "name",
        "dtype",
        "safetensors_dtype",
        "shape",
        "bytes",
        "storage",
        "offset",
        "stride",
        "layout",
        "data_offsets",
        "alias_of",
        "selected",
        "problem",
    ];
    want.sort();
    assert_eq!(tensor_keys, want);
    let mut totals: Vec<&str> = v["totals"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    totals.sort();
    assert_eq!(
        totals,
        [
            "aliases", "by_dtype", "bytes", "storages", "tensors", "written"
        ]
    );
    let mut sel: Vec<&str> = v["selection"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    sel.sort();
    assert_eq!(
        sel,
        ["aliases", "bytes", "error", "key", "non_tensors", "tensors"]
    );
    let mut g: Vec<&str> = v["globals"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    g.sort();
    assert_eq!(g, ["class", "count", "first_offset", "name"]);
    assert_eq!(v["non_tensors"], serde_json::json!([]));
}

#[test]
fn a_non_tensor_is_serialized_with_path_and_type() {
    let v = serde_json::to_value(NonTensor {
        path: "epoch".into(),
        type_name: "int".into(),
    })
    .unwrap();
    assert_eq!(v, serde_json::json!({"path": "epoch", "type": "int"}));
}

#[test]
fn a_key_naming_one_tensor_lists_it_as_tensor_as_convert_names_it() {
    let key = "state_dict.fc1.weight";
    let ckpt = Checkpoint::open(&fixture("ckpt/sel_state_dict.pt")).unwrap();
    let sel = ckpt.select(Some(key), false).unwrap();
    let convert_names: Vec<&str> = sel.tensors.iter().map(|t| t.name.as_str()).collect();
    let i = inspect_checkpoint(
        &ckpt,
        &InspectOptions {
            key: Some(key.into()),
            ..InspectOptions::default()
        },
    );
    assert_eq!(names(&i), convert_names);
    assert_eq!(names(&i), ["tensor"]);
    let s = i.selection.as_ref().unwrap();
    assert_eq!((s.key.as_str(), s.tensors, s.bytes), (key, 1, 48));
    assert!(i.tensors[0].selected);
}

#[test]
fn a_torchscript_modules_plain_tensor_attributes_are_listed_but_not_marked_as_converted() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jit/torchscript_attrs.pt");
    let i = inspect(&path, &InspectOptions::default()).unwrap();
    let marked = |n: &str| {
        i.tensors
            .iter()
            .find(|t| t.name == n)
            .unwrap_or_else(|| panic!("no row {n}"))
            .selected
    };
    for n in ["gain", "inner.lin.weight", "rnn.weight_ih_l0"] {
        assert!(marked(n), "{n} is in state_dict()");
    }
    for n in [
        "_state",
        "history.0",
        "inner._context",
        "rnn._flat_weights.0",
    ] {
        assert!(!marked(n), "{n} is a plain attribute, left out by convert");
    }
    let selected = i.tensors.iter().filter(|t| t.selected).count();
    let sel = i.selection.as_ref().unwrap();
    assert_eq!(selected, sel.tensors + sel.aliases);
}
