//! Strided views in row-major order: bounded pieces, prefetching, gathers from compact buffers
//! and blocked 2-D transposes. Used by the writer (to fill the output) and by the reader.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::transform::{Transform, apply_transform};
use crate::dtype::DType;

/// Buffer size for gathered data.
const BUF: usize = 8 << 20;
/// Largest source span read into memory in one piece for a strided view.
const SPAN_IN_MEMORY: u64 = 64 << 20;

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

/// Largest output of one piece of a strided view (pieces are copied in parallel).
pub const PIECE: u64 = 16 << 20;
/// Output gathered at once from a compact buffer (small enough to stay in cache).
const CACHE_SLICE: u64 = 1 << 20;

impl Strided {
    /// `(rows, cols, col_stride)` when the view, ignoring size-1 dimensions, is a transposed
    /// matrix: two dimensions with strides `(1, col_stride)`, `col_stride > 1`.
    fn as_transposed_2d(&self) -> Option<(u64, u64, u64)> {
        let dims: Vec<(u64, u64)> = self
            .shape
            .iter()
            .zip(&self.stride)
            .filter(|(n, _)| **n > 1)
            .map(|(n, s)| (*n, *s))
            .collect();
        match dims.as_slice() {
            [(rows, 1), (cols, cs)] if *cs > 1 => Some((*rows, *cols, *cs)),
            _ => None,
        }
    }

    /// Output bytes of the view.
    pub fn nbytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.itemsize
    }

    /// Splits the view along its leading dimensions into pieces of at most [`PIECE`] output
    /// bytes; the pieces' outputs follow one another in order.
    pub fn pieces(&self) -> Vec<Strided> {
        self.pieces_of(PIECE)
    }

    /// [`Strided::pieces`] with another piece size.
    pub fn pieces_of(&self, max: u64) -> Vec<Strided> {
        let mut out = Vec::new();
        self.split_into(max, &mut out);
        out
    }

    fn split_into(&self, max: u64, out: &mut Vec<Strided>) {
        if self.nbytes() <= max || self.shape.is_empty() {
            out.push(self.clone());
            return;
        }
        if self.shape[0] == 1 {
            let mut inner = self.clone();
            inner.shape.remove(0);
            inner.stride.remove(0);
            return inner.split_into(max, out);
        }
        let row = self.nbytes() / self.shape[0];
        let rows = (max / row.max(1)).max(1);
        let mut i = 0;
        while i < self.shape[0] {
            let k = rows.min(self.shape[0] - i);
            let mut p = self.clone();
            p.offset += i * self.stride[0];
            p.shape[0] = k;
            p.split_into(max, out);
            i += k;
        }
    }
}

