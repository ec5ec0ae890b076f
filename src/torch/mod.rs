//! What torch globals mean: storage types and dtypes, the rebuild calls that make tensors, and
//! persistent ids. Everything else the pickle names stays inert data.

mod dtype;
mod host;

pub use dtype::{DTYPES, DType, DTypeInfo};
pub use host::{NotATensor, NumpyArray, StorageRef, TensorRef, TorchHost};
