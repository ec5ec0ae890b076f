//! `inspect`, `verify` and the error hints, run through the real binary.
//!
//! Snapshot tests compare `inspect`'s text and JSON with files under `tests/snapshots/`. After an
//! intended change, rewrite them with `UPDATE_SNAPSHOTS=1 cargo test --test inspect` and review
//! the diff.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::{Dtype, TensorView};

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary from the repository root (so fixture paths in the output are relative).
fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run the binary");
    assert_ne!(
        out.status.code(),
        Some(101),
        "panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn snapshot(name: &str, actual: &str) {
    let path = root().join("tests").join("snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let Ok(expected) = fs::read_to_string(&path) else {
        panic!(
            "snapshot {name} is missing: {} does not exist; create it with \
             `UPDATE_SNAPSHOTS=1 cargo test --test inspect` and review it\n--- actual\n{actual}",
            path.display()
        );
    };
    assert!(
        expected == actual,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

fn inspect_snapshots(fixture: &str, stem: &str) {
    let path = format!("tests/fixtures/ckpt/{fixture}");
    let text = run(&["inspect", &path]);
    assert!(text.status.success(), "{}", stderr(&text));
    snapshot(&format!("{stem}.txt"), &stdout(&text));
    let json = run(&["inspect", "--json", &path]);
    assert!(json.status.success(), "{}", stderr(&json));
    let v: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("inspect --json prints one JSON document");
    assert_eq!(v["schema"], "safetensorize.inspect/1");
    snapshot(&format!("{stem}.json"), &stdout(&json));
}

#[test]
fn inspect_zip_with_aliases_and_views() {
    inspect_snapshots("aliases.pt", "aliases");
}

#[test]
fn inspect_legacy_stream() {
    inspect_snapshots("views_legacy.pt", "views_legacy");
}

#[test]
fn inspect_torchscript_archive() {
    inspect_snapshots("torchscript.pt", "torchscript");
}

#[test]
fn inspect_lightning_marks_the_default_selection() {
    inspect_snapshots("lightning.ckpt", "lightning");
    let v: serde_json::Value = serde_json::from_slice(
        &run(&["inspect", "--json", "tests/fixtures/ckpt/lightning.ckpt"]).stdout,
    )
    .unwrap();
    assert_eq!(v["selection"]["key"], "state_dict");
    let tensors = v["tensors"].as_array().unwrap();
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        assert_eq!(
            t["selected"].as_bool().unwrap(),
            name.starts_with("state_dict."),
            "{name}"
        );
    }
}

#[test]
fn inspect_json_fields_are_stable() {
    let v: serde_json::Value = serde_json::from_slice(
        &run(&["inspect", "--json", "tests/fixtures/ckpt/aliases.pt"]).stdout,
    )
    .unwrap();
    for k in [
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
    ] {
        assert!(v.get(k).is_some(), "missing top-level field {k}");
    }
    for k in [
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
    ] {
        assert!(v["tensors"][0].get(k).is_some(), "missing tensor field {k}");
    }
    assert_eq!(v["format"], "zip");
    let out = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "output.weight")
        .unwrap()
        .clone();
    assert_eq!(out["alias_of"], "tok_embeddings.weight");
}

