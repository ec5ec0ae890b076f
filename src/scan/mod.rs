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
    Archive, Container, Kind, Role, StorageIndex, ZipLimits, audit_zip, crc_matches,
    is_any_pickle_name, is_main_pickle_name, role, sniff,
};
use crate::error::{Error, ErrorKind, Result};
use crate::pickle::Limits;
use crate::torch::{GlobalClass, classify_global};

mod npy;
mod sarif;
mod walk;

pub use sarif::sarif;

use walk::{looks_like_pickle, push_global, walk_pickles};

/// How worrying a file or a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every byte a loader would execute was understood, and every global is one the tool
    /// interprets or a known inert data class; or a format that cannot carry code (safetensors,
    /// a numeric `.npy`, text), named.
    Safe,
    /// A file the tool cannot look into (a 7z or RAR archive, an unknown binary, a compression
    /// it does not open): never safe, but nothing was seen either. Exit code 5.
    Unscannable,
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
            Verdict::Unscannable => "unscannable",
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

/// The version of the JSON report (`scan --json`), in every file report. A new field keeps the
/// version; a changed or removed one bumps it.
pub const JSON_SCHEMA: &str = "safetensorize.scan/1";

/// The scan of one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// [`JSON_SCHEMA`].
    pub schema: &'static str,
    /// The file.
    pub path: PathBuf,
    /// `zip`, `torchscript`, `legacy`, `pickle`, `tar`, `npy`, `npz`, `gzip` (`gzip+tar`,
    /// `gzip+npy`), `safetensors`, `gguf`, `text`, `unknown-binary`, or what an unopened format is.
    pub format: String,
    /// The worst of the globals and findings.
    pub verdict: Verdict,
    /// Every global named, in file order.
    pub globals: Vec<GlobalRef>,
    /// Everything odd.
    pub findings: Vec<Finding>,
    /// Why `convert` could not read the file, when it cannot.
    pub error: Option<String>,
    /// The walk gathers only what can make the file dangerous (the policy's question): no
    /// expansion weights, no duplicate-key or hash tracking.
    #[serde(skip)]
    dangerous_only: bool,
}

impl FileReport {
    fn new(path: &Path) -> Self {
        FileReport {
            schema: JSON_SCHEMA,
            path: path.to_path_buf(),
            format: "unknown".into(),
            verdict: Verdict::Safe,
            globals: Vec::new(),
            findings: Vec::new(),
            error: None,
            dangerous_only: false,
        }
    }

    fn finish(mut self) -> Self {
        let g = self.globals.iter().map(|g| match g.class {
            GlobalClass::Dangerous => Verdict::Dangerous,
            // Resolving an unknown name imports its module, which runs that module's code.
            GlobalClass::Unknown => Verdict::Suspicious,
            _ => Verdict::Safe,
        });
        let f = self.findings.iter().map(|f| f.severity);
        self.verdict = g.chain(f).max().unwrap_or(Verdict::Safe);
        self
    }
}

