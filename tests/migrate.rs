//! `safetensorize migrate` end to end: the real binary over model folders copied from
//! `tests/fixtures/migrate/` (written by real torch with `generate.py` there) into temp dirs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/migrate")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A temp dir holding copies of the named fixture folders.
fn tree(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for n in names {
        copy_dir(&fixtures().join(n), &dir.path().join(n));
    }
    dir
}

fn migrate(args: &[&str], paths: &[&Path]) -> Output {
    let out = Command::new(BIN)
        .arg("migrate")
        .args(paths)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    out
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A run with `--report`; returns the exit code and the report.
fn migrate_report(args: &[&str], paths: &[&Path]) -> (i32, Value, String) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut all = args.to_vec();
    let rp = report.path().to_str().unwrap().to_string();
    all.extend(["--report", &rp]);
    let out = migrate(&all, paths);
    let json: Value = serde_json::from_slice(&fs::read(report.path()).unwrap()).unwrap();
    (code(&out), json, text(&out))
}

/// Runs `migrate` again over `paths` and checks it touches nothing under `root` and reports
/// every one of `up_to_date` files as up to date.
fn assert_rerun_writes_nothing(root: &Path, args: &[&str], paths: &[&Path], up_to_date: u64) {
    let before = snapshot(root);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (rc, report, log) = migrate_report(args, paths);
    assert_eq!(rc, 0, "{log}");
    assert_eq!(snapshot(root), before, "nothing rewritten");
    assert_eq!(report["summary"]["converted"].as_u64(), Some(0));
    assert_eq!(
        report["summary"]["up_to_date"].as_u64(),
        Some(up_to_date),
        "{report:#}"
    );
}

/// Tensor name -> (dtype, shape, bytes).
type Tensors = BTreeMap<String, (String, Vec<u64>, u64)>;

/// The tensors and `__metadata__` of a safetensors file.
fn header(path: &Path) -> (Tensors, BTreeMap<String, String>) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let json: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut tensors = BTreeMap::new();
    let mut meta = BTreeMap::new();
    let mut data_end = 0;
    for (k, v) in json.as_object().unwrap() {
        if k == "__metadata__" {
            for (mk, mv) in v.as_object().unwrap() {
                meta.insert(mk.clone(), mv.as_str().unwrap().to_string());
            }
            continue;
        }
        let off: Vec<u64> = v["data_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        data_end = data_end.max(off[1]);
        let shape = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        tensors.insert(
            k.clone(),
            (
                v["dtype"].as_str().unwrap().to_string(),
                shape,
                off[1] - off[0],
            ),
        );
    }
    assert_eq!(
        bytes.len(),
        8 + n + data_end as usize,
        "{} is complete",
        path.display()
    );
    (tensors, meta)
}

fn names(path: &Path) -> BTreeSet<String> {
    header(path).0.into_keys().collect()
}

/// Every file below `dir` (relative, sorted) with its size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(
                    e.path().strip_prefix(dir).unwrap().to_path_buf(),
                    (m.len(), m.modified().unwrap()),
                );
            }
        }
    }
    out
}

fn record<'a>(report: &'a Value, source_ends: &str) -> &'a Value {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"].as_str().unwrap().ends_with(source_ends))
        .unwrap_or_else(|| panic!("no record for {source_ends} in {report:#}"))
}

