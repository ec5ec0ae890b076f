//! Command-line conventions: `-q`/`-v` work before or after the subcommand.

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
