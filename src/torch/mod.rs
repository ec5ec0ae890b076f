//! What torch globals mean: storage types and dtypes, the rebuild calls that make tensors, and
//! persistent ids. Everything else the pickle names stays inert data.

pub mod globals;
mod host;

pub use globals::{GlobalClass, classify, classify_global};
pub use host::{NotATensor, NumpyArray, StorageRef, TensorRef, TorchHost};
