//! Moving tensor bytes from the checkpoint to their offsets in the output: in-kernel copies for
//! contiguous ranges, bounded buffers for strided views and byte-order or sign fixes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::torch::DType;

/// Largest piece of one contiguous copy handed to a worker.
pub const CHUNK: u64 = 64 << 20;
/// Buffer size for transformed or gathered data.
const BUF: usize = 8 << 20;
/// Largest source span read into memory in one piece for a strided view.
const SPAN_IN_MEMORY: u64 = 64 << 20;

/// What must be done to stored bytes to get the logical little-endian values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transform {
    /// Reverse the bytes of every unit of this size (big-endian source).
    pub swap_unit: Option<u64>,
    /// Conjugate complex numbers (negate the imaginary part).
    pub conj: bool,
    /// Negate every value.
    pub neg: bool,
}

impl Transform {
    /// True when bytes can be copied as they are.
    pub fn is_identity(&self) -> bool {
        self.swap_unit.is_none() && !self.conj && !self.neg
    }
}

/// Whether `dtype` values can be negated bit-exactly by this tool, and how.
pub fn negation_supported(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F64
            | DType::F32
            | DType::F16
            | DType::BF16
            | DType::C64
            | DType::F8E4M3
            | DType::F8E5M2
            | DType::I64
            | DType::I32
            | DType::I16
            | DType::I8
    )
}

/// Applies `t` to little-endian-ordered (after swapping) elements of `dtype` in `buf`.
pub fn apply_transform(buf: &mut [u8], dtype: DType, t: &Transform) {
    if let Some(u) = t.swap_unit.filter(|u| *u > 1) {
        for unit in buf.chunks_exact_mut(u as usize) {
            unit.reverse();
        }
    }
    let size = dtype.itemsize() as usize;
    if t.conj && dtype == DType::C64 {
        // Flip the sign bit of the imaginary f32 (top byte of the second component).
        for el in buf.chunks_exact_mut(size) {
            el[7] ^= 0x80;
        }
    }
    if t.neg {
        match dtype {
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F8E5M2 => {
                for el in buf.chunks_exact_mut(size) {
                    el[size - 1] ^= 0x80;
                }
            }
            DType::C64 => {
                for el in buf.chunks_exact_mut(8) {
                    el[3] ^= 0x80;
                    el[7] ^= 0x80;
                }
            }
            DType::I64 | DType::I32 | DType::I16 | DType::I8 => {
                for el in buf.chunks_exact_mut(size) {
                    // Two's complement negation: invert, then add one.
                    let mut carry = true;
                    for b in el.iter_mut() {
                        let (v, c) = (!*b).overflowing_add(carry as u8);
                        *b = v;
                        carry = c;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off`, positionally.
pub fn copy_range(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
) -> std::io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = (src_off + done) as libc::off64_t;
        let mut off_out = (dst_off + done) as libc::off64_t;
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the duration of the call; the offsets are
        // passed by pointer so neither file's cursor moves.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n > 0 {
            done += n as u64;
            continue;
        }
        if n == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL | libc::EPERM) => {
                break;
            }
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
    if done < len {
        copy_buffered(src, src_off + done, dst, dst_off + done, len - done, None)?;
    }
    Ok(())
}

/// Copies through a buffer, transforming each piece when asked.
pub fn copy_buffered(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
    t: Option<(DType, &Transform)>,
) -> std::io::Result<()> {
    // Pieces are whole elements (largest itemsize 16 divides the buffer).
    let mut buf = vec![0u8; (len.min(BUF as u64)) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let piece = &mut buf[..n];
        src.read_exact_at(piece, src_off + done)?;
        if let Some((dtype, t)) = t {
            apply_transform(piece, dtype, t);
        }
        dst.write_all_at(piece, dst_off + done)?;
        done += n as u64;
    }
    Ok(())
}

/// A strided view to be written in row-major order.
#[derive(Debug, Clone)]
pub struct Strided {
    /// Absolute file offset of storage element 0.
    pub base: u64,
    /// Offset of the view, in elements.
    pub offset: u64,
    /// Sizes.
    pub shape: Vec<u64>,
    /// Strides in elements.
    pub stride: Vec<u64>,
    /// Bytes per element.
    pub itemsize: u64,
}

impl Strided {
    /// First and one-past-last element touched (all sizes > 0).
    pub fn span(&self) -> (u64, u64) {
        let last: u64 = self
            .shape
            .iter()
            .zip(&self.stride)
            .map(|(n, s)| (n - 1) * s)
            .sum();
        (self.offset, self.offset + last + 1)
    }

    /// Splits into an outer loop and an inner contiguous run of `run` elements.
    fn runs(&self) -> (Vec<u64>, Vec<u64>, u64) {
        let mut run = 1u64;
        let mut k = self.shape.len();
        while k > 0 && (self.stride[k - 1] == run || self.shape[k - 1] == 1) {
            run *= self.shape[k - 1];
            k -= 1;
        }
        (self.shape[..k].to_vec(), self.stride[..k].to_vec(), run)
    }
}

/// Writes a strided view to `dst` at `dst_off` as a row-major tensor.
pub fn copy_strided(
    src: &File,
    v: &Strided,
    dtype: DType,
    t: &Transform,
    dst: &File,
    dst_off: u64,
) -> std::io::Result<()> {
    let (lo, hi) = v.span();
    let span_bytes = (hi - lo) * v.itemsize;
    let start = v.base + lo * v.itemsize;
    if span_bytes <= SPAN_IN_MEMORY {
        let mut data = vec![0u8; span_bytes as usize];
        src.read_exact_at(&mut data, start)?;
        gather(&data, lo, v, dtype, t, dst, dst_off)
    } else {
        // SAFETY: the map is read-only and dropped before returning; the range was checked
        // against the file size when the conversion was planned.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(start)
                .len(span_bytes as usize)
                .map(src)?
        };
        let _ = map.advise(memmap2::Advice::Sequential);
        gather(&map, lo, v, dtype, t, dst, dst_off)
    }
}

fn gather(
    data: &[u8],
    first: u64,
    v: &Strided,
    dtype: DType,
    t: &Transform,
    dst: &File,
    dst_off: u64,
) -> std::io::Result<()> {
    let (outer, ostride, run) = v.runs();
    let run_bytes = (run * v.itemsize) as usize;
    let mut idx = vec![0u64; outer.len()];
    let total: u64 = outer.iter().product();
    let mut out = Vec::with_capacity(BUF.max(run_bytes).min(BUF + run_bytes));
    let mut written = 0u64;
    let mut src_elem = v.offset;
    for _ in 0..total {
        let at = ((src_elem - first) * v.itemsize) as usize;
        out.extend_from_slice(&data[at..at + run_bytes]);
        if out.len() >= BUF {
            let n = out.len() as u64;
            flush(&mut out, dtype, t, dst, dst_off + written)?;
            written += n;
        }
        // Advance the outer index (row-major), updating the source element incrementally.
        for d in (0..outer.len()).rev() {
            idx[d] += 1;
            src_elem += ostride[d];
            if idx[d] < outer[d] {
                break;
            }
            src_elem -= ostride[d] * outer[d];
            idx[d] = 0;
        }
    }
    flush(&mut out, dtype, t, dst, dst_off + written)?;
    Ok(())
}

fn flush(
    out: &mut Vec<u8>,
    dtype: DType,
    t: &Transform,
    dst: &File,
    at: u64,
) -> std::io::Result<()> {
    if !t.is_identity() {
        apply_transform(out, dtype, t);
    }
    dst.write_all_at(out, at)?;
    out.clear();
    Ok(())
}
