//! Format detection from the first bytes, with a plain description of what anything else is.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::Kind;
use super::legacy::is_legacy_magic;
use crate::error::{ErrorKind, io};
use crate::pickle::{NoHost, load};

/// Looks at the start of the file and says what it is, or why it is not a checkpoint: a zip
/// (TorchScript or not is told by its records, later), a legacy stream, a plain pickle or a tar.
pub fn sniff(file: &File, file_len: u64) -> Result<Kind, ErrorKind> {
    let mut head = vec![0u8; file_len.min(4096) as usize];
    file.read_exact_at(&mut head, 0)
        .map_err(io("cannot read the start of the file"))?;
    if head.is_empty() {
        return Err(ErrorKind::NotACheckpoint(
            "the file is empty (0 bytes); a failed or interrupted download?".into(),
        ));
    }
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Kind::Zip);
    }
    if super::tar::is_tar(&head) {
        return Ok(Kind::Tar);
    }
    match load(&head, 0, &mut NoHost, &super::legacy::head_limits()) {
        Ok(first) if is_legacy_magic(&first.value) => return Ok(Kind::Legacy),
        Ok(_) => return Ok(Kind::Pickle),
        // A binary pickle longer than the sniffed head: the VM reads it whole later.
        Err(_)
            if head.len() >= 2
                && head[0] == 0x80
                && head[1] <= 5
                && file_len > head.len() as u64 =>
        {
            return Ok(Kind::Pickle);
        }
        Err(_) => {}
    }
    Err(ErrorKind::NotACheckpoint(describe(&head, file_len)))
}

/// Says what a non-checkpoint file looks like, with a hint where one helps.
pub fn describe(head: &[u8], file_len: u64) -> String {
    let lower: Vec<u8> = head
        .iter()
        .take(512)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    let text = String::from_utf8_lossy(&lower);
    let trimmed = text.trim_start();
    if head.starts_with(b"version https://git-lfs") {
        return "a Git LFS pointer file, not the checkpoint itself; run `git lfs pull` to fetch the real file".into();
    }
    if trimmed.starts_with("<!doctype html")
        || trimmed.starts_with("<html")
        || trimmed.starts_with("<?xml")
    {
        return "an HTML/XML page, not a checkpoint; the download probably failed (login page or error page)".into();
    }
    if head.starts_with(b"GGUF") {
        return "a GGUF model file (llama.cpp), not a PyTorch checkpoint; it is already in a ready-to-load format (use llama.cpp's gguf tools to read it)".into();
    }
    if head.starts_with(b"ggml")
        || head.starts_with(b"lmgg")
        || head.starts_with(b"tjgg")
        || head.starts_with(b"fmgg")
    {
        return "a GGML model file (llama.cpp), not a PyTorch checkpoint; convert it with llama.cpp's tools (e.g. to GGUF), not with this one".into();
    }
    if head.starts_with(b"\x93NUMPY") {
        return "a NumPy .npy array file, not a PyTorch checkpoint; load it with numpy.load and save it with safetensors.numpy.save_file".into();
    }
    if head.starts_with(b"\x89HDF\r\n\x1a\n") {
        return "an HDF5 file (Keras/TensorFlow .h5 weights), not a PyTorch checkpoint; load it with Keras or h5py and save the weights with safetensors".into();
    }
    if head.starts_with(b"PK") {
        return "a zip-like file that does not start with a local file header (prepended data?)"
            .into();
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return "a tar archive (torch <= 0.1.9 wrote checkpoints as tar; that era is not supported yet)".into();
    }
    if head.len() >= 10 {
        let n = u64::from_le_bytes([
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
        ]);
        if head[8] == b'{' && n > 1 && n.checked_add(8).is_some_and(|e| e <= file_len) {
            return safetensors_hint(head, file_len);
        }
    }
    if head.starts_with(b"\x08") || head.windows(11).any(|w| w == b"saved_model") {
        return "looks like a TensorFlow file (protobuf, e.g. saved_model.pb), not a PyTorch checkpoint; load it with TensorFlow and save the weights with safetensors".into();
    }
    if head.first() == Some(&0x80) {
        return format!(
            "a pickle stream that cannot be read (truncated or corrupt); the file has {file_len} bytes"
        );
    }
    let printable = head
        .iter()
        .take(512)
        .filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
        .count();
    if printable * 10 >= head.len().min(512) * 9 {
        return format!("a text file ({file_len} bytes), not a checkpoint");
    }
    format!(
        "unrecognised content ({file_len} bytes, starting with {:02x?})",
        &head[..head.len().min(8)]
    )
}

/// An already-safetensors file: nothing to convert, unless its data was cut short.
fn safetensors_hint(head: &[u8], file_len: u64) -> String {
    let mut n = [0u8; 8];
    n.copy_from_slice(&head[..8]);
    let n = u64::from_le_bytes(n);
    let end = head
        .get(8..(8 + n).min(head.len() as u64) as usize)
        .filter(|h| h.len() as u64 == n)
        .and_then(|h| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(h).ok())
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "__metadata__")
                .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
                .max()
                .unwrap_or(0)
        });
    match end.map(|e| 8 + n + e) {
        Some(want) if want > file_len => {
            format!("a safetensors file, truncated: its header needs {want} bytes but the file has {file_len} (expected {want} bytes, found {file_len}); download or convert it again")
        }
        _ => "already a safetensors file; nothing to convert (see what it holds with `safetensorize inspect`)".into(),
    }
}

