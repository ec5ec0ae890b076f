//! Hugging Face caches and other symlinked trees: every snapshot gets its safetensors, files are
//! read through their links, blobs are never written, a blob shared by two revisions is
//! converted once, and a link that cannot be read is a failure with its reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel),
    )
    .unwrap()
}

/// Every file under `dir` with its bytes and modification time (links as their target text).
fn state(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(state(&p));
        } else if m.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            out.insert(
                p,
                (
                    t.into_os_string().into_encoded_bytes(),
                    m.modified().unwrap(),
                ),
            );
        } else {
            out.insert(
                p.clone(),
                (std::fs::read(&p).unwrap(), m.modified().unwrap()),
            );
        }
    }
    out
}

/// `hub/models--org--tiny`: two revisions sharing the weights blob, each with its own config,
/// the second with a diffusers-style sub-folder.
fn cache() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("hub/models--org--tiny");
    let blobs = repo.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), b"2222").unwrap();
    std::fs::write(blobs.join("aaaa"), fixture("ckpt/views_zip.pt")).unwrap();
    std::fs::write(blobs.join("bbbb"), b"{\"rev\": 1}\n").unwrap();
    std::fs::write(blobs.join("cccc"), b"{\"rev\": 2}\n").unwrap();
    std::fs::write(blobs.join("dddd"), fixture("ckpt/aliases.pt")).unwrap();
    let link = |rev: &str, name: &str, blob: &str| {
        let p = repo.join("snapshots").join(rev).join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let up = "../".repeat(name.matches('/').count() + 2);
        std::os::unix::fs::symlink(format!("{up}blobs/{blob}"), &p).unwrap();
    };
    link("1111", "pytorch_model.bin", "aaaa");
    link("1111", "config.json", "bbbb");
    link("2222", "pytorch_model.bin", "aaaa");
    link("2222", "config.json", "cccc");
    link("2222", "unet/diffusion_pytorch_model.bin", "dddd");
    (dir, repo)
}

fn migrate(args: &[&str], path: &Path) -> (i32, serde_json::Value, String) {
    let o = Command::new(BIN)
        .args(["migrate", "--json"])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let report = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status.code().unwrap_or(-1), report, err)
}

fn is_regular(p: &Path) -> bool {
    std::fs::symlink_metadata(p).unwrap().file_type().is_file()
}

#[test]
fn a_cache_migrates_in_place_each_snapshot_gets_its_safetensors_and_no_blob_is_touched() {
    let (dir, repo) = cache();
    let blobs_before = state(&repo.join("blobs"));
    let refs_before = state(&repo.join("refs"));
    let (code, r, err) = migrate(&[], &dir.path().join("hub"));
    assert_eq!(code, 0, "{err}\n{r}");
    let snap = repo.join("snapshots");
    let golden = fixture("golden/views_zip.safetensors");
    for rev in ["1111", "2222"] {
        let out = snap.join(rev).join("model.safetensors");
        assert!(is_regular(&out), "{rev}");
        assert!(
            std::fs::read(&out).unwrap() == golden,
            "{rev}: not the golden output"
        );
    }
    let unet = snap.join("2222/unet/diffusion_pytorch_model.safetensors");
    assert!(is_regular(&unet));
    assert!(std::fs::read(&unet).unwrap() == fixture("golden/aliases.safetensors"));
    assert_eq!(state(&repo.join("blobs")), blobs_before, "a blob changed");
    assert_eq!(state(&repo.join("refs")), refs_before);
    // The shared blob was converted once: the second revision's output links the first's.
    let files = r["files"].as_array().unwrap();
    let reused: Vec<&serde_json::Value> =
        files.iter().filter(|f| f["reused"].is_string()).collect();
    assert_eq!(reused.len(), 1, "{r}");
    assert!(
        reused[0]["source"]
            .as_str()
            .unwrap()
            .contains("snapshots/2222"),
        "{r}"
    );
    assert!(
        reused[0]["reused"]
            .as_str()
            .unwrap()
            .contains("snapshots/1111"),
        "{r}"
    );
    assert_eq!(r["summary"]["converted"], 3, "{r}");
    // The links are still links, to the same blobs.
    let link = snap.join("2222/pytorch_model.bin");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Again: everything is up to date.
    let (code, r, err) = migrate(&[], &dir.path().join("hub"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["summary"]["up_to_date"], 3, "{r}");
    assert_eq!(state(&repo.join("blobs")), blobs_before);
}

#[test]
fn a_snapshot_with_output_dir_becomes_a_plain_self_contained_folder() {
    let (dir, repo) = cache();
    let blobs_before = state(&repo.join("blobs"));
    let out = dir.path().join("tiny");
    let (code, r, err) = migrate(
        &["--output-dir", out.to_str().unwrap()],
        &repo.join("snapshots/2222"),
    );
    assert_eq!(code, 0, "{err}\n{r}");
    let mut names: Vec<String> = state(&out)
        .keys()
        .map(|p| p.strip_prefix(&out).unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "model.safetensors",
            "unet/diffusion_pytorch_model.safetensors"
        ]
    );
    for n in &names {
        assert!(is_regular(&out.join(n)), "{n} is not a regular file");
    }
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        b"{\"rev\": 2}\n"
    );
    assert_eq!(state(&repo.join("blobs")), blobs_before);
}

#[test]
fn a_checkpoint_name_that_cannot_be_read_is_a_failure_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    std::os::unix::fs::symlink("../blobs/missing", m.join("pytorch_model.bin")).unwrap();
    let (code, r, err) = migrate(&[], &m);
    assert_eq!(code, 1, "{err}\n{r}");
    let f = &r["files"][0];
    assert_eq!(f["status"], "failed", "{r}");
    let why = f["reason"].as_str().unwrap();
    assert!(
        why.contains("pytorch_model.bin") && why.contains("../blobs/missing"),
        "{why}"
    );
    assert!(why.contains("No such file"), "{why}");
}