fn expected(rel: &str) -> BTreeSet<String> {
    let all: Value =
        serde_json::from_slice(&fs::read(fixtures().join("expected.json")).unwrap()).unwrap();
    all[rel]
        .as_object()
        .unwrap_or_else(|| panic!("{rel} not in expected.json"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn sharded_model_gets_hugging_face_names_and_an_index_of_exactly_what_was_written() {
    let t = tree(&["sharded"]);
    let d = t.path().join("sharded");
    let out = migrate(&[], &[&d]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s1 = d.join("model-00001-of-00002.safetensors");
    let s2 = d.join("model-00002-of-00002.safetensors");
    assert_eq!(
        names(&s1),
        expected("sharded/pytorch_model-00001-of-00002.bin")
    );
    assert_eq!(
        names(&s2),
        expected("sharded/pytorch_model-00002-of-00002.bin")
    );
    // Tied across shards: each shard file carries its own copy, both are listed.
    assert!(names(&s1).contains("embed.weight") && names(&s2).contains("lm_head.weight"));
    // Tied inside a shard: written once, recorded as an alias, not listed in the index.
    assert_eq!(
        header(&s2).1.get("decoder.weight").map(String::as_str),
        Some("lm_head.weight")
    );
    let index: Value =
        serde_json::from_slice(&fs::read(d.join("model.safetensors.index.json")).unwrap()).unwrap();
    let mut want = BTreeMap::new();
    let mut total = 0;
    for f in [&s1, &s2] {
        for (name, (_, _, bytes)) in header(f).0 {
            want.insert(name, f.file_name().unwrap().to_str().unwrap().to_string());
            total += bytes;
        }
    }
    let got: BTreeMap<String, String> = index["weight_map"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total));
    // In place, the sources stay.
    assert!(
        d.join("pytorch_model-00001-of-00002.bin").exists()
            && d.join("pytorch_model.bin.index.json").exists()
    );
}

#[test]
fn each_kind_of_model_folder_gets_its_ecosystem_name() {
    let t = tree(&["single", "pipe", "adapter", "run"]);
    let p = t.path();
    let out = migrate(&[], &[p]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for (src, dst) in [
        ("single/pytorch_model.bin", "single/model.safetensors"),
        (
            "pipe/unet/diffusion_pytorch_model.bin",
            "pipe/unet/diffusion_pytorch_model.safetensors",
        ),
        (
            "adapter/adapter_model.bin",
            "adapter/adapter_model.safetensors",
        ),
        ("run/last.ckpt", "run/last.safetensors"),
    ] {
        assert_eq!(names(&p.join(dst)), expected(src), "{dst}");
    }
    let (dtype, shape, _) =
        &header(&p.join("adapter/adapter_model.safetensors")).0["base_model.model.q.lora_B.weight"];
    assert_eq!((dtype.as_str(), shape.as_slice()), ("F16", &[4u64, 2][..]));
}

#[test]
fn training_state_and_non_checkpoints_are_skipped_and_a_broken_file_fails_the_run() {
    let t = tree(&["single", "bad"]);
    let (rc, report, log) = migrate_report(&[], &[t.path()]);
    assert_eq!(rc, 1, "a failure makes the exit code non-zero: {log}");
    for f in [
        "training_args.bin",
        "optimizer.pt",
        "scheduler.pt",
        "scaler.pt",
        "rng_state_0.pth",
    ] {
        let r = record(&report, f);
        assert_eq!(
            (r["status"].as_str(), r["skip"].as_str()),
            (Some("skipped"), Some("training-state")),
            "{f}"
        );
        assert!(
            !t.path()
                .join("single")
                .join(f)
                .with_extension("safetensors")
                .exists()
        );
    }
    let lfs = record(&report, "lfs.bin");
    assert_eq!(
        (lfs["status"].as_str(), lfs["skip"].as_str()),
        (Some("skipped"), Some("not-a-checkpoint"))
    );
    assert!(
        lfs["reason"].as_str().unwrap().contains("Git LFS pointer"),
        "{lfs}"
    );
    let broken = record(&report, "broken.pt");
    assert_eq!(broken["status"].as_str(), Some("failed"));
    assert!(
        broken["reason"].as_str().unwrap().contains("broken.pt"),
        "the reason names the file: {broken}"
    );
    assert!(log.contains("broken.pt") && log.contains("failed"), "{log}");
    // The batch went on past the broken file.
    assert_eq!(
        record(&report, "pytorch_model.bin")["status"].as_str(),
        Some("converted")
    );
    assert_eq!(report["summary"]["failed"].as_u64(), Some(1));
    assert_eq!(
        report["summary"]["skipped"]["training-state"].as_u64(),
        Some(5)
    );
    // One record per candidate file, each with the promised fields.
    for r in report["files"].as_array().unwrap() {
        for k in ["source", "outputs", "status", "tensors", "bytes", "seconds"] {
            assert!(!r[k].is_null(), "{k} missing in {r}");
        }
    }
    assert!(
        !report["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["source"].as_str().unwrap().ends_with("notes.txt"))
    );
    assert!(fs::read_dir(t.path().join("bad")).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    }));
}

#[test]
fn a_second_run_writes_nothing() {
    let t = tree(&["sharded", "single", "pipe"]);
    let first = migrate(&[], &[t.path()]);
    assert_eq!(code(&first), 0, "{}", text(&first));
    assert_rerun_writes_nothing(t.path(), &[], &[t.path()], 5);
}

#[test]
fn an_interrupted_sharded_run_resumes_and_the_index_comes_last() {
    let t = tree(&["sharded"]);
    let d = t.path().join("sharded");
    // Shard 2 is unreadable: shard 1 converts, the index must not appear.
    let good2 = fs::read(d.join("pytorch_model-00002-of-00002.bin")).unwrap();
    fs::write(
        d.join("pytorch_model-00002-of-00002.bin"),
        fs::read(fixtures().join("bad/lfs.bin")).unwrap(),
    )
    .unwrap();
    let (rc, report, log) = migrate_report(&[], &[&d]);
    assert_eq!(rc, 1, "{log}");
    assert!(d.join("model-00001-of-00002.safetensors").exists());
    assert!(
        !d.join("model.safetensors.index.json").exists(),
        "a partial set never looks complete"
    );
    let idx = record(&report, "pytorch_model.bin.index.json");
    assert_eq!(idx["status"].as_str(), Some("failed"));
    assert!(
        record(&report, "pytorch_model-00002-of-00002.bin")["reason"]
            .as_str()
            .unwrap()
            .contains("LFS")
    );
    // Fixed (git lfs pull): the next run converts only what is missing, then writes the index.
    fs::write(d.join("pytorch_model-00002-of-00002.bin"), good2).unwrap();
    let (rc, report, log) = migrate_report(&[], &[&d]);
    assert_eq!(rc, 0, "{log}");
    assert_eq!(
        record(&report, "pytorch_model-00001-of-00002.bin")["status"].as_str(),
        Some("up-to-date")
    );
    assert_eq!(
        record(&report, "pytorch_model-00002-of-00002.bin")["status"].as_str(),
        Some("converted")
    );
    assert!(d.join("model.safetensors.index.json").exists());
}

#[test]
fn output_dir_mirrors_one_folder_into_a_ready_safetensors_folder() {
    let t = tree(&["single"]);
    let out_dir = t.path().join("out");
    let out = migrate(
        &["--output-dir", out_dir.to_str().unwrap()],
        &[&t.path().join("single")],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let got: BTreeSet<String> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = ["model.safetensors", "config.json", "tokenizer.json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        got, want,
        "weights plus copies of the other files, no pickles"
    );
    assert_eq!(
        fs::read(out_dir.join("config.json")).unwrap(),
        fs::read(t.path().join("single/config.json")).unwrap()
    );
    assert!(
        !t.path().join("single/model.safetensors").exists(),
        "nothing written beside the sources"
    );
}

#[test]
fn output_dir_keeps_each_path_name_when_given_several() {
    let t = tree(&["single", "pipe", "sharded"]);
    let out_dir = t.path().join("out");
    let p = t.path();
    let out = migrate(
        &["-o", out_dir.to_str().unwrap()],
        &[&p.join("single"), &p.join("pipe"), &p.join("sharded")],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    for f in [
        "single/model.safetensors",
        "single/tokenizer.json",
        "pipe/model_index.json",
        "pipe/unet/diffusion_pytorch_model.safetensors",
        "pipe/unet/config.json",
        "sharded/model-00002-of-00002.safetensors",
        "sharded/model.safetensors.index.json",
        "sharded/config.json",
    ] {
        assert!(out_dir.join(f).is_file(), "{f}: {}", text(&out));
    }
    assert!(
        !out_dir
            .join("sharded/pytorch_model.bin.index.json")
            .exists()
    );
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let t = tree(&["single", "sharded", "bad"]);
    let before = snapshot(t.path());
    let out_dir = t.path().join("never");
    let out = migrate(
        &[
            "--dry-run",
            "--delete-source",
            "-o",
            out_dir.to_str().unwrap(),
            "--max-shard-size",
            "200B",
        ],
        &[t.path()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("would write") && stdout.contains("model-00001-of-00003.safetensors"),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains("optimizer.pt") && stdout.contains("training_args.bin"),
        "skips are in the plan"
    );
    assert!(stdout.contains("broken.pt"), "so are failures");
    assert_eq!(code(&out), 1, "the plan already knows broken.pt fails");
    assert_eq!(snapshot(t.path()), before);
    assert!(!out_dir.exists());
}

#[test]
fn delete_source_removes_only_converted_sources_after_their_outputs_exist() {
    let t = tree(&["single", "sharded", "bad"]);
    let p = t.path();
    let (rc, report, log) = migrate_report(&["--delete-source"], &[p]);
    assert_eq!(rc, 1, "{log}");
    assert!(!p.join("single/pytorch_model.bin").exists());
    assert!(p.join("single/model.safetensors").exists());
    assert!(
        record(&report, "single/pytorch_model.bin")["source_deleted"]
            .as_bool()
            .unwrap()
    );
    for kept in [
        "single/optimizer.pt",
        "single/training_args.bin",
        "bad/broken.pt",
        "bad/lfs.bin",
        "single/config.json",
    ] {
        assert!(p.join(kept).exists(), "{kept} is not a converted source");
    }
    // A sharded model's sources go once the whole model and its index are written.
    assert!(p.join("sharded/model.safetensors.index.json").exists());
    for gone in [
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
    ] {
        assert!(!p.join("sharded").join(gone).exists(), "{gone}");
    }
    assert_eq!(
        names(&p.join("sharded/model-00002-of-00002.safetensors")),
        expected("sharded/pytorch_model-00002-of-00002.bin")
    );
}

#[test]
fn delete_source_keeps_a_sharded_model_whose_index_could_not_be_written() {
    let t = tree(&["sharded"]);
    let d = t.path().join("sharded");
    fs::write(
        d.join("pytorch_model-00002-of-00002.bin"),
        b"<!doctype html><html>login</html>",
    )
    .unwrap();
    let out = migrate(&["--delete-source"], &[&d]);
    assert_eq!(code(&out), 1);
    assert!(
        d.join("pytorch_model-00001-of-00002.bin").exists(),
        "kept until the whole model is converted"
    );
    assert!(d.join("pytorch_model.bin.index.json").exists());
}

#[test]
fn partitions_cover_every_file_exactly_once() {
    let t = tree(&["single", "sharded", "pipe", "adapter", "run", "bad"]);
    let sources = |report: &Value| -> Vec<String> {
        report["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["source"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, full, _) = migrate_report(&["--dry-run"], &[t.path()]);
    let all: BTreeSet<String> = sources(&full).into_iter().collect();
    for n in [1, 2, 3, 7] {
        let mut seen = Vec::new();
        for i in 0..n {
            let part = format!("{i}/{n}");
            let (_, r, _) = migrate_report(&["--dry-run", "--partition", &part], &[t.path()]);
            assert_eq!(r["partition"].as_str(), Some(part.as_str()));
            seen.extend(sources(&r));
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), unique.len(), "no file twice with N={n}");
        assert_eq!(unique, all, "every file once with N={n}");
    }
    // The shards of one model stay together, with their index.
    let (_, r, _) = migrate_report(&["--dry-run", "--partition", "0/2"], &[t.path()]);
    let shards = sources(&r)
        .iter()
        .filter(|s| s.contains("/sharded/pytorch_model"))
        .count();
    assert!(shards == 0 || shards == 3, "{shards}");
    for bad in ["2/2", "1/0", "x", "1"] {
        let out = migrate(&["--partition", bad], &[t.path()]);
        assert_eq!(code(&out), 2, "{bad}: {}", text(&out));
    }
}

#[test]
fn max_shard_size_splits_a_single_file_in_hugging_face_greedy_order() {
    let t = tree(&["single"]);
    let d = t.path().join("single");
    let out = migrate(&["--max-shard-size", "200B"], &[&d]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Sizes a=64 b=64 c=256 c.bias=16 d=128, limit 200: c is too big and gets its own file at
    // once; a, b, c.bias fill the next; d starts the last.
    let shard = |i| d.join(format!("model-0000{i}-of-00003.safetensors"));
    assert_eq!(names(&shard(1)), BTreeSet::from(["c.weight".to_string()]));
    assert_eq!(
        names(&shard(2)),
        ["a.weight", "b.weight", "c.bias"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(names(&shard(3)), BTreeSet::from(["d.weight".to_string()]));
    for i in 2..=3 {
        let data: u64 = header(&shard(i)).0.values().map(|v| v.2).sum();
        assert!(data <= 200, "shard {i} holds {data} bytes");
    }
    let index: Value =
        serde_json::from_slice(&fs::read(d.join("model.safetensors.index.json")).unwrap()).unwrap();
    assert_eq!(
        index["weight_map"]["c.weight"].as_str(),
        Some("model-00001-of-00003.safetensors")
    );
    assert_eq!(index["weight_map"].as_object().unwrap().len(), 5);
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(528));
    assert!(!d.join("model.safetensors").exists());
    // A limit everything fits under gives one plain file and no index.
    let t2 = tree(&["single"]);
    let d2 = t2.path().join("single");
    assert_eq!(code(&migrate(&["--max-shard-size", "5GB"], &[&d2])), 0);
    assert!(
        d2.join("model.safetensors").exists() && !d2.join("model.safetensors.index.json").exists()
    );
}

#[test]
fn max_shard_size_renumbers_a_sharded_model_across_its_files() {
    let t = tree(&["sharded"]);
    let d = t.path().join("sharded");
    let out = migrate(&["--max-shard-size", "100B"], &[&d]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let index: Value =
        serde_json::from_slice(&fs::read(d.join("model.safetensors.index.json")).unwrap()).unwrap();
    let files: BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Each source shard holds 64+64+16 bytes: two files each under a 100-byte limit.
    assert_eq!(files.len(), 4, "{files:?}");
    for (i, f) in files.iter().enumerate() {
        assert_eq!(*f, format!("model-0000{}-of-00004.safetensors", i + 1));
        assert!(d.join(f).exists());
    }
    assert!(!d.join("model-00001-of-00002.safetensors").exists());
}

#[test]
fn a_stale_output_is_not_replaced_without_overwrite() {
    let t = tree(&["adapter"]);
    let d = t.path().join("adapter");
    assert_eq!(code(&migrate(&[], &[&d])), 0);
    // The source changes after the output was written.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let src = d.join("adapter_model.bin");
    let bytes = fs::read(&src).unwrap();
    fs::write(&src, bytes).unwrap();
    let out = migrate(&[], &[&d]);
    assert_eq!(code(&out), 1);
    assert!(
        text(&out).contains("--overwrite") && text(&out).contains("adapter_model.safetensors"),
        "{}",
        text(&out)
    );
    let out = migrate(&["--overwrite"], &[&d]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

#[test]
fn include_and_exclude_pick_files() {
    let t = tree(&["single", "pipe", "adapter"]);
    let (_, r, _) = migrate_report(
        &["--dry-run", "--include", "*.bin", "--exclude", "pipe/**"],
        &[t.path()],
    );
    let sources: BTreeSet<String> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            Path::new(x["source"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        sources,
        [
            "adapter_model.bin",
            "pytorch_model.bin",
            "training_args.bin"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    );
}

/// Every file under `dir`: relative path -> bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(
                    e.path().strip_prefix(dir).unwrap().to_path_buf(),
                    fs::read(e.path()).unwrap(),
                );
            }
        }
    }
    out
}

/// A report with every `seconds` removed, `root` cut from paths and `files` in source order.
fn comparable(report: &Value, root: &Path) -> Value {
    fn walk(v: &Value, root: &str) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "seconds")
                    .map(|(k, v)| (k.clone(), walk(v, root)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| walk(v, root)).collect()),
            Value::String(s) => Value::String(s.replace(root, "<root>")),
            other => other.clone(),
        }
    }
    let mut v = walk(report, root.to_str().unwrap());
    if let Some(files) = v["files"].as_array_mut() {
        files.sort_by(|a, b| a["source"].as_str().cmp(&b["source"].as_str()));
    }
    v
}

#[test]
fn jobs_convert_several_files_at_once_with_the_same_result() {
    let names = ["single", "pipe", "adapter", "run", "sharded"];
    let serial = tree(&names);
    let (rc1, r1, log1) = migrate_report(&["--jobs", "1", "--threads", "1"], &[serial.path()]);
    assert_eq!(rc1, 0, "{log1}");
    let parallel = tree(&names);
    let (rc, r, log) = migrate_report(&["--jobs", "4", "--threads", "2"], &[parallel.path()]);
    assert_eq!(rc, 0, "{log}");
    assert_eq!(r["summary"]["converted"].as_u64(), Some(7));
    assert!(
        parallel
            .path()
            .join("sharded/model.safetensors.index.json")
            .exists()
    );
    let (a, b) = (contents(serial.path()), contents(parallel.path()));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same files are written"
    );
    for (path, bytes) in &a {
        assert!(
            bytes == &b[path],
            "{} differs between --jobs 1 and --jobs 4",
            path.display()
        );
    }
    assert_eq!(
        comparable(&r1, serial.path()),
        comparable(&r, parallel.path()),
        "the reports agree apart from timings"
    );
}

#[test]
fn a_missing_path_is_reported_and_the_rest_converts() {
    let t = tree(&["adapter"]);
    let missing = t.path().join("nope");
    let out = migrate(&[], &[&missing, &t.path().join("adapter")]);
    assert_eq!(code(&out), 1);
    assert!(text(&out).contains("nope"), "{}", text(&out));
    assert!(t.path().join("adapter/adapter_model.safetensors").exists());
}

#[test]
fn links_to_files_are_read_through_wherever_they_point_and_outputs_are_named_after_the_link() {
    let t = tree(&["adapter", "run"]);
    let blob = t.path().join("adapter/adapter_model.bin");
    let before = fs::read(&blob).unwrap();
    let link = t.path().join("run/linked_adapter.bin");
    std::os::unix::fs::symlink(&blob, &link).unwrap();
    // The link's target lies outside the PATH migrated: read through it all the same.
    let (rc, r, log) = migrate_report(&[], &[&t.path().join("run")]);
    assert_eq!(rc, 0, "{log}");
    assert_eq!(
        record(&r, "linked_adapter.bin")["status"].as_str(),
        Some("converted")
    );
    let out = t.path().join("run/linked_adapter.safetensors");
    assert!(fs::symlink_metadata(&out).unwrap().file_type().is_file());
    assert!(!t.path().join("adapter/adapter_model.safetensors").exists());
    assert_eq!(
        fs::read(&blob).unwrap(),
        before,
        "the link's target was modified"
    );
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn convert_max_shard_size_writes_hf_shards_and_an_index_covering_every_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/pytorch_model.bin");
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .arg("convert")
            .arg(&example)
            .arg("-o")
            .arg(dir.path().join("model.safetensors"))
            .args(["--max-shard-size", "2KB"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let index: Value =
        serde_json::from_slice(&fs::read(dir.path().join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let files: BTreeSet<&str> = map.values().map(|v| v.as_str().unwrap()).collect();
    assert!(files.len() >= 2, "{files:?}");
    let mut total = 0u64;
    let mut seen = BTreeSet::new();
    for f in &files {
        assert!(
            f.starts_with("model-0000") && f.contains(&format!("-of-{:05}", files.len())),
            "{f}"
        );
        let (tensors, _) = header(&dir.path().join(f));
        for (name, t) in &tensors {
            assert_eq!(
                map[name].as_str(),
                Some(*f),
                "{name} listed in the wrong file"
            );
            total += t.2;
            seen.insert(name.clone());
        }
    }
    assert_eq!(
        seen.len(),
        map.len(),
        "the index lists exactly the tensors written"
    );
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total));
    // A second run refuses to overwrite; --overwrite replaces.
    assert_eq!(code(&run(&[])), 1);
    assert_eq!(code(&run(&["--overwrite"])), 0);
}

/// Every tensor's data in a safetensors file.
fn tensor_data(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let json: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    json.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let off: Vec<usize> = v["data_offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), bytes[8 + n + off[0]..8 + n + off[1]].to_vec())
        })
        .collect()
}

/// The bytes torch held for each tensor of the `sharded4` fixture (recorded by `generate.py`).
fn sharded4_goldens() -> BTreeMap<String, Vec<u8>> {
    let all: Value =
        serde_json::from_slice(&fs::read(fixtures().join("expected.json")).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for (rel, tensors) in all.as_object().unwrap() {
        if !rel.starts_with("sharded4/") {
            continue;
        }
        for (name, v) in tensors.as_object().unwrap() {
            let hex = v[2].as_str().unwrap().as_bytes();
            let bytes = hex
                .chunks(2)
                .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
                .collect();
            assert!(out.insert(name.clone(), bytes).is_none(), "{name} twice");
        }
    }
    assert_eq!(out.len(), 8);
    out
}

/// The index of `dir`, checked against the files it names: `weight_map` lists exactly the
/// tensors written and where, `total_size` is their bytes. Returns the files in order and all
/// tensors' data.
fn checked_index(dir: &Path) -> (Vec<String>, BTreeMap<String, Vec<u8>>) {
    let index: Value =
        serde_json::from_slice(&fs::read(dir.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let map: BTreeMap<String, String> = index["weight_map"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let files: BTreeSet<String> = map.values().cloned().collect();
    let mut want = BTreeMap::new();
    let mut total = 0;
    let mut data = BTreeMap::new();
    for f in &files {
        for (name, (_, _, bytes)) in header(&dir.join(f)).0 {
            want.insert(name, f.clone());
            total += bytes;
        }
        data.extend(tensor_data(&dir.join(f)));
    }
    assert_eq!(map, want, "weight_map = exactly the tensors written");
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total));
    (files.into_iter().collect(), data)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn max_shard_size_regroups_small_shards_of_a_sharded_model_into_fewer_files() {
    let t = tree(&["sharded4"]);
    let d = t.path().join("sharded4");
    // The plan first: nothing touched.
    let before = snapshot(t.path());
    let out = migrate(&["--dry-run", "--max-shard-size", "200B"], &[&d]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("model-00002-of-00002.safetensors"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(t.path()), before);

    let (rc, report, log) = migrate_report(&["--max-shard-size", "200B"], &[&d]);
    assert_eq!(rc, 0, "{log}");
    // Input-shard order, then each shard's order: 32 16 | 64 16 | 256 16 | 32 8 bytes. The
    // 256-byte tensor is over the limit and gets a file of its own at once; everything else
    // (184 bytes) fits in the one being filled, across all four input shards.
    let (files, data) = checked_index(&d);
    assert_eq!(
        files,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
    assert_eq!(names(&d.join(&files[0])), set(&["layer1.weight"]));
    let merged = d.join(&files[1]);
    assert_eq!(
        names(&merged),
        set(&[
            "embed.weight",
            "norm.weight",
            "layer0.weight",
            "layer0.bias",
            "layer1.bias",
            "lm_head.weight",
            "final.bias",
        ])
    );
    let (tensors, meta) = header(&merged);
    assert_eq!(tensors.values().map(|v| v.2).sum::<u64>(), 184);
    assert_eq!(tensors["final.bias"].0, "BF16");
    // Tied inside input shard 4: still an alias, now in the merged file's metadata.
    assert_eq!(
        meta.get("decoder.weight").map(String::as_str),
        Some("lm_head.weight")
    );
    // Tied across input shards 1 and 4: each had its own copy; both are written, equal.
    assert_eq!(data["embed.weight"], data["lm_head.weight"]);
    // Every tensor holds the bytes torch had (the transposed view in C order).
    assert_eq!(data, sharded4_goldens());
    // And the same bytes as a direct conversion of each input shard.
    for i in 1..=4 {
        let src = d.join(format!("pytorch_model-0000{i}-of-00004.bin"));
        let single = t.path().join(format!("direct{i}.safetensors"));
        let out = Command::new(BIN)
            .arg("convert")
            .arg(&src)
            .arg("-o")
            .arg(&single)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
        for (name, bytes) in tensor_data(&single) {
            assert_eq!(data[&name], bytes, "{name} from shard {i}");
        }
    }
    // No per-shard outputs, no stale numbering.
    assert!(!d.join("model-00001-of-00004.safetensors").exists());
    assert!(!d.join("model.safetensors").exists());
    // The report: one record per input shard naming the files its tensors went to; the bytes
    // of the records add up to the files written.
    let rec = |i: usize| record(&report, &format!("pytorch_model-0000{i}-of-00004.bin"));
    for i in 1..=4 {
        assert_eq!(rec(i)["status"].as_str(), Some("converted"), "{report:#}");
    }
    let outputs = |i: usize| -> Vec<String> {
        rec(i)["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                Path::new(p.as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    assert_eq!(outputs(3), files);
    for i in [1, 2, 4] {
        assert_eq!(outputs(i), [files[1].clone()]);
    }
    assert_eq!(rec(4)["aliases"][0][0].as_str(), Some("decoder.weight"));
    let recorded: u64 = (1..=4).map(|i| rec(i)["bytes"].as_u64().unwrap()).sum();
    let on_disk: u64 = files
        .iter()
        .map(|f| fs::metadata(d.join(f)).unwrap().len())
        .sum();
    assert_eq!(recorded, on_disk);
    let idx = record(&report, "pytorch_model.bin.index.json");
    assert_eq!(idx["status"].as_str(), Some("converted"));
    assert_eq!(idx["tensors"].as_u64(), Some(8));
    assert_eq!(idx["bytes"].as_u64(), Some(440));

    // A second run finds everything up to date and writes nothing.
    assert_rerun_writes_nothing(t.path(), &["--max-shard-size", "200B"], &[&d], 5);
}

#[test]
fn an_interrupted_regrouping_resumes_with_only_the_missing_file() {
    let t = tree(&["sharded4"]);
    let d = t.path().join("sharded4");
    assert_eq!(code(&migrate(&["--max-shard-size", "200B"], &[&d])), 0);
    // As if stopped after the first file: the second and the index are missing.
    fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
    fs::remove_file(d.join("model.safetensors.index.json")).unwrap();
    let kept = snapshot(&d)[Path::new("model-00001-of-00002.safetensors")];
    let (rc, report, log) = migrate_report(&["--max-shard-size", "200B"], &[&d]);
    assert_eq!(rc, 0, "{log}");
    assert_eq!(
        snapshot(&d)[Path::new("model-00001-of-00002.safetensors")],
        kept,
        "the up-to-date file is not rewritten"
    );
    // Every input shard has a tensor in the rewritten file.
    for i in 1..=4 {
        let r = record(&report, &format!("pytorch_model-0000{i}-of-00004.bin"));
        assert_eq!(r["status"].as_str(), Some("converted"), "{report:#}");
    }
    let (_, data) = checked_index(&d);
    assert_eq!(data, sharded4_goldens());
    // A source changed since: the merged file it feeds is stale and is not silently replaced.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let src = d.join("pytorch_model-00002-of-00004.bin");
    fs::write(&src, fs::read(&src).unwrap()).unwrap();
    let (rc, report, log) = migrate_report(&["--max-shard-size", "200B"], &[&d]);
    assert_eq!(rc, 1, "{log}");
    let r = record(&report, "pytorch_model-00002-of-00004.bin");
    assert!(
        r["reason"].as_str().unwrap().contains("--overwrite"),
        "{report:#}"
    );
    assert_eq!(
        record(&report, "pytorch_model-00003-of-00004.bin")["status"].as_str(),
        Some("failed"),
        "shard 3 also feeds the stale file"
    );
    assert_eq!(
        code(&migrate(
            &["--max-shard-size", "200B", "--overwrite"],
            &[&d]
        )),
        0
    );
}

#[test]
fn regrouping_with_delete_source_removes_the_shards_once_every_output_is_reread() {
    let t = tree(&["sharded4"]);
    let d = t.path().join("sharded4");
    let (rc, report, log) = migrate_report(&["--max-shard-size", "100B", "--delete-source"], &[&d]);
    assert_eq!(rc, 0, "{log}");
    // 32 16 | 64 16 | 256 16 | 32 8 with a 100-byte limit: [embed norm] closes at layer0.weight;
    // layer1.weight jumps the queue; [layer0.* layer1.bias] closes at lm_head.weight.
    let (files, data) = checked_index(&d);
    assert_eq!(files.len(), 4, "{files:?}");
    let want = [
        set(&["embed.weight", "norm.weight"]),
        set(&["layer1.weight"]),
        set(&["layer0.weight", "layer0.bias", "layer1.bias"]),
        set(&["lm_head.weight", "final.bias"]),
    ];
    for (i, (f, w)) in files.iter().zip(&want).enumerate() {
        assert_eq!(*f, format!("model-0000{}-of-00004.safetensors", i + 1));
        assert_eq!(&names(&d.join(f)), w, "{f}");
    }
    assert_eq!(data, sharded4_goldens());
    for i in 1..=4 {
        let name = format!("pytorch_model-0000{i}-of-00004.bin");
        assert!(!d.join(&name).exists(), "{name}");
        assert!(record(&report, &name)["source_deleted"].as_bool().unwrap());
    }
    assert!(!d.join("pytorch_model.bin.index.json").exists());
    assert!(d.join("config.json").exists());
}

#[test]
fn regrouping_refuses_a_tensor_name_held_by_two_shards() {
    let t = tree(&["sharded4"]);
    let d = t.path().join("sharded4");
    // Shard 2 replaced by a copy of shard 1: both hold embed.weight.
    fs::copy(
        d.join("pytorch_model-00001-of-00004.bin"),
        d.join("pytorch_model-00002-of-00004.bin"),
    )
    .unwrap();
    let (rc, report, log) = migrate_report(&["--max-shard-size", "200B"], &[&d]);
    assert_eq!(rc, 1, "{log}");
    let why = record(&report, "pytorch_model.bin.index.json")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains("embed.weight") && why.contains("pytorch_model-00002-of-00004.bin"),
        "{why}"
    );
    assert!(
        !d.read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".safetensors")),
        "nothing written"
    );
}

#[test]
fn json_prints_the_report_on_stdout() {
    let dir = tree(&["adapter"]);
    let out = Command::new(BIN)
        .args(["migrate", "--dry-run", "--json"])
        .arg(dir.path().join("adapter"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(report["schema"], "safetensorize.migrate/1");
    assert_eq!(report["dry_run"], true);
    assert!(report["files"].as_array().is_some_and(|f| !f.is_empty()));
}

/// The library tells its observer, on the worker that opened each source, when bulk memory was
/// freed: three times per converted checkpoint (the pickle and audit, the tree, the selection's
/// leftovers), never for a folder with nothing to convert.
#[test]
fn the_observer_hears_when_each_opened_source_released_its_memory() {
    use safetensorize::migrate::{self, Control, MigrateOptions, Observer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Observer for Count {
        fn released(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let t = tree(&["sharded"]);
    let out = tempfile::tempdir().unwrap();
    let opts = MigrateOptions {
        output_dir: Some(out.path().to_path_buf()),
        ..MigrateOptions::default()
    };
    let count = Count::default();
    let report = migrate::run(&[t.path().to_path_buf()], &opts, &count, &Control::new()).unwrap();
    let shards = fs::read_dir(t.path().join("sharded"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "bin")
        })
        .count();
    assert!(shards >= 2, "{shards}");
    assert_eq!(report.summary.failed, 0);
    assert_eq!(count.0.load(Ordering::Relaxed), 3 * shards);
    // Nothing opened, nothing released.
    let empty = tempfile::tempdir().unwrap();
    fs::write(empty.path().join("notes.txt"), "no checkpoint here").unwrap();
    let count = Count::default();
    let opts = MigrateOptions {
        output_dir: Some(out.path().join("empty")),
        ..MigrateOptions::default()
    };
    migrate::run(
        &[empty.path().to_path_buf()],
        &opts,
        &count,
        &Control::new(),
    )
    .unwrap();
    assert_eq!(count.0.load(Ordering::Relaxed), 0);
}
