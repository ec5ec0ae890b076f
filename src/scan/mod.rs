//! What a file attempted: every global it names (with its class and byte offset), the opcodes and
//! archive oddities no torch writer produces, and a verdict. Also the policy `convert` applies
//! before opening any output ([`policy_check`], [`refuse`]).
//!
//! The scan runs the one pickle [`crate::pickle::Machine`] over the very bytes the VM executes
//! (the container layer hands both the same buffer), in [`crate::pickle::Mode::Superset`] and
//! with symbols for values: just enough to know which global is *called*. Where the VM would
//! stop at a broken stack, mark or memo rule the walk goes on as far as the bytes decode, so the
//! scan sees a superset of what `convert` runs: a payload cannot hide from `scan` and still reach
//! the VM. Pickles embedded in BYTES/STRING arguments (nested `pickle.loads`,
//! `torch.storage._load_from_bytes`) and pickles in other zip members are walked too.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::{Checkpoint, OpenOptions};
use crate::container::{
    Archive, Container, Kind, StorageIndex, ZipLimits, audit_zip, crc_matches, sniff,
};
use crate::error::{Error, ErrorKind, Result};
use crate::pickle::Limits;
use crate::torch::GlobalClass;

mod walk;

use walk::{looks_like_pickle, push_global, walk_pickles};

/// How worrying a file or a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Only what torch writes.
    Safe,
    /// Something no torch writer produces: a call of an unknown global, an odd opcode, an
    /// ambiguous archive, a hidden pickle.
    Suspicious,
    /// A name that would run code or touch the system in a normal unpickler.
    Dangerous,
}

impl Verdict {
    /// The lowercase name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::Suspicious => "suspicious",
            Verdict::Dangerous => "dangerous",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One place a global is called.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    /// `REDUCE`, `INST`, `OBJ`, `NEWOBJ`, `NEWOBJ_EX` or `BUILD`.
    pub opcode: &'static str,
    /// Offset of the calling opcode in its pickle.
    pub offset: usize,
}

/// One GLOBAL, STACK_GLOBAL or INST met in a pickle.
#[derive(Debug, Clone, Serialize)]
pub struct GlobalRef {
    /// Module part, as written.
    pub module: String,
    /// Name part, as written.
    pub name: String,
    /// Its class.
    pub class: GlobalClass,
    /// Which pickle (`archive/data.pkl`, `main pickle`, `archive/data.pkl@123 (embedded)`).
    pub member: String,
    /// Offset of the opcode in that pickle.
    pub offset: usize,
    /// The opcode that named it.
    pub opcode: &'static str,
    /// Where it is called, if anywhere.
    pub calls: Vec<Call>,
}

impl GlobalRef {
    /// `module.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }

    /// True when called by REDUCE, INST, OBJ or NEWOBJ_EX (NEWOBJ is how plain objects are made).
    pub fn is_called(&self) -> bool {
        self.calls.iter().any(|c| c.opcode != "NEWOBJ")
    }
}

/// Anything else worth telling.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How much it weighs in the verdict.
    pub severity: Verdict,
    /// A stable identifier (`opcode-inst`, `bytes-after-stop`, `duplicate-name`, …).
    pub kind: String,
    /// Which pickle or zip member, if any.
    pub member: Option<String>,
    /// Byte offset (in the member or pickle; in the file for archive anomalies).
    pub offset: Option<u64>,
    /// What exactly.
    pub detail: String,
}

/// The scan of one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// `zip`, `torchscript`, `legacy`, `pickle`, or `not-a-checkpoint`.
    pub format: String,
    /// The worst of the globals and findings.
    pub verdict: Verdict,
    /// Every global named, in file order.
    pub globals: Vec<GlobalRef>,
    /// Everything odd.
    pub findings: Vec<Finding>,
    /// Why `convert` could not read the file, when it cannot.
    pub error: Option<String>,
}

