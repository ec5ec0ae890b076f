//! Strided views in row-major order: bounded pieces, prefetching, gathers from compact buffers
//! and blocked 2-D transposes. Used by the writer (to fill the output) and by the reader.

use std::cell::Cell;
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
/// Largest output of one piece of a transposed matrix. A piece is a band of output rows, read
/// as one short segment per column (its rows' share of the column), so the piece's height sets
/// the number of reads: a 15360 x 15360 f32 matrix took 875,000 reads of 1 KiB in 16 MiB pieces,
/// whose per-call cost dominated. 24 MiB pieces cut the reads by a third and the conversion's
/// time by about 15% on a 2-core VM, for two threads' buffers of 24 MiB (peak RSS 57 MiB).
pub const TRANSPOSED_PIECE: u64 = 24 << 20;
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

    /// Splits the view along its leading dimensions into pieces of at most
    /// [`Strided::piece_size`] output bytes; the pieces' outputs follow one another in order.
    pub fn pieces(&self) -> Vec<Strided> {
        self.pieces_of(self.piece_size())
    }

    /// The largest output of one of this view's [`Strided::pieces`]: [`TRANSPOSED_PIECE`] for a
    /// transposed matrix, [`PIECE`] for any other view.
    pub fn piece_size(&self) -> u64 {
        if self.as_transposed_2d().is_some() {
            TRANSPOSED_PIECE
        } else {
            PIECE
        }
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
        return with_scratch(SPAN_SLOT, span as usize, |data| {
            src.read_exact_at(data, v.base + lo * v.itemsize)?;
            gather(data, v, dtype, t, sink)
        });
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
    if let Some((rows, cols, col_stride)) = v.as_transposed_2d()
        && out_bytes <= KEEP[OUT_SLOT] as u64
    {
        let m = Matrix {
            start: v.base + v.offset * v.itemsize,
            rows,
            cols,
            col_stride,
            item: v.itemsize as usize,
        };
        return transpose_from_file(src, &m, dtype, t, sink);
    }
    // Read one segment per index tuple of the other dimensions (row-major order) into `c`,
    // `pitch` elements apart (see `pitch`).
    let seg_bytes = (seg * v.itemsize) as usize;
    let pitch = pitch(seg, v.itemsize);
    let pitch_bytes = (pitch * v.itemsize) as usize;
    with_scratch(SPAN_SLOT, tuples as usize * pitch_bytes, |c| {
        let others: Vec<usize> = (0..v.shape.len()).filter(|&d| d != r).collect();
        let mut walk = Odometer::new(
            others.iter().map(|&d| v.shape[d]).collect(),
            others.iter().map(|&d| v.stride[d]).collect(),
            v.offset,
        );
        for k in 0..tuples as usize {
            let at = v.base + walk.elem * v.itemsize;
            src.read_exact_at(&mut c[k * pitch_bytes..k * pitch_bytes + seg_bytes], at)?;
            walk.advance();
        }
        // The same view over `c`: dimension r keeps its stride inside a segment; the others step
        // over whole segments, row-major.
        let mut stride = vec![0u64; v.shape.len()];
        stride[r] = v.stride[r];
        let mut acc = pitch;
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
            return gather(c, &over_c, dtype, t, sink);
        }
        for s in over_c.pieces_of(CACHE_SLICE) {
            let from = (s.offset * s.itemsize) as usize;
            gather(c.get(from..).unwrap_or(&[]), &s, dtype, t, sink)?;
        }
        Ok(())
    })
}

/// A transposed matrix in a file: output element `(i, j)` is the item at byte
/// `start + (i + j * col_stride) * item`.
struct Matrix {
    start: u64,
    rows: u64,
    cols: u64,
    col_stride: u64,
    item: usize,
}

/// Source bytes read at once by [`transpose_from_file`]: a group of columns that stays in the
/// core's own L2 cache while it is transposed.
const COLUMN_GROUP: usize = 256 << 10;

