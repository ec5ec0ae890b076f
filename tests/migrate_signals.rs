//! A migrate stopped by SIGTERM (how Slurm and Kubernetes stop a task) or SIGINT still writes its
//! report: marked interrupted, with every finished file and the files it did not reach.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");
const UNITS: usize = 300;

fn fixture() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ckpt/views_zip.pt"))
        .unwrap()
}

fn stopped_run_reports(signal: i32) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let bytes = fixture();
    for i in 0..UNITS {
        let m = tree.join(format!("m{i:03}"));
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("pytorch_model.bin"), &bytes).unwrap();
    }
    let report = dir.path().join("report.json");
    let child = Command::new(BIN)
        .args(["migrate", "--jobs", "1", "--report"])
        .arg(&report)
        .arg(&tree)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Signal once the first output exists: the run is well under way and far from done.
    let first = tree.join("m000").join("model.safetensors");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !first.exists() {
        assert!(Instant::now() < deadline, "the first output never appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["interrupted"], true, "{r}");
    let files = r["files"].as_array().unwrap();
    let not_done = r["not_done"].as_array().unwrap();
    assert!(!files.is_empty() && !not_done.is_empty(), "{r}");
    assert_eq!(files.len() + not_done.len(), UNITS, "{r}");
    assert_eq!(
        r["summary"]["converted"].as_u64().unwrap() as usize,
        files.len()
    );
    // Every file the report calls converted is complete; nothing temporary is left.
    for f in files {
        assert_eq!(f["status"], "converted", "{f}");
        for o in f["outputs"].as_array().unwrap() {
            let o = std::fs::read(o.as_str().unwrap()).unwrap();
            let n = u64::from_le_bytes(o[..8].try_into().unwrap()) as usize;
            assert!(o.len() > 8 + n);
        }
    }
    for i in 0..UNITS {
        for e in std::fs::read_dir(tree.join(format!("m{i:03}"))).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".partial"), "left behind: {name}");
        }
    }
}

#[test]
fn a_sigtermed_migrate_writes_a_report_marked_interrupted_and_exits_130() {
    stopped_run_reports(libc::SIGTERM);
}

#[test]
fn a_sigint_migrate_writes_a_report_marked_interrupted_and_exits_130() {
    stopped_run_reports(libc::SIGINT);
}
