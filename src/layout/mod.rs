//! How a tensor's logical bytes are laid out in its storage: strided views walked in row-major
//! order, and the byte swaps and sign fixes that turn stored values into little-endian ones.
//! The writer fills outputs with it and the reader returns tensors with it; it knows nothing
//! of pickles, torch or safetensors.

mod strided;
mod transform;

pub use strided::{
    PIECE, Strided, copy_strided, gather, prefetch, start_writeback, stream_strided,
};
pub use transform::{Transform, apply_transform, negation_supported};
