//! # safetensorize
//!
//! Converts PyTorch pickle checkpoints (`torch.save` files: `.pt`, `.pth`, `.bin`, `.ckpt`) into
//! safetensors files **without executing pickle code**. A restricted pickle VM understands only
//! the torch rebuild and storage calls; every other global stays an inert name, never imported or
//! called. Tensor bytes are copied from the checkpoint straight to their place in the output, in
//! parallel, and the output appears only once it is complete.
//!
//! ```no_run
//! use std::path::Path;
//! use safetensorize::{ConvertOptions, convert};
//!
//! let report = convert(
//!     Path::new("pytorch_model.bin"),
//!     Path::new("model.safetensors"),
//!     &ConvertOptions::default(),
//!     &|_bytes| {},
//! )?;
//! println!("{} tensors, {} bytes", report.tensors, report.bytes);
//! # Ok::<(), safetensorize::Error>(())
//! ```
#![deny(missing_docs)]

mod checkpoint;
pub mod container;
mod error;
pub mod pickle;
pub mod torch;
pub mod tree;
pub mod writer;

pub use checkpoint::{Checkpoint, ConvertOptions, ConvertReport, MAX_TENSOR_BYTES, OpenOptions, Selection, TensorInfo, convert, default_output};
pub use error::{Error, ErrorKind, Result};
