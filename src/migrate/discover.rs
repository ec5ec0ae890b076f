//! Discovery: walk the input paths and turn what is found into units of work, each handled by
//! one worker and assigned to one partition: a checkpoint, a sharded model (its pickle index and
//! every shard it names), a file to copy into `--output-dir`, or a note about a file skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use globset::{GlobSet, GlobSetBuilder};

use super::PlanError;
use super::naming::{
    index_name, is_candidate, is_partial, output_name, pickle_index_base, shard_base,
    training_state,
};
use super::report::{FileRecord, Kind, SkipReason};
use crate::writer::atomic;

/// `--include` / `--exclude` patterns. A pattern with a `/` matches the path relative to the
/// input PATH (`unet/**`); one without matches the file name anywhere (`*.bin`).
#[derive(Debug, Default)]
pub struct Filter {
    include: Option<(GlobSet, GlobSet)>,
    exclude: Option<(GlobSet, GlobSet)>,
}

fn build(patterns: &[String]) -> Result<Option<(GlobSet, GlobSet)>, PlanError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
    for p in patterns {
        let g = globset::GlobBuilder::new(p.trim_start_matches("./"))
            .literal_separator(true)
            .build()
            .map_err(|e| PlanError::Glob {
                pattern: p.clone(),
                reason: e.kind().to_string(),
            })?;
        if p.contains('/') {
            paths.add(g)
        } else {
            names.add(g)
        };
    }
    let done = |b: GlobSetBuilder| {
        b.build().map_err(|e| PlanError::Glob {
            pattern: patterns.join(" "),
            reason: e.kind().to_string(),
        })
    };
    Ok(Some((done(names)?, done(paths)?)))
}

fn matches(set: &(GlobSet, GlobSet), rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    set.0.is_match(name) || set.1.is_match(rel)
}

impl Filter {
    /// Compiles the patterns.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, PlanError> {
        Ok(Filter {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    /// True when the file at `rel` (relative to its input PATH, `/`-separated) is kept.
    pub fn keeps_file(&self, rel: &str) -> bool {
        self.include.as_ref().is_none_or(|s| matches(s, rel)) && !self.excludes(rel)
    }

    /// True when `rel` (a file or folder) matches an `--exclude` pattern.
    pub fn excludes(&self, rel: &str) -> bool {
        self.exclude.as_ref().is_some_and(|s| matches(s, rel))
    }
}

/// One unit of work.
#[derive(Debug)]
pub enum Unit {
    /// A single checkpoint file, converted into `out_dir`.
    Checkpoint {
        /// The file.
        source: PathBuf,
        /// Where its outputs go.
        out_dir: PathBuf,
    },
    /// A sharded model: the pickle index and the shards it names, in order.
    Sharded {
        /// `pytorch_model.bin.index.json` or the like.
        index: PathBuf,
        /// The stem of the output names (`model`, `diffusion_pytorch_model`).
        base: String,
        /// The shard files, sorted, each once.
        shards: Vec<PathBuf>,
        /// Where the outputs go.
        out_dir: PathBuf,
    },
    /// A file copied into the output folder.
    Copy {
        /// The file.
        source: PathBuf,
        /// Its copy.
        dest: PathBuf,
    },
    /// Nothing to do but report (a skipped or failed file).
    Note(FileRecord),
    /// A temporary file left by a writer that is gone: removed (listed by `--dry-run`).
    Stale(PathBuf),
}

impl Unit {
    /// The file the unit is about (the index of a sharded model).
    pub fn file(&self) -> &Path {
        match self {
            Unit::Checkpoint { source, .. } | Unit::Copy { source, .. } => source,
            Unit::Sharded { index, .. } => index,
            Unit::Note(r) => &r.source,
            Unit::Stale(p) => p,
        }
    }
}

/// A unit with its stable label (`<input name>/<path inside it>`), which decides its partition.
#[derive(Debug)]
pub struct Item {
    /// Stable across machines: the input PATH's own name, then the path below it.
    pub label: String,
    /// The work.
    pub unit: Unit,
}

/// Where each input PATH's outputs go.
#[derive(Debug, Clone)]
pub struct Root {
    /// The PATH as given.
    pub path: PathBuf,
    /// Its name in labels and under `--output-dir` (several PATHs).
    pub name: String,
    /// The folder mirroring it (`--output-dir`), or `None` to write beside the sources.
    pub mirror: Option<PathBuf>,
}

/// Resolves the input PATHs against `output_dir`: one PATH mirrors into DIR itself; several keep
/// their own names under DIR (two with the same name are refused).
pub fn roots(paths: &[PathBuf], output_dir: Option<&Path>) -> Result<Vec<Root>, PlanError> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, &Path> = HashMap::new();
    for p in paths {
        let canonical = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        let name = canonical
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let is_file = canonical.is_file();
        let mirror = output_dir.map(|d| {
            if paths.len() == 1 || is_file {
                d.to_path_buf()
            } else {
                d.join(&name)
            }
        });
        if output_dir.is_some()
            && !is_file
            && paths.len() > 1
            && let Some(other) = seen.insert(name.clone(), p)
        {
            return Err(PlanError::SameOutput {
                first: other.to_path_buf(),
                second: p.clone(),
                target: output_dir.unwrap_or(Path::new(".")).join(&name),
            });
        }
        out.push(Root {
            path: p.clone(),
            name,
            mirror,
        });
    }
    Ok(out)
}

struct Walk<'a> {
    filter: &'a Filter,
    /// Folders never entered: the output folder when it lies inside an input.
    avoid: Vec<PathBuf>,
    items: Vec<Item>,
}