/// Opens and scans one file. Never fails: problems become findings or `error`.
pub fn scan_file(path: &Path, opts: &OpenOptions) -> FileReport {
    let mut r = FileReport::new(path);
    match Checkpoint::open_with(path, opts) {
        Ok(ckpt) => {
            let main = scan_archive(ckpt.archive(), &opts.limits, &mut r);
            union_vm_globals(&ckpt, &main, &mut r);
        }
        Err(e) => {
            r.error = Some(format!("{}", e.kind));
            // The converter refuses the file; still say what it holds, from the raw bytes.
            match crate::container::open_source(path) {
                Ok(file) => {
                    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                    // Walks the zip from its raw bytes, its pickles read afresh.
                    let raw_zip = |r: &mut FileReport| {
                        scan_raw_zip(&file, len, &opts.limits, r, true, None, MainPickle::Read)
                    };
                    match sniff(&file, len) {
                        Ok(Kind::Zip) => raw_zip(&mut r),
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
                            let mut head = [0u8; 16];
                            let n = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0)
                                .unwrap_or(0);
                            let head = &head[..n];
                            if head.starts_with(npy::NPY_MAGIC) {
                                scan_npy_file(&file, len, &opts.limits, &mut r);
                                return r.finish();
                            }
                            if head.starts_with(b"\x1f\x8b") {
                                scan_gzip(&file, &opts.limits, &mut r);
                                return r.finish();
                            }
                            // Formats that cannot carry code: safe, named.
                            if sniffed.is_err()
                                && let Some(what) = codeless_format(&file, len, head)
                            {
                                r.format = what.into();
                                return r.finish();
                            }
                            if sniffed.is_err()
                                && audit_zip(&file, len, &ZipLimits::default()).is_ok()
                            {
                                raw_zip(&mut r);
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
                                let opaque = npy::opaque_format(&buf);
                                if sniffed.is_err() && r.globals.is_empty() && opaque.is_some() {
                                    r.findings.clear();
                                    let what = opaque.unwrap_or("unknown");
                                    r.format = what.into();
                                    unscannable(
                                        &mut r,
                                        None,
                                        format!("{what}: not opened, so not looked into"),
                                    );
                                } else if sniffed.is_err()
                                    && r.globals.is_empty()
                                    && looks_like_text(&buf)
                                {
                                    r.findings.clear();
                                    r.format = "text".into();
                                } else if sniffed.is_err()
                                    && r.globals.is_empty()
                                    && undecodable_at_start
                                {
                                    r.findings.clear();
                                    r.format = "unknown-binary".into();
                                    unscannable(
                                        &mut r,
                                        None,
                                        "an unknown binary format: neither a checkpoint, a pickle nor text".into(),
                                    );
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

/// `safetensors` (a JSON header, then raw tensor bytes) or `gguf` (llama.cpp's typed key-value
/// header, then tensors): formats no loader executes.
fn codeless_format(file: &std::fs::File, len: u64, head: &[u8]) -> Option<&'static str> {
    if head.len() >= 8
        && head.starts_with(b"GGUF")
        && (1..=3).contains(&u32::from_le_bytes([head[4], head[5], head[6], head[7]]))
    {
        return Some("gguf");
    }
    let n = u64::from_le_bytes(head.get(..8)?.try_into().ok()?);
    if head.get(8) != Some(&b'{') || n > 100 << 20 || n.checked_add(8)? > len {
        return None;
    }
    let mut buf = vec![0u8; n as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, 8).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&buf).ok()?;
    header.is_object().then_some("safetensors")
}

/// A finding that the bytes could not be looked into.
fn unscannable(r: &mut FileReport, member: Option<&str>, detail: String) {
    finding(r, Verdict::Unscannable, "unscannable", member, None, detail);
}

/// Judges one `.npy` (a file or an `.npz` member): a numeric array cannot carry code; an object
/// array is a pickle after its header, walked like any other.
fn scan_npy_bytes(b: &[u8], member: &str, limits: &Limits, r: &mut FileReport) {
    match npy::npy_header(b) {
        Ok(h) if h.object => {
            finding(
                r,
                Verdict::Safe,
                "npy-object-array",
                Some(member),
                Some(h.data_start as u64),
                "an object array: its data is a pickle, walked".into(),
            );
            let data = &b[h.data_start..];
            walk_pickles(data, &format!("{member}@{}", h.data_start), 1, limits, r, 0);
        }
        Ok(_) => {}
        Err(e) => finding(
            r,
            Verdict::Suspicious,
            "malformed-npy",
            Some(member),
            Some(0),
            e,
        ),
    }
}

fn scan_npy_file(file: &std::fs::File, len: u64, limits: &Limits, r: &mut FileReport) {
    r.format = "npy".into();
    r.error = None;
    use std::os::unix::fs::FileExt;
    // A numeric array only needs its header; an object array is read as far as the limit.
    let read = |n: u64| {
        let mut buf = vec![0u8; len.min(n) as usize];
        file.read_exact_at(&mut buf, 0).ok().map(|_| buf)
    };
    let Some(head) = read(12) else {
        unscannable(r, None, "the .npy file cannot be read".into());
        return;
    };
    let header_len = match head.get(6) {
        Some(1) if head.len() >= 10 => u16::from_le_bytes([head[8], head[9]]) as u64 + 10,
        Some(2 | 3) if head.len() >= 12 => {
            u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64 + 12
        }
        _ => 12,
    };
    let Some(mut buf) = read(header_len.min(limits.max_pickle_bytes)) else {
        unscannable(r, None, "the .npy file cannot be read".into());
        return;
    };
    if npy::npy_header(&buf).is_ok_and(|h| h.object) {
        match read(header_len.saturating_add(limits.max_pickle_bytes)) {
            Some(all) => buf = all,
            None => {
                unscannable(r, None, "the .npy file cannot be read".into());
                return;
            }
        }
    }
    scan_npy_bytes(&buf, "npy", limits, r);
}

/// A gzip-compressed file: inflated up to `--max-pickle-bytes` and judged as what it holds (a
/// pickle, a tar of pickles, an `.npy`).
fn scan_gzip(file: &std::fs::File, limits: &Limits, r: &mut FileReport) {
    use std::io::Read;
    r.format = "gzip".into();
    let cap = limits.max_pickle_bytes.min(limits.max_inflated_bytes);
    let mut out = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(file).take(cap.saturating_add(1));
    if let Err(e) = dec.read_to_end(&mut out) {
        unscannable(r, None, format!("the gzip stream cannot be inflated: {e}"));
        return;
    }
    if out.len() as u64 > cap {
        unscannable(
            r,
            None,
            format!(
                "the gzip stream inflates past {cap} bytes (--max-pickle-bytes): not looked into"
            ),
        );
        return;
    }
    scan_bytes(&out, "gzip", limits, r, 0);
}

/// Bytes whose container is not known yet (inflated gzip, tar members): a pickle, an `.npy`, a
/// tar, text, or something not looked into.
fn scan_bytes(b: &[u8], member: &str, limits: &Limits, r: &mut FileReport, depth: usize) {
    if b.starts_with(npy::NPY_MAGIC) {
        r.format = format!("{}+npy", r.format);
        scan_npy_bytes(b, member, limits, r);
    } else if b.len() >= 512 && &b[257..262] == b"ustar" && depth < 2 {
        r.format = format!("{}+tar", r.format);
        for (name, data) in tar_members(b) {
            let inner = format!("{member}/{name}");
            scan_bytes(data, &inner, limits, r, depth + 1);
        }
    } else if looks_like_pickle(b, limits) {
        let expected = if crate::container::starts_with_magic(b) {
            5
        } else {
            1
        };
        walk_pickles(b, member, expected, limits, r, 0);
    } else if looks_like_text(b) {
    } else if let Some(what) = npy::opaque_format(b) {
        unscannable(
            r,
            Some(member),
            format!("{what}: not opened, so not looked into"),
        );
    } else {
        unscannable(
            r,
            Some(member),
            "an unknown binary format: not looked into".into(),
        );
    }
}

/// The regular files of a tar held in memory: `(name, bytes)`.
fn tar_members(b: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 512 <= b.len() {
        let h = &b[pos..pos + 512];
        if h.iter().all(|c| *c == 0) {
            break;
        }
        let name_end = h[..100].iter().position(|c| *c == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size_field = String::from_utf8_lossy(&h[124..136]);
        let Ok(size) =
            u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
        else {
            break;
        };
        let start = pos + 512;
        let Some(end) = usize::try_from(size)
            .ok()
            .and_then(|s| start.checked_add(s))
        else {
            break;
        };
        if end > b.len() {
            break;
        }
        if matches!(h[156], b'0' | 0) {
            out.push((name, &b[start..end]));
        }
        pos = start + (end - start).div_ceil(512) * 512;
    }
    out
}

/// Scans every file under `paths` (folders recursively; reports in name order, files scanned in
/// parallel).
pub fn scan_paths(paths: &[PathBuf], opts: &OpenOptions) -> Vec<FileReport> {
    use rayon::prelude::*;
    // (path, inside a folder) or an unreadable folder's report.
    let mut jobs: Vec<std::result::Result<(PathBuf, bool), FileReport>> = Vec::new();
    for p in paths {
        let mut stack = vec![(p.clone(), false)];
        while let Some((p, inside)) = stack.pop() {
            let is_dir = std::fs::symlink_metadata(&p)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if is_dir {
                let mut kids: Vec<PathBuf> = match std::fs::read_dir(&p) {
                    Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                    Err(e) => {
                        let mut r = FileReport::new(&p);
                        r.format = "unreadable".into();
                        r.error = Some(format!("cannot list the folder: {e}"));
                        jobs.push(Err(r));
                        continue;
                    }
                };
                kids.sort();
                kids.reverse();
                stack.extend(kids.into_iter().map(|k| (k, true)));
            } else {
                jobs.push(Ok((p, inside)));
            }
        }
    }
    let reports: Vec<Option<FileReport>> = jobs
        .into_par_iter()
        .map(|j| match j {
            Err(r) => Some(r),
            Ok((p, inside)) => {
                let r = scan_file(&p, opts);
                // Inside folders, text files that are not checkpoints at all are left out.
                (!(inside && r.format == "text" && r.verdict == Verdict::Safe)).then_some(r)
            }
        })
        .collect();
    reports.into_iter().flatten().collect()
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
            scan_raw_zip(
                &a.file,
                a.file_len,
                limits,
                r,
                true,
                a.zip_audit.as_ref(),
                MainPickle::Bytes(&a.pickle_name, &a.pickle),
            );
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
    // Offsets of the main pickle's globals already reported (a set: a pickle can name
    // globals without memoizing them, a million times).
    let mut seen: std::collections::HashSet<usize> = r
        .globals
        .iter()
        .filter(|x| x.member == main.0)
        .map(|x| x.offset)
        .collect();
    for g in &ckpt.globals {
        let off = g.offset + main.1;
        if seen.insert(off) {
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

/// What [`scan_raw_zip`] knows of the archive's main pickle.
#[derive(Clone, Copy)]
enum MainPickle<'a> {
    /// Nothing: read it from the file like every member.
    Read,
    /// The bytes the VM ran (name, bytes): walked as they ran, not read again.
    Bytes(&'a str, &'a [u8]),
    /// The VM's run answered for it (see [`vm_answers_the_policy`]): not walked.
    Judged(&'a str),
}

/// A zip: its structure, then every member that is (or could be read as) a pickle.
fn scan_raw_zip(
    file: &std::fs::File,
    len: u64,
    limits: &Limits,
    r: &mut FileReport,
    check_crc: bool,
    known: Option<&crate::container::ZipAudit>,
    main: MainPickle<'_>,
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
    // A zip with no data.pkl anywhere is not a torch archive (an .npz, a zip of files): torch's
    // layout rules do not apply to it, but every member is still looked at.
    let torch_layout = audit
        .entries
        .iter()
        .any(|e| is_any_pickle_name(e.name.as_bytes()));
    if !torch_layout
        && !audit.entries.is_empty()
        && audit.entries.iter().all(|e| e.name.ends_with(".npy"))
    {
        r.format = "npz".into();
    }
    for an in &audit.anomalies {
        if !torch_layout && an.kind == "several-roots" {
            continue;
        }
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
        .filter(|e| is_main_pickle_name(e.name.as_bytes()))
        .collect();
    let prefix = pickles
        .first()
        .map(|e| e.name[..e.name.len() - "data.pkl".len()].to_string())
        .unwrap_or_default();
    let mut crc_bad = 0usize;
    let first_global = r.globals.len();
    let torchscript = audit.entries.iter().any(|e| {
        let rest = e.name.strip_prefix(&prefix).unwrap_or(&e.name);
        role(rest) == Role::Constants || rest.starts_with("code/")
    });
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
        let kind = role(rest);
        // `data/` itself (no key) is no storage to the reader, but nothing to walk either.
        let is_storage = matches!(kind, Role::Storage(_)) || rest == "data/";
        let is_main = kind == Role::Pickle && !pickles.is_empty();
        if matches!(kind, Role::Constants | Role::TorchScript) {
            if rest == "constants.pkl" || rest == "model.json" {
                finding(
                    r,
                    Verdict::Safe,
                    "torchscript",
                    Some(&e.name),
                    Some(e.local_offset),
                    "a TorchScript archive: its pickles are walked like data.pkl; its code (TorchScript, not Python) is never run by convert".into(),
                );
            }
        } else if kind == Role::Other && !is_storage && torch_layout {
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
        let bytes: std::borrow::Cow<'_, [u8]> = match main {
            MainPickle::Judged(name) if is_main && &*e.name == name => continue,
            MainPickle::Bytes(name, b) if is_main && &*e.name == name => {
                std::borrow::Cow::Borrowed(b)
            }
            _ => match read_member(file, e, limits) {
                Some(b) => std::borrow::Cow::Owned(b),
                None => continue,
            },
        };
        if is_main {
            walk_pickles(&bytes, &e.name, 1, limits, r, 0);
        } else if !torch_layout && bytes.starts_with(npy::NPY_MAGIC) {
            scan_npy_bytes(&bytes, &e.name, limits, r);
        } else if !torch_layout && !looks_like_pickle(&bytes, limits) {
            if e.method != 0 && e.method != 8 {
                unscannable(
                    r,
                    Some(&e.name),
                    format!("compression method {}: not opened", e.method),
                );
            } else if !looks_like_text(&bytes) {
                unscannable(
                    r,
                    Some(&e.name),
                    "a member in an unknown binary format: not looked into".into(),
                );
            }
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
            } else if rest != "constants.pkl" && !(torchscript && rest == "bytecode.pkl") {
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
    if torchscript {
        torchscript_classes_are_data(r, first_global);
    }
}

/// In a TorchScript archive, `__torch__.*` classes are the scripted modules TorchScript always
/// writes (their code is TorchScript in `code/`, compiled by torch, not Python imported by the
/// unpickler): data, not unknown imports.
fn torchscript_classes_are_data(r: &mut FileReport, from: usize) {
    for g in &mut r.globals[from..] {
        if g.class == GlobalClass::Unknown
            && (g.module == "__torch__" || g.module.starts_with("__torch__."))
        {
            g.class = GlobalClass::Inert;
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
    let mut r = FileReport::new(ckpt.path());
    r.format = String::new();
    r.dangerous_only = true;
    let a = ckpt.archive();
    let judged = vm_answers_the_policy(ckpt);
    let main = match &a.container {
        Container::Legacy => walk_legacy_head(a, limits, &mut r),
        // Every pickle in the archive, hidden ones included (not the storages).
        Container::Zip { .. } | Container::TorchScript { .. } => {
            let main = if judged {
                MainPickle::Judged(&a.pickle_name)
            } else {
                MainPickle::Bytes(&a.pickle_name, &a.pickle)
            };
            scan_raw_zip(
                &a.file,
                a.file_len,
                limits,
                &mut r,
                false,
                a.zip_audit.as_ref(),
                main,
            );
            (a.pickle_name.clone(), 0)
        }
        Container::Pickle | Container::Tar => {
            if !judged {
                walk_pickles(&a.pickle, &a.pickle_name, 1, limits, &mut r, 0);
            }
            (a.pickle_name.clone(), 0)
        }
    };
    union_vm_globals(ckpt, &main, &mut r);
    refuse(ckpt.path(), &r, strict)
}

/// True when the VM's own run of the main pickle answers the policy's question for it, so
/// the walk would find nothing dangerous there that the VM's globals do not show: the run
/// reached a STOP at the pickle's end (no trailing pickle), no string or bytes value could be
/// an embedded pickle, no Python 2 name was mapped, and every global is one the VM interprets
/// other than the two the walk looks behind (`_load_from_bytes`, `_codecs.encode`). Whatever
/// the strict VM would have refused (STACK_GLOBAL on computed operands, BUILD on a global) it
/// did refuse, or there would be no checkpoint.
fn vm_answers_the_policy(ckpt: &Checkpoint) -> bool {
    let run = &ckpt.main_run;
    run.end == ckpt.archive().pickle.len()
        && run.embedded_pickles == 0
        && !run.renamed_globals
        && ckpt.globals.iter().all(|g| {
            let g = &g.global;
            classify_global(g) == GlobalClass::Interpreted
                && !g.is("torch.storage", "_load_from_bytes")
                && !g.is("_codecs", "encode")
        })
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
