//! Many small contiguous copies in few system calls.
//!
//! One `copy_file_range` per tensor spends more in the system call than in the copy when a
//! checkpoint holds many small tensors. Here small copies are taken in output order, in windows
//! of bounded output span: each window's pieces are read into one buffer laid out as the output,
//! in source order, the pieces a few bytes apart in the source (torch zip records are separated
//! by their local headers) with one `pread` of their whole span into a staging buffer, and the
//! window is written with one `pwrite` per run of pieces adjacent in the output (one for a
//! window of copies only).
//!
//! Output order rather than source order: the output is written in large sequential pieces (a
//! write costs more per call than a read from the page cache), and reading through a small gap
//! is safe where writing through one would clobber another job's bytes.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use super::{Job, JobKind};
use crate::error::ErrorKind;

/// Copies at least this long are not batched: they stay in-kernel (`copy_file_range`), where
/// the system call is a small part of the copy.
pub const SMALL: u64 = 256 << 10;
/// Largest output span of one window (and the size of its buffer). 100,000 tensors of 256 B in
/// windows of 1, 2, 4 or 8 MiB take 279, 243, 222 or 210 reads; a larger buffer costs memory
/// and first-touch page faults (10,000 tensors of 1 KiB in 4 MiB windows: 1.5 ms zeroing it).
pub const WINDOW: u64 = 2 << 20;
/// A source gap up to this long between two pieces of a window is read through: reading it
/// from the page cache costs less than another system call.
const GAP: u64 = 4096;
/// Largest source span read at once into the staging buffer (a single piece may be longer, up
/// to [`SMALL`]).
const STAGE: u64 = 256 << 10;

fn src_off(j: &Job) -> Option<u64> {
    match j.kind {
        JobKind::Copy { src_off } => Some(src_off),
        _ => None,
    }
}

/// Whether a job goes through a window rather than on its own: a small plain copy whose source
/// and output ranges fit in 64 bits.
pub fn batchable(j: &Job) -> bool {
    j.len < SMALL
        && src_off(j).and_then(|s| s.checked_add(j.len)).is_some()
        && j.dst.checked_add(j.len).is_some()
}

/// Groups batchable `jobs` (sorted by output offset) into windows of consecutive jobs spanning
/// at most `window` bytes of output (a job alone may span up to [`SMALL`]).
pub fn group(jobs: &[&Job], window: u64) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut i = 0;
    while let Some(first) = jobs.get(i) {
        let start = first.dst;
        let mut k = i + 1;
        while let Some(j) = jobs.get(k) {
            match j.dst.checked_add(j.len) {
                Some(end) if j.dst >= start && end - start <= window => k += 1,
                _ => break,
            }
        }
        groups.push(i..k);
        i = k;
    }
    groups
}

/// Runs windows with reused buffers.
#[derive(Default)]
pub struct Batcher {
    buf: Vec<u8>,
    stage: Vec<u8>,
    order: Vec<(usize, u64, usize)>,
}

impl Batcher {
    /// Copies every job of one window (from [`group`]). When the batched path fails the jobs
    /// are run again one by one, so that the error names the tensor whose bytes failed.
    pub fn run(&mut self, jobs: &[&Job], sources: &[File], out: &File) -> Result<(), ErrorKind> {
        if self.try_run(jobs, sources, out).is_err() {
            for j in jobs {
                j.run(sources, out)?;
            }
        }
        Ok(())
    }

