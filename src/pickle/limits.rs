//! The one set of bounds the tool applies to a file, with one set of defaults. Every bound is
//! raised by the CLI flag named beside it, and every error that reports one names that flag.
//! Real checkpoints stay far below the defaults; they exist so a hostile file cannot make the
//! tool run forever or exhaust memory.

/// Every bound on one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Opcodes executed by one pickle (`--max-pickle-ops`).
    pub max_ops: u64,
    /// Items on the machine's stack plus open marks (`--max-stack`).
    pub max_stack: usize,
    /// Memo entries (`--max-memo`).
    pub max_memo: usize,
    /// Length of one string or bytes argument (`--max-string-bytes`).
    pub max_string: u64,
    /// Size of one pickle: `data.pkl`, a legacy or plain pickle, a tar member
    /// (`--max-pickle-bytes`).
    pub max_pickle_bytes: u64,
    /// Entries of a zip archive (`--max-zip-entries`).
    pub max_zip_entries: u64,
    /// Total bytes of compressed zip members once inflated (`--max-inflated-bytes`).
    pub max_inflated_bytes: u64,
    /// Tensors converted (`--max-tensors`).
    pub max_tensors: u64,
    /// Elements of any one tensor (`--max-tensor-elements`).
    pub max_tensor_elements: u64,
    /// Nesting of containers walked in the object tree (`--max-depth`).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ops: 200_000_000,
            max_stack: 10_000_000,
            max_memo: 10_000_000,
            max_string: 1 << 32,
            max_pickle_bytes: 256 << 20,
            max_zip_entries: 10_000_000,
            max_inflated_bytes: 1 << 40,
            max_tensors: 10_000_000,
            max_tensor_elements: 1 << 40,
            max_depth: 1000,
        }
    }
}
