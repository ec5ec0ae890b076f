//! The checks a conversion makes before any output is opened: the resource limits (each named
//! with the flag that raises it), measured on the container before unpickling and on the
//! selected tensors. (The opened pickle needs no check of its own: the container refuses one
//! over `--max-pickle-bytes` before reading it.)

use std::path::Path;

use crate::checkpoint::{Checkpoint, Selection};
use crate::container::{Kind, ZipLimits, audit_zip_with, pickle_too_large, sniff};
use crate::error::{Error, ErrorKind, Result};
use crate::pickle::Limits;

fn limit_err(path: &Path, what: String) -> Error {
    Error::new(path, ErrorKind::LimitExceeded(what))
}

/// A pickle over `--max-pickle-bytes`, worded as the container words it when it opens one.
fn too_large(path: &Path, what: &str, bytes: u64, limits: &Limits) -> Error {
    Error::new(path, pickle_too_large(what, bytes, limits))
}

/// Checks the container against `limits` before anything is unpickled: zip entry count,
/// inflated sizes (zip bombs), and the main pickle's size.
pub fn preflight(path: &Path, limits: &Limits) -> Result<()> {
    let file = crate::container::open_source(path)
        .map_err(|e| Error::new(path, crate::error::io("cannot open the file")(e)))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let kind = sniff(&file, len);
    let Ok(Kind::Zip) = kind else {
        // A plain pickle is the whole file. A legacy stream and a tar hold their storages too:
        // their pickles are bounded where the container reads them.
        if len > limits.max_pickle_bytes && !matches!(kind, Ok(Kind::Legacy | Kind::Tar)) {
            return Err(too_large(path, "the pickle", len, limits));
        }
        return Ok(());
    };
    let zl = ZipLimits::from(limits);
    // Counts and sizes only: the central directory is enough (the local headers are read
    // once, when the archive is opened).
    let audit = match audit_zip_with(&file, len, &zl, false) {
        Ok(a) => a,
        // Unreadable structure: let the container layer give its own, precise error.
        Err(ErrorKind::LimitExceeded(m)) => return Err(limit_err(path, m)),
        Err(_) => return Ok(()),
    };
    let mut inflated = 0u64;
    for e in &audit.entries {
        if e.method != 0 {
            inflated = inflated.saturating_add(e.size);
        }
        if e.name.ends_with("/data.pkl") && e.size > limits.max_pickle_bytes {
            return Err(too_large(path, &e.name, e.size, limits));
        }
    }
    if inflated > limits.max_inflated_bytes {
        return Err(limit_err(
            path,
            format!(
                "compressed zip members inflate to {inflated} bytes, more than the limit of {} (--max-inflated-bytes)",
                limits.max_inflated_bytes
            ),
        ));
    }
    Ok(())
}

/// Checks a selection against the tensor-count and per-tensor element limits.
pub fn check_selection(ckpt: &Checkpoint, sel: &Selection, limits: &Limits) -> Result<()> {
    if sel.tensors.len() as u64 > limits.max_tensors {
        return Err(limit_err(
            ckpt.path(),
            format!(
                "{} tensors, more than the limit of {} (--max-tensors)",
                sel.tensors.len(),
                limits.max_tensors
            ),
        ));
    }
    for t in &sel.tensors {
        let n = t
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX);
        if n > limits.max_tensor_elements {
            return Err(limit_err(
                ckpt.path(),
                format!(
                    "tensor {:?} has {n} elements (shape {:?}), more than the limit of {} (--max-tensor-elements)",
                    t.name, t.shape, limits.max_tensor_elements
                ),
            ));
        }
    }
    Ok(())
}
