//! Outputs cannot outlive a crash: a `convert` killed with SIGKILL at any moment leaves no
//! temporary file (the output is an unnamed file until complete, where the filesystem allows),
//! and a named temporary whose writer is gone is removed by the next run.

#[allow(dead_code)]
#[path = "../examples/bench/synth.rs"]
mod synth;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn convert(src: &Path, out: &Path) -> std::process::Child {
    Command::new(BIN)
        .arg("convert")
        .arg(src)
        .arg("-o")
        .arg(out)
        .arg("--overwrite")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_convert_killed_at_any_moment_leaves_no_partial_file() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let src = dir.path().join("big.pt");
    let tensors: Vec<synth::TensorSpec> = (0..8)
        .map(|i| synth::TensorSpec::contiguous(format!("w{i}"), synth::Dt::F32, &[2 << 20]))
        .collect();
    synth::write_zip(&src, "archive", &tensors).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("big.safetensors");
    let mut killed_mid_write = 0;
    for ms in [0u64, 5, 15, 30, 60, 100, 150, 250] {
        let mut child = convert(&src, &out);
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let left = names(&out_dir);
        if status.success() {
            assert_eq!(left, ["big.safetensors"]);
        } else {
            killed_mid_write += 1;
            // Nothing half-written, under any name; an earlier complete output may remain.
            assert!(
                left.is_empty() || left == ["big.safetensors"],
                "killed after {ms} ms: {left:?}"
            );
        }
        if let Ok(bytes) = std::fs::metadata(&out).map(|m| m.len()) {
            assert_eq!(bytes, synth::total_bytes(&tensors) + header_len(&out));
        }
    }
    assert!(
        killed_mid_write > 0,
        "every run finished before it was killed"
    );
    // The next run completes normally.
    assert!(convert(&src, &out).wait().unwrap().success());
    assert_eq!(names(&out_dir), ["big.safetensors"]);
}

fn header_len(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    8 + u64::from_le_bytes(b[..8].try_into().unwrap())
}

#[test]
fn a_named_temporary_left_by_a_writer_that_is_gone_is_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ckpt/views_zip.pt");
    let out = dir.path().join("model.safetensors");
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let stale = safetensorize::writer::atomic::partial_name(&out, pid, "Zz9999");
    std::fs::write(dir.path().join(&stale), vec![0u8; 4096]).unwrap();
    // Another machine's temporary (a shared filesystem) is left alone: its writer may run.
    let remote = ".model.safetensors.some-other-node-77.Yy8888.partial";
    std::fs::write(dir.path().join(remote), b"x").unwrap();
    assert!(convert(&src, &out).wait().unwrap().success());
    assert_eq!(names(dir.path()), [remote, "model.safetensors"]);
}

#[test]
fn migrate_lists_stale_temporaries_in_a_dry_run_and_removes_them_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ckpt/views_zip.pt");
    std::fs::copy(&src, m.join("pytorch_model.bin")).unwrap();
    let out = m.join("model.safetensors");
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let stale = safetensorize::writer::atomic::partial_name(&out, pid, "Zz9999");
    // This test process is alive: its temporary belongs to a writer still running.
    let live = safetensorize::writer::atomic::partial_name(&out, std::process::id(), "Xx7777");
    std::fs::write(m.join(&stale), b"half").unwrap();
    std::fs::write(m.join(&live), b"half").unwrap();
    let run = |extra: &[&str]| {
        let o = Command::new(BIN)
            .args(["migrate", "--json"])
            .args(extra)
            .arg(&m)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let r = run(&["--dry-run"]);
    let partial: Vec<&serde_json::Value> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "partial")
        .collect();
    assert_eq!(partial.len(), 1, "{r}");
    assert_eq!(partial[0]["status"], "planned");
    assert!(partial[0]["source"].as_str().unwrap().ends_with(&stale));
    assert_eq!(r["summary"]["partials_removed"], 1);
    assert!(m.join(&stale).exists(), "a dry run removes nothing");
    let r = run(&[]);
    assert_eq!(r["summary"]["partials_removed"], 1, "{r}");
    assert_eq!(r["summary"]["converted"], 1, "{r}");
    assert_eq!(
        names(&m),
        [live.as_str(), "model.safetensors", "pytorch_model.bin"]
    );
}
