//! Handling one unit of work: open and check each source, plan its output files, write what is
//! not up to date, write the index last, re-read before deleting a source.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::discover::{Item, Unit};
use super::naming::{output_name, shard_base};
use super::outputs::{Freshness, freshness_merged, reread, reread_merged, written_tensors};
use super::report::{FileRecord, Kind, SkipReason, Status};
use super::{Control, MigrateOptions, Observer};
use crate::checkpoint::{Checkpoint, ConvertOptions, Selection};
use crate::error::{Error, ErrorKind, Result, io};
use crate::pipeline::shard::{index_json, plan_shards, split};
use crate::pipeline::shard::{index_name, output_file_name};
use crate::pipeline::{self, Pipeline, Policy};
use crate::writer::atomic;

pub(super) struct Context<'a> {
    pub opts: &'a MigrateOptions,
    pub observer: &'a dyn Observer,
    pub control: &'a Control,
    /// Copy threads for one file.
    pub threads: usize,
    /// Outputs converted so far, by (canonical source, output file name): a file reached
    /// through several links is converted once.
    pub blobs: std::sync::Mutex<HashMap<(PathBuf, String), PathBuf>>,
    /// Folders written in and not flushed yet: outputs are linked into place without flushing
    /// their folder, which [`Context::sync_folders`] does once per folder (at the end of the
    /// run and before any source is removed) instead of once per file.
    pub folders: std::sync::Mutex<std::collections::BTreeSet<PathBuf>>,
}

/// An output written for `blob` earlier in this run, hard-linked at `out` when `out` does not
/// exist yet and the earlier output holds exactly `sel`. Returns its bytes and its path.
fn reuse(
    ctx: &Context,
    blob: &Path,
    out: &Path,
    sel: &Selection,
    source: &Path,
) -> Option<(u64, PathBuf)> {
    let earlier = ctx.converted_blob(blob, &file_name(out))?;
    if earlier == out || std::fs::symlink_metadata(out).is_ok() {
        return None;
    }
    let Freshness::UpToDate { bytes } = freshness_merged(&earlier, sel, &[source]) else {
        return None;
    };
    if !ctx.opts.dry_run {
        std::fs::create_dir_all(atomic::dir_of(out)).ok()?;
        std::fs::hard_link(&earlier, out).ok()?;
    }
    Some((bytes, earlier))
}

impl Context<'_> {
    /// Flushes every folder written in so far (see [`Context::folders`]).
    pub fn sync_folders(&self) {
        let folders = std::mem::take(&mut *self.folders.lock().unwrap_or_else(|p| p.into_inner()));
        for f in folders {
            atomic::sync_folder(&f);
        }
    }

    /// The output converted in this run from `blob` under the file name `name`, if any.
    fn converted_blob(&self, blob: &Path, name: &str) -> Option<PathBuf> {
        let seen = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(blob.to_path_buf(), name.to_string())).cloned()
    }

    /// Remembers that `out` holds the conversion of `blob`.
    fn remember_blob(&self, blob: PathBuf, out: &Path) {
        let mut seen = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        seen.entry((blob, file_name(out)))
            .or_insert_with(|| out.to_path_buf());
    }

    /// The conversion settings every source of this run is opened and written with.
    fn pipeline(&self) -> Pipeline {
        let o = self.opts;
        Pipeline {
            convert: ConvertOptions {
                overwrite: o.overwrite,
                threads: self.threads,
                keep_aliases: o.keep_aliases,
                defer_folder_sync: true,
                ..ConvertOptions::default()
            },
            policy: Policy {
                strict: o.strict,
                allow_dangerous: o.allow_dangerous,
            },
            limits: o.limits,
            verify: false,
        }
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Bytes of the sources of a unit, for the progress total.
pub(super) fn source_bytes(item: &Item) -> u64 {
    match &item.unit {
        Unit::Checkpoint { source, .. } | Unit::Copy { source, .. } => file_len(source),
        Unit::Sharded { shards, .. } => shards.iter().map(|s| file_len(s)).sum(),
        Unit::Note(_) | Unit::Stale(_) => 0,
    }
}

/// Progress credited against one source's size: the writer reports output bytes, which differ
/// a little from the source's (headers, pickles), so the credit is capped and settled at the end.
struct Credit<'a> {
    budget: u64,
    used: AtomicU64,
    observer: &'a dyn Observer,
}

