//! The one-machine property: `scan` and `convert` read the same bytes with the same pickle
//! machine, so for every fixture, every adversarial file and every file in
//! `../shared/external/` (when present):
//! - every global `inspect --json` lists (what the VM ran) is among those `scan --json` lists;
//! - a file `convert` refuses as dangerous (exit code 3) is `dangerous` in `scan`, and a file
//!   `scan` calls `dangerous` is never converted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use rayon::prelude::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir`, recursively, in name order.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut kids: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    kids.sort();
    for k in kids {
        if k.is_dir() {
            files_under(&k, out);
        } else if k.is_file() {
            out.push(k);
        }
    }
}

/// The files the property is checked on.
fn corpus() -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(&root().join("tests/fixtures/ckpt"), &mut files);
    files_under(&root().join("tests/adversarial"), &mut files);
    let external = root().join("../shared/external");
    if external.is_dir() {
        files_under(&external, &mut files);
    } else {
        println!("skipped: ../shared/external absent");
    }
    files
}

/// The globals (`module.name`) `inspect --json` lists, or `None` when inspect cannot read the
/// file (then the VM ran nothing worth comparing).
fn inspect_globals(file: &Path) -> Option<BTreeSet<String>> {
    let o = Command::new(BIN)
        .args(["inspect", "--json"])
        .arg(file)
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    Some(
        v["globals"]
            .as_array()?
            .iter()
            .filter_map(|g| g["name"].as_str().map(str::to_string))
            .collect(),
    )
}

/// `scan --json`'s globals (`module.name`) and verdict.
fn scan(file: &Path) -> Result<(BTreeSet<String>, String), String> {
    let o = Command::new(BIN)
        .args(["scan", "--json"])
        .arg(file)
        .output()
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("scan --json printed no JSON ({e})"))?;
    let report = &v[0];
    let globals = report["globals"]
        .as_array()
        .ok_or("scan --json has no globals")?
        .iter()
        .map(|g| {
            format!(
                "{}.{}",
                g["module"].as_str().unwrap_or_default(),
                g["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let verdict = report["verdict"].as_str().unwrap_or_default().to_string();
    Ok((globals, verdict))
}

/// `convert`'s exit code.
fn convert_exit(file: &Path, out_dir: &Path) -> Result<Option<i32>, String> {
    let out = out_dir.join("out.safetensors");
    let o = Command::new(BIN)
        .arg("convert")
        .arg(file)
        .arg("-o")
        .arg(&out)
        .arg("--overwrite")
        .output()
        .map_err(|e| e.to_string())?;
    Ok(o.status.code())
}

/// What is wrong with `file`, if anything; `Ok(true)` when inspect could read it (so the subset
/// was checked).
fn check(file: &Path, out_dir: &Path) -> Result<bool, String> {
    let (scanned, verdict) = scan(file)?;
    let inspected = inspect_globals(file);
    if let Some(ran) = &inspected {
        let missing: Vec<&String> = ran.difference(&scanned).collect();
        if !missing.is_empty() {
            return Err(format!(
                "inspect lists globals scan does not: {missing:?} (scan: {scanned:?})"
            ));
        }
    }
    let code = convert_exit(file, out_dir)?;
    if code == Some(3) && verdict != "dangerous" {
        return Err(format!(
            "convert refuses it as dangerous but scan says {verdict}"
        ));
    }
    // And the converse: the policy (its own walk, which tracks only what can make a file
    // dangerous) lets through nothing scan calls dangerous.
    if code == Some(0) && verdict == "dangerous" {
        return Err("scan says dangerous but convert wrote it".into());
    }
    Ok(inspected.is_some())
}

#[test]
fn scan_sees_every_global_the_vm_runs_and_convert_agrees_with_scan_on_dangerous_files() {
    let files = corpus();
    assert!(files.len() > 100, "only {} files found", files.len());
    let results: Vec<Result<bool, String>> = files
        .par_iter()
        .map_init(
            || tempfile::tempdir().expect("a temporary folder"),
            |dir, f| check(f, dir.path()).map_err(|e| format!("{}: {e}", f.display())),
        )
        .collect();
    let inspected = results.iter().filter(|r| matches!(r, Ok(true))).count();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} files break the one-machine property:\n  {}",
        failures.len(),
        files.len(),
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    // The comparison is not vacuous: inspect read most files and scan names what they call.
    assert!(inspected > 60, "inspect read only {inspected} files");
    let (g, verdict) = scan(&root().join("tests/adversarial/call_py2_builtin_eval.pt")).unwrap();
    assert!(
        g.contains("builtins.eval") && verdict == "dangerous",
        "{g:?} {verdict}"
    );
}
