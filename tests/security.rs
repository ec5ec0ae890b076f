//! Security tests: the adversarial corpus (`tests/adversarial/`, written by the stdlib-only
//! `generate.py`) and a seeded mutation test over the valid fixtures.
//!
//! For every corpus case: `convert` exits with the documented code (0, 1, or 3 for a policy
//! refusal), never panics, finishes in bounded time, leaves no output unless it succeeded, and
//! never lets the canary payload run (`touch safetensorize-canary` in the working directory, a
//! fresh empty folder); `scan` gives the documented verdict and exit code.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");
const CASE_TIMEOUT: Duration = Duration::from_secs(60);
const PANIC_EXIT_CODE: i32 = 101;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifest() -> Value {
    let text = fs::read_to_string(root().join("tests/adversarial/manifest.json"))
        .expect("tests/adversarial/manifest.json (run generate.py)");
    serde_json::from_str(&text).expect("manifest is JSON")
}

/// Runs the binary in `cwd` with a timeout; returns its output.
fn run(cwd: &Path, args: &[&str]) -> Result<Output, String> {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return child.wait_with_output().map_err(|e| e.to_string());
        }
        if started.elapsed() > CASE_TIMEOUT {
            let _ = child.kill();
            return Err(format!("timed out after {CASE_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn exit_code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn check_case(case: &Value) -> Result<(), String> {
    let file = case["file"].as_str().ok_or("file")?;
    let want_convert = case["convert"].as_i64().ok_or("convert")? as i32;
    let want_scan = case["scan"].as_str().ok_or("scan")?;
    let args: Vec<String> = case["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let input = root().join("tests/adversarial").join(file);
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = work.path().join("out.safetensors");

    let mut cargs = vec![
        "convert",
        input.to_str().ok_or("path")?,
        "-o",
        out.to_str().ok_or("path")?,
    ];
    cargs.extend(args.iter().map(String::as_str));
    let c = run(work.path(), &cargs)?;
    let stderr = String::from_utf8_lossy(&c.stderr);
    let code = exit_code(&c);
    if code == PANIC_EXIT_CODE || stderr.contains("panicked") {
        return Err(format!("convert panicked: {stderr}"));
    }
    if code != want_convert {
        return Err(format!(
            "convert exit {code}, expected {want_convert}: {}",
            stderr.trim()
        ));
    }
    if want_convert == 3 && !(stderr.contains("refusing") && stderr.contains("byte")) {
        return Err(format!(
            "a refusal must name the globals and their offsets: {stderr}"
        ));
    }
    let left: Vec<String> = fs::read_dir(work.path())
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let expected_left: &[&str] = if want_convert == 0 {
        &["out.safetensors"]
    } else {
        &[]
    };
    if left != expected_left {
        return Err(format!(
            "files left in the working folder: {left:?} (expected {expected_left:?})"
        ));
    }
    if want_convert == 0 {
        let bytes = fs::read(&out).map_err(|e| e.to_string())?;
        safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| format!("output is not valid safetensors: {e}"))?;
    }

    let s = run(
        work.path(),
        &["scan", "--json", input.to_str().ok_or("path")?],
    )?;
    let scode = exit_code(&s);
    if scode == PANIC_EXIT_CODE {
        return Err(format!(
            "scan panicked: {}",
            String::from_utf8_lossy(&s.stderr)
        ));
    }
    let report: Value =
        serde_json::from_slice(&s.stdout).map_err(|e| format!("scan --json output: {e}"))?;
    let verdict = report[0]["verdict"].as_str().unwrap_or("?");
    if verdict != want_scan {
        return Err(format!(
            "scan verdict {verdict}, expected {want_scan}: {}",
            serde_json::to_string(&report[0]["findings"]).unwrap_or_default()
        ));
    }
    let want_scode = match want_scan {
        "safe" => 0,
        "suspicious" => 1,
        "unscannable" => 5,
        _ => 3,
    };
    if scode != want_scode {
        return Err(format!("scan exit {scode}, expected {want_scode}"));
    }
    if want_scan == "dangerous" {
        let named = report[0]["globals"].as_array().is_some_and(|g| {
            g.iter()
                .any(|g| g["class"] == "dangerous" && g["offset"].is_u64())
        });
        let gadget = report[0]["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["severity"] == "dangerous"));
        if !named && !gadget {
            return Err("a dangerous verdict must name the global and its offset".into());
        }
    }
    if work.path().join("safetensorize-canary").exists() {
        return Err("THE CANARY RAN".into());
    }
    Ok(())
}

#[test]
fn adversarial_corpus_is_refused_reported_and_never_executed() {
    let m = manifest();
    let cases = m["cases"].as_array().expect("cases");
    assert!(
        cases.len() >= 60,
        "the corpus must hold at least 60 files, found {}",
        cases.len()
    );
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .chunks(cases.len().div_ceil(8))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|c| check_case(c).err().map(|e| format!("{}: {e}", c["file"])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["a checking thread panicked".into()])
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

#[test]
fn every_corpus_file_is_in_the_manifest() {
    let m = manifest();
    let listed: std::collections::HashSet<&str> = m["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter_map(|c| c["file"].as_str())
        .collect();
    for e in fs::read_dir(root().join("tests/adversarial"))
        .expect("corpus folder")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".py") || name == "manifest.json" {
            continue;
        }
        assert!(
            listed.contains(name.as_str()),
            "{name} is not in the manifest"
        );
    }
}

#[test]
fn scan_recurses_into_folders_and_exits_with_the_worst_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).expect("mkdir");
    fs::copy(
        root().join("tests/adversarial/benign_zip.pt"),
        dir.path().join("a.pt"),
    )
    .expect("copy");
    fs::copy(
        root().join("tests/adversarial/call_os_system.pt"),
        sub.join("b.bin"),
    )
    .expect("copy");
    fs::write(sub.join("README.md"), "not a checkpoint\n").expect("write");
    let o = run(
        dir.path(),
        &["scan", "--json", dir.path().to_str().expect("path")],
    )
    .expect("run");
    assert_eq!(exit_code(&o), 3);
    let report: Value = serde_json::from_slice(&o.stdout).expect("json");
    let verdicts: Vec<(&str, &str)> = report
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap_or(""),
                r["verdict"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    assert!(
        verdicts[0].0.ends_with("a.pt") && verdicts[0].1 == "safe",
        "{verdicts:?}"
    );
    assert!(
        verdicts[1].0.ends_with("b.bin") && verdicts[1].1 == "dangerous",
        "{verdicts:?}"
    );
}

#[test]
fn scan_names_the_dangerous_global_with_its_offset_in_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(
        dir.path(),
        &[
            "scan",
            root()
                .join("tests/adversarial/dotted_torch_serialization_os_system.pt")
                .to_str()
                .expect("p"),
        ],
    )
    .expect("run");
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(exit_code(&o), 3, "{text}");
    assert!(
        text.contains("dangerous   torch.serialization.os.system (STACK_GLOBAL at byte"),
        "{text}"
    );
}

#[test]
fn real_torch_fixtures_scan_safe_or_explain_why() {
    // Benign controls written by torch itself, TorchScript included, are safe.
    let opts = safetensorize::OpenOptions::default();
    for e in fs::read_dir(root().join("tests/fixtures/ckpt"))
        .expect("fixtures")
        .flatten()
    {
        let r = safetensorize::scan::scan_file(&e.path(), &opts);
        let name = e.file_name().to_string_lossy().into_owned();
        // A whole-module save names its own classes (`__main__.Scaler`): loading it imports
        // user code, which no scanner can vouch for.
        if name == "whole_module_legacy.pt" || name == "whole_module_zip.pt" {
            assert_eq!(
                r.verdict,
                safetensorize::scan::Verdict::Suspicious,
                "{name}"
            );
            continue;
        }
        if name.starts_with("mal_") {
            assert_ne!(r.verdict, safetensorize::scan::Verdict::Dangerous, "{name}");
            continue;
        }
        assert_eq!(
            r.verdict,
            safetensorize::scan::Verdict::Safe,
            "{name}: {:?}",
            r.findings
        );
    }
}

/// A small deterministic generator (xorshift), so the mutation test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutates `data`: byte flips, overwrites with interesting values, truncations, insertions,
/// duplicated ranges.
fn mutate(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        if d.is_empty() {
            d.push(0x80);
        }
        let at = rng.below(d.len());
        match rng.below(6) {
            0 => d[at] ^= 1 << rng.below(8),
            1 => {
                d[at] = [0x00, 0xff, 0x7f, 0x80, b'.', b'(', b'R', b'c', 0x93, 0x94][rng.below(10)]
            }
            2 => d.truncate(at),
            3 => {
                let junk: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                d.splice(at..at, junk);
            }
            4 => {
                let end = (at + 1 + rng.below(64)).min(d.len());
                let chunk = d[at..end].to_vec();
                let to = rng.below(d.len());
                d.splice(to..to, chunk);
            }
            _ => {
                // A length field blown up: four 0xff bytes.
                let end = (at + 4).min(d.len());
                d[at..end].fill(0xff);
            }
        }
    }
    d
}