#[test]
fn inspect_safetensors_reads_the_header() {
    let o = run(&[
        "inspect",
        "--json",
        "tests/fixtures/golden/aliases.safetensors",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "safetensors");
    assert_eq!(v["totals"]["aliases"], 5);
    assert_eq!(v["totals"]["written"], 5);
    snapshot(
        "aliases_safetensors.txt",
        &stdout(&run(&[
            "inspect",
            "tests/fixtures/golden/aliases.safetensors",
        ])),
    );
}

#[test]
fn inspect_lists_tensors_that_cannot_be_written() {
    let v: serde_json::Value = serde_json::from_slice(
        &run(&["inspect", "--json", "tests/fixtures/ckpt/refuse_sparse.pt"]).stdout,
    )
    .unwrap();
    let bad = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bad_sparse")
        .unwrap()
        .clone();
    assert!(bad["problem"].as_str().unwrap().contains("sparse"));
    assert!(v["selection"]["error"].as_str().is_some());
}

// ---- verify ----

/// Converts `fixture` into a temp dir and returns (dir, output path).
fn converted(fixture: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let o = run(&[
        "convert",
        &format!("tests/fixtures/ckpt/{fixture}"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    (dir, out)
}

fn verify(fixture: &str, out: &Path) -> Output {
    run(&[
        "verify",
        &format!("tests/fixtures/ckpt/{fixture}"),
        out.to_str().unwrap(),
    ])
}

/// Rewrites a safetensors file through `edit(name, dtype, shape, bytes)`; `None` drops a tensor.
fn rewrite(
    path: &Path,
    metadata: Option<std::collections::HashMap<String, String>>,
    edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) {
    let bytes = fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut owned = Vec::new();
    for (name, view) in st.tensors() {
        if let Some(t) = edit(
            &name,
            view.dtype(),
            view.shape().to_vec(),
            view.data().to_vec(),
        ) {
            owned.push((name, t));
        }
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let metadata = metadata.or_else(|| meta.metadata().clone());
    let out = safetensors::serialize(views, metadata).unwrap();
    fs::write(path, out).unwrap();
}

#[test]
fn verify_passes_on_good_pairs() {
    for f in [
        "aliases.pt",
        "views_zip.pt",
        "views_legacy.pt",
        "big_endian.pt",
        "conj_neg.pt",
        "rezip_deflated.pt",
        "torchscript.pt",
        "pickle_dumps_p2.pkl",
    ] {
        let (_d, out) = converted(f);
        let o = verify(f, &out);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{f}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stdout(&o).starts_with("ok:"), "{f}: {}", stdout(&o));
    }
}

#[test]
fn verify_passes_against_the_official_goldens() {
    let o = run(&[
        "verify",
        "tests/fixtures/ckpt/lightning.ckpt",
        "tests/fixtures/golden/lightning.safetensors",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = run(&[
        "verify",
        "--json",
        "tests/fixtures/ckpt/aliases.pt",
        "tests/fixtures/golden/aliases.safetensors",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["aliases"], 5);
}

#[test]
fn verify_fails_on_a_one_byte_change() {
    let (_d, out) = converted("views_zip.pt");
    let mut b = fs::read(&out).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0x01;
    fs::write(&out, b).unwrap();
    let o = verify("views_zip.pt", &out);
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains("FAILED") && s.contains("bytes") && s.contains("1 of "),
        "{s}"
    );
}

#[test]
fn verify_fails_on_a_wrong_dtype() {
    let (_d, out) = converted("views_zip.pt");
    rewrite(&out, None, |name, d, s, b| {
        Some((if name == "transposed" { Dtype::I32 } else { d }, s, b))
    });
    let o = verify("views_zip.pt", &out);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stdout(&o).contains("dtype    transposed: source float32 (F32), output I32"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn verify_fails_on_a_missing_tensor() {
    let (_d, out) = converted("views_zip.pt");
    rewrite(&out, None, |name, d, s, b| {
        (name != "sliced").then_some((d, s, b))
    });
    let o = verify("views_zip.pt", &out);
    assert_eq!(o.status.code(), Some(4));
    assert!(stdout(&o).contains("missing  sliced:"), "{}", stdout(&o));
}

#[test]
fn verify_fails_on_a_wrong_alias() {
    let (_d, out) = converted("aliases.pt");
    let bytes = fs::read(&out).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut m = meta.metadata().clone().unwrap();
    assert_eq!(
        m.get("output.weight").map(String::as_str),
        Some("tok_embeddings.weight")
    );
    m.insert("output.weight".into(), "layers.0.w".into());
    rewrite(&out, Some(m), |_, d, s, b| Some((d, s, b)));
    let o = verify("aliases.pt", &out);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stdout(&o).contains("alias    output.weight: recorded as an alias of \"layers.0.w\""),
        "{}",
        stdout(&o)
    );
}

#[test]
fn verify_fails_on_a_truncated_output() {
    let (_d, out) = converted("views_zip.pt");
    let b = fs::read(&out).unwrap();
    fs::write(&out, &b[..b.len() - 10]).unwrap();
    let o = verify("views_zip.pt", &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
}

// ---- error hints: one per mistake people make ----

/// Writes `bytes` to a temp file, runs `convert` on it, and returns stderr.
fn convert_error(name: &str, bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    fs::write(&p, bytes).unwrap();
    convert_error_at(&p)
}

fn convert_error_at(p: &Path) -> String {
    let out = p.with_extension("out.safetensors");
    let o = run(&["convert", p.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!out.exists());
    let e = stderr(&o);
    assert!(
        e.contains(p.file_name().unwrap().to_str().unwrap()),
        "the error names the file: {e}"
    );
    e
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(
            *name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn hint_html_page() {
    let e = convert_error(
        "pytorch_model.bin",
        b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n",
    );
    assert!(e.contains("the download probably failed"), "{e}");
}

#[test]
fn hint_git_lfs_pointer() {
    let e = convert_error(
        "model.bin",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n",
    );
    assert!(e.contains("run `git lfs pull`"), "{e}");
}

#[test]
fn hint_truncated_zip() {
    let full = fs::read(root().join("tests/fixtures/ckpt/proto2_zip.pt")).unwrap();
    let e = convert_error("cut.pt", &full[..1000]);
    assert!(
        e.contains("the file is truncated")
            && e.contains("expected more than 1000 bytes, found 1000"),
        "{e}"
    );
}

#[test]
fn hint_truncated_legacy() {
    let e = convert_error_at(&root().join("tests/fixtures/ckpt/mal_legacy_truncated.pt"));
    assert!(
        e.contains("truncated") && e.contains("the file ends at"),
        "{e}"
    );
}

#[test]
fn hint_truncated_safetensors() {
    let full = fs::read(root().join("tests/fixtures/golden/views_zip.safetensors")).unwrap();
    let e = convert_error("model.safetensors", &full[..full.len() - 7]);
    let want = format!("expected {} bytes, found {}", full.len(), full.len() - 7);
    assert!(e.contains("truncated") && e.contains(&want), "{e}");
}

#[test]
fn hint_gguf() {
    let e = convert_error(
        "model.bin",
        b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    );
    assert!(e.contains("a GGUF model file (llama.cpp)"), "{e}");
}

#[test]
fn hint_ggml() {
    let e = convert_error("model.bin", b"tjgg\x01\x00\x00\x00\x00\x00\x00\x00");
    assert!(e.contains("a GGML model file (llama.cpp)"), "{e}");
}

#[test]
fn hint_already_safetensors() {
    let e = convert_error_at(&root().join("tests/fixtures/golden/aliases.safetensors"));
    assert!(
        e.contains("already a safetensors file; nothing to convert"),
        "{e}"
    );
}

#[test]
fn hint_numpy_npy() {
    let e = convert_error("arr.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n\x00\x00\x00\x00\x00\x00\x00\x00");
    assert!(
        e.contains("a NumPy .npy array file") && e.contains("numpy.load"),
        "{e}"
    );
}

#[test]
fn hint_numpy_npz() {
    let e = convert_error(
        "arrs.npz",
        &zip_of(&[("a.npy", b"\x93NUMPY"), ("b.npy", b"\x93NUMPY")]),
    );
    assert!(e.contains("a NumPy .npz archive"), "{e}");
}

#[test]
fn hint_keras_archive() {
    let e = convert_error(
        "model.keras",
        &zip_of(&[
            ("metadata.json", b"{}"),
            ("config.json", b"{}"),
            ("model.weights.h5", b"\x89HDF\r\n\x1a\n"),
        ]),
    );
    assert!(e.contains("a Keras .keras archive"), "{e}");
}

#[test]
fn hint_keras_h5() {
    let e = convert_error(
        "model.h5",
        b"\x89HDF\r\n\x1a\n\x00\x00\x00\x00\x00\x08\x08\x00",
    );
    assert!(
        e.contains("an HDF5 file (Keras/TensorFlow .h5 weights)"),
        "{e}"
    );
}

#[test]
fn hint_tensorflow_saved_model_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("saved_model.pb"), b"\x08\x01\x12\x00").unwrap();
    let o = run(&[
        "convert",
        dir.path().to_str().unwrap(),
        "-o",
        dir.path().join("x.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("a TensorFlow SavedModel directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn hint_tensorflow_protobuf_file() {
    let e = convert_error(
        "saved_model.pb",
        b"\x08\x01\x12\x8a\x01\n\x0bsaved_model\x00\x01\x02\x03",
    );
    assert!(e.contains("looks like a TensorFlow file"), "{e}");
}

#[test]
fn hint_plain_pickle_without_tensors() {
    // protocol 4: {'a': 1}
    let e = convert_error("data.pkl", b"\x80\x04}\x94(\x8c\x01a\x94K\x01u.");
    assert!(e.contains("a plain Python pickle with no tensors"), "{e}");
}

#[test]
fn hint_directory_passed_to_convert() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&[
        "convert",
        dir.path().to_str().unwrap(),
        "-o",
        dir.path().join("x.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "this is a directory; convert takes one checkpoint file (use `migrate` for folders)"
        ),
        "{}",
        stderr(&o)
    );
}

// ---- CLI polish ----

#[test]
fn version_shows_the_crate_version() {
    let o = run(&["--version"]);
    assert_eq!(
        stdout(&o).trim(),
        format!("safetensorize {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_subcommand_help_has_examples() {
    for sub in ["convert", "inspect", "verify", "completions"] {
        let o = run(&[sub, "--help"]);
        assert!(o.status.success());
        assert!(
            stdout(&o).contains("Examples:"),
            "{sub} --help has no examples"
        );
    }
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completions", shell]);
        assert!(o.status.success(), "{shell}");
        assert!(
            stdout(&o).contains("inspect") && stdout(&o).contains("verify"),
            "{shell}"
        );
    }
}

/// A torch zip whose pickle names storage `0` twice, first with 2 elements, then with
/// `second` elements; its record holds 8 bytes (2 float32s).
fn storage_declared_twice(second: u8) -> Vec<u8> {
    let tensor = |numel: u8, size: u8| {
        let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
        p.extend_from_slice(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n");
        p.extend_from_slice(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
        p.extend_from_slice(&[numel, b't', b'Q']);
        p.extend_from_slice(&[b'K', 0, b'K', size, 0x85, b'K', 1, 0x85, 0x89]);
        p.extend_from_slice(b"ccollections\nOrderedDict\n)RtR");
        p
    };
    let mut pickle = b"\x80\x02}(X\x01\x00\x00\x00a".to_vec();
    pickle.extend(tensor(2, 1));
    pickle.extend_from_slice(b"X\x01\x00\x00\x00b");
    pickle.extend(tensor(second, 2));
    pickle.extend_from_slice(b"u.");
    zip_of(&[("archive/data.pkl", &pickle), ("archive/data/0", &[0u8; 8])])
}

#[test]
fn a_storage_declared_with_two_sizes_is_refused_naming_tensor_and_storage() {
    let e = convert_error("conflict.pt", &storage_declared_twice(3));
    assert!(
        e.contains(
            "tensor \"a\" (storage \"0\"): the storage is declared with two different sizes (Some(8) and Some(12) bytes)"
        ),
        "{e}"
    );
    // Declared twice with one size, the same archive converts.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agree.pt");
    fs::write(&p, storage_declared_twice(2)).unwrap();
    let out = dir.path().join("agree.safetensors");
    let o = run(&["convert", p.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.exists());
}
