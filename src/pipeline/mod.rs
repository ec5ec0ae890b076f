//! One conversion, end to end, in the order every caller gets: preflight (limits measured on the
//! container), open (the VM), policy (refuse dangerous globals, or unknown ones under `strict`),
//! selection, limits on the selection, output checks (never the source, however spelled; an
//! existing output needs `overwrite`; a link at the output is replaced, never written through),
//! write, and an optional verify. [`convert`], the CLI's `convert` (one file or shards) and
//! `migrate` all run it; callers watch through [`Event`]s.
//!
//! ```
//! use safetensorize::pipeline::{Pipeline, Target};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let out = dir.path().join("model.safetensors");
//! let pipeline = Pipeline { verify: true, ..Pipeline::default() };
//! let done = pipeline.run(
//!     "tests/fixtures/ckpt/views_zip.pt".as_ref(),
//!     &Target::File(out.clone()),
//!     &|_event| {},
//! )?;
//! assert_eq!(done.files, vec![out]);
//! assert!(done.verify.is_some_and(|v| v.ok));
//! # Ok::<(), safetensorize::Error>(())
//! ```

mod checks;
pub mod shard;

use std::path::{Path, PathBuf};

pub use crate::pickle::Limits;
pub use checks::{check_selection, preflight};

use crate::checkpoint::{Checkpoint, ConvertOptions, ConvertReport, OpenOptions, Selection};
use crate::error::{Error, ErrorKind, Result};
use crate::scan::{Verdict, policy_check, refuse, scan_file};
use crate::tree::FlattenOptions;
use crate::verify::{VerifyOptions, VerifyReport, verify};
use crate::writer::atomic::write_atomic;

/// Which files are refused before anything is written. Nothing is ever executed either way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Also refuse files that name globals outside the known set.
    pub strict: bool,
    /// Convert files that would be refused, reporting the refusal as [`Event::Allowed`].
    pub allow_dangerous: bool,
}

/// Where the tensors go.
#[derive(Debug, Clone)]
pub enum Target {
    /// One safetensors file.
    File(PathBuf),
    /// Files of at most `max_shard_size` tensor bytes in `dir`, named
    /// `{base}-0000i-of-0000N.safetensors` in Hugging Face's greedy order, plus
    /// `{base}.safetensors.index.json` written last; one `{base}.safetensors` (no index) when
    /// everything fits.
    Shards {
        /// The folder.
        dir: PathBuf,
        /// The stem of the names (`model`).
        base: String,
        /// Most tensor bytes per file.
        max_shard_size: u64,
    },
}

impl Target {
    /// The target for an output path: the file itself, or, with a shard size, shards named
    /// after it (`out/model.safetensors` gives `out/model-00001-of-0000N.safetensors`).
    pub fn for_output(output: &Path, max_shard_size: Option<u64>) -> Target {
        let Some(max_shard_size) = max_shard_size else {
            return Target::File(output.to_path_buf());
        };
        let name = output
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        Target::Shards {
            dir: crate::writer::atomic::dir_of(output).to_path_buf(),
            base: name
                .strip_suffix(".safetensors")
                .unwrap_or(&name)
                .to_string(),
            max_shard_size,
        }
    }
}