impl<'a> Credit<'a> {
    fn new(source: &Path, observer: &'a dyn Observer) -> Self {
        Self::with_budget(file_len(source), observer)
    }

    fn with_budget(budget: u64, observer: &'a dyn Observer) -> Self {
        Credit {
            budget,
            used: AtomicU64::new(0),
            observer,
        }
    }

    fn add(&self, n: u64) {
        let prev = self.used.fetch_add(n, Ordering::Relaxed);
        let give = n.min(self.budget.saturating_sub(prev));
        if give > 0 {
            self.observer.advance(give);
        }
    }

    fn settle(&self) {
        let prev = self.used.swap(u64::MAX / 2, Ordering::Relaxed);
        let rest = self.budget.saturating_sub(prev);
        if rest > 0 {
            self.observer.advance(rest);
        }
    }
}

pub(super) fn process(item: &Item, ctx: &Context) -> Vec<FileRecord> {
    match &item.unit {
        Unit::Note(r) => {
            ctx.observer.finished(r);
            vec![r.clone()]
        }
        Unit::Stale(path) => {
            let r = stale(path, ctx);
            ctx.observer.finished(&r);
            vec![r]
        }
        Unit::Copy { source, dest } => {
            let r = copy(source, dest, ctx);
            ctx.observer.finished(&r);
            vec![r]
        }
        Unit::Checkpoint { source, out_dir } => {
            let r = checkpoint(source, out_dir, ctx);
            ctx.observer.finished(&r);
            vec![r]
        }
        Unit::Sharded {
            index,
            base,
            shards,
            out_dir,
        } => sharded(index, base, shards, out_dir, ctx),
    }
}

enum Opened {
    Ready(Box<Checkpoint>, Selection),
    Skip(SkipReason, String),
    Fail(String),
}

/// Opens a source through the conversion pipeline (the same preflight, policy, selection and
/// limits as `convert`).
fn open(source: &Path, ctx: &Context) -> Opened {
    let progress = |e: pipeline::Event<'_>| {
        if matches!(e, pipeline::Event::Released) {
            ctx.observer.released();
        }
    };
    match ctx.pipeline().open(source, &progress) {
        // The shards of a model are held open together until their outputs are written: the
        // pipeline left each only what the write needs.
        Ok(o) => {
            ctx.observer.released();
            Opened::Ready(Box::new(o.checkpoint), o.selection)
        }
        Err(e) if matches!(e.kind, ErrorKind::NotACheckpoint(_)) => {
            Opened::Skip(SkipReason::NotACheckpoint, format!("{e:#}"))
        }
        Err(e) if matches!(e.kind, ErrorKind::Selection(_)) => {
            Opened::Skip(SkipReason::NoTensors, format!("{e:#}"))
        }
        Err(e) => Opened::Fail(format!("{e:#}")),
    }
}

