//! The peer corpus (`../shared/external/`: the test files of picklescan, fickling, modelscan,
//! modelaudit and of peer checkpoint readers, with a manifest of expected verdicts): its
//! `check.py` runs this binary over every file. Skipped, with a message, when the folder or
//! python3 is missing (a fresh clone elsewhere).

use std::path::Path;
use std::process::Command;

/// Files whose manifest expectation this tool deliberately does not meet (none today).
const KNOWN_FAILURES: &[&str] = &[];

#[test]
fn the_peer_corpus_passes_check_py() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/external");
    let check = corpus.join("check.py");
    if !check.exists() {
        eprintln!("skipped: {} does not exist", check.display());
        return;
    }
    let Ok(out) = Command::new("python3")
        .arg(&check)
        .arg(env!("CARGO_BIN_EXE_safetensorize"))
        .output()
    else {
        eprintln!("skipped: python3 is not available");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check.py failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = text.lines().last().unwrap_or("");
    let counts: Vec<usize> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        last.ends_with(" failed") && counts.len() == 2,
        "no 'N passed, M failed' line: {text}"
    );
    let failed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FAIL "))
        .map(|l| l.split(' ').next().unwrap_or(l))
        .collect();
    let unexpected: Vec<&&str> = failed
        .iter()
        .filter(|f| !KNOWN_FAILURES.contains(f))
        .collect();
    assert!(unexpected.is_empty(), "{text}");
    assert_eq!(counts[1], KNOWN_FAILURES.len(), "{text}");
    eprintln!("{last}");
}