impl FileReport {
    fn finish(mut self) -> Self {
        let g = self.globals.iter().map(|g| match g.class {
            GlobalClass::Dangerous => Verdict::Dangerous,
            GlobalClass::Unknown if g.is_called() => Verdict::Suspicious,
            _ => Verdict::Safe,
        });
        let f = self.findings.iter().map(|f| f.severity);
        self.verdict = g.chain(f).max().unwrap_or(Verdict::Safe);
        self
    }
}

/// Records torch writes into its zips besides `data.pkl` and `data/<key>`.
const KNOWN_RECORDS: &[&str] = &[
    "version",
    ".data/version",
    ".format_version",
    ".storage_alignment",
    "byteorder",
    ".data/serialization_id",
];

/// Opens and scans one file. Never fails: problems become findings or `error`.
pub fn scan_file(path: &Path, opts: &OpenOptions) -> FileReport {
    let mut r = FileReport {
        path: path.to_path_buf(),
        format: "unknown".into(),
        verdict: Verdict::Safe,
        globals: Vec::new(),
        findings: Vec::new(),
        error: None,
    };
    match Checkpoint::open_with(path, opts) {
        Ok(ckpt) => {
            let main = scan_archive(ckpt.archive(), &opts.limits, &mut r);
            union_vm_globals(&ckpt, &main, &mut r);
        }
        Err(e) => {
            r.error = Some(format!("{}", e.kind));
            // The converter refuses the file; still say what it holds, from the raw bytes.
            match std::fs::File::open(path) {
                Ok(file) => {
                    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                    match sniff(&file, len) {
                        Ok(Kind::Zip) => scan_raw_zip(&file, len, &opts.limits, &mut r, true, None),
                        // A tar (torch <= 0.1.9) the converter refused: walk the pickles of its
                        // members that can still be found.
                        Ok(Kind::Tar) => {
                            r.format = Kind::Tar.as_str().into();
                            for (member, _, bytes) in
                                crate::container::tar::raw_pickles(&file, len, &opts.limits)
                            {
                                walk_pickles(&bytes, &member, 1, &opts.limits, &mut r, 0);
                            }
                        }
                        // Neither a zip from byte 0 nor a pickle the sniffer accepts: a zip with
                        // data prepended, or a broken pickle that CPython would still run up to
                        // the break. Look at both before calling it "not a checkpoint".
                        sniffed => {
                            if sniffed.is_err()
                                && audit_zip(&file, len, &ZipLimits::default()).is_ok()
                            {
                                scan_raw_zip(&file, len, &opts.limits, &mut r, true, None);
                            } else {
                                let n = len.min(opts.limits.max_pickle_bytes) as usize;
                                let mut buf = vec![0u8; n];
                                if std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, 0)
                                    .is_ok()
                                {
                                    let expected = if crate::container::starts_with_magic(&buf) {
                                        5
                                    } else {
                                        1
                                    };
                                    walk_pickles(&buf, "pickle", expected, &opts.limits, &mut r, 0);
                                }
                                let undecodable_at_start = r
                                    .findings
                                    .iter()
                                    .any(|f| f.kind == "undecodable-pickle" && f.offset == Some(0));
                                if sniffed.is_err()
                                    && r.globals.is_empty()
                                    && (undecodable_at_start || looks_like_text(&buf))
                                {
                                    r.findings.clear();
                                    r.format = "not-a-checkpoint".into();
                                } else {
                                    r.format = Kind::Pickle.as_str().into();
                                }
                            }
                        }
                    }
                }
                Err(_) => r.format = "unreadable".into(),
            }
        }
    }
    r.finish()
}

