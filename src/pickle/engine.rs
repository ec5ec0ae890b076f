//! The one pickle machine: the stack, mark, memo, frame and limit rules, generic over what a
//! value is.
//!
//! [`Machine`] decodes opcodes and moves values between the stack, the marks and the memo; a
//! [`Semantics`] says what the values are. The VM's semantics build [`super::Value`]s (and ask
//! a [`super::Host`] about persistent ids and calls); the scan's semantics build symbols that
//! remember which global is called where.
//!
//! In [`Mode::Strict`] (the VM) the first broken rule stops the machine with an error. In
//! [`Mode::Superset`] (the scan) a broken stack, mark or memo rule is reported to the semantics
//! as an [`Anomaly`] and answered with a placeholder, and the walk goes on: everything the strict
//! machine would reach, the superset machine reaches too, so a payload cannot hide behind an
//! error. Both modes stop at the same limits and where the bytes stop decoding.

use std::collections::HashMap;

mod record;

pub use super::limits::Limits;
use super::ops::{DecodeError, Decoder, Op};
use super::{Limit, PickleError, Refusal};
pub use record::{Recognised, RecordKey, TensorRecord};

/// How the machine treats a pickle that breaks the stack, mark or memo rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stop at the first broken rule with an error, as an unpickler does (the VM).
    Strict,
    /// Report a broken rule as an [`Anomaly`], go on with a placeholder value, and read past a
    /// text number the strict machine rejects (the scan).
    Superset,
}

/// Something the machine noticed while walking, told to [`Semantics::report`].
///
/// The first four are broken rules: the strict machine stops at them with an error instead, so
/// only the superset machine reports them. The others are reported in both modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly<'e> {
    /// An opcode needed a value the stack (above the innermost mark) does not hold.
    Underflow,
    /// An opcode needed a MARK but none is open.
    NoMark,
    /// A memo index read before it was written.
    MemoMiss(u32),
    /// A text number the decoder rejects (`I0x10`); the machine skipped its line and pushed a
    /// placeholder, as CPython's unpickler goes on to what follows.
    UnreadNumber(&'e PickleError),
    /// A PROTO opcode that is not the first opcode, or names a protocol above 5.
    Protocol {
        /// The protocol it names.
        version: u8,
        /// True when it is the pickle's first opcode.
        first: bool,
    },
    /// A FRAME inside an unfinished frame.
    NestedFrame,
    /// A FRAME of this many bytes that runs past the pickle.
    FrameOverrun(u64),
    /// An opcode that starts inside a frame and ends past it.
    FrameCrossed {
        /// The opcode's name.
        opcode: &'static str,
        /// Offset where the frame ends.
        boundary: usize,
    },
    /// STOP with other than exactly one value on the stack, or with marks open.
    StopLeftovers {
        /// Values on the stack.
        values: usize,
        /// Open marks.
        marks: usize,
    },
}

/// A value an opcode makes from its own argument.
#[derive(Debug)]
pub enum Literal<'p> {
    /// INT, BININT*, LONG* and text integers that fit an `i64`.
    Int(i64),
    /// A LONG too large for `i64`: little-endian two's complement.
    BigInt(Vec<u8>),
    /// FLOAT or BINFLOAT.
    Float(f64),
    /// NEWTRUE, NEWFALSE, `I01`/`I00`.
    Bool(bool),
    /// NONE.
    None,
    /// A Python 2 string or a unicode string (bytes that may not be UTF-8), borrowed from the
    /// pickle unless an escape was undone.
    Text(std::borrow::Cow<'p, [u8]>),
    /// BYTES or BYTEARRAY8, borrowed from the pickle.
    Bytes(&'p [u8]),
}

/// Where a persistent id comes from.
#[derive(Debug)]
pub enum PersistentId<'p, V> {
    /// PERSID: a text id, borrowed from the pickle.
    Text(&'p [u8]),
    /// BINPERSID: the value popped from the stack.
    Value(V),
}

/// A call the pickle asks for, with its operands as the stack held them.
#[derive(Debug)]
pub enum Call<V> {
    /// REDUCE: `callable(*args)`.
    Reduce {
        /// The callable.
        callable: V,
        /// The argument tuple.
        args: V,
    },
    /// NEWOBJ: `cls.__new__(cls, *args)`.
    NewObj {
        /// The class.
        cls: V,
        /// The argument tuple.
        args: V,
    },
    /// NEWOBJ_EX: `cls.__new__(cls, *args, **kwargs)`.
    NewObjEx {
        /// The class.
        cls: V,
        /// The argument tuple.
        args: V,
        /// The keyword arguments.
        kwargs: V,
    },
    /// INST: the class named by the opcode, called with the items above the mark.
    Inst {
        /// The class (what [`Semantics::global`] returned for the opcode's name).
        cls: V,
        /// The items above the mark.
        args: Vec<V>,
    },
    /// OBJ: the first item above the mark called with the others.
    Obj {
        /// The items above the mark, the class first (none when the pickle is malformed).
        items: Vec<V>,
    },
}

/// A container built from items (LIST, TUPLE*, DICT, FROZENSET and the EMPTY_* opcodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// DICT, EMPTY_DICT: items are alternating keys and values.
    Dict,
    /// LIST, EMPTY_LIST.
    List,
    /// TUPLE, TUPLE1..3, EMPTY_TUPLE.
    Tuple,
    /// FROZENSET, EMPTY_SET.
    Set,
}