/// Mutated valid checkpoints never make the library panic: open, select, write, scan.
#[test]
fn mutated_fixtures_never_panic() {
    let fixtures: Vec<PathBuf> = [
        "proto2_zip.pt",
        "proto4_zip.pt",
        "proto2_legacy.pt",
        "views_zip.pt",
        "lightning.ckpt",
        "pickle_dumps_p2.pkl",
        "big_endian.pt",
    ]
    .iter()
    .map(|n| root().join("tests/fixtures/ckpt").join(n))
    .filter(|p| p.exists())
    .collect();
    let iterations: usize = std::env::var("SAFETENSORIZE_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("SAFETENSORIZE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_ef01);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(seed);
    let mut panics = Vec::new();
    let limits = safetensorize::pickle::Limits {
        max_ops: 5_000_000,
        max_stack: 1_000_000,
        max_memo: 1_000_000,
        max_string: 64 << 20,
        ..Default::default()
    };
    let opts = safetensorize::OpenOptions { limits };
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..iterations {
        let src = &fixtures[i % fixtures.len()];
        let data = fs::read(src).expect("fixture");
        let m = mutate(&mut rng, &data);
        let input = dir.path().join(format!("m{i}.pt"));
        fs::write(&input, &m).expect("write");
        let output = dir.path().join(format!("m{i}.safetensors"));
        let result = std::panic::catch_unwind(|| {
            let _ = safetensorize::scan::scan_file(&input, &opts);
            let pipeline = safetensorize::Pipeline {
                limits,
                policy: safetensorize::pipeline::Policy {
                    strict: false,
                    allow_dangerous: true,
                },
                ..Default::default()
            };
            let target = safetensorize::pipeline::Target::File(output.clone());
            let _ = pipeline.run(&input, &target, &|_| {});
        });
        if result.is_err() {
            let keep = root().join("target").join(format!("mutation-panic-{i}.pt"));
            let _ = fs::write(&keep, &m);
            panics.push(format!(
                "iteration {i} (from {}), input kept at {}",
                src.display(),
                keep.display()
            ));
        }
        let _ = fs::remove_file(&input);
        let _ = fs::remove_file(&output);
    }
    std::panic::set_hook(prev_hook);
    assert!(
        panics.is_empty(),
        "{} panics (seed {seed:#x}):\n  {}",
        panics.len(),
        panics.join("\n  ")
    );
}