/// Scans every file under `paths` (folders recursively, in name order).
pub fn scan_paths(paths: &[PathBuf], opts: &OpenOptions) -> Vec<FileReport> {
    let mut out = Vec::new();
    for p in paths {
        let mut stack = vec![p.clone()];
        let mut depth_guard = 0usize;
        while let Some(p) = stack.pop() {
            depth_guard += 1;
            let is_dir = std::fs::symlink_metadata(&p)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if is_dir {
                let mut kids: Vec<PathBuf> = match std::fs::read_dir(&p) {
                    Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                    Err(e) => {
                        out.push(FileReport {
                            path: p.clone(),
                            format: "unreadable".into(),
                            verdict: Verdict::Safe,
                            globals: Vec::new(),
                            findings: Vec::new(),
                            error: Some(format!("cannot list the folder: {e}")),
                        });
                        continue;
                    }
                };
                kids.sort();
                kids.reverse();
                stack.extend(kids);
            } else {
                let r = scan_file(&p, opts);
                // Inside folders, files that are not checkpoints at all are left out.
                if depth_guard > 1 && r.format == "not-a-checkpoint" {
                    continue;
                }
                out.push(r);
            }
        }
    }
    out
}

/// Plain text that happens to decode as pickle opcodes (a README starting with `I`…) is not a
/// pickle unless it names a global.
fn looks_like_text(b: &[u8]) -> bool {
    let head = &b[..b.len().min(512)];
    head.iter()
        .all(|c| c.is_ascii_graphic() || c.is_ascii_whitespace())
}

fn finding(
    r: &mut FileReport,
    severity: Verdict,
    kind: &str,
    member: Option<&str>,
    offset: Option<u64>,
    detail: String,
) {
    r.findings.push(Finding {
        severity,
        kind: kind.to_string(),
        member: member.map(str::to_string),
        offset,
        detail,
    });
}

/// Scans an opened archive: its pickles (all of them) and, for zips, its structure. Returns
/// where the main pickle's offsets land in the report: `(member, base offset)`.
fn scan_archive(a: &Archive, limits: &Limits, r: &mut FileReport) -> (String, usize) {
    r.format = a.container.kind().as_str().into();
    match &a.container {
        Container::Zip { .. } | Container::TorchScript { .. } => {
            scan_raw_zip(&a.file, a.file_len, limits, r, true, a.zip_audit.as_ref());
            (a.pickle_name.clone(), 0)
        }
        Container::Legacy => walk_legacy_head(a, limits, r),
        // Tar (torch <= 0.1.9): the main pickle; its other members hold tables the container
        // layer parses without the VM.
        Container::Pickle | Container::Tar => {
            walk_pickles(&a.pickle, &a.pickle_name, 1, limits, r, 0);
            (a.pickle_name.clone(), 0)
        }
    }
}

/// Adds whatever the VM named that the walk did not (it never should), so the report is a
/// superset of what `convert` ran.
fn union_vm_globals(ckpt: &Checkpoint, main: &(String, usize), r: &mut FileReport) {
    for g in &ckpt.globals {
        let off = g.offset + main.1;
        if !r
            .globals
            .iter()
            .any(|x| x.member == main.0 && x.offset == off)
        {
            push_global(
                &mut r.globals,
                &g.global.module,
                &g.global.name,
                &main.0,
                off,
                "GLOBAL",
            );
        }
    }
}

/// The five pickles of a legacy stream: everything before the first storage. Returns where the
/// main pickle's offsets land in the report: `(member, base offset)`.
fn walk_legacy_head(a: &Archive, limits: &Limits, r: &mut FileReport) -> (String, usize) {
    let StorageIndex::Legacy { data_start, .. } = &a.storages else {
        walk_pickles(&a.pickle, &a.pickle_name, 1, limits, r, 0);
        return (a.pickle_name.clone(), 0);
    };
    let mut buf = vec![0u8; (*data_start).min(a.file_len) as usize];
    if std::os::unix::fs::FileExt::read_exact_at(&a.file, &mut buf, 0).is_err() {
        walk_pickles(&a.pickle, &a.pickle_name, 1, limits, r, 0);
        return (a.pickle_name.clone(), 0);
    }
    let starts = walk_pickles(&buf, "legacy stream", 5, limits, r, 0);
    ("legacy stream".into(), starts.get(3).copied().unwrap_or(0))
}

