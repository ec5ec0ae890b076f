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

/// Calls `f` with the `len` bytes of `src` at `start`: read into memory when small, memory-mapped
/// when large.
pub fn with_span<R>(
    src: &File,
    start: u64,
    len: u64,
    f: impl FnOnce(&[u8]) -> std::io::Result<R>,
) -> std::io::Result<R> {
    if len <= SPAN_IN_MEMORY {
        let mut data = vec![0u8; len as usize];
        src.read_exact_at(&mut data, start)?;
        f(&data)
    } else {
        let flen = src.metadata()?.len();
        if start.checked_add(len).is_none_or(|end| end > flen) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file ends before the tensor's bytes",
            ));
        }
        // SAFETY: a read-only map, dropped before returning; its range was just checked
        // against the file's size.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(start)
                .len(len as usize)
                .map(src)?
        };
        let _ = map.advise(memmap2::Advice::Sequential);
        f(&map)
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
    let start = v.base + lo * v.itemsize;
    with_span(src, start, (hi - lo) * v.itemsize, |data| {
        let mut at = dst_off;
        gather(data, v, dtype, t, &mut |piece| {
            dst.write_all_at(piece, at)?;
            at += piece.len() as u64;
            Ok(())
        })
    })
}

/// Produces the row-major logical bytes of view `v` from `data`, the bytes of its span (element
/// `v.span().0` at index 0), in pieces of whole elements handed to `sink`. `t` is applied to
/// every piece first.
pub fn gather(
    data: &[u8],
    v: &Strided,
    dtype: DType,
    t: &Transform,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let first = v.span().0;
    let (outer, ostride, run) = v.runs();
    let run_bytes = (run * v.itemsize) as usize;
    let mut idx = vec![0u64; outer.len()];
    let total: u64 = outer.iter().product();
    let mut out = Vec::with_capacity(BUF.max(run_bytes).min(BUF + run_bytes));
    let mut src_elem = v.offset;
    for _ in 0..total {
        let at = ((src_elem - first) * v.itemsize) as usize;
        let run = data.get(at..at + run_bytes).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "a view reaches past its span",
            )
        })?;
        out.extend_from_slice(run);
        if out.len() >= BUF {
            flush(&mut out, dtype, t, sink)?;
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
    if !out.is_empty() {
        flush(&mut out, dtype, t, sink)?;
    }
    Ok(())
}

fn flush(
    out: &mut Vec<u8>,
    dtype: DType,
    t: &Transform,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if !t.is_identity() {
        apply_transform(out, dtype, t);
    }
    sink(out)?;
    out.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logical(v: &Strided, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        gather(data, v, DType::U8, &Transform::default(), &mut |p| {
            out.extend_from_slice(p);
            Ok(())
        })
        .unwrap();
        out
    }

    fn view(offset: u64, shape: &[u64], stride: &[u64]) -> Strided {
        Strided {
            base: 0,
            offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
            itemsize: 1,
        }
    }

    /// Element-by-element reference: row-major walk of the index space.
    fn naive(v: &Strided, storage: &[u8]) -> Vec<u8> {
        let n: u64 = v.shape.iter().product();
        (0..n)
            .map(|mut flat| {
                let mut at = v.offset;
                for d in (0..v.shape.len()).rev() {
                    at += (flat % v.shape[d]) * v.stride[d];
                    flat /= v.shape[d];
                }
                storage[at as usize]
            })
            .collect()
    }

    #[test]
    fn gather_matches_an_element_by_element_walk_for_every_view_kind() {
        let storage: Vec<u8> = (0..=255).collect();
        let views = [
            view(0, &[3, 4], &[1, 3]),              // transposed
            view(5, &[2, 2], &[4, 1]),              // slice with offset
            view(1, &[6], &[2]),                    // stepped
            view(0, &[4, 3], &[0, 1]),              // expanded (stride 0)
            view(2, &[3, 3], &[1, 1]),              // overlapping as_strided
            view(0, &[2, 3, 2, 2], &[12, 1, 6, 3]), // channels-last
            view(7, &[1, 5, 1], &[9, 2, 4]),        // size-1 dims with odd strides
        ];
        for v in &views {
            let (lo, hi) = v.span();
            let got = logical(v, &storage[lo as usize..hi as usize]);
            assert_eq!(got, naive(v, &storage), "{v:?}");
        }
    }

    #[test]
    fn negation_flips_float_signs_and_negates_integers() {
        let mut f = (1.5f32).to_le_bytes().to_vec();
        f.extend(0.0f32.to_le_bytes());
        apply_transform(
            &mut f,
            DType::F32,
            &Transform {
                neg: true,
                ..Default::default()
            },
        );
        assert_eq!(f32::from_le_bytes(f[..4].try_into().unwrap()), -1.5);
        assert_eq!(f[4..], (-0.0f32).to_le_bytes());
        let mut i = (-7i16).to_le_bytes().to_vec();
        apply_transform(
            &mut i,
            DType::I16,
            &Transform {
                neg: true,
                ..Default::default()
            },
        );
        assert_eq!(i16::from_le_bytes([i[0], i[1]]), 7);
        let mut be = vec![0x3f, 0x80, 0, 0];
        apply_transform(
            &mut be,
            DType::F32,
            &Transform {
                swap_unit: Some(4),
                ..Default::default()
            },
        );
        assert_eq!(f32::from_le_bytes(be[..].try_into().unwrap()), 1.0);
    }
}