/// Produces the row-major logical bytes of view `v` of `src` (at most about [`PIECE`] output
/// bytes: see [`Strided::pieces`]) in pieces handed to `sink`, with bounded buffers. A view
/// whose span is small and dense is read in one piece; otherwise (a transposed matrix, say) each
/// run along its smallest-stride dimension is read into a compact buffer, which is then
/// gathered in memory.
pub fn stream_strided(
    src: &File,
    v: &Strided,
    dtype: DType,
    t: &Transform,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let out_bytes = v.nbytes();
    if out_bytes == 0 {
        return Ok(());
    }
    let (lo, hi) = v.span();
    let span = (hi - lo) * v.itemsize;
    if span <= SPAN_IN_MEMORY && span <= 8 * out_bytes.max(1 << 16) {
        let mut data = vec![0u8; span as usize];
        src.read_exact_at(&mut data, v.base + lo * v.itemsize)?;
        return gather(&data, v, dtype, t, sink);
    }
    // The dimension along which the source is densest.
    let r = (0..v.shape.len())
        .filter(|&d| v.shape[d] > 1)
        .min_by_key(|&d| (v.stride[d], std::cmp::Reverse(d)));
    let Some(r) = r else {
        // A single element.
        let mut one = vec![0u8; v.itemsize as usize];
        src.read_exact_at(&mut one, v.base + v.offset * v.itemsize)?;
        return flush(&mut one, dtype, t, sink);
    };
    let seg = (v.shape[r] - 1) * v.stride[r] + 1;
    let tuples = v.shape.iter().product::<u64>() / v.shape[r];
    let compact = tuples * seg * v.itemsize;
    if compact > SPAN_IN_MEMORY.max(4 * out_bytes) {
        return gather_by_element(src, v, dtype, t, sink);
    }
    // Read one segment per index tuple of the other dimensions (row-major order) into `c`.
    let seg_bytes = (seg * v.itemsize) as usize;
    let mut c = vec![0u8; compact as usize];
    let others: Vec<usize> = (0..v.shape.len()).filter(|&d| d != r).collect();
    let mut walk = Odometer::new(
        others.iter().map(|&d| v.shape[d]).collect(),
        others.iter().map(|&d| v.stride[d]).collect(),
        v.offset,
    );
    for k in 0..tuples as usize {
        let at = v.base + walk.elem * v.itemsize;
        src.read_exact_at(&mut c[k * seg_bytes..(k + 1) * seg_bytes], at)?;
        walk.advance();
    }
    // The same view over `c`: dimension r keeps its stride inside a segment; the others step
    // over whole segments, row-major.
    let mut stride = vec![0u64; v.shape.len()];
    stride[r] = v.stride[r];
    let mut acc = seg;
    for &d in others.iter().rev() {
        stride[d] = acc;
        acc *= v.shape[d];
    }
    let over_c = Strided {
        base: 0,
        offset: 0,
        shape: v.shape.clone(),
        stride,
        itemsize: v.itemsize,
    };
    // Gather in small slices so the part of `c` each slice touches stays in cache (for a
    // transposed matrix, a slice of rows reuses the same cache lines of `c`).
    if over_c.as_transposed_2d().is_some() {
        return gather(&c, &over_c, dtype, t, sink);
    }
    for s in over_c.pieces_of(CACHE_SLICE) {
        let from = (s.offset * s.itemsize) as usize;
        gather(c.get(from..).unwrap_or(&[]), &s, dtype, t, sink)?;
    }
    Ok(())
}

/// A row-major walk over an index space, tracking the source element it points at.
struct Odometer {
    shape: Vec<u64>,
    stride: Vec<u64>,
    idx: Vec<u64>,
    /// The source element at the current index.
    elem: u64,
}

impl Odometer {
    fn new(shape: Vec<u64>, stride: Vec<u64>, start: u64) -> Self {
        let idx = vec![0; shape.len()];
        Odometer {
            shape,
            stride,
            idx,
            elem: start,
        }
    }

    /// Steps to the next index (the last dimension fastest), wrapping to the start at the end.
    fn advance(&mut self) {
        for d in (0..self.shape.len()).rev() {
            self.idx[d] += 1;
            self.elem += self.stride[d];
            if self.idx[d] < self.shape[d] {
                return;
            }
            self.elem -= self.stride[d] * self.shape[d];
            self.idx[d] = 0;
        }
    }
}

/// Last resort for sparse, huge views: element by element through a small read window.
fn gather_by_element(
    src: &File,
    v: &Strided,
    dtype: DType,
    t: &Transform,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    const WINDOW: u64 = 64 << 10;
    let item = v.itemsize as usize;
    let (_, hi) = v.span();
    let end = v.base + hi * v.itemsize;
    let mut window = vec![0u8; WINDOW as usize];
    let mut w0 = u64::MAX;
    let mut out = Vec::with_capacity(BUF);
    let n: u64 = v.shape.iter().product();
    let mut walk = Odometer::new(v.shape.clone(), v.stride.clone(), v.offset);
    for _ in 0..n {
        let at = v.base + walk.elem * v.itemsize;
        if w0 == u64::MAX || at < w0 || at + v.itemsize > w0 + WINDOW {
            w0 = at;
            let len = WINDOW.min(end - at) as usize;
            src.read_exact_at(&mut window[..len], at)?;
        }
        let o = (at - w0) as usize;
        out.extend_from_slice(&window[o..o + item]);
        if out.len() >= BUF {
            flush(&mut out, dtype, t, sink)?;
        }
        walk.advance();
    }
    if !out.is_empty() {
        flush(&mut out, dtype, t, sink)?;
    }
    Ok(())
}