/// A zip: its structure, then every member that is (or could be read as) a pickle.
fn scan_raw_zip(
    file: &std::fs::File,
    len: u64,
    limits: &Limits,
    r: &mut FileReport,
    check_crc: bool,
    known: Option<&crate::container::ZipAudit>,
) {
    if r.format == "unknown" {
        r.format = Kind::Zip.as_str().into();
    }
    let read;
    let audit = match known {
        Some(a) => a,
        None => match audit_zip(file, len, &ZipLimits::default()) {
            Ok(a) => {
                read = a;
                &read
            }
            Err(e) => {
                finding(
                    r,
                    Verdict::Suspicious,
                    "unreadable-archive",
                    None,
                    None,
                    format!("{e}"),
                );
                return;
            }
        },
    };
    for an in &audit.anomalies {
        finding(
            r,
            Verdict::Suspicious,
            an.kind,
            None,
            an.offset,
            an.detail.clone(),
        );
    }
    let pickles: Vec<&crate::container::AuditEntry> = audit
        .entries
        .iter()
        .filter(|e| {
            e.name == "data.pkl"
                || (e.name.ends_with("/data.pkl") && e.name.matches('/').count() == 1)
        })
        .collect();
    let prefix = pickles
        .first()
        .map(|e| e.name[..e.name.len() - "data.pkl".len()].to_string())
        .unwrap_or_default();
    let mut crc_bad = 0usize;
    for e in &audit.entries {
        let rest = e.name.strip_prefix(&prefix).unwrap_or(&e.name);
        if e.method != 0 && e.method != 8 {
            finding(
                r,
                Verdict::Suspicious,
                "compression",
                Some(&e.name),
                Some(e.local_offset),
                format!("compression method {}, which torch never writes", e.method),
            );
        }
        if e.method == 8 && e.size > 0 && e.compressed > 0 && e.size / e.compressed.max(1) > 1000 {
            finding(
                r,
                Verdict::Suspicious,
                "zip-bomb",
                Some(&e.name),
                Some(e.local_offset),
                format!("{} bytes inflate to {}", e.compressed, e.size),
            );
        }
        if check_crc && crc_matches(file, e) == Some(false) {
            crc_bad += 1;
            if crc_bad <= 10 {
                finding(
                    r,
                    Verdict::Suspicious,
                    "crc-mismatch",
                    Some(&e.name),
                    Some(e.local_offset),
                    format!("the bytes do not match the declared CRC-32 {:08x}", e.crc),
                );
            }
        }
        let is_storage = rest.starts_with("data/");
        let is_main = rest == "data.pkl" && !pickles.is_empty();
        if rest == "constants.pkl"
            || rest.starts_with("code/")
            || rest == "model.json"
            || rest == "bytecode.pkl"
            || rest.starts_with("extra/")
        {
            if rest == "constants.pkl" || rest == "model.json" {
                finding(
                    r,
                    Verdict::Suspicious,
                    "torchscript",
                    Some(&e.name),
                    Some(e.local_offset),
                    "a TorchScript archive: torch.jit.load would run its code".into(),
                );
            }
        } else if !is_storage && !is_main && !KNOWN_RECORDS.contains(&rest) {
            finding(
                r,
                Verdict::Safe,
                "unexpected-member",
                Some(&e.name),
                Some(e.local_offset),
                "a record torch.save never writes (not read by convert)".into(),
            );
        }
        if is_storage && !is_main {
            continue;
        }
        // Read the member (bounded) and walk it if it is a pickle.
        let Some(bytes) = read_member(file, e, limits) else {
            continue;
        };
        if is_main {
            walk_pickles(&bytes, &e.name, 1, limits, r, 0);
        } else if looks_like_pickle(&bytes, limits) {
            if rest.starts_with("code/") {
                // TorchScript debug pickles: already reported with the archive kind.
            } else if rest != "constants.pkl" && !rest.ends_with(".pkl") {
                finding(
                    r,
                    Verdict::Suspicious,
                    "hidden-pickle",
                    Some(&e.name),
                    Some(e.local_offset),
                    "a member that is not data.pkl holds a pickle".into(),
                );
            } else if rest != "constants.pkl" {
                finding(
                    r,
                    Verdict::Suspicious,
                    "extra-pickle",
                    Some(&e.name),
                    Some(e.local_offset),
                    "a pickle besides data.pkl".into(),
                );
            }
            walk_pickles(&bytes, &e.name, 1, limits, r, 0);
        }
    }
}

