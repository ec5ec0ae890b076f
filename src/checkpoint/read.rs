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
        let (records, _) = self.records(sel)?;
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
                    files.push(record_to_temp(&archive.file, rec, None).map_err(err)?);
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

#[cfg(test)]
mod tests {
    //! Reading tensors from the committed torch-written fixtures: every byte must equal what the
    //! official `safetensors.torch.save_file` wrote for the same tensor (the golden file).

    use super::*;
    use crate::writer::read_safetensors_header;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ckpt")
            .join(name)
    }

    /// The golden file's tensors: name -> (dtype, shape, bytes), and its aliases.
    #[allow(clippy::type_complexity)]
    fn golden(
        name: &str,
    ) -> (
        HashMap<String, (String, Vec<u64>, Vec<u8>)>,
        Vec<(String, String)>,
    ) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/golden")
            .join(format!("{name}.safetensors"));
        let f = File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        let h = read_safetensors_header(&f, len).unwrap();
        let all = std::fs::read(&path).unwrap();
        let start = h.data_start() as usize;
        let tensors = h
            .tensors
            .iter()
            .map(|t| {
                let bytes = all[start + t.begin as usize..start + t.end as usize].to_vec();
                (
                    t.name.clone(),
                    (t.dtype.to_string(), t.shape.clone(), bytes),
                )
            })
            .collect();
        let aliases = h
            .aliases()
            .into_iter()
            .map(|(a, k)| (a.to_string(), k.to_string()))
            .collect();
        (tensors, aliases)
    }

    /// Opens `ckpt` with the default selection and checks that the reader returns, for every
    /// tensor, exactly the golden bytes, dtype and shape. Returns the selection.
    fn reads_like_golden(ckpt_name: &str, golden_name: &str) -> Selection {
        let ckpt = Checkpoint::open(&fixture(ckpt_name)).unwrap();
        let sel = ckpt.select(None, false).unwrap();
        let (want, want_aliases) = golden(golden_name);
        let reader = ckpt.reader(&sel).unwrap();
        let mut names: Vec<&str> = sel.tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        let mut golden_names: Vec<&str> = want.keys().map(String::as_str).collect();
        golden_names.sort();
        assert_eq!(names, golden_names, "{ckpt_name}: tensor names");
        for t in &sel.tensors {
            let (dtype, shape, bytes) = &want[&t.name];
            assert_eq!(
                t.dtype.info().safetensors.map(|d| d.to_string()).as_ref(),
                Some(dtype),
                "{ckpt_name}: dtype of {}",
                t.name
            );
            assert_eq!(&*t.shape, &shape[..], "{ckpt_name}: shape of {}", t.name);
            let got = reader.read(&t.name).unwrap();
            assert!(
                got == *bytes,
                "{ckpt_name}: bytes of {} ({} vs {} golden bytes)",
                t.name,
                got.len(),
                bytes.len()
            );
        }
        let mut aliases = sel.aliases.clone();
        aliases.sort();
        let mut want_aliases = want_aliases;
        want_aliases.sort();
        assert_eq!(aliases, want_aliases, "{ckpt_name}: aliases");
        sel
    }

    #[test]
    fn strided_and_transposed_views_of_a_zip_checkpoint_read_as_the_golden_bytes() {
        let sel = reads_like_golden("views_zip.pt", "views_zip");
        assert!(
            sel.tensors.iter().any(|t| !t.contiguous),
            "the fixture must exercise the strided path"
        );
        assert!(sel.tensors.iter().any(|t| t.contiguous));
    }

    #[test]
    fn strided_views_of_a_legacy_checkpoint_read_as_the_golden_bytes() {
        let sel = reads_like_golden("views_legacy.pt", "views_legacy");
        assert!(sel.tensors.iter().any(|t| !t.contiguous));
    }

    #[test]
    fn legacy_storage_views_read_from_their_offset_in_the_root_storage() {
        let sel = reads_like_golden("legacy_views.pt", "legacy_views");
        assert!(sel.tensors.iter().any(|t| t.storage_base > 0));
    }

    #[test]
    fn every_safetensors_dtype_reads_bit_exact() {
        reads_like_golden("dtypes_zip.pt", "dtypes_zip");
        reads_like_golden("dtypes_legacy.pt", "dtypes_legacy");
    }

    #[test]
    fn deflated_records_are_inflated_before_reading() {
        let ckpt = Checkpoint::open(&fixture("rezip_deflated.pt")).unwrap();
        let sel = ckpt.select(None, false).unwrap();
        let reader = ckpt.reader(&sel).unwrap();
        // One file for the checkpoint itself, one inflated file per deflated storage.
        assert!(reader.files.len() > 1, "{} files", reader.files.len());
        reads_like_golden("rezip_deflated.pt", "rezip_deflated");
    }

    #[test]
    fn big_endian_storages_are_swapped_to_little_endian() {
        reads_like_golden("big_endian.pt", "big_endian");
    }

    #[test]
    fn lazy_conjugate_and_negative_views_are_resolved() {
        let sel = reads_like_golden("conj_neg.pt", "conj_neg");
        assert!(sel.tensors.iter().any(|t| t.conj));
        assert!(sel.tensors.iter().any(|t| t.neg));
    }

    #[test]
    fn storages_embedded_in_a_plain_pickle_are_read_from_memory() {
        let ckpt = Checkpoint::open(&fixture("pickle_dumps_p2.pkl")).unwrap();
        let sel = ckpt.select(None, false).unwrap();
        let reader = ckpt.reader(&sel).unwrap();
        assert!(!reader.memory.is_empty());
        assert!(reader.loc.values().all(|l| matches!(l, Loc::Memory { .. })));
        reads_like_golden("pickle_dumps_p2.pkl", "pickle_dumps_p2");
    }

    #[test]
    fn an_alias_name_reads_the_tensor_it_aliases() {
        let sel = reads_like_golden("aliases.pt", "aliases");
        let ckpt = Checkpoint::open(&fixture("aliases.pt")).unwrap();
        let reader = ckpt.reader(&sel).unwrap();
        let (alias, kept) = sel
            .aliases
            .iter()
            .find(|(a, _)| a == "output.weight")
            .expect("output.weight is an alias");
        assert_eq!(kept, "tok_embeddings.weight");
        assert_eq!(reader.get(alias).unwrap().name, "tok_embeddings.weight");
        assert_eq!(reader.read(alias).unwrap(), reader.read(kept).unwrap());
        assert_eq!(
            ckpt.read_tensor(&sel, alias).unwrap(),
            reader.read(kept).unwrap()
        );
        // Aliases are not listed as tensors of their own.
        assert!(reader.tensors().iter().all(|t| &t.name != alias));
    }

    #[test]
    fn the_reader_lists_the_selection_in_checkpoint_order_and_names_its_file() {
        let path = fixture("views_zip.pt");
        let ckpt = Checkpoint::open(&path).unwrap();
        let sel = ckpt.select(None, false).unwrap();
        let reader = ckpt.reader(&sel).unwrap();
        assert_eq!(reader.path(), path);
        let names: Vec<&str> = reader.tensors().iter().map(|t| t.name.as_str()).collect();
        let want: Vec<&str> = sel.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, want);
        let first = &sel.tensors[0];
        let got = reader.get(&first.name).unwrap();
        assert_eq!(
            (got.name.as_str(), &got.shape),
            (first.name.as_str(), &first.shape)
        );
    }

    #[test]
    fn reading_an_unknown_name_is_a_selection_error_naming_it() {
        let path = fixture("views_zip.pt");
        let ckpt = Checkpoint::open(&path).unwrap();
        let sel = ckpt.select(None, false).unwrap();
        let reader = ckpt.reader(&sel).unwrap();
        assert!(reader.get("no.such.tensor").is_none());
        let e = reader.read("no.such.tensor").unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Selection(_)), "{e:?}");
        assert_eq!(e.path, path);
        assert_eq!(
            e.kind.to_string(),
            "no tensor named \"no.such.tensor\" in the selection"
        );
        let e = reader
            .stream("no.such.tensor", &mut |_| Ok(()))
            .unwrap_err();
        assert_eq!(
            e.kind.to_string(),
            "no tensor named \"no.such.tensor\" in the selection"
        );
        let e = ckpt.read_tensor(&sel, "no.such.tensor").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: no tensor named \"no.such.tensor\" in the selection",
                path.display()
            )
        );
    }

    #[test]
    fn streaming_gives_whole_elements_whose_concatenation_is_the_tensor() {
        let ckpt = Checkpoint::open(&fixture("views_zip.pt")).unwrap();
        let sel = ckpt.select(None, false).unwrap();
        let reader = ckpt.reader(&sel).unwrap();
        for t in &sel.tensors {
            let mut all = Vec::new();
            let mut calls = 0;
            reader
                .stream(&t.name, &mut |piece| {
                    assert_eq!(piece.len() as u64 % t.dtype.itemsize(), 0, "{}", t.name);
                    assert!(piece.len() <= READ_CHUNK);
                    calls += 1;
                    all.extend_from_slice(piece);
                    Ok(())
                })
                .unwrap();
            assert_eq!(all.len() as u64, t.nbytes, "{}", t.name);
            assert_eq!(all, reader.read(&t.name).unwrap(), "{}", t.name);
            assert_eq!(calls > 0, t.nbytes > 0, "{}", t.name);
        }
    }

    #[test]
    fn an_error_from_the_sink_stops_the_stream_and_is_returned_with_the_tensor_name() {
        let ckpt = Checkpoint::open(&fixture("views_zip.pt")).unwrap();
        let sel = ckpt.select(None, false).unwrap();
        let reader = ckpt.reader(&sel).unwrap();
        for t in sel.tensors.iter().filter(|t| t.nbytes > 0).take(3) {
            let mut calls = 0;
            let e = reader
                .stream(&t.name, &mut |_| {
                    calls += 1;
                    Err(std::io::Error::other("disk full"))
                })
                .unwrap_err();
            assert_eq!(calls, 1, "{}", t.name);
            assert_eq!(
                e.kind.to_string(),
                format!("reading the bytes of tensor {:?}: disk full", t.name)
            );
        }
    }

    #[test]
    fn read_tensor_reads_one_tensor_without_a_reader_for_the_whole_selection() {
        let ckpt = Checkpoint::open(&fixture("views_zip.pt")).unwrap();
        let sel = ckpt.select(None, false).unwrap();
        let reader = ckpt.reader(&sel).unwrap();
        for t in &sel.tensors {
            assert_eq!(
                ckpt.read_tensor(&sel, &t.name).unwrap(),
                reader.read(&t.name).unwrap(),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn one_reader_serves_reads_from_many_threads_alike() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        let ckpt = Checkpoint::open(&fixture("rezip_deflated.pt")).unwrap();
        let sel = ckpt.select(None, false).unwrap();
        let reader = ckpt.reader(&sel).unwrap();
        send_sync(&reader);
        let serial: Vec<Vec<u8>> = sel
            .tensors
            .iter()
            .map(|t| reader.read(&t.name).unwrap())
            .collect();
        let parallel: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = sel
                .tensors
                .iter()
                .map(|t| s.spawn(|| reader.read(&t.name).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(serial, parallel);
    }

    #[test]
    fn a_record_compressed_with_a_method_torch_never_writes_is_unsupported_when_read() {
        // rezip_stored.pt with proto2_zip/data/0 relabelled as method 12 (bzip2) in both
        // headers; the pickle itself stays readable.
        let mut bytes = std::fs::read(fixture("rezip_stored.pt")).unwrap();
        let name = b"proto2_zip/data/0";
        let mut patched = 0;
        for at in 0..bytes.len() - name.len() {
            if &bytes[at..at + name.len()] != name {
                continue;
            }
            if at >= 30 && bytes[at - 30..].starts_with(b"PK\x03\x04") {
                bytes[at - 30 + 8] = 12;
                patched += 1;
            } else if at >= 46 && bytes[at - 46..].starts_with(b"PK\x01\x02") {
                bytes[at - 46 + 10] = 12;
                patched += 1;
            }
        }
        assert_eq!(patched, 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bzip2.pt");
        std::fs::write(&path, &bytes).unwrap();
        let ckpt = Checkpoint::open(&path).unwrap();
        let sel = ckpt.select(None, false).unwrap();
        let e = ckpt.reader(&sel).unwrap_err();
        assert_eq!(e.path, path);
        assert!(matches!(e.kind, ErrorKind::Unsupported(_)), "{e:?}");
        assert_eq!(
            e.kind.to_string(),
            "record proto2_zip/data/0 uses zip compression method 12, which torch never writes"
        );
    }
}
