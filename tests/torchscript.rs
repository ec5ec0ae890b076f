//! TorchScript archives convert to exactly `state_dict()`: the classes' `__parameters__` and
//! `__buffers__` declarations decide, and an archive whose declarations are missing or cannot be
//! parsed is an error (bit-exact or an error), unless `--torchscript-attributes` asks for every
//! tensor attribute. The inputs are the real `torch.jit.save` fixture with one code record
//! rewritten.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

const FIXTURE: &str = "tests/fixtures/jit/torchscript_attrs.pt";
const MAIN_CODE: &str = "torchscript_attrs/code/__torch__.py";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture's records, in order, with `edit` applied to the text of `code/__torch__.py`
/// (`None` drops the record).
fn rewritten(edit: impl Fn(&str) -> Option<String>) -> Vec<u8> {
    let bytes = std::fs::read(root().join(FIXTURE)).unwrap();
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..z.len() {
        // torch deflates some records; this zip build reads stored ones only, so inflate here.
        let mut f = z.by_index_raw(i).unwrap();
        let name = f.name().unwrap().to_string();
        let deflated = f.compression() != zip::CompressionMethod::Stored;
        let mut raw = Vec::new();
        f.read_to_end(&mut raw).unwrap();
        let mut data = Vec::new();
        if deflated {
            flate2::read::DeflateDecoder::new(&raw[..])
                .read_to_end(&mut data)
                .unwrap();
        } else {
            data = raw;
        }
        if name == MAIN_CODE {
            match edit(std::str::from_utf8(&data).unwrap()) {
                Some(text) => data = text.into_bytes(),
                None => continue,
            }
        }
        w.start_file(
            name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        w.write_all(&data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn convert(input: &Path, extra: &[&str]) -> (Output, PathBuf) {
    let out = input.with_extension("safetensors");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_safetensorize"))
        .arg("convert")
        .arg(input)
        .arg("-o")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    (o, out)
}

fn names(out: &Path) -> Vec<String> {
    let bytes = std::fs::read(out).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut v: Vec<String> = meta.tensors().keys().cloned().collect();
    v.sort();
    v
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_scripted_module_with_a_plain_tensor_attribute_converts_to_exactly_state_dict_names() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.pt");
    std::fs::copy(root().join(FIXTURE), &input).unwrap();
    let (o, out) = convert(&input, &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // torch.jit.load(f).state_dict(): head.weight is tied to blocks.0.weight (metadata alias);
    // the LSTM's `_flat_weights` list of views of its parameters is not part of it.
    assert_eq!(
        names(&out),
        [
            "blocks.0.bias",
            "blocks.0.weight",
            "blocks.2.weight",
            "cache",
            "gain",
            "head.bias",
            "inner.lin.bias",
            "inner.lin.weight",
            "inner.scale",
            "rnn.bias_hh_l0",
            "rnn.bias_ih_l0",
            "rnn.weight_hh_l0",
            "rnn.weight_ih_l0",
            "steps",
        ]
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let left_out: Vec<&str> = doc["non_tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .unwrap()
                .contains("--torchscript-attributes")
        })
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        left_out,
        [
            "_state",
            "history.0",
            "history.1",
            "inner._context",
            "rnn._flat_weights.0",
            "rnn._flat_weights.1",
            "rnn._flat_weights.2",
            "rnn._flat_weights.3",
        ]
    );
}

#[test]
fn missing_or_unparsable_declarations_are_errors_unless_every_attribute_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no_buffers",
            rewritten(|t| Some(t.replacen("  __buffers__ = [\"steps\", \"cache\", ]\n", "", 1))),
            "declares no __buffers__",
        ),
        (
            "bad_list",
            rewritten(|t| Some(t.replacen("[\"gain\", ]", "[gain]", 1))),
            "expected a quoted name",
        ),
        (
            "undeclared_attribute",
            rewritten(|t| Some(t.replacen("[\"gain\", ]", "[\"gain\", \"nope\", ]", 1))),
            "no such attribute",
        ),
        (
            "no_code",
            rewritten(|_| None),
            "is not declared in the archive's code/ records",
        ),
    ];
    for (name, bytes, want) in cases {
        let input = dir.path().join(format!("{name}.pt"));
        std::fs::write(&input, bytes).unwrap();
        let (o, out) = convert(&input, &[]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {e}");
        assert!(e.contains(want), "{name}: {e}");
        assert!(e.contains("--torchscript-attributes"), "{name}: {e}");
        assert!(!out.exists(), "{name}: an output was written");

        let (o, out) = convert(&input, &["--torchscript-attributes"]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        let got = names(&out);
        for n in ["_state", "history.0", "inner._context", "gain", "cache"] {
            assert!(
                got.iter().any(|g| g == n),
                "{name}: {n} missing from {got:?}"
            );
        }
    }
}

#[test]
fn the_declarations_decide_what_is_a_parameter_or_a_buffer() {
    // Declaring `_state` a buffer (as register_buffer would have) puts it in the state_dict,
    // right after the module's other buffers.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.pt");
    let bytes = rewritten(|t| {
        Some(t.replacen(
            "__buffers__ = [\"steps\", \"cache\", ]",
            "__buffers__ = [\n    \"steps\",\n    \"cache\",\n    \"_state\",\n  ]",
            1,
        ))
    });
    std::fs::write(&input, bytes).unwrap();
    let (o, out) = convert(&input, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = names(&out);
    assert!(got.iter().any(|g| g == "_state"), "{got:?}");
    assert!(!got.iter().any(|g| g == "inner._context"), "{got:?}");
}

#[test]
fn verify_takes_the_attribute_flag_as_convert_does() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jit/torchscript_attrs.pt");
    let out = dir.path().join("o.safetensors");
    let bin = env!("CARGO_BIN_EXE_safetensorize");
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(bin)
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    let (s, o) = (src.as_os_str(), out.as_os_str());
    let flag = std::ffi::OsStr::new("--torchscript-attributes");
    let convert = std::ffi::OsStr::new("convert");
    let verify = std::ffi::OsStr::new("verify");
    let dash_o = std::ffi::OsStr::new("-o");
    let check = std::ffi::OsStr::new("--verify");
    assert_eq!(run(&[convert, s, dash_o, o, flag, check]), Some(0));
    assert_eq!(run(&[verify, s, o, flag]), Some(0));
    // Without the flag the attributes are extra names: a mismatch (exit 4).
    assert_eq!(run(&[verify, s, o]), Some(4));
}
