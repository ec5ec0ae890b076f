//! Reading tensors' logical bytes (row-major, little-endian, conjugation and negation resolved:
//! exactly what `convert` writes) from an opened checkpoint, without writing anything.
//! [`Checkpoint::read_tensor`] returns one tensor; [`TensorReader`] streams many, from any thread.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Checkpoint, Selection, TensorInfo};
use crate::container::record_to_temp;
use crate::container::{ByteOrder, RecordMethod};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::{apply_transform, gather, prefetch, stream_strided};

/// Bytes handed to the callback of [`TensorReader::stream`] at most at once (a multiple of
/// every element size).
pub const READ_CHUNK: usize = 8 << 20;

/// Where one storage's (uncompressed) bytes are.
#[derive(Debug, Clone, Copy)]
enum Loc {
    /// In `files[file]`, starting at `offset`.
    File { file: usize, offset: u64 },
    /// In `memory[index]`.
    Memory { index: usize },
}

/// Reads the tensors of one selection. Deflated records are inflated once into anonymous
/// temporary files when the reader is made; afterwards the reader is `Send + Sync` and every
/// read is positional, so tensors can be read in parallel.
#[derive(Debug)]
pub struct TensorReader {
    path: PathBuf,
    files: Vec<File>,
    memory: Vec<Arc<[u8]>>,
    loc: HashMap<String, Loc>,
    byte_order: ByteOrder,
    tensors: Vec<TensorInfo>,
    /// Name (or alias) -> index into `tensors`.
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// A reader over the tensors of `sel`. Checks every storage's declared size against its
    /// record first, as [`Checkpoint::write`] does.
    pub fn reader(&self, sel: &Selection) -> Result<TensorReader> {
        let path = self.path().to_path_buf();
        let err = |k| Error::new(&path, k);
        let records = self.records(sel)?;
        let archive = self.archive();
        let mut files = vec![
            archive
                .file
                .try_clone()
                .map_err(|e| err(crate::error::io("cannot reopen the file")(e)))?,
        ];
        let mut memory = Vec::new();
        let mut loc = HashMap::new();
        for t in &sel.tensors {
            if loc.contains_key(&t.storage) {
                continue;
            }
            if let Some(bytes) = self.memory_storage(&t.storage) {
                memory.push(Arc::from(&bytes[..]));
                loc.insert(
                    t.storage.clone(),
                    Loc::Memory {
                        index: memory.len() - 1,
                    },
                );
                continue;
            }
            // `records` returned an entry for every storage of the selection.
            let Some(rec) = records.get(&t.storage) else {
                continue;
            };
            let l = match &rec.method {
                RecordMethod::Stored => Loc::File {
                    file: 0,
                    offset: rec.offset,
                },
                // Deflated, or a method torch never writes (refused there).
                RecordMethod::Deflated | RecordMethod::Other(_) => {
                    files.push(
                        record_to_temp(&archive.file, rec, &std::env::temp_dir()).map_err(err)?,
                    );
                    Loc::File {
                        file: files.len() - 1,
                        offset: 0,
                    }
                }
            };
            loc.insert(t.storage.clone(), l);
        }
        let mut index: HashMap<String, usize> = sel
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        for (alias, kept) in &sel.aliases {
            if let Some(&i) = index.get(kept) {
                index.entry(alias.clone()).or_insert(i);
            }
        }
        Ok(TensorReader {
            path,
            files,
            memory,
            loc,
            byte_order: archive.byte_order,
            tensors: sel.tensors.clone(),
            index,
        })
    }

    /// The logical bytes of tensor `name` of `sel` (an alias name reads the tensor it aliases):
    /// row-major and little-endian, exactly the bytes `convert` writes for it.
    ///
    /// ```
    /// use safetensorize::Checkpoint;
    ///
    /// let ckpt = Checkpoint::open("tests/fixtures/ckpt/views_zip.pt".as_ref())?;
    /// let sel = ckpt.select(None, false)?;
    /// let first = &sel.tensors[0];
    /// let bytes = ckpt.read_tensor(&sel, &first.name)?;
    /// assert_eq!(bytes.len() as u64, first.nbytes);
    /// # Ok::<(), safetensorize::Error>(())
    /// ```
    pub fn read_tensor(&self, sel: &Selection, name: &str) -> Result<Vec<u8>> {
        let kept = sel
            .aliases
            .iter()
            .find(|(a, _)| a == name)
            .map_or(name, |(_, k)| k.as_str());
        let Some(t) = sel.tensors.iter().find(|t| t.name == kept) else {
            return Err(Error::new(
                self.path(),
                ErrorKind::Selection(format!("no tensor named {name:?} in the selection")),
            ));
        };
        let one = Selection {
            key: sel.key.clone(),
            tensors: vec![t.clone()],
            aliases: Vec::new(),
            skipped: Vec::new(),
        };
        self.reader(&one)?.read(&t.name)
    }
}