/// Writes one output from `parts` (one or several checkpoints' selections) unless it is up to
/// date. Returns whether it was (or, dry, would be) written, and the bytes of the output.
fn write_one(
    out: &Path,
    parts: &[(&Checkpoint, &Selection)],
    sources: &[&Path],
    ctx: &Context,
    credit: &Credit,
) -> Result<(bool, u64)> {
    let o = ctx.opts;
    let all = union(parts.iter().map(|(_, s)| *s));
    match freshness_merged(out, &all, sources) {
        Freshness::UpToDate { bytes } if !o.overwrite => return Ok((false, bytes)),
        Freshness::Differs(why) if !o.overwrite => {
            return Err(Error::new(out, ErrorKind::OutputDiffers(why)));
        }
        _ => {}
    }
    if o.dry_run {
        return Ok((true, all.tensors.iter().map(|t| t.nbytes).sum()));
    }
    create_folder(out)?;
    let _in_flight = begin(ctx, out)?;
    match pipeline::write_parts(parts, out, &ctx.pipeline().convert, &|n| credit.add(n)) {
        Ok(bytes) => Ok((true, bytes)),
        // Another run on the same tree finished this output first: fine if it is what this
        // run would have written.
        Err(e) if matches!(e.kind, ErrorKind::OutputExists(_)) => {
            match freshness_merged(out, &all, sources) {
                Freshness::UpToDate { bytes } => Ok((false, bytes)),
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Creates the folder `out` is written in.
fn create_folder(out: &Path) -> Result<()> {
    let dir = atomic::dir_of(out);
    std::fs::create_dir_all(dir).map_err(|e| Error::new(dir, io("cannot create the folder")(e)))
}

/// Registers `out` as being written, unless the run was interrupted.
fn begin<'c>(ctx: &'c Context, out: &Path) -> Result<super::control::InFlight<'c>> {
    ctx.folders
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(atomic::dir_of(out).to_path_buf());
    ctx.control
        .begin(out)
        .ok_or_else(|| Error::new(out, ErrorKind::Interrupted))
}

/// The tensors and aliases of several selections as one (for checking and indexing a merged
/// output); no notes.
fn union<'s>(sels: impl IntoIterator<Item = &'s Selection>) -> Selection {
    let mut all = Selection {
        key: String::new(),
        tensors: Vec::new(),
        aliases: Vec::new(),
        skipped: Vec::new(),
    };
    for s in sels {
        if all.key.is_empty() {
            all.key = s.key.clone();
        }
        all.tensors.extend(s.tensors.iter().cloned());
        all.aliases.extend(s.aliases.iter().cloned());
    }
    all
}

fn status_of(wrote: bool, dry_run: bool) -> Status {
    match (wrote, dry_run) {
        (false, _) => Status::UpToDate,
        (true, true) => Status::Planned,
        (true, false) => Status::Converted,
    }
}

/// Writes the parts of one source that are not up to date. Returns the status and the bytes of
/// the outputs.
fn write_parts(
    ckpt: &Checkpoint,
    source: &Path,
    parts: &[(PathBuf, Selection)],
    ctx: &Context,
    credit: &Credit,
) -> Result<(Status, u64)> {
    let (mut bytes, mut wrote) = (0u64, false);
    for (out, sel) in parts {
        let (w, b) = write_one(out, &[(ckpt, sel)], &[source], ctx, credit)?;
        wrote |= w;
        bytes += b;
    }
    Ok((status_of(wrote, ctx.opts.dry_run), bytes))
}

/// Writes the safetensors index of `parts` last. Returns the status, tensors listed and
/// `total_size`.
fn write_index(
    index: &Path,
    parts: &[(PathBuf, Selection)],
    ctx: &Context,
) -> Result<(Status, usize, u64)> {
    let o = ctx.opts;
    let mut files = Vec::new();
    for (out, sel) in parts {
        let name = file_name(out);
        let tensors = if o.dry_run && std::fs::metadata(out).is_err() {
            sel.tensors
                .iter()
                .map(|t| (t.name.clone(), t.nbytes))
                .collect()
        } else {
            written_tensors(out)?
        };
        files.push((name, tensors));
    }
    let (text, n, total) = index_json(&files);
    match std::fs::read(index) {
        Ok(existing) if existing == text.as_bytes() && !o.overwrite => {
            return Ok((Status::UpToDate, n, total));
        }
        Ok(_) if !o.overwrite => {
            return Err(Error::new(
                index,
                ErrorKind::OutputDiffers("has other contents".into()),
            ));
        }
        _ => {}
    }
    if o.dry_run {
        return Ok((Status::Planned, n, total));
    }
    let _in_flight = begin(ctx, index)?;
    atomic::write_atomic_with(index, text.as_bytes(), o.overwrite, false)
        .map_err(|k| Error::new(index, k))?;
    Ok((Status::Converted, n, total))
}

/// Re-reads every part, then removes `source` (its outputs' folders flushed first).
fn verify_then_delete(
    ctx: &Context,
    ckpt: &Checkpoint,
    source: &Path,
    parts: &[(PathBuf, Selection)],
    delete: bool,
) -> Result<bool> {
    for (out, sel) in parts {
        reread(ckpt, sel, out)?;
    }
    if delete {
        ctx.sync_folders();
        std::fs::remove_file(source)
            .map_err(|e| Error::new(source, io("converted, but cannot remove the source")(e)))?;
    }
    Ok(delete)
}

fn combine(a: Status, b: Status) -> Status {
    if a == Status::UpToDate { b } else { a }
}

fn checkpoint(source: &Path, out_dir: &Path, ctx: &Context) -> FileRecord {
    let started = Instant::now();
    let credit = Credit::new(source, ctx.observer);
    let mut rec = checkpoint_inner(source, out_dir, ctx, &credit);
    credit.settle();
    rec.seconds = started.elapsed().as_secs_f64();
    rec
}

fn checkpoint_inner(source: &Path, out_dir: &Path, ctx: &Context, credit: &Credit) -> FileRecord {
    let o = ctx.opts;
    let src = source.to_path_buf();
    let (ckpt, sel) = match open(source, ctx) {
        Opened::Ready(c, s) => (c, s),
        Opened::Skip(why, msg) => return FileRecord::skipped(src, Kind::Checkpoint, why, msg),
        Opened::Fail(msg) => return FileRecord::failed(src, Kind::Checkpoint, msg),
    };
    let mut rec = FileRecord::new(src.clone(), Kind::Checkpoint, Status::Converted);
    rec.tensors = sel.tensors.len();
    rec.aliases = sel.aliases.clone();
    let base = shard_base(&file_name(source));
    let groups = split(&sel, o.max_shard_size);
    let n = groups.len();
    let parts: Vec<(PathBuf, Selection)> = groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| (out_dir.join(output_file_name(&base, i + 1, n)), g))
        .collect();
    let index = (n > 1).then(|| out_dir.join(index_name(&base)));
    rec.outputs = parts
        .iter()
        .map(|(p, _)| p.clone())
        .chain(index.clone())
        .collect();
    let fail = |mut rec: FileRecord, e: Error| {
        rec.status = Status::Failed;
        rec.reason = Some(e.to_string());
        rec
    };
    // The same file reached through another link (a blob shared by two revisions of a Hugging
    // Face cache) was converted already: link its output instead of converting again.
    let blob = std::fs::canonicalize(source).ok();
    if let ([(out, sel)], None, Some(blob)) = (&parts[..], &index, &blob)
        && let Some((bytes, earlier)) = reuse(ctx, blob, out, sel, source)
    {
        rec.bytes = bytes;
        rec.status = if o.dry_run {
            Status::Planned
        } else {
            Status::Converted
        };
        rec.reused = Some(earlier);
        return rec;
    }
    let (mut status, bytes) = match write_parts(&ckpt, source, &parts, ctx, credit) {
        Ok(r) => r,
        Err(msg) => return fail(rec, msg),
    };
    rec.bytes = bytes;
    if let Some(index) = &index {
        match write_index(index, &parts, ctx) {
            Ok((s, _, _)) => status = combine(status, s),
            Err(msg) => return fail(rec, msg),
        }
    }
    rec.status = status;
    if let ([(out, _)], None, Some(blob), Status::Converted | Status::UpToDate) =
        (&parts[..], &index, blob, status)
    {
        ctx.remember_blob(blob, out);
    }
    if o.delete_source && !o.dry_run {
        match verify_then_delete(ctx, &ckpt, source, &parts, true) {
            Ok(d) => rec.source_deleted = d,
            Err(msg) => return fail(rec, msg),
        }
    }
    rec
}