/// Items added to the container on top of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extend {
    /// APPEND: one item.
    Append,
    /// APPENDS: the items above the mark.
    Appends,
    /// SETITEM: a key and a value.
    SetItem,
    /// SETITEMS: alternating keys and values above the mark.
    SetItems,
    /// ADDITEMS: the items above the mark, into a set.
    AddItems,
}

/// Opcodes torch never writes that still have a stack shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exotic {
    /// EXT1/2/4 with this extension registry code: pushes a value.
    Ext(u32),
    /// NEXT_BUFFER: pushes an out-of-band buffer.
    NextBuffer,
    /// READONLY_BUFFER: marks the value on top read-only; pushes nothing.
    ReadonlyBuffer,
}

/// What the values are: the machine moves them, the semantics make them.
///
/// An `Err(refusal)` from any method stops the machine with a [`PickleError`] at the opcode's
/// offset (a limit error if the refusal names a limit), in either mode; semantics meant for the
/// superset mode report instead of failing.
pub trait Semantics<'p> {
    /// What the stack, the marks and the memo hold.
    type Value: Clone;

    /// What the superset machine pushes for a value it could not get.
    fn placeholder(&mut self) -> Self::Value;

    /// Hears about an [`Anomaly`] at the opcode at `at`.
    fn report(&mut self, at: usize, anomaly: Anomaly<'_>);

    /// The value of a literal opcode that spans `at..end` in the pickle.
    fn literal(
        &mut self,
        at: usize,
        end: usize,
        literal: Literal<'p>,
    ) -> Result<Self::Value, Refusal>;

    /// GLOBAL or INST: `module` and `name` as written (lossily decoded, a trailing `\r` cut).
    /// `opcode` is the opcode's name.
    fn global(
        &mut self,
        at: usize,
        module: &str,
        name: &str,
        opcode: &'static str,
    ) -> Result<Self::Value, Refusal>;

    /// STACK_GLOBAL on the two values it popped.
    fn stack_global(
        &mut self,
        at: usize,
        module: Self::Value,
        name: Self::Value,
    ) -> Result<Self::Value, Refusal>;

    /// PERSID or BINPERSID.
    fn persistent_load(
        &mut self,
        at: usize,
        pid: PersistentId<'p, Self::Value>,
    ) -> Result<Self::Value, Refusal>;

    /// REDUCE, NEWOBJ, NEWOBJ_EX, INST or OBJ.
    fn call(&mut self, at: usize, call: Call<Self::Value>) -> Result<Self::Value, Refusal>;

    /// A container made of `items` (empty for the EMPTY_* opcodes).
    fn collection(
        &mut self,
        at: usize,
        kind: Collection,
        items: Vec<Self::Value>,
    ) -> Result<Self::Value, Refusal>;

    /// Adds `items` to `target` (the value under them on the stack).
    fn extend(
        &mut self,
        at: usize,
        target: &Self::Value,
        kind: Extend,
        items: Vec<Self::Value>,
    ) -> Result<(), Refusal>;

    /// BUILD: sets `state` on `target`.
    fn build(&mut self, at: usize, target: &Self::Value, state: Self::Value)
    -> Result<(), Refusal>;

    /// EXT, NEXT_BUFFER or READONLY_BUFFER (`top` is the value on top of the stack for the
    /// last). `Ok(Some(v))` pushes `v`.
    fn exotic(
        &mut self,
        at: usize,
        op: Exotic,
        top: Option<&Self::Value>,
    ) -> Result<Option<Self::Value>, Refusal>;

    /// Whether the strict machine looks for [`TensorRecord`]s at all.
    const TENSOR_RECORDS: bool = false;

    /// The value of the tensor record at `at`: exactly what running its opcodes one by one
    /// would push, with the same effects on the semantics, or `None` to have them run one by
    /// one (which also gives any error at its own opcode).
    fn tensor_record(
        &mut self,
        _at: usize,
        _rec: &TensorRecord<'_, 'p, Self::Value>,
    ) -> Option<Recognised<Self::Value>> {
        None
    }
}

