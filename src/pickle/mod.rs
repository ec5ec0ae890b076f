//! The restricted pickle virtual machine. It executes every opcode of protocols 0 to 5 but never
//! imports, resolves or calls anything: GLOBAL pushes a name, and REDUCE/NEWOBJ/BUILD on a name it
//! does not understand produce inert [`Object`]s. A [`Host`] (the torch layer) may give meaning to
//! persistent ids and to a closed set of calls. This module knows nothing of torch.

mod machine;
pub mod ops;
mod value;

pub use machine::{GlobalUse, Host, Limits, Loaded, NoHost, load};
pub use value::{Dict, Global, Object, ObjectOrigin, Seq, Value, truncate};

/// A pickle that could not be executed: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {msg}")]
pub struct PickleError {
    /// Offset of the opcode in the pickle.
    pub offset: usize,
    /// What was expected and what was found.
    pub msg: String,
}

impl PickleError {
    /// An error at `offset`.
    pub fn new(offset: usize, msg: impl Into<String>) -> Self {
        PickleError {
            offset,
            msg: msg.into(),
        }
    }
}

#[cfg(test)]
mod tests;