/// A name held by two input shards (by index), which one output cannot hold twice.
type Clash = (String, usize, usize);

/// One output file of a sharded model: its path and, per input shard writing into it, the
/// shard (an index into the opened shards) and the selection of its tensors there.
struct Planned {
    path: PathBuf,
    parts: Vec<(usize, Selection)>,
}

/// Hugging Face's greedy grouping over a whole sharded model. The tensors are taken in input-shard
/// order, then each shard's own order (the order of the state dict the shards load into, which
/// `split_torch_state_dict_into_shards` walks), so small shards are regrouped into larger files
/// and large ones split. Each group lists, per contributing shard in order, the selection of its
/// tensors there; an alias goes with the tensor it names, a shard's notes with its first group.
/// `Err((name, a, b))`: shards `a` and `b` both hold `name` (as a tensor or an alias), which one
/// output cannot.
fn plan_model(sels: &[&Selection], max: u64) -> Result<Vec<Vec<(usize, Selection)>>, Clash> {
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (p, sel) in sels.iter().enumerate() {
        let names = sel.tensors.iter().map(|t| t.name.as_str());
        for name in names.chain(sel.aliases.iter().map(|(a, _)| a.as_str())) {
            if let Some(&q) = owner.get(name)
                && q != p
            {
                return Err((name.to_string(), q, p));
            }
            owner.insert(name, p);
        }
    }
    let flat: Vec<(usize, usize)> = sels
        .iter()
        .enumerate()
        .flat_map(|(p, s)| (0..s.tensors.len()).map(move |i| (p, i)))
        .collect();
    let sizes: Vec<u64> = flat
        .iter()
        .map(|&(p, i)| sels[p].tensors[i].nbytes)
        .collect();
    let mut noted = vec![false; sels.len()];
    Ok(plan_shards(&sizes, max)
        .into_iter()
        .map(|group| {
            let mut parts: Vec<(usize, Selection)> = Vec::new();
            for k in group {
                let (p, i) = flat[k];
                let t = sels[p].tensors[i].clone();
                match parts.last_mut() {
                    Some((q, sel)) if *q == p => sel.tensors.push(t),
                    _ => parts.push((
                        p,
                        Selection {
                            key: sels[p].key.clone(),
                            tensors: vec![t],
                            aliases: Vec::new(),
                            skipped: Vec::new(),
                        },
                    )),
                }
            }
            for (p, sel) in &mut parts {
                sel.aliases = sels[*p]
                    .aliases
                    .iter()
                    .filter(|(_, kept)| sel.tensors.iter().any(|t| &t.name == kept))
                    .cloned()
                    .collect();
                if !std::mem::replace(&mut noted[*p], true) {
                    sel.skipped = sels[*p].skipped.clone();
                }
            }
            parts
        })
        .collect())
}