/// Transposes `m` (at most [`TRANSPOSED_PIECE`] output bytes) straight from the file: a group of columns
/// at a time is read into a small buffer (still in cache from the read) and scattered into the
/// whole output, which is then handed to `sink` in bands of about [`CACHE_SLICE`].
///
/// Reading every column first into one compact buffer of the piece's size and transposing
/// afterwards made each element a cache miss: by then the buffer had left the cache, and the
/// transpose reads it across the grain.
fn transpose_from_file(
    src: &File,
    m: &Matrix,
    dtype: DType,
    t: &Transform,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let item = m.item;
    let (rows, cols) = (m.rows as usize, m.cols as usize);
    let seg_bytes = rows * item;
    let pitch = pitch(m.rows, m.item as u64) as usize;
    let pitch_bytes = pitch * item;
    let row_bytes = cols * item;
    let group = (COLUMN_GROUP / pitch_bytes.max(1)).clamp(1, cols);
    with_scratch(OUT_SLOT, rows * row_bytes, |out| {
        with_scratch(SPAN_SLOT, group * pitch_bytes, |cb| {
            let mut j0 = 0;
            while j0 < cols {
                let gn = group.min(cols - j0);
                for jj in 0..gn {
                    let at = m.start + ((j0 + jj) as u64 * m.col_stride) * item as u64;
                    src.read_exact_at(&mut cb[jj * pitch_bytes..jj * pitch_bytes + seg_bytes], at)?;
                }
                let b = Block {
                    rows,
                    gn,
                    j0,
                    pitch,
                    row_bytes,
                };
                match item {
                    1 => b.copy::<1>(cb, out),
                    2 => b.copy::<2>(cb, out),
                    4 => b.copy::<4>(cb, out),
                    8 => b.copy::<8>(cb, out),
                    16 => b.copy::<16>(cb, out),
                    _ => b.copy_any(item, cb, out),
                }
                j0 += gn;
            }
            Ok::<(), std::io::Error>(())
        })?;
        let band = (CACHE_SLICE as usize / row_bytes.max(1)).clamp(1, rows.max(1)) * row_bytes;
        for piece in out.chunks_mut(band.max(1)) {
            flush_slice(piece, dtype, t, sink)?;
        }
        Ok(())
    })
}

/// Columns `j0..j0 + gn` of a [`transpose_from_file`] output, from a buffer holding column
/// `j0 + jj` at element `jj * pitch`.
struct Block {
    rows: usize,
    gn: usize,
    j0: usize,
    pitch: usize,
    row_bytes: usize,
}

impl Block {
    /// Row by row: a row reads one item of each of the group's columns, and the next rows read
    /// the same cache lines (at an odd-line pitch they stay in L1), while each row writes one
    /// contiguous stretch of the output.
    fn copy<const N: usize>(&self, cb: &[u8], out: &mut [u8]) {
        for i in 0..self.rows {
            let o = i * self.row_bytes + self.j0 * N;
            let Some(dst) = out.get_mut(o..o + self.gn * N) else {
                return;
            };
            for (jj, d) in dst.chunks_exact_mut(N).enumerate() {
                let s = (i + jj * self.pitch) * N;
                if let Some(el) = cb.get(s..s + N) {
                    d.copy_from_slice(el);
                }
            }
        }
    }

    fn copy_any(&self, item: usize, cb: &[u8], out: &mut [u8]) {
        for i in 0..self.rows {
            let o = i * self.row_bytes + self.j0 * item;
            let Some(dst) = out.get_mut(o..o + self.gn * item) else {
                return;
            };
            for (jj, d) in dst.chunks_exact_mut(item).enumerate() {
                let s = (i + jj * self.pitch) * item;
                if let Some(el) = cb.get(s..s + item) {
                    d.copy_from_slice(el);
                }
            }
        }
    }
}

/// [`with_scratch`]'s buffer for source bytes (a span, or compact segments).
const SPAN_SLOT: usize = 0;
/// [`with_scratch`]'s buffer for gathered output.
const OUT_SLOT: usize = 1;
/// Largest scratch buffer a thread keeps for its next piece, by slot: a piece's compact
/// segments with their padding (see [`pitch`]) fit, and so does a transposed piece's output.
const KEEP: [usize; 2] = [(PIECE + PIECE / 4) as usize, TRANSPOSED_PIECE as usize];

thread_local! {
    /// Each thread's scratch buffers, kept between pieces: fresh ones cost a page fault and
    /// zeroing per 4 KiB (a tenth of the time of a transposed matrix's conversion).
    static SCRATCH: [Cell<Vec<u8>>; 2] = const { [Cell::new(Vec::new()), Cell::new(Vec::new())] };
}

/// Runs `f` on a buffer of `len` bytes, this thread's scratch buffer `slot` when it is large
/// enough. The contents are whatever the last user left: `f` must write before it reads.
/// A buffer of at most [`KEEP`] bytes is kept for the next call; nested calls for the same
/// slot get buffers of their own.
fn with_scratch<R>(slot: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = SCRATCH.try_with(|s| s[slot].take()).unwrap_or_default();
    if buf.len() < len {
        // Not `resize`: that would copy the old contents first.
        buf = vec![0u8; len];
    }
    let r = f(&mut buf[..len]);
    if KEEP.get(slot).is_some_and(|&keep| buf.len() <= keep) {
        let _ = SCRATCH.try_with(|s| s[slot].set(buf));
    }
    r
}

