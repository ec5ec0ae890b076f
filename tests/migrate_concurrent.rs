//! Two `migrate` runs on one tree at the same time: every output is whole and right, and
//! neither run reports a failure because the other got somewhere first.

use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");

#[test]
fn two_concurrent_runs_on_one_tree_give_valid_outputs_and_no_failures() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ckpt/views_zip.pt");
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/views_zip.safetensors");
    let golden = std::fs::read(golden).unwrap();
    let bytes = std::fs::read(src).unwrap();
    let n = 80;
    for i in 0..n {
        let m = tree.join(format!("m{i:03}"));
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("pytorch_model.bin"), &bytes).unwrap();
    }
    let spawn = |report: &str| {
        Command::new(BIN)
            .args(["migrate", "--jobs", "2", "--report"])
            .arg(dir.path().join(report))
            .arg(&tree)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a.json"), spawn("b.json"));
    for (child, report) in [(a, "a.json"), (b, "b.json")] {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{report}: {err}");
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(report)).unwrap()).unwrap();
        assert_eq!(r["summary"]["failed"], 0, "{r}");
        assert_eq!(r["files"].as_array().unwrap().len(), n, "{r}");
    }
    for i in 0..n {
        let m = tree.join(format!("m{i:03}"));
        let out = std::fs::read(m.join("model.safetensors")).unwrap();
        assert!(
            out == golden,
            "m{i:03}/model.safetensors differs from the golden output"
        );
        let names: Vec<String> = std::fs::read_dir(&m)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