/// What happened to one input shard across the outputs its tensors went to.
#[derive(Default)]
struct Tally {
    outputs: Vec<PathBuf>,
    wrote: bool,
    bytes: u64,
    seconds: f64,
    error: Option<String>,
}

fn sharded(
    index: &Path,
    base: &str,
    shards: &[PathBuf],
    out_dir: &Path,
    ctx: &Context,
) -> Vec<FileRecord> {
    let o = ctx.opts;
    let started = Instant::now();
    let mut recs: Vec<FileRecord> = Vec::new();
    let mut opened = Vec::new();
    let mut failures = 0usize;
    let finish = |r: FileRecord, recs: &mut Vec<FileRecord>| {
        ctx.observer.finished(&r);
        recs.push(r);
    };
    for s in shards {
        if ctx.control.is_stopped() {
            return recs;
        }
        if std::fs::symlink_metadata(s).is_err() {
            failures += 1;
            let why = format!("{}: listed in {} but missing", s.display(), index.display());
            finish(
                FileRecord::failed(s.clone(), Kind::Checkpoint, why),
                &mut recs,
            );
            continue;
        }
        match open(s, ctx) {
            Opened::Ready(c, sel) => opened.push((s.clone(), c, sel)),
            Opened::Skip(why, msg) => {
                failures += 1;
                finish(
                    FileRecord::skipped(s.clone(), Kind::Checkpoint, why, msg),
                    &mut recs,
                );
            }
            Opened::Fail(msg) => {
                failures += 1;
                finish(
                    FileRecord::failed(s.clone(), Kind::Checkpoint, msg),
                    &mut recs,
                );
            }
        }
    }
    // Resharding plans over the whole model, so it needs every shard; when it cannot go on,
    // every shard and the index fail with the reason.
    let give_up = |mut recs: Vec<FileRecord>, why: &dyn Fn(&Path) -> String, index_why: String| {
        for (s, _, _) in &opened {
            finish(
                FileRecord::failed(s.clone(), Kind::Checkpoint, why(s)),
                &mut recs,
            );
        }
        finish(
            FileRecord::failed(index.to_path_buf(), Kind::Index, index_why),
            &mut recs,
        );
        recs
    };
    // Plan every output first: resharding numbers files across the whole model.
    let planned: Vec<Planned> = if let Some(max) = o.max_shard_size {
        if failures > 0 {
            return give_up(
                recs,
                &|s| {
                    format!(
                        "{}: not converted: resharding groups the tensors of the whole model, and {failures} of its shards failed",
                        s.display()
                    )
                },
                format!(
                    "{}: not written: {failures} of its shards failed",
                    index.display()
                ),
            );
        }
        let sels: Vec<&Selection> = opened.iter().map(|(_, _, sel)| sel).collect();
        match plan_model(&sels, max) {
            Ok(groups) => {
                let n = groups.len();
                groups
                    .into_iter()
                    .enumerate()
                    .map(|(k, parts)| Planned {
                        path: out_dir.join(output_file_name(base, k + 1, n)),
                        parts,
                    })
                    .collect()
            }
            Err((name, a, b)) => {
                let why = format!(
                    "cannot reshard {}: {name:?} is in both {} and {}",
                    index.display(),
                    opened[a].0.display(),
                    opened[b].0.display()
                );
                return give_up(
                    recs,
                    &|s| format!("{}: not converted: {why}", s.display()),
                    why.clone(),
                );
            }
        }
    } else {
        opened
            .iter()
            .enumerate()
            .map(|(p, (s, _, sel))| Planned {
                path: out_dir.join(output_name(&file_name(s))),
                parts: vec![(
                    p,
                    Selection {
                        key: sel.key.clone(),
                        tensors: sel.tensors.clone(),
                        aliases: sel.aliases.clone(),
                        skipped: sel.skipped.clone(),
                    },
                )],
            })
            .collect()
    };
    // The last output each shard writes into: its record is final once that one is done.
    let mut last = vec![0usize; opened.len()];
    for (k, out) in planned.iter().enumerate() {
        for (p, _) in &out.parts {
            last[*p] = k;
        }
    }
    let mut tally: Vec<Tally> = opened.iter().map(|_| Tally::default()).collect();
    let credit = Credit::with_budget(
        opened.iter().map(|(s, _, _)| file_len(s)).sum(),
        ctx.observer,
    );
    let mut converted = Vec::new();
    let tensor_bytes = |sel: &Selection| sel.tensors.iter().map(|t| t.nbytes).sum::<u64>();
    for (k, out) in planned.iter().enumerate() {
        if ctx.control.is_stopped() {
            credit.settle();
            return recs;
        }
        let t0 = Instant::now();
        let parts: Vec<(&Checkpoint, &Selection)> = out
            .parts
            .iter()
            .map(|(p, sel)| (&*opened[*p].1, sel))
            .collect();
        let sources: Vec<&Path> = out
            .parts
            .iter()
            .map(|(p, _)| opened[*p].0.as_path())
            .collect();
        let result = write_one(&out.path, &parts, &sources, ctx, &credit).and_then(|r| {
            // --delete-source: every output is re-read against its sources before any goes.
            if o.delete_source && !o.dry_run {
                reread_merged(&parts, &out.path)?;
            }
            Ok(r)
        });
        let seconds = t0.elapsed().as_secs_f64();
        // Each shard is credited its tensors' bytes; the first also the header's.
        let header = result.as_ref().map_or(0, |(_, b)| {
            b.saturating_sub(out.parts.iter().map(|(_, s)| tensor_bytes(s)).sum())
        });
        for (j, (p, sel)) in out.parts.iter().enumerate() {
            let t = &mut tally[*p];
            t.outputs.push(out.path.clone());
            t.seconds += seconds;
            match &result {
                Ok((wrote, _)) => {
                    t.wrote |= *wrote;
                    t.bytes += tensor_bytes(sel) + if j == 0 { header } else { 0 };
                }
                Err(msg) => {
                    t.error.get_or_insert_with(|| msg.to_string());
                }
            }
        }
        for (p, (s, _, sel)) in opened.iter().enumerate() {
            if last[p] != k {
                continue;
            }
            let t = std::mem::take(&mut tally[p]);
            let mut rec =
                FileRecord::new(s.clone(), Kind::Checkpoint, status_of(t.wrote, o.dry_run));
            rec.tensors = sel.tensors.len();
            rec.aliases = sel.aliases.clone();
            rec.outputs = t.outputs;
            rec.bytes = t.bytes;
            rec.seconds = t.seconds;
            if let Some(msg) = t.error {
                failures += 1;
                rec.status = Status::Failed;
                rec.reason = Some(msg);
            } else {
                converted.push(recs.len());
            }
            finish(rec, &mut recs);
        }
    }
    credit.settle();
    // The index, last, and only when every shard is in place.
    let new_index = out_dir.join(index_name(base));
    let mut irec = FileRecord::new(index.to_path_buf(), Kind::Index, Status::Converted);
    if failures > 0 {
        irec.status = Status::Failed;
        irec.reason = Some(format!(
            "{}: {} not written: {failures} of the shards it lists failed (the index appears only once every shard is converted)",
            index.display(),
            new_index.display()
        ));
    } else if o.max_shard_size.is_some() && planned.len() == 1 {
        irec.status = if recs.iter().all(|r| r.status == Status::UpToDate) {
            Status::UpToDate
        } else {
            recs.first().map_or(Status::Converted, |r| r.status)
        };
        irec.reason = Some("every tensor fits in one file, which needs no index".into());
    } else {
        irec.outputs = vec![new_index.clone()];
        let all: Vec<(PathBuf, Selection)> = planned
            .iter()
            .map(|out| (out.path.clone(), union(out.parts.iter().map(|(_, s)| s))))
            .collect();
        match write_index(&new_index, &all, ctx) {
            Ok((status, n, total)) => {
                irec.status = status;
                irec.tensors = n;
                irec.bytes = total;
            }
            Err(msg) => {
                irec.status = Status::Failed;
                irec.reason = Some(msg.to_string());
            }
        }
    }
    if o.delete_source && !o.dry_run && irec.status != Status::Failed {
        ctx.sync_folders();
        for &i in &converted {
            let s = recs[i].source.clone();
            match std::fs::remove_file(&s) {
                Ok(()) => recs[i].source_deleted = true,
                Err(e) => {
                    recs[i].status = Status::Failed;
                    recs[i].reason = Some(format!(
                        "{}: converted, but cannot remove the source: {e}",
                        s.display()
                    ));
                }
            }
        }
        if recs.iter().all(|r| r.source_deleted) {
            match std::fs::remove_file(index) {
                Ok(()) => irec.source_deleted = true,
                Err(e) => {
                    irec.reason = Some(format!(
                        "{}: cannot remove the old index: {e}",
                        index.display()
                    ))
                }
            }
        }
    }
    irec.seconds = started.elapsed().as_secs_f64();
    finish(irec, &mut recs);
    recs
}

