//! The restricted pickle virtual machine. It executes every opcode of protocols 0 to 5 but never
//! imports, resolves or calls anything: GLOBAL pushes a name, and REDUCE/NEWOBJ/BUILD on a name it
//! does not understand produce inert [`Object`]s. A [`Host`] (the torch layer) may give meaning to
//! persistent ids and to a closed set of calls. This module knows nothing of torch.
//!
//! The stack, mark, memo, frame and limit rules live once, in [`engine`]'s [`Machine`], generic
//! over what a value is: [`load`] runs it strictly over [`Value`]s; the scan runs it in
//! [`Mode::Superset`] over its own symbols.

pub mod engine;
mod limits;
mod machine;
pub mod ops;
mod value;

pub use engine::{
    Limits, Machine, MemoReads, Mode, Recognised, RecordKey, Semantics, TensorRecord, py3_module,
};
pub use machine::{GlobalUse, Host, Loaded, NoHost, load, load_opcode_by_opcode, load_with_reads};
pub use value::{Dict, Global, Object, ObjectOrigin, Seq, Value, truncate};

/// A pickle that could not be executed: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {msg}")]
pub struct PickleError {
    /// Offset of the opcode in the pickle.
    pub offset: usize,
    /// What was expected and what was found.
    pub msg: String,
    kind: PickleErrorKind,
}

/// What kind of failure a [`PickleError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickleErrorKind {
    /// The bytes are not a pickle the machine can run (a bad opcode or operand, a broken rule).
    Malformed,
    /// The bytes end before the STOP opcode.
    Truncated,
    /// A configured bound was reached; the message names the flag that raises it.
    Limit(Limit),
}

/// Which of the [`Limits`] a pickle exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Opcodes executed (`--max-pickle-ops`).
    Ops,
    /// Stack depth (`--max-stack`).
    Stack,
    /// Memo entries (`--max-memo`).
    Memo,
    /// Length of one string or bytes argument (`--max-string-bytes`), met while decoding.
    String,
}

/// Why a [`Semantics`] (or the VM's [`Host`]) refused an opcode: what happened and, when a
/// limit was the cause (a nested pickle over the caller's limits), which one. The machine turns
/// it into a [`PickleError`] at the opcode's offset, of the same kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was expected and what was found.
    pub msg: String,
    /// The limit that stopped a nested pickle, if one did.
    pub limit: Option<Limit>,
}

impl Refusal {
    /// A refusal because `inner` (a nested pickle) failed: a limit error stays one.
    pub fn nested(inner: &PickleError, msg: impl Into<String>) -> Self {
        Refusal {
            msg: msg.into(),
            limit: match inner.kind {
                PickleErrorKind::Limit(l) => Some(l),
                _ => None,
            },
        }
    }
}

impl From<String> for Refusal {
    fn from(msg: String) -> Self {
        Refusal { msg, limit: None }
    }
}

impl From<&str> for Refusal {
    fn from(msg: &str) -> Self {
        Refusal::from(msg.to_string())
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl PickleError {
    /// The error for `refusal` at the opcode at `offset`: a limit if a limit caused it.
    pub fn refused(offset: usize, refusal: Refusal) -> Self {
        match refusal.limit {
            Some(l) => PickleError::limit(offset, l, refusal.msg),
            None => PickleError::new(offset, refusal.msg),
        }
    }

    /// A malformed pickle at `offset`.
    pub fn new(offset: usize, msg: impl Into<String>) -> Self {
        PickleError {
            offset,
            msg: msg.into(),
            kind: PickleErrorKind::Malformed,
        }
    }

    /// A pickle that ends before its STOP; `offset` is where the bytes ran out.
    pub fn truncated(offset: usize, msg: impl Into<String>) -> Self {
        PickleError {
            kind: PickleErrorKind::Truncated,
            ..PickleError::new(offset, msg)
        }
    }

    /// A pickle that exceeds `limit` at the opcode at `offset`; `msg` names the flag.
    pub fn limit(offset: usize, limit: Limit, msg: impl Into<String>) -> Self {
        PickleError {
            kind: PickleErrorKind::Limit(limit),
            ..PickleError::new(offset, msg)
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> PickleErrorKind {
        self.kind
    }

    /// True when a configured limit stopped the pickle (not a defect of the file).
    pub fn is_limit(&self) -> bool {
        matches!(self.kind, PickleErrorKind::Limit(_))
    }

    /// True when the bytes end before the pickle's STOP.
    pub fn is_truncated(&self) -> bool {
        self.kind == PickleErrorKind::Truncated
    }
}

#[cfg(test)]
mod tests;