#[test]
fn load_from_bytes_on_bytes_that_are_not_a_checkpoint_is_dangerous_in_scan_and_refused_by_convert_at_its_offset()
 {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("lfb.pt");
    // protocol 3: torch.storage._load_from_bytes((b"garbage!",)) via SHORT_BINBYTES, REDUCE at 45.
    std::fs::write(
        &f,
        b"\x80\x03ctorch.storage\n_load_from_bytes\nC\x08garbage!\x85R.",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_safetensorize");
    let scan = std::process::Command::new(bin)
        .arg("scan")
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&scan.stdout);
    // `_load_from_bytes` is `torch.load` of its argument: on anything but a checkpoint, a full
    // unpickler.
    assert_eq!(scan.status.code(), Some(3), "{text}");
    assert!(
        text.contains("dangerous") && text.contains("embedded-not-checkpoint"),
        "{text}"
    );
    let out = dir.path().join("lfb.safetensors");
    let conv = std::process::Command::new(bin)
        .arg("convert")
        .arg(&f)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&conv.stderr);
    assert_eq!(conv.status.code(), Some(3), "{err}");
    assert!(
        err.contains("at byte 45") && err.contains("_load_from_bytes"),
        "{err}"
    );
    assert!(!out.exists());
}

/// `torch.storage._load_from_bytes(b)` where `b` is a legacy stream whose sys_info pickle runs
/// more opcodes (25) than `--max-pickle-ops 10`, while the outer pickle runs 6.
fn nested_over_the_op_limit() -> Vec<u8> {
    let mut inner = Vec::new();
    // The magic number: PROTO 2, LONG1 of 10 bytes, STOP.
    inner.extend_from_slice(b"\x80\x02\x8a\x0a");
    inner.extend_from_slice(&0x1950A86A20F9469CFC6C_i128.to_le_bytes()[..10]);
    inner.push(b'.');
    // The protocol version 1001.
    inner.extend_from_slice(b"\x80\x02M\xe9\x03.");
    // sys_info: a dict of ten entries, set one opcode at a time.
    inner.extend_from_slice(b"\x80\x02}(");
    for k in b'a'..b'k' {
        inner.extend_from_slice(&[b'U', 1, k, b'K', 1]);
    }
    inner.extend_from_slice(b"u.");
    // The main pickle and the (empty) storage key list: a complete stream.
    inner.extend_from_slice(b"\x80\x02}.\x80\x02].");
    let mut outer = b"\x80\x02ctorch.storage\n_load_from_bytes\nB".to_vec();
    outer.extend_from_slice(&(inner.len() as u32).to_le_bytes());
    outer.extend_from_slice(&inner);
    outer.extend_from_slice(b"\x85R.");
    outer
}

