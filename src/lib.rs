//! # safetensorize
//!
//! Converts PyTorch pickle checkpoints (`torch.save` files: `.pt`, `.pth`, `.bin`, `.ckpt`) into
//! safetensors files **without executing pickle code**. A restricted pickle VM understands only
//! the torch rebuild and storage calls; every other global stays an inert name, never imported or
//! called. Tensor bytes are copied from the checkpoint straight to their place in the output, in
//! parallel, and the output appears only once it is complete.
//!
//! ## Convert a file
//!
//! ```no_run
//! use std::path::Path;
//! use safetensorize::{ConvertOptions, convert};
//!
//! let report = convert(
//!     Path::new("pytorch_model.bin"),
//!     Path::new("model.safetensors"),
//!     &ConvertOptions { key: Some("state_dict".into()), ..ConvertOptions::default() },
//!     &|_bytes| {},
//! )?;
//! println!("{} tensors, {} bytes", report.tensors, report.bytes);
//! # Ok::<(), safetensorize::Error>(())
//! ```
//!
//! ## Open a checkpoint, list its tensors, read one
//!
//! [`Checkpoint::open`] reads only the pickle; [`Checkpoint::select`] picks the tensors `convert`
//! would write (the default rule, or a dotted key) and checks each against its storage;
//! [`Checkpoint::read_tensor`] returns one tensor's bytes, row-major and little-endian.
//!
//! ```
//! use safetensorize::Checkpoint;
//!
//! let ckpt = Checkpoint::open("tests/fixtures/ckpt/lightning.ckpt".as_ref())?;
//! let sel = ckpt.select(None, false)?; // Lightning: the default rule takes `state_dict`
//! assert_eq!(sel.key, "state_dict");
//! for t in &sel.tensors {
//!     println!("{} {} {:?} {} bytes", t.name, t.dtype, t.shape, t.nbytes);
//! }
//! let bytes = ckpt.read_tensor(&sel, "model.fc1.weight")?;
//! let first = f32::from_le_bytes(bytes[..4].try_into().unwrap());
//! assert!(first.is_finite());
//! # Ok::<(), safetensorize::Error>(())
//! ```
//!
//! ## Convert what you selected, then prove it
//!
//! ```
//! use safetensorize::verify::{VerifyOptions, verify};
//! use safetensorize::{Checkpoint, ConvertOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let out = dir.path().join("model.safetensors");
//! let src = std::path::Path::new("tests/fixtures/ckpt/views_zip.pt");
//! let ckpt = Checkpoint::open(src)?;
//! let sel = ckpt.select(None, false)?;
//! ckpt.write(&sel, &out, &ConvertOptions::default(), &|_| {})?;
//! let report = verify(src, &out, &VerifyOptions::default(), &|_| {})?;
//! assert!(report.ok);
//! # Ok::<(), safetensorize::Error>(())
//! ```
//!
//! [`inspect::inspect`] describes a checkpoint or a safetensors file without reading tensor data.
//! Every error names the file and, for the usual mistakes (an HTML page saved as `.bin`, a Git
//! LFS pointer, a truncated download, GGUF, numpy, Keras or TensorFlow files), says what to do.
#![deny(missing_docs)]

mod checkpoint;
pub mod container;
pub mod dtype;
mod error;
pub mod inspect;
pub mod layout;
pub mod migrate;
pub mod pickle;
pub mod pipeline;
pub mod scan;
pub mod torch;
pub mod tree;
pub mod verify;
pub mod writer;

pub use checkpoint::{
    Checkpoint, ConvertOptions, ConvertReport, MAX_TENSOR_BYTES, OpenOptions, Selection,
    TensorInfo, default_output, write_merged,
};
pub use checkpoint::{READ_CHUNK, TensorReader};
pub use error::{Error, ErrorKind, Result};
pub use pipeline::{Pipeline, check_output, convert};