/// Walks every root; the items come in walk order (roots in order, names sorted).
pub fn discover(roots: &[Root], filter: &Filter, output_dir: Option<&Path>) -> Vec<Item> {
    let avoid = output_dir
        .and_then(|d| std::fs::canonicalize(d).ok())
        .into_iter()
        .collect();
    let mut w = Walk {
        filter,
        avoid,
        items: Vec::new(),
    };
    for root in roots {
        let meta = match std::fs::metadata(&root.path) {
            Ok(m) => m,
            Err(e) => {
                let rec = FileRecord::failed(
                    root.path.clone(),
                    Kind::Checkpoint,
                    format!("{}: cannot read: {e}", root.path.display()),
                );
                w.items.push(Item {
                    label: root.name.clone(),
                    unit: Unit::Note(rec),
                });
                continue;
            }
        };
        if meta.is_dir() {
            let out = root.mirror.clone();
            w.dir(root, &root.path, "", out.as_deref());
        } else {
            // A file named on the command line is always considered, whatever its extension.
            let name = root.name.clone();
            let out_dir = root.mirror.clone().unwrap_or_else(|| parent(&root.path));
            w.file(
                &root.path,
                &name,
                &name,
                &out_dir,
                root.mirror.is_some(),
                true,
            );
        }
    }
    w.items
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Walk<'_> {
    fn note(&mut self, label: String, rec: FileRecord) {
        self.items.push(Item {
            label,
            unit: Unit::Note(rec),
        });
    }

    /// One folder: its pickle indexes first (they claim their shards), then every other file,
    /// then the sub-folders, all in name order.
    fn dir(&mut self, root: &Root, dir: &Path, rel: &str, out: Option<&Path>) {
        let label = |name: &str| {
            if rel.is_empty() {
                format!("{}/{name}", root.name)
            } else {
                format!("{}/{rel}/{name}", root.name)
            }
        };
        let relp = |name: &str| {
            if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            }
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                let rec = FileRecord::failed(
                    dir.to_path_buf(),
                    Kind::Checkpoint,
                    format!("{}: cannot list the folder: {e}", dir.display()),
                );
                self.note(
                    if rel.is_empty() {
                        root.name.clone()
                    } else {
                        format!("{}/{rel}", root.name)
                    },
                    rec,
                );
                return;
            }
        };
        let mut files = BTreeMap::new();
        let mut dirs = BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                // A link to a regular file is read through, wherever it points (Hugging Face
                // caches link snapshots into blobs/, model zoos link shared weights): the output
                // is named after the link and written beside it as a regular file; the target is
                // never written. Links to folders are not followed (the real folder is walked
                // where it lies, and no loop is possible).
                match std::fs::metadata(&path) {
                    Ok(t) if t.is_file() => {
                        files.insert(name, path);
                    }
                    Ok(_) => {}
                    Err(e)
                        if (is_candidate(&name) || out.is_some())
                            && self.filter.keeps_file(&relp(&name)) =>
                    {
                        let kind = if is_candidate(&name) {
                            Kind::Checkpoint
                        } else {
                            Kind::Copy
                        };
                        let to = std::fs::read_link(&path)
                            .map(|t| t.display().to_string())
                            .unwrap_or_default();
                        let why = format!(
                            "{}: a symlink to {to}, which cannot be read: {e}",
                            path.display()
                        );
                        self.note(label(&name), FileRecord::failed(path, kind, why));
                    }
                    Err(_) => {}
                }
            } else if meta.is_dir() {
                if name == ".git" || self.filter.excludes(&relp(&name)) {
                    continue;
                }
                let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
                if self.avoid.contains(&canonical) {
                    continue;
                }
                dirs.insert(name, path);
            } else if meta.is_file() && is_partial(&name) {
                // A temporary file no running writer will finish (a crashed or killed run).
                if let Some(w) = atomic::writer_of_name(&name)
                    && atomic::is_stale(&path, &w)
                {
                    self.items.push(Item {
                        label: label(&name),
                        unit: Unit::Stale(path),
                    });
                }
            } else if meta.is_file() {
                files.insert(name, path);
            }
        }
        files.retain(|name, _| self.filter.keeps_file(&relp(name)));
        if is_hub_repo(&dirs) {
            // A Hugging Face cache repository: its snapshots are the models; blobs/ holds the
            // same files under content hashes (read through the snapshots' links, never
            // written), refs/ and .no_exist/ are the cache's own bookkeeping.
            for d in ["blobs", "refs", ".no_exist"] {
                dirs.remove(d);
            }
        }
        let out_dir = out
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.to_path_buf());
        // Pickle indexes claim their shards.
        let mut claimed = BTreeSet::new();
        for (name, path) in &files {
            let Some(base) = pickle_index_base(name) else {
                continue;
            };
            match read_pickle_index(path) {
                Ok(shards) => {
                    claimed.insert(name.clone());
                    claimed.extend(shards.iter().cloned());
                    let shards = shards.iter().map(|s| dir.join(s)).collect();
                    let unit = Unit::Sharded {
                        index: path.clone(),
                        base,
                        shards,
                        out_dir: out_dir.clone(),
                    };
                    self.items.push(Item {
                        label: label(name),
                        unit,
                    });
                }
                Err(why) => {
                    claimed.insert(name.clone());
                    self.note(
                        label(name),
                        FileRecord::failed(
                            path.clone(),
                            Kind::Index,
                            format!("{}: {why}", path.display()),
                        ),
                    );
                }
            }
        }
        for (name, path) in &files {
            if !claimed.contains(name) {
                self.file(path, name, &label(name), &out_dir, out.is_some(), false);
            }
        }
        for (name, path) in &dirs {
            let sub_out = out.map(|o| o.join(name));
            self.dir(root, path, &relp(name), sub_out.as_deref());
        }
    }

    fn file(
        &mut self,
        path: &Path,
        name: &str,
        label: &str,
        out_dir: &Path,
        mirror: bool,
        explicit: bool,
    ) {
        if is_candidate(name) || explicit && !mirror {
            if let Some(why) = training_state(name) {
                let rec = FileRecord::skipped(
                    path.to_path_buf(),
                    Kind::Checkpoint,
                    SkipReason::TrainingState,
                    format!("{}: {why}", path.display()),
                );
                self.note(label.to_string(), rec);
            } else {
                let unit = Unit::Checkpoint {
                    source: path.to_path_buf(),
                    out_dir: out_dir.to_path_buf(),
                };
                self.items.push(Item {
                    label: label.to_string(),
                    unit,
                });
            }
        } else if mirror {
            let unit = Unit::Copy {
                source: path.to_path_buf(),
                dest: out_dir.join(name),
            };
            self.items.push(Item {
                label: label.to_string(),
                unit,
            });
        }
    }
}