/// What a running conversion reports.
#[derive(Debug)]
pub enum Event<'a> {
    /// The policy would have refused the file; `allow_dangerous` converts it anyway.
    Allowed(&'a Error),
    /// Memory was freed in bulk: the pickle's bytes and the zip audit once the policy judged
    /// them, then the object tree once the tensors are picked, each before the next step
    /// allocates. A binary that owns its allocator may return freed memory to the system here.
    Released,
    /// The tensors are selected and checked; this many output bytes are to be written.
    Selected {
        /// Tensors to write.
        tensors: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// Output bytes written (called from the copy threads).
    Written(u64),
    /// Verifying starts: the output has this many bytes to compare.
    Verifying {
        /// Bytes of the output.
        bytes: u64,
    },
    /// Output bytes compared.
    Verified(u64),
}

/// A callback receiving [`Event`]s; it must be callable from several threads at once.
pub type Progress<'a> = &'a (dyn Fn(Event<'_>) + Sync);

/// A checkpoint opened and checked, and the tensors selected from it.
pub struct Opened {
    /// The checkpoint. Its tree, its pickle's bytes and its zip audit are released: a
    /// selection is made and the policy has judged the pickle.
    pub checkpoint: Checkpoint,
    /// What will be written.
    pub selection: Selection,
    /// The refusal `allow_dangerous` overrode, if any.
    pub allowed: Option<Error>,
}

/// What a conversion wrote.
#[derive(Debug)]
pub struct Written {
    /// The summary (for shards: all files together; `output` is the index or the one file).
    pub report: ConvertReport,
    /// The files written, in order.
    pub files: Vec<PathBuf>,
    /// The index, when the tensors were split into several shards.
    pub index: Option<PathBuf>,
    /// The outcome of verifying, when asked.
    pub verify: Option<VerifyReport>,
}

/// Every setting of a conversion.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    /// Selection and write settings (`key`, aliases, `overwrite`, threads, numpy arrays).
    pub convert: ConvertOptions,
    /// What is refused.
    pub policy: Policy,
    /// The resource bounds.
    pub limits: Limits,
    /// Re-read the input and the output after writing and compare every tensor (one file only).
    pub verify: bool,
}

impl Pipeline {
    /// How the VM opens files under these limits.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            limits: self.limits,
        }
    }

    /// Preflight, open, policy, selection and the selection's limits. When the VM cannot read
    /// the file, the raw bytes are still scanned, so a file that is both broken and dangerous
    /// is refused as dangerous, never reported as merely malformed.
    pub fn open(&self, input: &Path, progress: Progress<'_>) -> Result<Opened> {
        let opts = self.open_options();
        let Policy {
            strict,
            allow_dangerous,
        } = self.policy;
        let refused = |e: Error| -> Error {
            if allow_dangerous {
                return e;
            }
            let r = scan_file(input, &opts);
            match refuse(input, &r, strict) {
                Err(d) if r.verdict == Verdict::Dangerous || strict => d,
                _ => e,
            }
        };
        let preflight = || preflight(input, &self.limits);
        let mut checkpoint = Checkpoint::open_checked(input, &opts, &preflight).map_err(refused)?;
        let allowed = match policy_check(&checkpoint, strict, &self.limits) {
            Ok(()) => None,
            Err(e) if allow_dangerous => Some(e),
            Err(e) => return Err(e),
        };
        if let Some(e) = &allowed {
            progress(Event::Allowed(e));
        }
        // The policy has judged the pickle and the archive's structure: neither is needed to
        // select (bar a TorchScript archive's `code/` listing) or to write, and for a
        // checkpoint of many tensors they are a large part of its memory.
        checkpoint.release_pickle();
        checkpoint.release_audit(false);
        progress(Event::Released);
        let c = &self.convert;
        // What the write needs is the selection and the archive's records: the rest of a
        // checkpoint of many tensors is most of its memory, freed before the write allocates
        // (the tree as soon as the selected tensors are known).
        let selection = checkpoint.select_releasing_with(
            c.key.as_deref(),
            c.keep_aliases,
            &FlattenOptions {
                include_numpy: c.include_numpy,
                max_depth: self.limits.max_depth,
                torchscript_attributes: c.torchscript_attributes,
            },
            &|| progress(Event::Released),
        )?;
        check_selection(&checkpoint, &selection, &self.limits)?;
        checkpoint.release_audit(true);
        Ok(Opened {
            checkpoint,
            selection,
            allowed,
        })
    }

    /// Runs every step: [`Pipeline::open`], the output checks, the write and, when asked, the
    /// verify.
    pub fn run(&self, input: &Path, target: &Target, progress: Progress<'_>) -> Result<Written> {
        let opened = self.open(input, progress)?;
        self.write(&opened, target, progress)
    }

    /// The output checks, the write and the verify for a file already opened and checked.
    pub fn write(
        &self,
        opened: &Opened,
        target: &Target,
        progress: Progress<'_>,
    ) -> Result<Written> {
        let (ckpt, sel) = (&opened.checkpoint, &opened.selection);
        let overwrite = self.convert.overwrite;
        // The one group of a file target borrows the selection; shards own their parts.
        let split = match target {
            Target::File(_) => Vec::new(),
            Target::Shards { max_shard_size, .. } => shard::split(sel, Some(*max_shard_size)),
        };
        let groups: Vec<(PathBuf, &Selection)> = match target {
            Target::File(path) => vec![(path.clone(), sel)],
            Target::Shards { dir, base, .. } => {
                let n = split.len();
                split
                    .iter()
                    .enumerate()
                    .map(|(i, g)| (dir.join(shard::output_file_name(base, i + 1, n)), g))
                    .collect()
            }
        };
        let index = match target {
            Target::Shards { dir, base, .. } if groups.len() > 1 => {
                Some(dir.join(shard::index_name(base)))
            }
            _ => None,
        };
        for out in groups.iter().map(|(p, _)| p).chain(index.as_ref()) {
            check_output(ckpt.path(), out, overwrite)?;
        }
        progress(Event::Selected {
            tensors: sel.tensors.len(),
            bytes: sel.tensors.iter().map(|t| t.nbytes).sum(),
        });
        let on_bytes = |n| progress(Event::Written(n));
        let mut report = ConvertReport {
            input: ckpt.path().to_path_buf(),
            output: PathBuf::new(),
            key: sel.key.clone(),
            tensors: 0,
            aliases: sel.aliases.clone(),
            skipped: sel.skipped.clone(),
            bytes: 0,
        };
        let mut files = Vec::new();
        let mut listing = Vec::new();
        for &(ref out, group) in &groups {
            let r = ckpt.write(group, out, &self.convert, &on_bytes)?;
            report.tensors += r.tensors;
            report.bytes += r.bytes;
            report.output = out.clone();
            // Only an index lists the tensors of each file (a copy of every name).
            if index.is_some() {
                let name = out
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                listing.push((
                    name,
                    group
                        .tensors
                        .iter()
                        .map(|t| (t.name.clone(), t.nbytes))
                        .collect(),
                ));
            }
            files.push(out.clone());
        }
        if let Some(index) = &index {
            let (text, _, _) = shard::index_json(&listing);
            write_atomic(index, text.as_bytes(), overwrite).map_err(|k| Error::new(index, k))?;
            report.output = index.clone();
        }
        let verify = match (&files[..], self.verify) {
            ([out], true) if index.is_none() => {
                Some(self.verify_output(ckpt.path(), out, &sel.key, progress)?)
            }
            _ => None,
        };
        Ok(Written {
            report,
            files,
            index,
            verify,
        })
    }

    fn verify_output(
        &self,
        input: &Path,
        output: &Path,
        key: &str,
        progress: Progress<'_>,
    ) -> Result<VerifyReport> {
        let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
        progress(Event::Verifying { bytes });
        let vopts = VerifyOptions {
            key: Some(key.to_string()),
            include_numpy: self.convert.include_numpy,
            torchscript_attributes: self.convert.torchscript_attributes,
            threads: self.convert.threads,
            open: self.open_options(),
            ..Default::default()
        };
        verify(input, output, &vopts, &|n| progress(Event::Verified(n)))
    }
}