/// Opcodes in the pickle at the start of `data`.
fn ops_in_first_pickle(data: &[u8]) -> usize {
    let mut d = safetensorize::pickle::ops::Decoder::new(data, 0, u64::MAX);
    let mut n = 0;
    loop {
        let (_, op) = d.next_op().expect("the outer pickle decodes");
        n += 1;
        if let safetensorize::pickle::ops::Op::Stop = op {
            return n;
        }
    }
}

#[test]
fn a_nested_pickle_over_max_pickle_ops_fails_convert_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nested.pkl");
    let bytes = nested_over_the_op_limit();
    // The outer pickle is well under the limit: only the nested one can trip it.
    assert_eq!(ops_in_first_pickle(&bytes), 6);
    fs::write(&f, &bytes).unwrap();
    let out = dir.path().join("nested.safetensors");
    let f_s = f.to_str().unwrap();
    let out_s = out.to_str().unwrap();
    let o = run(
        dir.path(),
        &["convert", f_s, "-o", out_s, "--max-pickle-ops", "10"],
    )
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(exit_code(&o), 1, "{err}");
    assert!(
        err.contains("more than 10 opcodes (--max-pickle-ops)"),
        "{err}"
    );
    assert!(
        err.contains("embedded") && err.contains("sys_info"),
        "{err}"
    );
    assert!(!out.exists());
    // The library says a limit stopped it, not a defect of the file.
    let opts = safetensorize::OpenOptions {
        limits: safetensorize::pickle::Limits {
            max_ops: 10,
            ..Default::default()
        },
    };
    match safetensorize::Checkpoint::open_with(&f, &opts).map(|_| ()) {
        Err(safetensorize::Error {
            kind: safetensorize::ErrorKind::LimitExceeded(msg),
            ..
        }) => assert!(
            msg.contains("at byte 125") && msg.contains("more than 10 opcodes (--max-pickle-ops)"),
            "{msg}"
        ),
        Err(e) => panic!("not a limit error: {e:?}"),
        Ok(()) => panic!("the nested pickle ran over --max-pickle-ops 10"),
    }
    // Without the flag the nested stream gets past sys_info: the limit was what stopped it.
    let o = run(dir.path(), &["convert", f_s, "-o", out_s]).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("--max-pickle-ops"), "{err}");
    // scan walks the nested pickle under the same flag and says where it stopped.
    let o = run(
        dir.path(),
        &["scan", "--json", f_s, "--max-pickle-ops", "10"],
    )
    .unwrap();
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let findings = report[0]["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|x| x["kind"] == "limit-exceeded"
            && x["member"].as_str().unwrap().ends_with("(embedded)")),
        "{findings:?}"
    );
}