/// True for the folders of a Hugging Face cache repository (`models--org--name/`): `snapshots/`
/// and `blobs/` side by side.
fn is_hub_repo(dirs: &BTreeMap<String, PathBuf>) -> bool {
    dirs.contains_key("snapshots") && dirs.contains_key("blobs")
}

/// The shard file names a pickle index's `weight_map` names, sorted, each once.
fn read_pickle_index(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the index: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("the index is not valid JSON: {e}"))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("the index has no \"weight_map\" object")?;
    let mut shards = BTreeSet::new();
    for (tensor, file) in map {
        let f = file
            .as_str()
            .ok_or_else(|| format!("weight_map[{tensor:?}] is not a file name"))?;
        if f.is_empty() || f.contains('/') || f.contains('\\') || f == "." || f == ".." {
            return Err(format!(
                "weight_map[{tensor:?}] = {f:?} is not a file name in the index's folder"
            ));
        }
        shards.insert(f.to_string());
    }
    if shards.is_empty() {
        return Err("the index's weight_map is empty".into());
    }
    Ok(shards.into_iter().collect())
}

/// The output paths a unit will claim, used to catch two sources writing the same file.
pub fn claims(unit: &Unit, reshard: bool) -> Vec<PathBuf> {
    match unit {
        Unit::Checkpoint { source, out_dir } => {
            let name = source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut v = vec![out_dir.join(output_name(&name))];
            if reshard {
                v.push(out_dir.join(index_name(&shard_base(&name))));
            }
            v
        }
        Unit::Sharded {
            base,
            shards,
            out_dir,
            ..
        } => {
            let mut v: Vec<PathBuf> = if reshard {
                Vec::new()
            } else {
                shards
                    .iter()
                    .map(|s| {
                        out_dir.join(output_name(
                            &s.file_name().unwrap_or_default().to_string_lossy(),
                        ))
                    })
                    .collect()
            };
            v.push(out_dir.join(index_name(base)));
            v
        }
        Unit::Copy { dest, .. } => vec![dest.clone()],
        Unit::Note(_) | Unit::Stale(_) => Vec::new(),
    }
}

