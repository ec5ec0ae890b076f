//! Outputs already on disk: are they up to date, do they hold exactly the tensors of their
//! source (re-read byte for byte before a source is deleted), and the safetensors index built
//! from them.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::SystemTime;

use xxhash_rust::xxh3::Xxh3;

use crate::checkpoint::{Checkpoint, Selection};
use crate::error::{Error, ErrorKind, Result, io};
use crate::writer::{SafetensorsHeader, read_safetensors_header};

/// What is at an output's path.
#[derive(Debug)]
pub enum Freshness {
    /// Nothing.
    Missing,
    /// A complete safetensors file with exactly the planned tensors, newer than the source.
    UpToDate {
        /// Its size.
        bytes: u64,
    },
    /// Something else; the reason.
    Differs(String),
}

/// Reads and checks the header of a safetensors file, including that the file is complete.
pub fn read_header(path: &Path) -> Result<(SafetensorsHeader, u64)> {
    let err = |k| Error::new(path, k);
    let file = File::open(path).map_err(|e| err(io("cannot open")(e)))?;
    let len = file
        .metadata()
        .map_err(|e| err(io("cannot stat")(e)))?
        .len();
    let header = read_safetensors_header(&file, len).map_err(err)?;
    header.check_len(len).map_err(err)?;
    Ok((header, len))
}

fn same_tensors(header: &SafetensorsHeader, sel: &Selection) -> Result<(), String> {
    let found: BTreeMap<&str, &[u64]> = header
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    let want: BTreeMap<&str, &[u64]> = sel
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), &*t.shape))
        .collect();
    if found == want {
        return Ok(());
    }
    let missing: Vec<&&str> = want
        .keys()
        .filter(|k| !found.contains_key(*k))
        .take(3)
        .collect();
    let extra: Vec<&&str> = found
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(3)
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Err("the same tensor names with other shapes".into());
    }
    Err(format!(
        "other tensors (missing {missing:?}, extra {extra:?})"
    ))
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether `output` already holds `sel`, written no earlier than `source` was modified.
pub fn freshness(output: &Path, sel: &Selection, source: &Path) -> Freshness {
    freshness_merged(output, sel, &[source])
}

/// Whether `output` already holds `sel` (the tensors of every part of a merged output), written
/// no earlier than any of `sources` was modified.
pub fn freshness_merged(output: &Path, sel: &Selection, sources: &[&Path]) -> Freshness {
    if std::fs::symlink_metadata(output).is_err() {
        return Freshness::Missing;
    }
    let (header, bytes) = match read_header(output) {
        Ok(h) => h,
        Err(e) => {
            return Freshness::Differs(format!("not a complete safetensors file ({})", e.kind));
        }
    };
    if let Err(why) = same_tensors(&header, sel) {
        return Freshness::Differs(format!("it holds {why}"));
    }
    let written = mtime(output);
    for source in sources {
        match (written, mtime(source)) {
            (Some(o), Some(s)) if o >= s => {}
            _ => return Freshness::Differs(format!("it is older than {}", source.display())),
        }
    }
    Freshness::UpToDate { bytes }
}

/// Re-reads `output` and compares every tensor of `sel` with the source, byte for byte (XXH3 of
/// both sides), plus the aliases recorded in its metadata.
pub fn reread(ckpt: &Checkpoint, sel: &Selection, output: &Path) -> Result<()> {
    reread_merged(&[(ckpt, sel)], output)
}

/// [`reread`] for an output written from several checkpoints' selections: it must hold exactly
/// their tensors, each equal to its own source, and every part's aliases.
pub fn reread_merged(parts: &[(&Checkpoint, &Selection)], output: &Path) -> Result<()> {
    let fail = |m: String| Error::new(output, ErrorKind::Reread(m));
    let (header, _) = read_header(output).map_err(|e| fail(e.kind.to_string()))?;
    let all = Selection {
        key: String::new(),
        tensors: parts
            .iter()
            .flat_map(|(_, s)| s.tensors.iter().cloned())
            .collect(),
        aliases: Vec::new(),
        skipped: Vec::new(),
    };
    same_tensors(&header, &all).map_err(|w| fail(format!("it holds {w}")))?;
    let mut readers = Vec::with_capacity(parts.len());
    let mut part_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (p, (ckpt, sel)) in parts.iter().enumerate() {
        for (alias, kept) in &sel.aliases {
            if header.metadata.get(alias) != Some(kept) {
                return Err(fail(format!(
                    "the alias {alias:?} -> {kept:?} is not recorded in its metadata"
                )));
            }
        }
        for t in &sel.tensors {
            part_of.insert(t.name.as_str(), p);
        }
        readers.push(ckpt.reader(sel)?);
    }
    let file = File::open(output).map_err(|e| fail(e.to_string()))?;
    let start = header.data_start();
    let mut buf = vec![0u8; 1 << 20];
    for h in &header.tensors {
        let reader = part_of
            .get(h.name.as_str())
            .and_then(|&p| readers.get(p))
            .ok_or_else(|| fail(format!("tensor {:?} has no source", h.name)))?;
        let mut src = Xxh3::new();
        reader.stream(&h.name, &mut |b| {
            src.update(b);
            Ok(())
        })?;
        let mut out = Xxh3::new();
        let mut pos = start + h.begin;
        let end = start + h.end;
        while pos < end {
            let n = (end - pos).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], pos)
                .map_err(|e| fail(format!("tensor {:?}: {e}", h.name)))?;
            out.update(&buf[..n]);
            pos += n as u64;
        }
        if src.digest() != out.digest() {
            return Err(fail(format!("tensor {:?} differs from the source", h.name)));
        }
    }
    Ok(())
}

/// The tensors of a written safetensors file, with their bytes, for
/// [`crate::pipeline::shard::index_json`].
pub fn written_tensors(path: &Path) -> Result<Vec<(String, u64)>> {
    let (header, _) = read_header(path)?;
    Ok(header
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.end - t.begin))
        .collect())
}
