//! Format detection from the first bytes, with a plain description of what anything else is.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::legacy::is_legacy_magic;
use crate::error::{ErrorKind, io};
use crate::pickle::{Limits, NoHost, load};

/// A recognised checkpoint container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// Starts with a zip local file header.
    Zip,
    /// Starts with the legacy magic-number pickle.
    Legacy,
    /// A plain pickle (e.g. `pickle.dump` of tensors, which embeds legacy streams).
    Pickle,
}

/// Looks at the start of the file and says what it is, or why it is not a checkpoint.
pub fn sniff(file: &File, file_len: u64) -> Result<Sniffed, ErrorKind> {
    let mut head = vec![0u8; file_len.min(4096) as usize];
    file.read_exact_at(&mut head, 0).map_err(io("cannot read the start of the file"))?;
    if head.is_empty() {
        return Err(ErrorKind::NotACheckpoint("the file is empty (0 bytes); a failed or interrupted download?".into()));
    }
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Sniffed::Zip);
    }
    let limits = Limits { max_ops: 10_000, max_stack: 10_000, max_memo: 10_000, max_string: 4096 };
    match load(&head, 0, &mut NoHost, &limits) {
        Ok(first) if is_legacy_magic(&first.value) => return Ok(Sniffed::Legacy),
        Ok(_) => return Ok(Sniffed::Pickle),
        // A binary pickle longer than the sniffed head: the VM reads it whole later.
        Err(_) if head.len() >= 2 && head[0] == 0x80 && head[1] <= 5 && file_len > head.len() as u64 => {
            return Ok(Sniffed::Pickle);
        }
        Err(_) => {}
    }
    Err(ErrorKind::NotACheckpoint(describe(&head, file_len)))
}

/// Says what a non-checkpoint file looks like, with a hint where one helps.
pub fn describe(head: &[u8], file_len: u64) -> String {
    let lower: Vec<u8> = head.iter().take(512).map(|b| b.to_ascii_lowercase()).collect();
    let text = String::from_utf8_lossy(&lower);
    let trimmed = text.trim_start();
    if head.starts_with(b"version https://git-lfs") {
        return "a Git LFS pointer file, not the checkpoint itself; run `git lfs pull` to fetch the real file".into();
    }
    if trimmed.starts_with("<!doctype html") || trimmed.starts_with("<html") || trimmed.starts_with("<?xml") {
        return "an HTML/XML page, not a checkpoint; the download probably failed (login page or error page)".into();
    }
    if head.starts_with(b"GGUF") {
        return "a GGUF model file (llama.cpp), not a PyTorch checkpoint".into();
    }
    if head.starts_with(b"ggml") || head.starts_with(b"lmgg") || head.starts_with(b"tjgg") || head.starts_with(b"fmgg") {
        return "a GGML model file (llama.cpp), not a PyTorch checkpoint".into();
    }
    if head.starts_with(b"\x93NUMPY") {
        return "a NumPy .npy array file, not a PyTorch checkpoint".into();
    }
    if head.starts_with(b"\x89HDF\r\n\x1a\n") {
        return "an HDF5 file (Keras/TensorFlow .h5), not a PyTorch checkpoint".into();
    }
    if head.starts_with(b"PK") {
        return "a zip-like file that does not start with a local file header (prepended data?)".into();
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return "a tar archive (torch <= 0.1.9 wrote checkpoints as tar; that era is not supported yet)".into();
    }
    if head.len() >= 10 {
        let n = u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
        if head[8] == b'{' && n > 1 && n.checked_add(8).is_some_and(|e| e <= file_len) {
            return "already a safetensors file; nothing to convert".into();
        }
    }
    if head.starts_with(b"\x08") || head.windows(11).any(|w| w == b"saved_model") {
        return "looks like a TensorFlow/protobuf file, not a PyTorch checkpoint".into();
    }
    if head.first() == Some(&0x80) {
        return format!("a pickle stream that cannot be read (truncated or corrupt); the file has {file_len} bytes");
    }
    let printable = head.iter().take(512).filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()).count();
    if printable * 10 >= head.len().min(512) * 9 {
        return format!("a text file ({file_len} bytes), not a checkpoint");
    }
    format!("unrecognised content ({file_len} bytes, starting with {:02x?})", &head[..head.len().min(8)])
}