/// A zip member's bytes as a loader would see them (at most `--max-pickle-bytes`, whatever size
/// its header declares); `None` when they cannot be read (no local header, a method torch never
/// writes, a corrupt stream).
fn read_member(
    file: &std::fs::File,
    e: &crate::container::AuditEntry,
    limits: &Limits,
) -> Option<Vec<u8>> {
    crate::container::read_record_capped(file, &e.record()?, limits.max_pickle_bytes).ok()
}

/// The policy `convert` applies before any output is opened: refuse a file that names a
/// dangerous global anywhere (including embedded and legacy header pickles), and with `strict`
/// also one that names an unknown global. The error lists the names and offsets.
pub fn policy_check(ckpt: &Checkpoint, strict: bool, limits: &Limits) -> Result<()> {
    let mut r = FileReport {
        path: ckpt.path().to_path_buf(),
        format: String::new(),
        verdict: Verdict::Safe,
        globals: Vec::new(),
        findings: Vec::new(),
        error: None,
    };
    let a = ckpt.archive();
    let main = match &a.container {
        Container::Legacy => walk_legacy_head(a, limits, &mut r),
        // Every pickle in the archive, hidden ones included (not the storages).
        Container::Zip { .. } | Container::TorchScript { .. } => {
            scan_raw_zip(
                &a.file,
                a.file_len,
                limits,
                &mut r,
                false,
                a.zip_audit.as_ref(),
            );
            (a.pickle_name.clone(), 0)
        }
        Container::Pickle | Container::Tar => {
            walk_pickles(&a.pickle, &a.pickle_name, 1, limits, &mut r, 0);
            (a.pickle_name.clone(), 0)
        }
    };
    union_vm_globals(ckpt, &main, &mut r);
    refuse(ckpt.path(), &r, strict)
}

/// The policy's decision on a report: an error listing the dangerous globals and opcode shapes
/// (and, with `strict`, the unknown globals), or `Ok` when nothing is refused.
pub fn refuse(path: &Path, r: &FileReport, strict: bool) -> Result<()> {
    let build_gadgets: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.severity == Verdict::Dangerous)
        .collect();
    let refused: Vec<&GlobalRef> = r
        .globals
        .iter()
        .filter(|g| {
            g.class == GlobalClass::Dangerous || (strict && g.class == GlobalClass::Unknown)
        })
        .collect();
    if refused.is_empty() && build_gadgets.is_empty() {
        return Ok(());
    }
    let dangerous =
        refused.iter().any(|g| g.class == GlobalClass::Dangerous) || !build_gadgets.is_empty();
    let mut names: Vec<String> = refused
        .iter()
        .take(20)
        .map(|g| {
            format!(
                "{} ({}, {} at byte {} of {})",
                g.qualified(),
                g.class,
                g.opcode,
                g.offset,
                g.member
            )
        })
        .collect();
    names.extend(build_gadgets.iter().take(5).map(|f| f.detail.clone()));
    if refused.len() > 20 {
        names.push(format!("and {} more", refused.len() - 20));
    }
    let kind = if dangerous {
        ErrorKind::Dangerous { globals: names }
    } else {
        ErrorKind::UnknownUnderStrict { globals: names }
    };
    Err(Error::new(path, kind))
}

#[cfg(test)]
mod tests;