/// Maps Python 2 module names to Python 3 ones, as `pickle`'s compat layer does.
pub fn py3_module(module: &str) -> &str {
    match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        "exceptions" => "builtins",
        other => other,
    }
}

/// The end of a run: what STOP returned and where the pickle ends.
#[derive(Debug)]
pub struct Stopped<V> {
    /// The value STOP popped (a placeholder when the superset machine found none).
    pub value: V,
    /// Offset just past the STOP opcode.
    pub end: usize,
    /// The highest valid PROTO seen (0 when none).
    pub protocol: u8,
}

/// Hashes memo indices by one multiplication: SipHash's protection against chosen keys is not
/// needed, because the memo's size is bounded by `--max-memo` whatever the keys.
#[derive(Default, Clone, Copy)]
struct MemoHash;

impl std::hash::BuildHasher for MemoHash {
    type Hasher = MemoHasher;
    fn build_hasher(&self) -> MemoHasher {
        MemoHasher(0)
    }
}

/// See [`MemoHash`].
struct MemoHasher(u64);

impl std::hash::Hasher for MemoHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The memo. Picklers number their entries 0, 1, 2, ... in order, so those live in a vector
/// (`dense[i]` is entry `i`); any other index (a gap, a huge number) goes to a map. Invariant:
/// every key of `sparse` is at least `dense.len()`, so each index lives in one place.
///
/// With [`Memo::keep_only`], the memo still counts every index written (MEMOIZE numbers its entry
/// by the count, and `--max-memo` bounds it) but keeps the values of the indices the pickle
/// reads back only: torch's pickler memoizes every tuple of every tensor and reads almost none.
struct Memo<V> {
    dense: Vec<V>,
    sparse: HashMap<u32, V, MemoHash>,
    only: Option<Written>,
}

/// The indices written to a memo that keeps only some of its values ([`Memo::keep_only`]).
struct Written {
    /// The indices a GET reads anywhere in the pickle: the only values kept (in `sparse`).
    reads: std::collections::HashSet<u32, MemoHash>,
    /// Every index below this one was written.
    seq: u32,
    /// Indices written above `seq` (each at least `seq`).
    ahead: std::collections::HashSet<u32, MemoHash>,
}

impl<V> Memo<V> {
    fn new() -> Self {
        Memo {
            dense: Vec::new(),
            sparse: HashMap::default(),
            only: None,
        }
    }

    /// From now on keep only the values of `reads` (on an empty memo).
    fn keep_only(&mut self, reads: std::collections::HashSet<u32, MemoHash>) {
        debug_assert!(self.len() == 0);
        self.only = Some(Written {
            reads,
            seq: 0,
            ahead: Default::default(),
        });
    }

    fn len(&self) -> usize {
        match &self.only {
            Some(w) => w.seq as usize + w.ahead.len(),
            None => self.dense.len() + self.sparse.len(),
        }
    }

    fn get(&self, i: u32) -> Option<&V> {
        match self.dense.get(i as usize) {
            Some(v) => Some(v),
            None => self.sparse.get(&i),
        }
    }

    fn contains(&self, i: u32) -> bool {
        match &self.only {
            Some(w) => i < w.seq || w.ahead.contains(&i),
            None => (i as usize) < self.dense.len() || self.sparse.contains_key(&i),
        }
    }

    /// False when index `i` is written but never read back: its value need not be made.
    fn keeps(&self, i: u32) -> bool {
        self.only.as_ref().is_none_or(|w| w.reads.contains(&i))
    }

