//! Command-line conventions: `-q`/`-v` work before or after the subcommand, and a limit flag
//! bounds what it names.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");
const FIXTURE: &str = "tests/fixtures/ckpt/aliases.pt";

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn quiet_and_verbose_are_accepted_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let out = out.to_str().unwrap();
    for args in [
        vec!["-q", "convert", FIXTURE, "-o", out, "--overwrite"],
        vec!["convert", FIXTURE, "-o", out, "--overwrite", "-q"],
        vec!["convert", "--quiet", FIXTURE, "-o", out, "--overwrite"],
    ] {
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!((stdout.as_str(), stderr.as_str()), ("", ""), "{args:?}");
    }
    for args in [
        vec!["-v", "convert", FIXTURE, "-o", out, "--overwrite"],
        vec!["convert", FIXTURE, "-o", out, "--overwrite", "-v"],
    ] {
        let (code, _, stderr) = run(&args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.contains("alias "), "{args:?}: {stderr}");
    }
    // scan -v lists the globals that are merely interpreted; without it they are left out.
    let (_, plain, _) = run(&["scan", FIXTURE]);
    let (_, verbose, _) = run(&["scan", FIXTURE, "-v"]);
    assert!(!plain.contains("interpreted"), "{plain}");
    assert!(verbose.contains("interpreted torch._utils"), "{verbose}");
    let (code, _, stderr) = run(&["convert", FIXTURE, "-q", "-v"]);
    assert_eq!(code, Some(2), "{stderr}");
}

/// `--max-pickle-bytes` bounds the pickle, not the file: a tar checkpoint (torch <= 0.1.9)
/// holds its storages beside its `pickle` member, and converts under a bound smaller than the
/// file but larger than that member; a plain pickle is the whole file and is refused.
#[test]
fn the_pickle_size_bound_applies_to_a_tar_checkpoints_pickle_not_to_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let out = out.to_str().unwrap();
    let tar = "tests/fixtures/ckpt/tar_v2.pt";
    let len = std::fs::metadata(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(tar))
        .unwrap()
        .len();
    let bound = (len / 2).to_string();
    let (code, _, stderr) = run(&["convert", tar, "-o", out, "--max-pickle-bytes", &bound]);
    assert_eq!(code, Some(0), "{stderr}");
    // Its pickle member (76 bytes) is still bounded.
    let (code, _, stderr) = run(&[
        "convert",
        tar,
        "-o",
        out,
        "--overwrite",
        "--max-pickle-bytes",
        "40",
    ]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--max-pickle-bytes"), "{stderr}");
    let plain = "tests/fixtures/ckpt/pickle_dumps_p2.pkl";
    let (code, _, stderr) = run(&[
        "convert",
        plain,
        "-o",
        out,
        "--overwrite",
        "--max-pickle-bytes",
        "16",
    ]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--max-pickle-bytes"), "{stderr}");
}