/// Says what a zip archive without `data.pkl` is, from its entry names.
pub fn describe_zip(names: &[String]) -> String {
    let has = |n: &str| {
        names
            .iter()
            .any(|x| x == n || x.ends_with(&format!("/{n}")))
    };
    let sample: Vec<&str> = names.iter().take(5).map(|s| s.as_str()).collect();
    if !names.is_empty() && names.iter().any(|n| n.ends_with(".npy")) {
        return format!(
            "a NumPy .npz archive (arrays {sample:?}), not a PyTorch checkpoint; load it with numpy.load and save the arrays with safetensors.numpy.save_file"
        );
    }
    if has("config.json") && (has("model.weights.h5") || has("metadata.json")) {
        return "a Keras .keras archive (config.json + model.weights.h5), not a PyTorch checkpoint; load it with keras.saving.load_model and save the weights with safetensors".into();
    }
    if has("saved_model.pb") {
        return "a zipped TensorFlow SavedModel (saved_model.pb), not a PyTorch checkpoint; load it with TensorFlow and save the weights with safetensors".into();
    }
    format!(
        "a zip archive without a data.pkl record (entries such as {sample:?}); torch.save archives hold <root>/data.pkl"
    )
}

/// Says what a directory passed where a file is expected is.
pub fn describe_dir(path: &std::path::Path) -> String {
    if path.join("saved_model.pb").is_file() {
        return "a TensorFlow SavedModel directory (saved_model.pb), not a PyTorch checkpoint; load it with TensorFlow and save the weights with safetensors".into();
    }
    if path.join("variables").join("variables.index").is_file() {
        return "a TensorFlow checkpoint directory, not a PyTorch checkpoint; load it with TensorFlow and save the weights with safetensors".into();
    }
    "this is a directory; convert takes one checkpoint file (use `migrate` for folders)".into()
}

/// Explains a zip archive whose central directory cannot be read, by walking its local headers
/// from byte 0: usually the download was cut short.
pub fn describe_broken_zip(file: &File, file_len: u64) -> String {
    let redo = "download or copy it again";
    let read = |at: u64, n: usize| -> Option<Vec<u8>> {
        let mut b = vec![0u8; n];
        file.read_exact_at(&mut b, at).ok().map(|_| b)
    };
    let le16 = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as u64;
    let le32 =
        |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64;
    let mut pos = 0u64;
    let mut entries = 0u64;
    loop {
        if pos >= file_len {
            break;
        }
        let Some(h) = read(pos, 30) else {
            return format!(
                "the file is truncated: it ends at byte {file_len} inside the header of zip entry {} (at byte {pos}), and the central directory is missing (expected more than {file_len} bytes, found {file_len}); {redo}",
                entries + 1
            );
        };
        if !h.starts_with(b"PK\x03\x04") {
            // A central directory header after complete entries: damaged, not cut short.
            if h.starts_with(b"PK\x01\x02") {
                return format!(
                    "a zip archive whose end-of-central-directory record is missing or damaged after {entries} complete entries; the file is probably truncated or corrupt; {redo}"
                );
            }
            break;
        }
        let (flags, csize, nlen, xlen) = (le16(&h, 6), le32(&h, 18), le16(&h, 26), le16(&h, 28));
        let name = read(pos + 30, nlen as usize)
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .unwrap_or_default();
        let data = pos + 30 + nlen + xlen;
        if flags & 0x08 == 0 && csize != 0xFFFF_FFFF {
            let end = data + csize;
            if end > file_len {
                return format!(
                    "the file is truncated: zip entry {name:?} needs bytes up to {end} but the file ends at {file_len} (expected at least {end} bytes, found {file_len}); {redo}"
                );
            }
            pos = end;
        } else {
            // Sizes follow the data in a descriptor: find the next record signature.
            match find_next_record(file, data, file_len) {
                Some(next) => pos = next,
                None => {
                    return format!(
                        "the file is truncated: it ends at byte {file_len} inside zip entry {name:?} (which starts at byte {pos}), and the central directory is missing (expected more than {file_len} bytes, found {file_len}); {redo}"
                    );
                }
            }
        }
        entries += 1;
    }
    if pos >= file_len {
        return format!(
            "the file is truncated: it ends after {entries} complete zip entries, before the central directory (expected more than {file_len} bytes, found {file_len}); {redo}"
        );
    }
    format!(
        "the file starts like a zip archive but its central directory cannot be read (at byte {pos} of {file_len}); the file is truncated or corrupt; {redo}"
    )
}

/// Offset just past the data descriptor or at the next local header after `from`, if any.
fn find_next_record(file: &File, from: u64, file_len: u64) -> Option<u64> {
    const STEP: usize = 1 << 20;
    let mut at = from;
    while at < file_len {
        let n = ((file_len - at) as usize).min(STEP + 3);
        let mut b = vec![0u8; n];
        file.read_exact_at(&mut b, at).ok()?;
        for i in 0..n.saturating_sub(3) {
            if b[i] == b'P' && b[i + 1] == b'K' {
                match (b[i + 2], b[i + 3]) {
                    // Descriptor: signature, CRC, sizes (4- or 8-byte); the next record follows.
                    (7, 8) => {
                        // 4-byte sizes end 16 bytes on; zip64 8-byte sizes 24.
                        let d = at + i as u64 + 16;
                        let mut sig = [0u8; 2];
                        let plain = d >= file_len
                            || (file.read_exact_at(&mut sig, d).is_ok() && &sig == b"PK");
                        return Some(if plain { d } else { d + 8 }).filter(|e| *e <= file_len);
                    }
                    (3, 4) | (1, 2) => return Some(at + i as u64),
                    _ => {}
                }
            }
        }
        at += STEP as u64;
    }
    None
}