    /// Stores `v` at `i`; `None` (only for an index not [`Memo::keeps`]) records the write alone.
    fn insert(&mut self, i: u32, v: Option<V>) {
        if let Some(w) = &mut self.only {
            if i == w.seq {
                w.seq = w.seq.saturating_add(1);
                while !w.ahead.is_empty() && w.ahead.remove(&w.seq) {
                    w.seq = w.seq.saturating_add(1);
                }
            } else if i > w.seq {
                w.ahead.insert(i);
            }
            if let Some(v) = v
                && w.reads.contains(&i)
            {
                self.sparse.insert(i, v);
            }
            return;
        }
        // Every value is kept when no pre-pass said otherwise.
        let Some(v) = v else { return };
        let n = self.dense.len();
        if let Some(slot) = self.dense.get_mut(i as usize) {
            *slot = v;
        } else if i as usize == n {
            self.dense.push(v);
            if !self.sparse.is_empty() {
                self.sparse.remove(&i);
                // Entries written ahead of the sequence join it once it reaches them.
                while let Some(next) = u32::try_from(self.dense.len())
                    .ok()
                    .and_then(|k| self.sparse.remove(&k))
                {
                    self.dense.push(next);
                }
            }
        } else {
            self.sparse.insert(i, v);
        }
    }

    /// [`Memo::keep_only`] on a memo that has kept every value so far: the same state as if
    /// it had kept only `reads` from the start (every index written is still counted; the
    /// values nothing reads are dropped).
    fn keep_only_now(&mut self, reads: std::collections::HashSet<u32, MemoHash>) {
        if self.only.is_some() {
            return;
        }
        let dense = std::mem::take(&mut self.dense);
        let sparse = std::mem::take(&mut self.sparse);
        // Every index below `dense.len()` was written; the map holds the ones written ahead.
        let seq = u32::try_from(dense.len()).unwrap_or(u32::MAX);
        let mut ahead = std::collections::HashSet::default();
        for (i, v) in (0u32..).zip(dense) {
            if reads.contains(&i) {
                self.sparse.insert(i, v);
            }
        }
        for (i, v) in sparse {
            ahead.insert(i);
            if reads.contains(&i) {
                self.sparse.insert(i, v);
            }
        }
        self.only = Some(Written { reads, seq, ahead });
    }

    fn clear(&mut self) {
        self.dense = Vec::new();
        self.sparse = HashMap::default();
        if let Some(w) = &mut self.only {
            w.seq = 0;
            w.ahead = Default::default();
        }
    }
}

/// The memo indices a GET reads in the pickle that starts at `start`, up to its STOP; `None`
/// when the opcodes do not decode up to a STOP (the run then keeps every value, and fails where
/// the decoding does).
fn memo_reads(data: &[u8], start: usize) -> Option<std::collections::HashSet<u32, MemoHash>> {
    let mut reads = std::collections::HashSet::default();
    super::ops::memo_gets(data, start, |i| {
        reads.insert(i);
    })?;
    Some(reads)
}

/// The memo indices a pickle reads back ([`MemoReads::of`]), found on one thread while the
/// machine runs the same bytes on another ([`Machine::keep_only_memo_reads_when`]).
pub struct MemoReads(Option<std::collections::HashSet<u32, MemoHash>>);

impl MemoReads {
    /// The GETs of the pickle that starts at `start` in `data` (a pass over its opcodes).
    pub fn of(data: &[u8], start: usize) -> MemoReads {
        MemoReads(memo_reads(data, start))
    }
}

/// The pickle machine: a value stack, a mark stack and a memo, driven by decoded opcodes.
pub struct Machine<'l, 'p, S: Semantics<'p>> {
    sem: S,
    mode: Mode,
    limits: &'l Limits,
    stack: Vec<S::Value>,
    marks: Vec<usize>,
    memo: Memo<S::Value>,
    /// The memo reads a pass on another thread is finding: until they arrive, every value is
    /// kept ([`Machine::keep_only_memo_reads_when`]).
    pending_reads: Option<&'l std::sync::OnceLock<MemoReads>>,
    protocol: u8,
    /// Offset of the opcode being executed.
    at: usize,
    /// Whether tensor records may be taken whole ([`Machine::opcode_by_opcode`]).
    records: bool,
    /// The dimensions of the tensor record being read.
    dims: Vec<i64>,
}

