//! The layers in the README are the layers in the code: every `crate::` path in a module names
//! a module listed before it, so imports run downward only and there are no cycles.

use std::path::{Path, PathBuf};

/// Bottom to top, as in the README's "How it works".
const ORDER: &[&str] = &[
    "dtype",
    "pickle",
    "error",
    "container",
    "layout",
    "writer",
    "torch",
    "tree",
    "checkpoint",
    "scan",
    "inspect",
    "verify",
    "pipeline",
    "migrate",
    "cli",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules a source text names as `crate::NAME`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut v = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        // `safetensorize::crate::` never occurs; skip identifiers that merely end in `crate`.
        if i > 0 && text.as_bytes()[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        v.push(name);
    }
    v
}

#[test]
fn the_layer_check_sees_an_upward_import() {
    let found = crate_paths("use crate::scan::Verdict;\nlet x = crate::writer::MAX_HEADER;");
    assert_eq!(found, ["scan", "writer"]);
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |m: &str| ORDER.iter().position(|x| *x == m);
    let mut violations = Vec::new();
    let mut seen = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let me = first.trim_end_matches(".rs");
        if ["lib", "main"].contains(&me) {
            continue;
        }
        let Some(mine) = rank(me) else {
            violations.push(format!(
                "{}: module {me:?} is not in the layer list",
                rel.display()
            ));
            continue;
        };
        seen += 1;
        let text = std::fs::read_to_string(f).unwrap();
        for m in crate_paths(&text) {
            if let Some(theirs) = rank(&m)
                && theirs > mine
            {
                violations.push(format!(
                    "{}: {me} imports {m}, a higher layer",
                    rel.display()
                ));
            }
        }
    }
    assert!(seen > 30, "only {seen} files checked");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_root_of_src_holds_only_the_entry_points_the_error_type_and_the_dtype_table() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["dtype.rs", "error.rs", "lib.rs", "main.rs"]);
}

#[test]
fn nothing_below_the_cli_prints_or_reads_the_environment() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let forbidden = [
        "println!",
        "print!(",
        "eprintln!",
        "eprint!(",
        "dbg!(",
        "std::env::",
        "env::var(",
        "env::vars(",
        "env::args",
        "env::temp_dir",
        "env::current_dir",
        "io::stdout()",
        "io::stderr()",
    ];
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel.starts_with("cli") || rel == Path::new("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for w in forbidden {
                if code.contains(w) {
                    found.push(format!("{}:{}: {w}", rel.display(), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