#[test]
fn scan_json_names_its_schema_and_sarif_locates_each_finding_by_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let f = root().join("tests/adversarial/family_torch_compile.pt");
    let o = run(dir.path(), &["scan", "--json", f.to_str().unwrap()]).unwrap();
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report[0]["schema"], "safetensorize.scan/1");
    assert_eq!(report[0]["verdict"], "dangerous");
    let o = run(
        dir.path(),
        &["scan", "--format", "sarif", f.to_str().unwrap()],
    )
    .unwrap();
    assert_eq!(exit_code(&o), 3);
    let log: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(log["version"], "2.1.0");
    let results = log["runs"][0]["results"].as_array().unwrap();
    let r = results
        .iter()
        .find(|r| {
            r["message"]["text"]
                .as_str()
                .unwrap()
                .contains("torch.compile")
        })
        .expect("a result for torch.compile");
    assert_eq!(r["level"], "error");
    let loc = &r["locations"][0]["physicalLocation"];
    assert!(
        loc["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("family_torch_compile.pt")
    );
    assert!(loc["region"]["byteOffset"].is_u64());
}

#[test]
fn a_folder_is_scanned_in_one_run_with_one_summary_and_the_worst_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["benign_zip.pt", "archive_7z.7z", "npy_float.npy"] {
        fs::copy(
            root().join("tests/adversarial").join(name),
            dir.path().join(name),
        )
        .unwrap();
    }
    let o = run(dir.path(), &["scan", dir.path().to_str().unwrap()]).unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    // Nothing suspicious or dangerous: the unscannable 7z decides.
    assert_eq!(exit_code(&o), 5, "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("3 files: 2 safe, 0 suspicious, 0 dangerous, 1 unscannable"),
        "{text}"
    );
}

#[test]
fn formats_that_cannot_carry_code_are_safe_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend_from_slice(&[0; 4]);
    let mut gguf = b"GGUF".to_vec();
    gguf.extend_from_slice(&3u32.to_le_bytes());
    gguf.extend_from_slice(&[0; 16]);
    let files = [
        ("w.safetensors", st, "safetensors"),
        ("m.gguf", gguf, "gguf"),
        ("notes.txt", b"lr = 0.1\n".to_vec(), "text"),
    ];
    for (name, bytes, format) in files {
        let f = dir.path().join(name);
        fs::write(&f, bytes).unwrap();
        let o = run(dir.path(), &["scan", "--json", f.to_str().unwrap()]).unwrap();
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(exit_code(&o), 0, "{name}: {report}");
        assert_eq!(report[0]["verdict"], "safe", "{name}");
        assert_eq!(report[0]["format"], format, "{name}");
    }
}