impl TensorReader {
    /// The file the tensors come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensors this reader can read, in checkpoint order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name` (or aliased as `name`).
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn err(&self, kind: ErrorKind) -> Error {
        Error::new(&self.path, kind)
    }

    /// Reads tensor `name` whole.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let t = self.get(name).ok_or_else(|| {
            self.err(ErrorKind::Selection(format!(
                "no tensor named {name:?} in the selection"
            )))
        })?;
        let cap = usize::try_from(t.nbytes).map_err(|_| {
            self.err(ErrorKind::Unsupported(format!(
                "tensor {name:?} does not fit in memory"
            )))
        })?;
        let mut out = Vec::new();
        out.try_reserve_exact(cap).map_err(|_| {
            self.err(ErrorKind::Unsupported(format!(
                "tensor {name:?} ({cap} bytes) does not fit in memory"
            )))
        })?;
        self.stream(name, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })?;
        Ok(out)
    }

    /// Streams tensor `name`'s logical bytes in order, in pieces of about [`READ_CHUNK`] bytes,
    /// each a whole number of elements. An error returned by `sink` stops the stream and is
    /// returned.
    pub fn stream(
        &self,
        name: &str,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        let t = self.get(name).ok_or_else(|| {
            self.err(ErrorKind::Selection(format!(
                "no tensor named {name:?} in the selection"
            )))
        })?;
        let wrap = |e: std::io::Error| {
            self.err(ErrorKind::Io {
                context: format!("reading the bytes of tensor {:?}", t.name),
                source: e,
            })
        };
        if t.nbytes == 0 {
            return Ok(());
        }
        let loc = *self.loc.get(&t.storage).ok_or_else(|| {
            self.err(ErrorKind::Tensor {
                name: t.name.clone(),
                storage: Some(t.storage.clone()),
                msg: "internal: the storage was not located".into(),
            })
        })?;
        let transform = t.transform(self.byte_order);
        let item = t.dtype.itemsize();
        let fix = |buf: &mut [u8]| {
            if !transform.is_identity() {
                apply_transform(buf, t.dtype, &transform);
            }
        };
        let short = || {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the storage ends before the tensor's bytes",
            )
        };
        if t.contiguous {
            let start = t.storage_base + t.offset * item;
            let mut buf = vec![0u8; (t.nbytes as usize).min(READ_CHUNK)];
            let mut done = 0u64;
            while done < t.nbytes {
                let n = (t.nbytes - done).min(buf.len() as u64) as usize;
                let piece = &mut buf[..n];
                match loc {
                    Loc::File { file, offset } => self.files[file]
                        .read_exact_at(piece, offset + start + done)
                        .map_err(wrap)?,
                    Loc::Memory { index } => {
                        let at = (start + done) as usize;
                        piece.copy_from_slice(
                            self.memory[index]
                                .get(at..at + n)
                                .ok_or_else(short)
                                .map_err(wrap)?,
                        );
                    }
                }
                fix(piece);
                sink(piece).map_err(wrap)?;
                done += n as u64;
            }
            return Ok(());
        }
        // A strided view: gather the span it touches, run by run.
        let view = t.strided(0);
        let (lo, hi) = view.span();
        let (span_start, span_len) = (view.base + lo * item, (hi - lo) * item);
        let mut sink = |piece: &[u8]| sink(piece);
        match loc {
            Loc::Memory { index } => {
                let (a, b) = (span_start as usize, (span_start + span_len) as usize);
                let span = self.memory[index]
                    .get(a..b)
                    .ok_or_else(short)
                    .map_err(wrap)?;
                gather(span, &view, t.dtype, &transform, &mut sink).map_err(wrap)?;
            }
            Loc::File { file, offset } => {
                // Bounded buffers whatever the view's span (see `stream_strided`).
                let whole = t.strided(offset);
                prefetch(&self.files[file], &whole);
                for piece in whole.pieces() {
                    stream_strided(&self.files[file], &piece, t.dtype, &transform, &mut sink)
                        .map_err(wrap)?;
                }
            }
        }
        Ok(())
    }
}