/// The output stems (`model`, `diffusion_pytorch_model`, …) a conversion unit writes under in
/// its folder: any `{stem}.safetensors`, `{stem}-NNNNN-of-NNNNN.safetensors` or
/// `{stem}.safetensors.index.json` there belongs to it (resharding decides the count later).
fn stem_claim(unit: &Unit) -> Option<(PathBuf, String)> {
    match unit {
        Unit::Checkpoint { source, out_dir } => Some((
            out_dir.clone(),
            shard_base(&source.file_name()?.to_string_lossy()),
        )),
        Unit::Sharded { base, out_dir, .. } => Some((out_dir.clone(), base.clone())),
        _ => None,
    }
}

fn is_output_of(name: &str, stem: &str) -> bool {
    let Some(rest) = name.strip_prefix(stem) else {
        return false;
    };
    if rest == ".safetensors" || rest == ".safetensors.index.json" {
        return true;
    }
    // -00001-of-00002.safetensors
    let b = rest.as_bytes();
    rest.len() == 27
        && rest.ends_with(".safetensors")
        && &rest[0..1] == "-"
        && &rest[6..10] == "-of-"
        && b[1..6].iter().chain(&b[10..15]).all(u8::is_ascii_digit)
}

/// Refuses a second conversion of the same output and drops copies a conversion replaces (a
/// `model.safetensors` already beside `pytorch_model.bin`, say, or shards of an earlier run).
pub fn resolve_collisions(items: &mut [Item], reshard: bool) {
    let mut owner: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut stems: HashMap<PathBuf, Vec<(String, PathBuf)>> = HashMap::new();
    for pass_copies in [false, true] {
        for item in items.iter_mut() {
            let is_copy = matches!(item.unit, Unit::Copy { .. });
            if is_copy != pass_copies {
                continue;
            }
            let source = match &item.unit {
                Unit::Checkpoint { source, .. } | Unit::Copy { source, .. } => source.clone(),
                Unit::Sharded { index, .. } => index.clone(),
                Unit::Note(_) | Unit::Stale(_) => continue,
            };
            let mut clash = claims(&item.unit, reshard)
                .into_iter()
                .find_map(|c| owner.get(&c).map(|o| (c, o.clone())));
            if let Unit::Copy { dest, .. } = &item.unit
                && clash.is_none()
            {
                let name = dest
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
                clash = stems
                    .get(&dir)
                    .and_then(|v| v.iter().find(|(stem, _)| is_output_of(&name, stem)))
                    .map(|(_, o)| (dest.clone(), o.clone()));
            }
            if let Some((out, other)) = clash {
                let rec = if is_copy {
                    let why = format!(
                        "{}: not copied; {} is written from {}",
                        source.display(),
                        out.display(),
                        other.display()
                    );
                    FileRecord::skipped(source, Kind::Copy, SkipReason::ReplacedByOutput, why)
                } else {
                    let kind = if matches!(item.unit, Unit::Sharded { .. }) {
                        Kind::Index
                    } else {
                        Kind::Checkpoint
                    };
                    let why = format!(
                        "{}: its output {} is also the output of {}; rename one of them",
                        source.display(),
                        out.display(),
                        other.display()
                    );
                    FileRecord::failed(source, kind, why)
                };
                item.unit = Unit::Note(rec);
                continue;
            }
            for c in claims(&item.unit, reshard) {
                owner.insert(c, source.clone());
            }
            if let Some((dir, stem)) = stem_claim(&item.unit) {
                stems.entry(dir).or_default().push((stem, source.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_belong_to_their_stem() {
        assert!(is_output_of("model-00001-of-00002.safetensors", "model"));
        assert!(is_output_of("model.safetensors", "model"));
        assert!(is_output_of("model.safetensors.index.json", "model"));
        assert!(!is_output_of("model-extra.safetensors", "model"));
        assert!(!is_output_of("model.fp16.safetensors", "model"));
    }

    #[test]
    fn globs_without_a_slash_match_names_anywhere() {
        let f = Filter::new(&["*.bin".into()], &["unet/**".into()]).unwrap();
        assert!(f.keeps_file("a/b/pytorch_model.bin"));
        assert!(!f.keeps_file("config.json"));
        assert!(!f.keeps_file("unet/diffusion_pytorch_model.bin"));
        assert!(f.excludes("unet/x"));
    }
}