fn copy(source: &Path, dest: &Path, ctx: &Context) -> FileRecord {
    let o = ctx.opts;
    let started = Instant::now();
    let mut rec = FileRecord::new(source.to_path_buf(), Kind::Copy, Status::Copied);
    rec.outputs = vec![dest.to_path_buf()];
    let credit = Credit::new(source, ctx.observer);
    let result = (|| -> Result<(Status, u64)> {
        let src =
            std::fs::metadata(source).map_err(|e| Error::new(source, io("cannot read")(e)))?;
        if let Ok(d) = std::fs::metadata(dest) {
            let newer = matches!((d.modified(), src.modified()), (Ok(a), Ok(b)) if a >= b);
            if d.len() == src.len() && newer && !o.overwrite {
                return Ok((Status::UpToDate, d.len()));
            }
            if !o.overwrite {
                return Err(Error::new(
                    dest,
                    ErrorKind::OutputDiffers(format!("differs from {}", source.display())),
                ));
            }
        }
        if o.dry_run {
            return Ok((Status::Planned, src.len()));
        }
        create_folder(dest)?;
        let _in_flight = begin(ctx, dest)?;
        Ok((
            Status::Copied,
            atomic::copy_atomic_with(source, dest, o.overwrite, false)
                .map_err(|k| Error::new(dest, k))?,
        ))
    })();
    credit.settle();
    match result {
        Ok((status, bytes)) => {
            rec.status = status;
            rec.bytes = bytes;
        }
        Err(msg) => {
            rec.status = Status::Failed;
            rec.reason = Some(msg.to_string());
        }
    }
    rec.seconds = started.elapsed().as_secs_f64();
    rec
}

/// Removes a temporary file whose writer is gone (`--dry-run`: says it would).
fn stale(path: &Path, ctx: &Context) -> FileRecord {
    let mut rec = FileRecord::new(path.to_path_buf(), Kind::Partial, Status::Removed);
    let why = "a temporary file whose writer is gone (a crashed or killed run)";
    if ctx.opts.dry_run {
        rec.status = Status::Planned;
        rec.reason = Some(format!("{why}; would be removed"));
    } else if let Err(e) = std::fs::remove_file(path)
        // Gone already: the writer of its target cleared it first.
        && e.kind() != std::io::ErrorKind::NotFound
    {
        rec.status = Status::Failed;
        rec.reason = Some(Error::new(path, io("cannot remove it")(e)).to_string());
    } else {
        rec.reason = Some(why.to_string());
    }
    rec
}