/// Asks the kernel to read the span of a large strided view ahead, in big sequential reads: the
/// run-by-run reads of a transposed matrix would otherwise each wait for a random 4 KiB read
/// when the page cache is cold. Only a hint; errors are ignored.
pub fn prefetch(src: &File, v: &Strided) {
    if v.nbytes() == 0 {
        return;
    }
    let (lo, hi) = v.span();
    let len = (hi - lo) * v.itemsize;
    if len <= SPAN_IN_MEMORY {
        return;
    }
    let start = v.base + lo * v.itemsize;
    // The kernel caps one WILLNEED at its readahead window, so ask window by window.
    const STEP: u64 = 128 << 10;
    let mut at = start;
    while at < start + len {
        let n = STEP.min(start + len - at);
        // SAFETY: a plain system call on an open descriptor; it reads no user memory.
        unsafe {
            libc::posix_fadvise(
                src.as_raw_fd(),
                at as libc::off_t,
                n as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
        at += n;
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
    let mut at = dst_off;
    stream_strided(src, v, dtype, t, &mut |piece| {
        dst.write_all_at(piece, at)?;
        at += piece.len() as u64;
        Ok(())
    })
}

/// Produces the row-major logical bytes of view `v` from `data`, the bytes of its span (element
/// `v.offset`, the first it touches, at index 0), in pieces of whole elements handed to `sink`. `t` is applied to
/// every piece first.
pub fn gather(
    data: &[u8],
    v: &Strided,
    dtype: DType,
    t: &Transform,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some((rows, cols, col_stride)) = v.as_transposed_2d() {
        return transpose_2d(
            data,
            rows,
            cols,
            col_stride,
            v.itemsize as usize,
            dtype,
            t,
            sink,
        );
    }
    let first = v.offset;
    let (mut outer, mut ostride, run) = v.runs();
    let rb = (run * v.itemsize) as usize;
    // The innermost outer dimension is walked in a tight loop; the others by an odometer.
    let (n_last, s_last) = match (outer.pop(), ostride.pop()) {
        (Some(n), Some(s)) => (n, s),
        _ => (1, 0),
    };
    let higher: u64 = outer.iter().product();
    let mut rows = Odometer::new(outer, ostride, v.offset);
    let mut out = vec![0u8; (v.nbytes() as usize).min(BUF).max(rb)];
    let mut pos = 0usize;
    let past_span = || {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "a view reaches past its span",
        )
    };
    for _ in 0..higher {
        let mut e = rows.elem;
        for _ in 0..n_last {
            let at = ((e - first) * v.itemsize) as usize;
            let src = data.get(at..at + rb).ok_or_else(past_span)?;
            if pos + rb > out.len() {
                flush_slice(&mut out[..pos], dtype, t, sink)?;
                pos = 0;
            }
            let dst = &mut out[pos..pos + rb];
            match rb {
                1 => dst[0] = src[0],
                2 => dst.copy_from_slice(&src[..2]),
                4 => dst.copy_from_slice(&src[..4]),
                8 => dst.copy_from_slice(&src[..8]),
                _ => dst.copy_from_slice(src),
            }
            pos += rb;
            e += s_last;
        }
        rows.advance();
    }
    if pos > 0 {
        flush_slice(&mut out[..pos], dtype, t, sink)?;
    }
    Ok(())
}

/// Blocked transpose for a 2-D view with strides `(1, col_stride)` whose bytes start at
/// `data[0]`: output element `(i, j)` is data element `i + j * col_stride`. Reads and writes
/// stay within cache-sized tiles instead of striding across the whole buffer per element.
#[allow(clippy::too_many_arguments)]
fn transpose_2d(
    data: &[u8],
    rows: u64,
    cols: u64,
    col_stride: u64,
    item: usize,
    dtype: DType,
    t: &Transform,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    const TILE: u64 = 64;
    let past_span = || {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "a view reaches past its span",
        )
    };
    let last = ((rows - 1) + (cols - 1) * col_stride + 1) as usize * item;
    if data.len() < last {
        return Err(past_span());
    }
    let row_bytes = cols as usize * item;
    // Output bands of about a megabyte: large single writes stall on dirty-page throttling.
    let band = ((CACHE_SLICE as usize / row_bytes.max(1)) as u64).clamp(1, rows);
    let mut out = vec![0u8; band as usize * row_bytes];
    let mut i0 = 0;
    while i0 < rows {
        let br = band.min(rows - i0);
        let mut j0 = 0;
        while j0 < cols {
            let jn = TILE.min(cols - j0);
            let tile = Tile {
                i0,
                br,
                j0,
                jn,
                col_stride,
                row_bytes,
            };
            match item {
                1 => tile.copy::<1>(data, &mut out),
                2 => tile.copy::<2>(data, &mut out),
                4 => tile.copy::<4>(data, &mut out),
                8 => tile.copy::<8>(data, &mut out),
                16 => tile.copy::<16>(data, &mut out),
                _ => tile.copy_any(item, data, &mut out),
            }
            j0 += jn;
        }
        flush_slice(&mut out[..br as usize * row_bytes], dtype, t, sink)?;
        i0 += br;
    }
    Ok(())
}

/// One tile of [`transpose_2d`]: rows `i0..i0+br`, columns `j0..j0+jn`.
struct Tile {
    i0: u64,
    br: u64,
    j0: u64,
    jn: u64,
    col_stride: u64,
    row_bytes: usize,
}

impl Tile {
    fn copy<const N: usize>(&self, data: &[u8], out: &mut [u8]) {
        for i in self.i0..self.i0 + self.br {
            let orow = (i - self.i0) as usize * self.row_bytes;
            for j in self.j0..self.j0 + self.jn {
                let src = ((i + j * self.col_stride) as usize) * N;
                let dst = orow + j as usize * N;
                let el: [u8; N] = data[src..src + N].try_into().unwrap_or([0; N]);
                out[dst..dst + N].copy_from_slice(&el);
            }
        }
    }

    fn copy_any(&self, item: usize, data: &[u8], out: &mut [u8]) {
        for i in self.i0..self.i0 + self.br {
            let orow = (i - self.i0) as usize * self.row_bytes;
            for j in self.j0..self.j0 + self.jn {
                let src = ((i + j * self.col_stride) as usize) * item;
                let dst = orow + j as usize * item;
                out[dst..dst + item].copy_from_slice(&data[src..src + item]);
            }
        }
    }
}

fn flush_slice(
    out: &mut [u8],
    dtype: DType,
    t: &Transform,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if !t.is_identity() {
        apply_transform(out, dtype, t);
    }
    sink(out)
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

    fn file_with(bytes: &[u8]) -> File {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn streamed(f: &File, v: &Strided, by_element: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut sink = |p: &[u8]| {
            out.extend_from_slice(p);
            Ok(())
        };
        let t = Transform::default();
        if by_element {
            gather_by_element(f, v, DType::U8, &t, &mut sink).unwrap();
        } else {
            for piece in v.pieces() {
                stream_strided(f, &piece, DType::U8, &t, &mut sink).unwrap();
            }
        }
        out
    }

    #[test]
    fn sparse_views_of_a_file_stream_through_compact_buffers_and_match_a_naive_walk() {
        let storage: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + i / 251) as u8).collect();
        let f = file_with(&storage);
        let views = [
            // Transposed slice of a 2048-wide matrix: span far larger than the output.
            view(3, &[64, 300], &[1, 2048]),
            // Huge stride on the inner dimension.
            view(0, &[16, 16], &[65536, 4096]),
            // Dense: read as one span.
            view(10, &[100, 50], &[50, 1]),
            // Expanded over a sparse column.
            view(7, &[40, 3, 20], &[0, 1, 4096]),
        ];
        for v in &views {
            let want = naive(v, &storage);
            assert_eq!(streamed(&f, v, false), want, "{v:?}");
            assert_eq!(streamed(&f, v, true), want, "{v:?} element by element");
        }
    }

    #[test]
    fn pieces_cover_the_output_in_order_within_the_piece_size() {
        let v = Strided {
            base: 0,
            offset: 0,
            shape: vec![3, 5000, 4000],
            stride: vec![1, 3, 15000],
            itemsize: 4,
        };
        let pieces = v.pieces();
        assert!(pieces.len() > 1);
        assert!(pieces.iter().all(|p| p.nbytes() <= PIECE), "{pieces:?}");
        assert_eq!(pieces.iter().map(Strided::nbytes).sum::<u64>(), v.nbytes());

        // Concatenated pieces give exactly the whole view (a transposed 20 MB matrix).
        let storage: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
        let v = view(0, &[5000, 4000], &[1, 5000]);
        let mut joined = Vec::new();
        for p in v.pieces() {
            assert!(p.nbytes() <= PIECE);
            joined.extend(logical(&p, &storage[p.offset as usize..]));
        }
        assert!(
            joined == logical(&v, &storage),
            "pieces reassemble the view"
        );
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