impl<'l, 'p, S: Semantics<'p>> Machine<'l, 'p, S> {
    /// A machine with empty stacks and memo.
    pub fn new(sem: S, mode: Mode, limits: &'l Limits) -> Self {
        Machine {
            sem,
            mode,
            limits,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Memo::new(),
            pending_reads: None,
            protocol: 0,
            at: 0,
            records: true,
            dims: Vec::new(),
        }
    }

    /// Runs every opcode on its own, tensor records too ([`TensorRecord`]): the reference
    /// the shortcut is compared with.
    pub fn opcode_by_opcode(&mut self) {
        self.records = false;
    }

    /// Keeps in the memo only the values that the pickle starting at `start` in `data` reads
    /// back (a GET anywhere before its STOP), on a fresh strict machine about to run that pickle.
    /// What the run does is the same; values nothing reads again are freed as soon as their
    /// user is done with them, instead of living until the end as Python's memo keeps them.
    pub fn keep_only_memo_reads(&mut self, data: &[u8], start: usize) {
        if self.mode != Mode::Strict || self.memo.len() != 0 {
            return;
        }
        if let Some(reads) = memo_reads(data, start) {
            self.memo.keep_only(reads);
        }
    }

    /// [`Machine::keep_only_memo_reads`] with the reads found by another thread (the pickle's
    /// own bytes, [`MemoReads::of`]), so that the run need not wait for that pass: the memo
    /// keeps every value until `reads` is set, then only the ones read back. What the run does
    /// is the same either way.
    pub fn keep_only_memo_reads_when(&mut self, reads: &'l std::sync::OnceLock<MemoReads>) {
        if self.mode != Mode::Strict || self.memo.len() != 0 {
            return;
        }
        self.pending_reads = Some(reads);
    }

    /// Applies the pending memo reads if they have arrived.
    #[inline(always)]
    fn poll_reads(&mut self) {
        if self.pending_reads.is_some() {
            self.take_reads();
        }
    }

    #[cold]
    fn take_reads(&mut self) {
        if let Some(cell) = self.pending_reads
            && let Some(MemoReads(found)) = cell.get()
        {
            self.pending_reads = None;
            // A pass that could not decode to a STOP leaves the memo keeping everything.
            if let Some(reads) = found {
                self.memo.keep_only_now(reads.clone());
            }
        }
    }

    /// The semantics, to read what they gathered.
    pub fn semantics(&self) -> &S {
        &self.sem
    }

    /// Gives the semantics back (drop or [`Machine::clear_values`] the values first if they
    /// need care).
    pub fn into_semantics(self) -> S {
        self.sem
    }

    /// Drops every value still on the stack or in the memo, one at a time (each container
    /// drops its own children without recursion), without gathering them first.
    pub fn clear_values(&mut self) {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
    }

    /// Runs the pickle that starts at `start` in `data` up to its STOP, from the machine's
    /// current stacks and memo (a pickle of its own wants a new machine).
    ///
    /// Both modes stop with an error at a limit ([`PickleError::is_limit`]), where the bytes end
    /// before STOP ([`PickleError::is_truncated`]) and where they stop decoding; the strict mode
    /// also at the first broken rule and the first `Err` of the semantics.
    pub fn run(&mut self, data: &'p [u8], start: usize) -> Result<Stopped<S::Value>, PickleError> {
        let limits = self.limits;
        let mut d = Decoder::new(data, start, limits.max_string);
        let mut ops: u64 = 0;
        let mut frame_end: Option<usize> = None;
        let mut first = true;
        loop {
            if S::TENSOR_RECORDS
                && self.records
                && frame_end.is_none()
                && matches!(data.get(d.pos()), Some(b'h' | b'j'))
                && let Some((end, n)) = self.tensor_record(data, d.pos(), ops)
            {
                ops += n;
                d = Decoder::new(data, end, limits.max_string);
                first = false;
                continue;
            }
            let (at, op) = match d.next_op() {
                Ok(x) => x,
                Err(DecodeError::Incomplete) => {
                    return Err(PickleError::truncated(
                        d.pos(),
                        "the pickle ends before its STOP opcode (truncated)",
                    ));
                }
                Err(DecodeError::Invalid(e)) => {
                    if let Some(next) = self.skip_text_number(data, &e) {
                        self.sem.report(e.offset, Anomaly::UnreadNumber(&e));
                        d = Decoder::new(data, next, limits.max_string);
                        let v = self.sem.placeholder();
                        self.stack.push(v);
                        continue;
                    }
                    return Err(e);
                }
            };
            self.at = at;
            ops += 1;
            if ops > limits.max_ops {
                return Err(PickleError::limit(
                    at,
                    Limit::Ops,
                    format!("more than {} opcodes (--max-pickle-ops)", limits.max_ops),
                ));
            }
            if self.stack.len() + self.marks.len() > limits.max_stack {
                return Err(PickleError::limit(
                    at,
                    Limit::Stack,
                    format!(
                        "stack deeper than {} items (raise with --max-stack)",
                        limits.max_stack
                    ),
                ));
            }
            if let Some(fe) = frame_end {
                if d.pos() > fe && at < fe {
                    let opcode = op.name();
                    self.sem.report(
                        at,
                        Anomaly::FrameCrossed {
                            opcode,
                            boundary: fe,
                        },
                    );
                    frame_end = None;
                } else if d.pos() >= fe {
                    frame_end = None;
                }
            }
            match op {
                Op::Stop => {
                    if !self.marks.is_empty() || self.stack.len() != 1 {
                        let (values, marks) = (self.stack.len(), self.marks.len());
                        self.sem
                            .report(at, Anomaly::StopLeftovers { values, marks });
                    }
                    let value = self.pop()?;
                    return Ok(Stopped {
                        value,
                        end: d.pos(),
                        protocol: self.protocol,
                    });
                }
                Op::Proto(p) => {
                    if p > 5 && self.mode == Mode::Strict {
                        return Err(PickleError::new(
                            at,
                            format!("unsupported pickle protocol {p} (expected 0 to 5)"),
                        ));
                    }
                    if !first || p > 5 {
                        self.sem.report(at, Anomaly::Protocol { version: p, first });
                    }
                    if p <= 5 {
                        self.protocol = self.protocol.max(p);
                    }
                }
                Op::Frame(len) => {
                    if frame_end.is_some() {
                        self.sem.report(at, Anomaly::NestedFrame);
                    }
                    frame_end = d.pos().checked_add(len as usize);
                    if frame_end.is_none_or(|e| e > data.len()) {
                        self.sem.report(at, Anomaly::FrameOverrun(len));
                        frame_end = None;
                    }
                }
                op => self.step(at, d.pos(), op)?,
            }
            first = false;
        }
    }

    /// In superset mode, where to go on after a text number the decoder rejects: the start of
    /// the next line.
    fn skip_text_number(&self, data: &[u8], e: &PickleError) -> Option<usize> {
        if self.mode != Mode::Superset || !matches!(data.get(e.offset), Some(b'I' | b'L' | b'F')) {
            return None;
        }
        let nl = data.get(e.offset..)?.iter().position(|&c| c == b'\n')?;
        Some(e.offset + nl + 1)
    }

    /// A broken rule: an error in strict mode, a report and a placeholder in superset mode.
    fn broken(&mut self, anomaly: Anomaly<'_>, msg: String) -> Result<S::Value, PickleError> {
        match self.mode {
            Mode::Strict => Err(PickleError::new(self.at, msg)),
            Mode::Superset => {
                self.sem.report(self.at, anomaly);
                Ok(self.sem.placeholder())
            }
        }
    }

    /// Where the values above the innermost mark start (0 with no mark open).
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    /// The top value above the innermost mark.
    fn pop(&mut self) -> Result<S::Value, PickleError> {
        let floor = self.floor();
        if self.stack.len() > floor
            && let Some(v) = self.stack.pop()
        {
            return Ok(v);
        }
        self.broken(
            Anomaly::Underflow,
            "stack underflow (an opcode needs more values than there are)".into(),
        )
    }

    /// A copy of the top value. The superset machine looks through an open mark when nothing is
    /// above it.
    fn peek(&mut self) -> Result<S::Value, PickleError> {
        let floor = self.floor();
        if self.stack.len() > floor
            && let Some(v) = self.stack.last()
        {
            return Ok(v.clone());
        }
        if self.mode == Mode::Superset
            && let Some(v) = self.stack.last()
        {
            let v = v.clone();
            self.sem.report(self.at, Anomaly::Underflow);
            return Ok(v);
        }
        self.broken(
            Anomaly::Underflow,
            "stack underflow (an opcode needs a value on the stack)".into(),
        )
    }

    /// [`Machine::peek`]'s checks, and its copy only when `wanted`.
    fn peek_if(&mut self, wanted: bool) -> Result<Option<S::Value>, PickleError> {
        let floor = self.floor();
        if !wanted && self.stack.len() > floor {
            return Ok(None);
        }
        self.peek().map(Some)
    }

    /// The values above the innermost mark, which is closed.
    fn pop_mark(&mut self) -> Result<Vec<S::Value>, PickleError> {
        match self.marks.pop() {
            Some(m) => Ok(self.stack.split_off(m.min(self.stack.len()))),
            None => match self.mode {
                Mode::Strict => Err(PickleError::new(
                    self.at,
                    "an opcode needs a MARK but none is open",
                )),
                Mode::Superset => {
                    self.sem.report(self.at, Anomaly::NoMark);
                    Ok(Vec::new())
                }
            },
        }
    }

    fn memo_put(&mut self, idx: u32, v: Option<S::Value>) -> Result<(), PickleError> {
        if self.memo.len() >= self.limits.max_memo && !self.memo.contains(idx) {
            return Err(PickleError::limit(
                self.at,
                Limit::Memo,
                format!(
                    "more than {} memo entries (raise with --max-memo)",
                    self.limits.max_memo
                ),
            ));
        }
        self.memo.insert(idx, v);
        Ok(())
    }

    /// Executes every opcode but STOP, PROTO and FRAME (which [`Machine::run`] handles).
    fn step(&mut self, at: usize, end: usize, op: Op<'p>) -> Result<(), PickleError> {
        let fail = |r: Refusal| PickleError::refused(at, r);
        match op {
            Op::Int(i) => self.literal(at, end, Literal::Int(i))?,
            Op::BigInt(b) => self.literal(at, end, Literal::BigInt(b))?,
            Op::Float(f) | Op::BinFloat(f) => self.literal(at, end, Literal::Float(f))?,
            Op::Bool(b) => self.literal(at, end, Literal::Bool(b))?,
            Op::None => self.literal(at, end, Literal::None)?,
            Op::String(b) | Op::Unicode(b) => self.literal(at, end, Literal::Text(b))?,
            Op::Bytes(b) | Op::ByteArray(b) => self.literal(at, end, Literal::Bytes(b))?,
            Op::Mark => self.marks.push(self.stack.len()),
            Op::Pop => {
                // POP with an empty frame above a mark discards the mark (pickle.py semantics).
                if self.marks.last().copied() == Some(self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            Op::PopMark => {
                self.pop_mark()?;
            }
            Op::Dup => {
                let v = self.peek()?;
                self.stack.push(v);
            }
            Op::PersId(id) => {
                let v = self
                    .sem
                    .persistent_load(at, PersistentId::Text(id))
                    .map_err(fail)?;
                self.stack.push(v);
            }
            Op::BinPersId => {
                let pid = self.pop()?;
                let v = self
                    .sem
                    .persistent_load(at, PersistentId::Value(pid))
                    .map_err(fail)?;
                self.stack.push(v);
            }
            Op::Reduce => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.call(at, Call::Reduce { callable, args })?;
            }
            Op::NewObj => {
                let args = self.pop()?;
                let cls = self.pop()?;
                self.call(at, Call::NewObj { cls, args })?;
            }
            Op::NewObjEx => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                self.call(at, Call::NewObjEx { cls, args, kwargs })?;
            }
            Op::Inst(m, n) => {
                let args = self.pop_mark()?;
                let (m, n) = (String::from_utf8_lossy(m), String::from_utf8_lossy(n));
                let (m, n) = (m.trim_end_matches('\r'), n.trim_end_matches('\r'));
                let cls = self.sem.global(at, m, n, "INST").map_err(fail)?;
                self.call(at, Call::Inst { cls, args })?;
            }
            Op::Obj => {
                let items = self.pop_mark()?;
                self.call(at, Call::Obj { items })?;
            }
            Op::Global(m, n) => {
                let (m, n) = (String::from_utf8_lossy(m), String::from_utf8_lossy(n));
                let (m, n) = (m.trim_end_matches('\r'), n.trim_end_matches('\r'));
                let v = self.sem.global(at, m, n, "GLOBAL").map_err(fail)?;
                self.stack.push(v);
            }
            Op::StackGlobal => {
                let name = self.pop()?;
                let module = self.pop()?;
                let v = self.sem.stack_global(at, module, name).map_err(fail)?;
                self.stack.push(v);
            }
            Op::Append => {
                let v = self.pop()?;
                self.extend(at, Extend::Append, vec![v])?;
            }
            Op::SetItem => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.extend(at, Extend::SetItem, vec![k, v])?;
            }
            Op::Appends | Op::SetItems | Op::AddItems => {
                let kind = match op {
                    Op::Appends => Extend::Appends,
                    Op::SetItems => Extend::SetItems,
                    _ => Extend::AddItems,
                };
                let items = self.pop_mark()?;
                self.extend(at, kind, items)?;
            }
            Op::Build => {
                let state = self.pop()?;
                let target = self.peek()?;
                self.sem.build(at, &target, state).map_err(fail)?;
            }
            Op::Dict | Op::List | Op::Tuple | Op::FrozenSet => {
                let kind = match op {
                    Op::Dict => Collection::Dict,
                    Op::List => Collection::List,
                    Op::Tuple => Collection::Tuple,
                    _ => Collection::Set,
                };
                let items = self.pop_mark()?;
                self.collection(at, kind, items)?;
            }
            Op::EmptyDict => self.collection(at, Collection::Dict, Vec::new())?,
            Op::EmptyList => self.collection(at, Collection::List, Vec::new())?,
            Op::EmptyTuple => self.collection(at, Collection::Tuple, Vec::new())?,
            Op::EmptySet => self.collection(at, Collection::Set, Vec::new())?,
            Op::TupleN(n) => {
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.collection(at, Collection::Tuple, items)?;
            }
            Op::Get(i) => {
                // Decoded from a u32: lossless.
                let i = i as u32;
                let v = match self.memo.get(i) {
                    Some(v) => v.clone(),
                    None => self.broken(
                        Anomaly::MemoMiss(i),
                        format!("memo index {i} read before it was written"),
                    )?,
                };
                self.stack.push(v);
            }
            Op::Put(i) => {
                // Decoded from a u32: lossless.
                let i = i as u32;
                self.poll_reads();
                let v = self.peek_if(self.memo.keeps(i))?;
                self.memo_put(i, v)?;
            }
            Op::Memoize => {
                self.poll_reads();
                let i = u32::try_from(self.memo.len())
                    .map_err(|_| PickleError::new(at, "memo too large"))?;
                let v = self.peek_if(self.memo.keeps(i))?;
                self.memo_put(i, v)?;
            }
            Op::Ext(code) => self.exotic(at, Exotic::Ext(code))?,
            Op::NextBuffer => self.exotic(at, Exotic::NextBuffer)?,
            Op::ReadonlyBuffer => self.exotic(at, Exotic::ReadonlyBuffer)?,
            // Handled by `run`.
            Op::Stop | Op::Proto(_) | Op::Frame(_) => {
                return Err(PickleError::new(
                    at,
                    format!("internal: {} reached step()", op.name()),
                ));
            }
        }
        Ok(())
    }

    fn literal(&mut self, at: usize, end: usize, l: Literal<'p>) -> Result<(), PickleError> {
        let v = self
            .sem
            .literal(at, end, l)
            .map_err(|r| PickleError::refused(at, r))?;
        self.stack.push(v);
        Ok(())
    }

    fn call(&mut self, at: usize, call: Call<S::Value>) -> Result<(), PickleError> {
        let v = self
            .sem
            .call(at, call)
            .map_err(|r| PickleError::refused(at, r))?;
        self.stack.push(v);
        Ok(())
    }

    fn extend(&mut self, at: usize, kind: Extend, items: Vec<S::Value>) -> Result<(), PickleError> {
        let target = self.peek()?;
        self.sem
            .extend(at, &target, kind, items)
            .map_err(|r| PickleError::refused(at, r))
    }

    fn collection(
        &mut self,
        at: usize,
        kind: Collection,
        items: Vec<S::Value>,
    ) -> Result<(), PickleError> {
        let v = self
            .sem
            .collection(at, kind, items)
            .map_err(|r| PickleError::refused(at, r))?;
        self.stack.push(v);
        Ok(())
    }

    fn exotic(&mut self, at: usize, op: Exotic) -> Result<(), PickleError> {
        let top = match op {
            Exotic::ReadonlyBuffer => Some(self.peek()?),
            Exotic::Ext(_) | Exotic::NextBuffer => None,
        };
        if let Some(v) = self
            .sem
            .exotic(at, op, top.as_ref())
            .map_err(|r| PickleError::refused(at, r))?
        {
            self.stack.push(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