/// Cache line size assumed by [`pitch`].
const LINE: u64 = 64;

/// Elements between the starts of two segments of `seg` elements in a compact buffer.
///
/// Segments are padded to an odd number of cache lines when they span a few lines or more:
/// at a power-of-two pitch (a 2 KiB segment of a transposed f32 matrix, say) the lines a
/// transpose touches at once all fall into the same few sets of the L1 and L2 caches and evict
/// each other on every access; an odd pitch spreads them over every set. Padding costs at most
/// one line in 16. Item sizes that do not divide a line are not padded.
fn pitch(seg: u64, itemsize: u64) -> u64 {
    let bytes = seg * itemsize;
    if itemsize == 0 || !LINE.is_multiple_of(itemsize) || bytes < 16 * LINE {
        return seg;
    }
    let lines = bytes.div_ceil(LINE) | 1;
    lines * LINE / itemsize
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
    // Written but not yet handed to writeback.
    let mut pending = dst_off;
    stream_strided(src, v, dtype, t, &mut |piece| {
        dst.write_all_at(piece, at)?;
        at += piece.len() as u64;
        if at - pending >= WRITEBACK_STEP {
            start_writeback(dst, pending, at - pending);
            pending = at;
        }
        Ok(())
    })?;
    start_writeback(dst, pending, at - pending);
    Ok(())
}

/// Output written between two [`start_writeback`] calls of [`copy_strided`].
const WRITEBACK_STEP: u64 = 4 << 20;