    fn try_run(&mut self, jobs: &[&Job], sources: &[File], out: &File) -> io::Result<()> {
        let bad = |what: &str| io::Error::other(what.to_string());
        let Some(start) = jobs.iter().map(|j| j.dst).min() else {
            return Ok(());
        };
        let mut end = start;
        self.order.clear();
        for (i, j) in jobs.iter().enumerate() {
            let s = src_off(j).ok_or_else(|| bad("not a plain copy"))?;
            s.checked_add(j.len)
                .ok_or_else(|| bad("source range past 2^64"))?;
            end = end.max(j.dst.checked_add(j.len).ok_or_else(|| bad("past 2^64"))?);
            if j.len > 0 {
                self.order.push((j.source, s, i));
            }
        }
        let span = usize::try_from(end - start).map_err(io::Error::other)?;
        if span as u64 > WINDOW.max(SMALL) {
            return Err(bad("window too large"));
        }
        if self.buf.len() < span {
            self.buf.resize(span, 0);
        }
        self.order.sort_unstable();
        // Read, in source order, each run of pieces at most GAP apart with one call into the
        // staging buffer, and place its pieces in the window.
        let mut k = 0;
        while let Some(&(source, at, _)) = self.order.get(k) {
            let src = sources.get(source).ok_or_else(|| bad("no such source"))?;
            let mut next = at;
            let first = k;
            while let Some(&(s_idx, s, i)) = self.order.get(k) {
                let e = s + jobs[i].len;
                if s_idx != source || s < next || s - next > GAP || (k > first && e - at > STAGE) {
                    break;
                }
                next = e;
                k += 1;
            }
            let n = (next - at) as usize;
            if self.stage.len() < n {
                self.stage.resize(n, 0);
            }
            src.read_exact_at(&mut self.stage[..n], at)?;
            for &(_, s, i) in &self.order[first..k] {
                let j = &jobs[i];
                let (from, to) = ((s - at) as usize, (j.dst - start) as usize);
                let len = j.len as usize;
                self.buf[to..to + len].copy_from_slice(&self.stage[from..from + len]);
            }
        }
        // Write each run of pieces adjacent in the output with one call.
        let buf = &self.buf[..span];
        let mut k = 0;
        while let Some(first) = jobs.get(k) {
            let at = first.dst;
            let mut next = at;
            while let Some(j) = jobs.get(k) {
                if j.dst != next {
                    break;
                }
                next += j.len;
                k += 1;
            }
            if next > at {
                let (a, b) = ((at - start) as usize, (next - start) as usize);
                out.write_all_at(&buf[a..b], at)?;
                // The disk starts on this run now rather than at the final fsync.
                crate::layout::start_writeback(out, at, next - at);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    fn source(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn copy(name: &str, src: u64, dst: u64, len: u64) -> Job<'_> {
        Job {
            source: 0,
            kind: JobKind::Copy { src_off: src },
            dst,
            len,
            tensor: name,
        }
    }

    /// Names "t0", "t1", …, for jobs to borrow.
    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    impl Job<'_> {
        fn kind_src(&self) -> u64 {
            src_off(self).unwrap()
        }
    }

    fn refs<'a>(jobs: &'a [Job<'a>]) -> Vec<&'a Job<'a>> {
        jobs.iter().collect()
    }

    fn read_all(f: &File) -> Vec<u8> {
        let mut out = vec![0; f.metadata().unwrap().len() as usize];
        f.read_exact_at(&mut out, 0).unwrap();
        out
    }

    /// Many tiny pieces with gaps (some overlapping in the source), placed in the output in a
    /// shuffled order with some runs kept adjacent; every output byte is checked.
    #[test]
    fn many_tiny_jobs_with_gaps_land_byte_for_byte() {
        let mut rng = 7u64;
        let src_bytes: Vec<u8> = (0..1_500_000).map(|_| lcg(&mut rng) as u8).collect();
        let src = source(&src_bytes);
        let mut pieces = Vec::new();
        let mut at = 0u64;
        while pieces.len() < 3000 {
            let len = 1 + lcg(&mut rng) % 300;
            let gap = match lcg(&mut rng) % 100 {
                0 => 5000 + lcg(&mut rng) % 3000, // past GAP: a new read
                1 => 0,
                _ => lcg(&mut rng) % 120,
            };
            let start = if lcg(&mut rng).is_multiple_of(20) {
                at.saturating_sub(len / 2) // overlaps the previous piece
            } else {
                at + gap
            };
            if start + len > src_bytes.len() as u64 {
                break;
            }
            pieces.push((start, len));
            at = at.max(start + len);
        }
        assert_eq!(pieces.len(), 3000);
        // Output order: blocks of source order, shuffled, so that some runs stay adjacent.
        let mut order: Vec<usize> = (0..pieces.len()).collect();
        let mut blocks: Vec<Vec<usize>> = order.chunks(7).map(|c| c.to_vec()).collect();
        for i in (1..blocks.len()).rev() {
            let k = (lcg(&mut rng) as usize) % (i + 1);
            blocks.swap(i, k);
        }
        order = blocks.concat();
        let names = names(order.len());
        let mut jobs = Vec::new();
        let mut dst = 13u64;
        let mut expected = vec![0u8; 13];
        for &i in &order {
            let (s, l) = pieces[i];
            jobs.push(copy(&names[i], s, dst, l));
            expected.extend_from_slice(&src_bytes[s as usize..(s + l) as usize]);
            dst += l;
        }
        jobs.sort_by_key(|j| j.dst);
        for window in [1, 512, 64 << 10, WINDOW] {
            let out = tempfile::tempfile().unwrap();
            out.set_len(dst).unwrap();
            let groups = group(&refs(&jobs), window);
            assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), jobs.len());
            if window == WINDOW {
                assert!(groups.len() < jobs.len() / 20, "{} windows", groups.len());
            }
            let mut b = Batcher::default();
            for g in &groups {
                b.run(&refs(&jobs[g.clone()]), std::slice::from_ref(&src), &out)
                    .unwrap();
            }
            assert!(read_all(&out) == expected, "window {window}");
        }
    }