/// Refuses an output that is the source itself, however its path is spelled (`./a.pt`,
/// `dir/../a.pt`, a hard link, a symlink to it): device and inode are compared, following
/// links. Then an existing output (a dangling link included) needs `overwrite`. A link at the
/// output is never written through: the writer renames its temp file over the link itself.
pub fn check_output(input: &Path, output: &Path, overwrite: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(i), Ok(o)) = (std::fs::metadata(input), std::fs::metadata(output))
        && (i.dev(), i.ino()) == (o.dev(), o.ino())
    {
        return Err(Error::new(
            output,
            ErrorKind::Selection(format!(
                "the output is the source {} itself; refusing to write over the source",
                input.display()
            )),
        ));
    }
    if !overwrite && std::fs::symlink_metadata(output).is_ok() {
        return Err(Error::new(
            output,
            ErrorKind::OutputExists(output.to_path_buf()),
        ));
    }
    Ok(())
}

/// Writes the tensors of several opened checkpoints' selections into one file (`migrate`
/// regrouping shards), after the output checks against every source.
pub fn write_parts(
    parts: &[(&Checkpoint, &Selection)],
    output: &Path,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    for (ckpt, _) in parts {
        check_output(ckpt.path(), output, opts.overwrite)?;
    }
    crate::checkpoint::write_merged(parts, output, opts, progress)
}

/// Converts the checkpoint `input` into the safetensors file `output`, with the default limits
/// and policy of the CLI's `convert`: a file that names dangerous globals is refused with
/// [`ErrorKind::Dangerous`] (run a [`Pipeline`] with [`Policy::allow_dangerous`] to convert it
/// anyway; nothing is ever executed either way).
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ConvertReport> {
    let pipeline = Pipeline {
        convert: opts.clone(),
        ..Pipeline::default()
    };
    let done = pipeline.run(input, &Target::File(output.to_path_buf()), &|e| {
        if let Event::Written(n) = e {
            progress(n)
        }
    })?;
    Ok(done.report)
}