/// Asks the kernel to start writing `len` bytes of `f` at `off` to disk now, without waiting.
///
/// A gather is CPU work: without this its output sits in the page cache until the final fsync,
/// which then writes the whole file while nothing else happens (a transposed 268 MB matrix:
/// about half a second of gathering, then the same again of fsync). Started as it goes, the
/// disk writes while the next pieces are gathered. Only a hint: errors are ignored (the fsync
/// that makes the file durable reports them).
pub fn start_writeback(f: &File, off: u64, len: u64) {
    if len == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call on an open descriptor; it reads no user memory.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, off, len);
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
    with_scratch(OUT_SLOT, (v.nbytes() as usize).min(BUF).max(rb), |out| {
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
    })
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
    with_scratch(OUT_SLOT, band as usize * row_bytes, |out| {
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
                    1 => tile.copy::<1>(data, out),
                    2 => tile.copy::<2>(data, out),
                    4 => tile.copy::<4>(data, out),
                    8 => tile.copy::<8>(data, out),
                    16 => tile.copy::<16>(data, out),
                    _ => tile.copy_any(item, data, out),
                }
                j0 += jn;
            }
            flush_slice(&mut out[..br as usize * row_bytes], dtype, t, sink)?;
            i0 += br;
        }
        Ok(())
    })
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
        assert_eq!(v.piece_size(), TRANSPOSED_PIECE);
        for p in v.pieces() {
            assert!(p.nbytes() <= TRANSPOSED_PIECE);
            joined.extend(logical(&p, &storage[p.offset as usize..]));
        }
        assert!(
            joined == logical(&v, &storage),
            "pieces reassemble the view"
        );
    }

    /// Element-by-element reference for any item size.
    fn naive_items(v: &Strided, storage: &[u8]) -> Vec<u8> {
        let n: u64 = v.shape.iter().product();
        let item = v.itemsize as usize;
        let mut out = Vec::with_capacity(n as usize * item);
        for mut flat in 0..n {
            let mut at = v.offset;
            for d in (0..v.shape.len()).rev() {
                at += (flat % v.shape[d]) * v.stride[d];
                flat /= v.shape[d];
            }
            let at = at as usize * item;
            out.extend_from_slice(&storage[at..at + item]);
        }
        out
    }

    #[test]
    fn pitch_pads_long_segments_to_an_odd_number_of_lines() {
        for item in [1u64, 2, 4, 8, 16] {
            for seg_bytes in [64u64, 1000, 1024, 1088, 2048, 4096, 6000, 1 << 20] {
                let seg = seg_bytes / item;
                let p = pitch(seg, item);
                assert!(p >= seg, "{item} {seg}");
                if seg * item >= 16 * LINE {
                    assert_eq!(p * item % LINE, 0, "{item} {seg}");
                    assert_eq!(p * item / LINE % 2, 1, "{item} {seg}");
                    assert!((p - seg) * item <= 2 * LINE, "{item} {seg}");
                } else {
                    assert_eq!(p, seg);
                }
            }
        }
        // Item sizes that do not divide a line, and empty items, are left alone.
        assert_eq!(pitch(1000, 3), 1000);
        assert_eq!(pitch(1000, 24), 1000);
        assert_eq!(pitch(1000, 0), 1000);
    }

    /// A deterministic stream of numbers for the randomized tests.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n.max(1)
        }
    }

    #[test]
    fn streamed_views_of_every_item_size_match_a_naive_walk() {
        // Storage of 6 MB: large enough for padded segments and several pieces.
        let storage: Vec<u8> = (0..6_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let f = file_with(&storage);
        let mut rng = Lcg(7);
        let mut views = Vec::new();
        for item in [1u64, 2, 3, 4, 8, 16] {
            let elems = storage.len() as u64 / item;
            // Transposed matrices (strides (1, N), N >= rows), whole and sliced, with segments
            // from a few bytes to several KiB: padded and unpadded compact buffers.
            for (rows, cols, extra, off) in [
                (300, 700, 0, 0),
                (1024, 300, 0, 0),
                (600, 257, 5, 3),
                (2048 / item, 500, 0, 1),
                (4096 / item, 200, 16, 0),
            ] {
                let cs = rows + extra;
                if off + (rows - 1) + (cols - 1) * cs < elems {
                    views.push(Strided {
                        base: 0,
                        offset: off,
                        shape: vec![rows, cols],
                        stride: vec![1, cs],
                        itemsize: item,
                    });
                }
            }
            // Sparse ones, read through compact buffers of padded segments: a slice of a
            // transposed matrix and rows far apart.
            for (shape, stride) in [
                (vec![2048 / item, 100], vec![1, 8192 / item * 2]),
                (vec![40, 1200 / item], vec![16384 / item, 1]),
                (vec![3, 1100 / item, 30], vec![0, 1, 40000 / item]),
            ] {
                views.push(Strided {
                    base: 0,
                    offset: 2,
                    shape,
                    stride,
                    itemsize: item,
                });
            }
            // Random 2- to 4-D views with permuted, stepped, expanded and size-1 dimensions.
            let mut made = 0;
            while made < 12 {
                let nd = 2 + rng.below(3) as usize;
                let shape: Vec<u64> = (0..nd).map(|_| 1 + rng.below(40)).collect();
                let mut stride: Vec<u64> = (0..nd)
                    .map(|_| match rng.below(5) {
                        0 => 0,
                        1 => 1,
                        _ => 1 + rng.below(3000),
                    })
                    .collect();
                if rng.below(2) == 0 {
                    stride[0] = 1;
                }
                let offset = rng.below(1000);
                let v = Strided {
                    base: 0,
                    offset,
                    shape,
                    stride,
                    itemsize: item,
                };
                if v.span().1 <= elems {
                    views.push(v);
                    made += 1;
                }
            }
        }
        let t = Transform::default();
        for v in &views {
            let want = naive_items(v, &storage);
            for piece_size in [PIECE, 64 << 10] {
                let mut got = Vec::new();
                for piece in v.pieces_of(piece_size) {
                    stream_strided(&f, &piece, DType::U8, &t, &mut |p| {
                        got.extend_from_slice(p);
                        Ok(())
                    })
                    .unwrap();
                }
                assert!(got == want, "{v:?} in pieces of {piece_size}");
            }
            // In memory, from the span.
            let (lo, hi) = v.span();
            let span = &storage[(lo * v.itemsize) as usize..(hi * v.itemsize) as usize];
            let mut got = Vec::new();
            gather(span, v, DType::U8, &t, &mut |p| {
                got.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
            assert!(got == want, "{v:?} from memory");
        }
    }

    #[test]
    fn copies_to_a_file_match_after_scratch_buffers_are_reused() {
        // A large transposed view leaves its scratch buffers full of its bytes; smaller views
        // after it must not see any of them.
        let storage: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
        let f = file_with(&storage);
        let views = [
            Strided {
                base: 0,
                offset: 0,
                shape: vec![1000, 1900],
                stride: vec![1, 1000],
                itemsize: 4,
            },
            Strided {
                base: 0,
                offset: 5,
                shape: vec![700, 900],
                stride: vec![1, 2100],
                itemsize: 4,
            },
            Strided {
                base: 0,
                offset: 1,
                shape: vec![33, 40],
                stride: vec![1, 35],
                itemsize: 2,
            },
        ];
        let t = Transform::default();
        for v in &views {
            let want = naive_items(v, &storage);
            let dst = tempfile::tempfile().unwrap();
            let mut at = 100;
            for piece in v.pieces_of(1 << 20) {
                copy_strided(&f, &piece, DType::U8, &t, &dst, at).unwrap();
                at += piece.nbytes();
            }
            let mut got = vec![0u8; want.len()];
            dst.read_exact_at(&mut got, 100).unwrap();
            assert!(got == want, "{v:?}");
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