    #[test]
    fn runs_longer_than_the_staging_buffer() {
        // 3000 pieces of 100 bytes, 10 bytes apart in the source (330,000 bytes, more than
        // STAGE), contiguous in the output.
        let src_bytes: Vec<u8> = (0..330_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let src = source(&src_bytes);
        let names = names(3000);
        let jobs: Vec<Job> = (0..3000)
            .map(|i| copy(&names[i as usize], 110 * i, 100 * i, 100))
            .collect();
        let groups = group(&refs(&jobs), WINDOW);
        assert_eq!(groups, vec![0..3000]);
        let out = tempfile::tempfile().unwrap();
        out.set_len(300_000).unwrap();
        Batcher::default()
            .run(&refs(&jobs), std::slice::from_ref(&src), &out)
            .unwrap();
        let want: Vec<u8> = src_bytes
            .chunks(110)
            .flat_map(|c| c[..100].to_vec())
            .collect();
        assert!(read_all(&out) == want);
    }

    #[test]
    fn windows_are_bounded_and_large_copies_are_not_batched() {
        assert!(batchable(&copy("a", 0, 0, SMALL - 1)));
        assert!(!batchable(&copy("big", 0, 0, SMALL)));
        assert!(!batchable(&copy("wraps", u64::MAX, 0, 2)));
        assert!(!batchable(&copy("wraps", 0, u64::MAX, 2)));
        let mut strided = copy("t", 0, 0, 2);
        strided.kind = JobKind::Transformed {
            src_off: 0,
            dtype: crate::dtype::DType::F32,
            transform: Default::default(),
        };
        assert!(!batchable(&strided));
        // A window's output span is bounded.
        let jobs: Vec<Job> = (0..100).map(|i| copy("x", 0, i * 100, 100)).collect();
        let groups = group(&refs(&jobs), 1000);
        assert_eq!(groups.len(), 10);
        assert!(groups.iter().all(|g| g.len() == 10), "{groups:?}");
        assert_eq!(group(&refs(&jobs), WINDOW), vec![0..100]);
    }

    #[test]
    fn pieces_of_two_sources_in_one_window() {
        let a: Vec<u8> = (0..5000u32).map(|i| (i % 256) as u8).collect();
        let b: Vec<u8> = (0..5000u32).map(|i| (255 - i % 256) as u8).collect();
        let sources = [source(&a), source(&b)];
        let mut jobs = Vec::new();
        let mut want = Vec::new();
        let names = names(40);
        for i in 0..40u64 {
            let mut j = copy(&names[i as usize], (i * 97) % 4000, i * 50, 50);
            j.source = (i % 2) as usize;
            let src = if i % 2 == 0 { &a } else { &b };
            let s = j.kind_src();
            want.extend_from_slice(&src[s as usize..s as usize + 50]);
            jobs.push(j);
        }
        let out = tempfile::tempfile().unwrap();
        out.set_len(2000).unwrap();
        Batcher::default()
            .run(&refs(&jobs), &sources, &out)
            .unwrap();
        assert_eq!(read_all(&out), want);
    }

    #[test]
    fn a_failed_read_names_its_tensor() {
        let src = source(&[1u8; 1000]);
        // "beyond" reads past the end of the source: the window read fails, and so does that
        // one job on its own.
        let jobs = vec![
            copy("first", 0, 0, 100),
            copy("second", 200, 100, 100),
            copy("beyond", 950, 200, 100),
        ];
        assert_eq!(group(&refs(&jobs), WINDOW), vec![0..3]);
        let out = tempfile::tempfile().unwrap();
        out.set_len(300).unwrap();
        let e = Batcher::default()
            .run(&refs(&jobs), std::slice::from_ref(&src), &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"beyond\""), "{e}");
        assert!(!e.contains("first") && !e.contains("second"), "{e}");
    }

    #[test]
    fn a_failed_write_names_a_tensor() {
        let src = source(&[1u8; 1000]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, [0u8; 300]).unwrap();
        let read_only = File::open(&path).unwrap();
        let jobs = vec![copy("first", 0, 0, 100), copy("second", 200, 100, 100)];
        let e = Batcher::default()
            .run(&refs(&jobs), std::slice::from_ref(&src), &read_only)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"first\""), "{e}");
    }
}
