//! Moving contiguous tensor bytes from the checkpoint to their offsets in the output: in-kernel
//! copies, or a bounded buffer when a byte-order or sign fix is needed.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::dtype::DType;
use crate::layout::{Transform, apply_transform};

/// Largest piece of one contiguous copy handed to a worker.
pub const CHUNK: u64 = 64 << 20;
/// Buffer size for transformed data.
const BUF: usize = 8 << 20;

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
            // The disk starts on these bytes now rather than at the final fsync.
            crate::layout::start_writeback(dst, dst_off + done, n as u64);
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
