//! The scan's walk: the pickle [`Machine`] in [`Mode::Superset`], over symbols that remember
//! which global is called where. Where the VM would stop at a broken stack, mark or memo rule,
//! the walk notes it and goes on, so it sees a superset of what `convert` runs.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::{Call, FileReport, GlobalRef, Verdict, finding};
use crate::pickle::engine::{
    Anomaly, Call as PickleCall, Collection, Exotic, Extend, Literal, Machine, Mode, PersistentId,
    Semantics,
};
use crate::pickle::{Limit, Limits, PickleError, PickleErrorKind, Refusal, py3_module};
use crate::torch::classify;

/// True when `b` decodes as one complete pickle (whatever its first byte).
pub(super) fn looks_like_pickle(b: &[u8], limits: &Limits) -> bool {
    b.len() >= 2
        && matches!(
            crate::pickle::ops::pickle_end(b, 0, limits.max_string),
            Ok(Some(_))
        )
}

/// What the walk tracks of each stack value: enough to name globals and see them called.
#[derive(Clone)]
enum Sym<'a> {
    Global(usize),
    Str(Rc<str>),
    /// BYTES, borrowed from the pickle: only judged if `_load_from_bytes` receives them.
    Blob(&'a [u8]),
    /// A one-item tuple of BYTES (the argument tuple of `_load_from_bytes`).
    Args1(&'a [u8]),
    /// Bytes a protocol-2 pickle builds with `_codecs.encode(str, "latin1")`.
    Owned(Rc<[u8]>),
    /// A one-item tuple of such bytes.
    Args1Owned(Rc<[u8]>),
    /// A two-item tuple of strings (the argument tuple of `_codecs.encode`).
    StrPair(Rc<str>, Rc<str>),
    /// An integer literal (a dict key worth comparing).
    Int(i64),
    /// A LONG too large for `i64`: little-endian two's complement.
    Big(Rc<[u8]>),
    /// A container: shared by every copy on the stack and in the memo, so what is added to one
    /// is seen by all.
    Coll(Rc<Coll>),
    Other,
}

/// What the walk knows of one container.
struct Coll {
    kind: Collection,
    /// How many values a loader materialises walking it (items of shared sub-containers
    /// counted once per reference): a DAG built through the memo or DUP expands to this.
    weight: Cell<u64>,
    /// The string and integer keys set so far (dicts), to see a key set twice.
    keys: RefCell<HashSet<Key>>,
    /// How many integer keys share one Python hash (dicts and sets): a hash-collision bomb.
    hashes: RefCell<HashMap<i64, u32>>,
}

#[derive(PartialEq, Eq, Hash)]
enum Key {
    Str(Rc<str>),
    Int(i64),
    Big(Rc<[u8]>),
}

impl Sym<'_> {
    fn weight(&self) -> u64 {
        match self {
            Sym::Coll(c) => c.weight.get(),
            _ => 1,
        }
    }

    fn new_coll(kind: Collection, weight: u64) -> Self {
        Sym::Coll(Rc::new(Coll {
            kind,
            weight: Cell::new(weight),
            keys: RefCell::new(HashSet::new()),
            hashes: RefCell::new(HashMap::new()),
        }))
    }
}

/// Python's `hash()` of an int: its magnitude modulo the Mersenne prime 2^61 - 1, with its sign
/// (-1 becoming -2).
fn py_int_hash(i: i64) -> i64 {
    let neg = i < 0;
    py_hash_of(neg, (i as i128).unsigned_abs() % HASH_MODULUS)
}

const HASH_MODULUS: u128 = (1u128 << 61) - 1;

fn py_hash_of(neg: bool, magnitude_mod: u128) -> i64 {
    let h = magnitude_mod as i64;
    let h = if neg { -h } else { h };
    if h == -1 { -2 } else { h }
}

/// [`py_int_hash`] of a little-endian two's complement integer of any length.
pub(super) fn py_big_hash(le: &[u8]) -> i64 {
    let neg = le.last().is_some_and(|b| b & 0x80 != 0);
    // The magnitude: the bytes themselves, or their two's complement negation.
    let mut mag: Vec<u8> = le.to_vec();
    if neg {
        let mut carry = true;
        for b in &mut mag {
            *b = !*b;
            if carry {
                let (v, c) = b.overflowing_add(1);
                *b = v;
                carry = c;
            }
        }
    }
    let h = mag
        .iter()
        .rev()
        .fold(0u128, |h, b| (h * 256 + *b as u128) % HASH_MODULUS);
    py_hash_of(neg, h)
}

/// The one entry point of every pickle the scan walks (main, legacy head, zip members, tar
/// members, embedded): walks every pickle in `data` from offset 0 with the caller's `limits`. `expected` is how many pickles the format holds
/// (5 for a legacy head, 1 otherwise); more are reported, as are bytes after the last STOP.
pub(super) fn walk_pickles(
    data: &[u8],
    member: &str,
    expected: usize,
    limits: &Limits,
    r: &mut FileReport,
    depth: usize,
) -> Vec<usize> {
    let mut starts = Vec::new();
    // Embedded pickles: what follows them is the caller's data (an embedded legacy stream's
    // storage bytes), and `pickle.loads` ignores it.
    let trailing = if depth > 0 {
        Verdict::Safe
    } else {
        Verdict::Suspicious
    };
    let mut pos = 0usize;
    let mut n = 0usize;
    while pos < data.len() {
        if n == expected {
            let is_pickle = looks_like_pickle(&data[pos..], limits);
            if is_pickle {
                finding(
                    r,
                    Verdict::Suspicious,
                    "multiple-pickles",
                    Some(member),
                    Some(pos as u64),
                    format!("another pickle follows the {expected} expected"),
                );
            } else {
                finding(
                    r,
                    trailing,
                    "bytes-after-stop",
                    Some(member),
                    Some(pos as u64),
                    format!("{} bytes follow the last STOP", data.len() - pos),
                );
                return starts;
            }
        }
        starts.push(pos);
        match walk_one(data, pos, member, limits, r, depth) {
            Some(end) => pos = end,
            None => return starts,
        }
        n += 1;
    }
    if n < expected && n > 0 {
        finding(
            r,
            Verdict::Suspicious,
            "missing-pickles",
            Some(member),
            None,
            format!("{n} pickles where the format holds {expected}"),
        );
    }
    starts
}

pub(super) fn push_global(
    globals: &mut Vec<GlobalRef>,
    module: &str,
    name: &str,
    member: &str,
    offset: usize,
    opcode: &'static str,
) -> usize {
    let (module, name) = (module.trim_end_matches('\r'), name.trim_end_matches('\r'));
    globals.push(GlobalRef {
        // Reported as the VM names it; classified as written (the worse of both spellings).
        module: py3_module(module).to_string(),
        name: name.to_string(),
        class: classify(module, name),
        member: member.to_string(),
        offset,
        opcode,
        calls: Vec::new(),
    });
    globals.len() - 1
}

/// Walks one pickle starting at `start`; returns the offset after its STOP, or `None` when the
/// bytes stop decoding or a limit is reached (reported as a finding).
fn walk_one(
    data: &[u8],
    start: usize,
    member: &str,
    limits: &Limits,
    r: &mut FileReport,
    depth: usize,
) -> Option<usize> {
    let dangerous_only = r.dangerous_only;
    let walk = Walk {
        data,
        member,
        limits,
        r: &mut *r,
        depth,
        malformed: 0,
        max_weight: 0,
        weight_at: 0,
        collisions: 0,
        duplicates: 0,
        dangerous_only,
    };
    let mut machine = Machine::new(walk, Mode::Superset, limits);
    let result = machine.run(data, start);
    let w = machine.into_semantics();
    let (max_weight, weight_at, collisions) = (w.max_weight, w.weight_at, w.collisions);
    let end = match &result {
        Ok(s) => s.end,
        Err(e) => e.offset.max(start),
    };
    let len = (end.saturating_sub(start)).max(1) as u64;
    if max_weight > EXPANSION_FLOOR && max_weight / len >= EXPANSION_FACTOR {
        finding(
            r,
            Verdict::Suspicious,
            "expansion-bomb",
            Some(member),
            Some(weight_at as u64),
            format!(
                "a value shared through the memo or DUP expands to {max_weight} values from {len} bytes (expansion factor {})",
                max_weight / len
            ),
        );
    }
    if collisions >= HASH_BOMB_KEYS {
        finding(
            r,
            Verdict::Suspicious,
            "hash-bomb",
            Some(member),
            None,
            format!(
                "{collisions} integer keys share a Python hash with another key: inserting them is quadratic"
            ),
        );
    }
    match result {
        Ok(stopped) => Some(stopped.end),
        Err(e) => {
            halted(r, member, &e);
            None
        }
    }
}

/// A value expanding to more than this many values, at [`EXPANSION_FACTOR`] values per byte of
/// pickle or more, is a bomb (a real state dict materialises about one value per 10 bytes).
const EXPANSION_FLOOR: u64 = 1_000_000;
const EXPANSION_FACTOR: u64 = 100;
/// Integer keys whose Python hash collides with an earlier key of the same dict or set.
const HASH_BOMB_KEYS: u64 = 1000;

/// The finding for where the walk had to stop.
fn halted(r: &mut FileReport, member: &str, e: &PickleError) {
    let (kind, detail) = match e.kind() {
        PickleErrorKind::Truncated => (
            "truncated-pickle",
            "the pickle ends before its STOP opcode".to_string(),
        ),
        PickleErrorKind::Limit(Limit::Ops | Limit::Stack | Limit::Memo) => (
            "limit-exceeded",
            "the pickle exceeds the VM's limits (opcodes, stack or memo)".to_string(),
        ),
        // The string limit is met while decoding an argument: the opcode cannot be read.
        PickleErrorKind::Malformed | PickleErrorKind::Limit(Limit::String) => {
            ("undecodable-pickle", e.msg.clone())
        }
    };
    finding(
        r,
        Verdict::Suspicious,
        kind,
        Some(member),
        Some(e.offset as u64),
        detail,
    );
}

/// The scan's semantics: every global named goes into the report, every call of one is
/// recorded on it, and everything no torch writer produces becomes a finding.
struct Walk<'p, 'r> {
    /// The pickle's bytes (to read a text number's line as written).
    data: &'p [u8],
    member: &'r str,
    limits: &'r Limits,
    r: &'r mut FileReport,
    /// How deep in embedded pickles this one is.
    depth: usize,
    /// Opcodes met without the values or mark they need (reported once, counted).
    malformed: u64,
    /// The largest expansion of any value built, and where.
    max_weight: u64,
    weight_at: usize,
    /// Integer keys colliding in Python's hash with an earlier key of their container.
    collisions: u64,
    /// Duplicate keys reported (the first few are).
    duplicates: u64,
    /// Only what can make the file dangerous is tracked (see `FileReport::dangerous_only`):
    /// containers are not followed (no weights, no keys).
    dangerous_only: bool,
}

impl Walk<'_, '_> {
    fn note(&mut self, severity: Verdict, kind: &str, at: usize, detail: String) {
        finding(
            self.r,
            severity,
            kind,
            Some(self.member),
            Some(at as u64),
            detail,
        );
    }

    fn weighed(&mut self, at: usize, w: u64) {
        if w > self.max_weight {
            self.max_weight = w;
            self.weight_at = at;
        }
    }

    /// Adds `keys` to a dict or set, reporting keys set twice, unhashable keys and hash
    /// collisions; grows its weight by `items`.
    fn insert(&mut self, at: usize, target: &Sym<'_>, keys: &[&Sym<'_>], items: &[Sym<'_>]) {
        let Sym::Coll(c) = target else {
            return;
        };
        // A container holding itself is a cycle, which a loader builds once: not an expansion.
        let add: u64 = items.iter().fold(0u64, |a, v| match v {
            Sym::Coll(x) if Rc::ptr_eq(x, c) => a.saturating_add(1),
            _ => a.saturating_add(v.weight()),
        });
        c.weight.set(c.weight.get().saturating_add(add));
        let w = c.weight.get();
        self.weighed(at, w);
        if !matches!(c.kind, Collection::Dict | Collection::Set) {
            return;
        }
        for k in keys {
            let key = match k {
                Sym::Str(s) => Key::Str(s.clone()),
                Sym::Int(_) | Sym::Big(_) => {
                    let (h, key) = match k {
                        Sym::Int(i) => (py_int_hash(*i), Key::Int(*i)),
                        Sym::Big(b) => (py_big_hash(b), Key::Big(b.clone())),
                        _ => continue,
                    };
                    let mut hs = c.hashes.borrow_mut();
                    let n = hs.entry(h).or_insert(0);
                    if *n > 0 {
                        self.collisions += 1;
                    }
                    *n = n.saturating_add(1);
                    key
                }
                Sym::Coll(k) if !matches!(k.kind, Collection::Tuple) => {
                    self.note(
                        Verdict::Suspicious,
                        "unhashable-key",
                        at,
                        "a dict, list or set used as a dict key or set item: no unpickler can build this (malformed)".into(),
                    );
                    continue;
                }
                _ => continue,
            };
            if c.kind == Collection::Dict && !c.keys.borrow_mut().insert(key) {
                self.duplicates += 1;
                if self.duplicates <= 5 {
                    let name = match k {
                        Sym::Str(s) => format!("{:?}", crate::pickle::truncate(s, 100)),
                        Sym::Int(i) => i.to_string(),
                        _ => "(an integer)".into(),
                    };
                    self.note(
                        Verdict::Suspicious,
                        "duplicate-key",
                        at,
                        format!(
                            "the key {name} is set twice in one dict: the later value silently replaces the earlier one"
                        ),
                    );
                }
            }
        }
    }

    /// An opcode no torch writer emits.
    fn odd(&mut self, at: usize, what: &str) {
        self.note(
            Verdict::Suspicious,
            &format!("opcode-{}", what.to_ascii_lowercase()),
            at,
            format!("{what}, which no torch writer emits"),
        );
    }

    /// `callable` is called by `opcode` at `at`.
    fn called(&mut self, at: usize, callable: &Sym<'_>, opcode: &'static str) {
        match callable {
            Sym::Global(i) => self.r.globals[*i].calls.push(Call { opcode, offset: at }),
            // NEWOBJ of a class from a persistent id (legacy whole-module saves) is object
            // creation; any other call of a computed value is a chained gadget.
            _ => {
                let sev = if opcode == "NEWOBJ" {
                    Verdict::Safe
                } else {
                    Verdict::Suspicious
                };
                self.note(
                    sev,
                    "computed-callable",
                    at,
                    format!(
                        "{opcode} calls a value that is not a named global (a call result or a persistent id)"
                    ),
                );
            }
        }
    }

    /// A text integer whose digits C and Python unpicklers read differently (`I010`).
    fn check_text_int(&mut self, at: usize, end: usize) {
        if !matches!(self.data.get(at), Some(b'I' | b'L')) {
            return;
        }
        let line = self
            .data
            .get(at + 1..end.saturating_sub(1).max(at + 1))
            .unwrap_or(&[]);
        let digits = line.strip_prefix(b"-").unwrap_or(line);
        if digits.len() > 1 && digits[0] == b'0'
            || line
                .iter()
                .any(|c| !(c.is_ascii_digit() || *c == b'-' || *c == b'L'))
        {
            self.note(
                Verdict::Suspicious,
                "text-int-differential",
                at,
                format!(
                    "text integer {:?} reads differently in C and Python unpicklers",
                    String::from_utf8_lossy(line)
                ),
            );
        }
    }
}

impl<'p> Semantics<'p> for Walk<'p, '_> {
    type Value = Sym<'p>;

    fn placeholder(&mut self) -> Sym<'p> {
        Sym::Other
    }

    fn report(&mut self, at: usize, anomaly: Anomaly<'_>) {
        let sus = Verdict::Suspicious;
        match anomaly {
            // A missing value or mark: no unpickler runs past it (malformed); the walk goes on
            // with a placeholder, and what it leads to is judged too.
            Anomaly::Underflow | Anomaly::NoMark => {
                self.malformed += 1;
                if self.malformed == 1 {
                    let what = if matches!(anomaly, Anomaly::NoMark) {
                        "an opcode needs a MARK but none is open"
                    } else {
                        "an opcode needs more values than the stack holds"
                    };
                    self.note(sus, "malformed-pickle", at, format!("{what} (malformed)"));
                }
            }
            Anomaly::MemoMiss(i) => self.note(
                sus,
                "memo-miss",
                at,
                format!("memo index {i} read before it was written"),
            ),
            Anomaly::UnreadNumber(e) => {
                self.note(sus, "text-int-differential", e.offset, e.msg.clone())
            }
            Anomaly::Protocol { version, first } => self.note(
                sus,
                "protocol-anomaly",
                at,
                format!(
                    "PROTO {version} {}",
                    if first {
                        "is not a pickle protocol"
                    } else {
                        "in the middle of the stream"
                    }
                ),
            ),
            Anomaly::NestedFrame => self.note(
                sus,
                "frame-straddle",
                at,
                "a FRAME inside an unfinished frame".into(),
            ),
            Anomaly::FrameOverrun(len) => self.note(
                sus,
                "frame-straddle",
                at,
                format!("a FRAME of {len} bytes runs past the pickle"),
            ),
            Anomaly::FrameCrossed { opcode, boundary } => self.note(
                sus,
                "frame-straddle",
                at,
                format!("the {opcode} opcode at {at} crosses the frame boundary at {boundary}"),
            ),
            Anomaly::StopLeftovers { values, marks } => self.note(
                sus,
                "stop-with-leftovers",
                at,
                format!("STOP with {values} values and {marks} open marks"),
            ),
        }
    }

    fn literal(&mut self, at: usize, end: usize, literal: Literal<'p>) -> Result<Sym<'p>, Refusal> {
        Ok(match literal {
            Literal::Int(i) => {
                self.check_text_int(at, end);
                Sym::Int(i)
            }
            Literal::BigInt(b) => {
                self.check_text_int(at, end);
                Sym::Big(Rc::from(b))
            }
            Literal::Float(_) | Literal::Bool(_) | Literal::None => Sym::Other,
            Literal::Text(b) => {
                nested(&b, at, self.member, self.limits, self.r, self.depth);
                match std::str::from_utf8(&b) {
                    Ok(s) => Sym::Str(Rc::from(s)),
                    Err(_) => Sym::Other,
                }
            }
            Literal::Bytes(b) => {
                nested(b, at, self.member, self.limits, self.r, self.depth);
                Sym::Blob(b)
            }
        })
    }

    fn global(
        &mut self,
        at: usize,
        module: &str,
        name: &str,
        opcode: &'static str,
    ) -> Result<Sym<'p>, Refusal> {
        let i = push_global(&mut self.r.globals, module, name, self.member, at, opcode);
        Ok(Sym::Global(i))
    }

    fn stack_global(
        &mut self,
        at: usize,
        module: Sym<'p>,
        name: Sym<'p>,
    ) -> Result<Sym<'p>, Refusal> {
        Ok(match (module, name) {
            (Sym::Str(m), Sym::Str(n)) => {
                let i = push_global(&mut self.r.globals, &m, &n, self.member, at, "STACK_GLOBAL");
                Sym::Global(i)
            }
            _ => {
                // Only a payload needs a name computed at load time (a call result, a
                // getattr chain): the name cannot be read, so assume the worst.
                self.note(
                    Verdict::Dangerous,
                    "stack-global-operands",
                    at,
                    format!("STACK_GLOBAL at byte {at} of {} with operands that are not two strings: a name computed at load time", self.member),
                );
                Sym::Other
            }
        })
    }

    fn persistent_load(
        &mut self,
        _at: usize,
        _pid: PersistentId<'p, Sym<'p>>,
    ) -> Result<Sym<'p>, Refusal> {
        Ok(Sym::Other)
    }

    fn call(&mut self, at: usize, call: PickleCall<Sym<'p>>) -> Result<Sym<'p>, Refusal> {
        match call {
            PickleCall::Reduce { callable, args } => {
                self.called(at, &callable, "REDUCE");
                if let Sym::Global(i) = &callable {
                    let g = &self.r.globals[*i];
                    // `_load_from_bytes` is `torch.load` of its argument: fine on a well-formed
                    // legacy checkpoint (walked as an embedded pickle), a full unpickler on
                    // anything else.
                    if g.module == "torch.storage" && g.name == "_load_from_bytes" {
                        let why = match &args {
                            Sym::Args1(bytes) => {
                                crate::container::stream_problem(bytes, self.limits)
                            }
                            Sym::Args1Owned(bytes) => {
                                crate::container::stream_problem(bytes, self.limits)
                            }
                            _ => Some("its argument is not one byte string".into()),
                        };
                        if let Some(why) = why {
                            self.note(
                                Verdict::Dangerous,
                                "embedded-not-checkpoint",
                                at,
                                format!(
                                    "torch.storage._load_from_bytes called by REDUCE at byte {at} (torch.load of its argument, which is not a checkpoint): {why}"
                                ),
                            );
                        }
                    }
                    let g = &self.r.globals[*i];
                    if g.module == "_codecs"
                        && g.name == "encode"
                        && let Sym::StrPair(text, enc) = &args
                        && matches!(&**enc, "latin1" | "latin-1" | "iso-8859-1")
                        && let Ok(b) = text
                            .chars()
                            .map(|c| u8::try_from(c as u32))
                            .collect::<Result<Vec<u8>, _>>()
                    {
                        nested(&b, at, self.member, self.limits, self.r, self.depth);
                        return Ok(Sym::Owned(Rc::from(b)));
                    }
                    if matches!(
                        (g.module.as_str(), g.name.as_str()),
                        ("collections", "OrderedDict" | "defaultdict") | ("builtins", "dict")
                    ) && !self.dangerous_only
                    {
                        let w = 1 + args.weight();
                        return Ok(Sym::new_coll(Collection::Dict, w));
                    }
                }
                let w = args.weight().saturating_add(1);
                if w > 1 && !self.dangerous_only {
                    self.weighed(at, w);
                    return Ok(Sym::new_coll(Collection::Tuple, w));
                }
            }
            PickleCall::NewObj { cls, .. } => self.called(at, &cls, "NEWOBJ"),
            PickleCall::NewObjEx { cls, .. } => self.called(at, &cls, "NEWOBJ_EX"),
            PickleCall::Inst { cls, .. } => {
                self.odd(at, "INST");
                self.called(at, &cls, "INST");
            }
            PickleCall::Obj { items } => {
                self.odd(at, "OBJ");
                self.called(at, items.first().unwrap_or(&Sym::Other), "OBJ");
            }
        }
        Ok(Sym::Other)
    }

    fn collection(
        &mut self,
        at: usize,
        kind: Collection,
        items: Vec<Sym<'p>>,
    ) -> Result<Sym<'p>, Refusal> {
        match (kind, items.as_slice()) {
            (Collection::Tuple, [Sym::Blob(b)]) => return Ok(Sym::Args1(b)),
            (Collection::Tuple, [Sym::Owned(b)]) => return Ok(Sym::Args1Owned(b.clone())),
            (Collection::Tuple, [Sym::Str(a), Sym::Str(b)]) => {
                return Ok(Sym::StrPair(a.clone(), b.clone()));
            }
            _ => {}
        }
        if self.dangerous_only {
            return Ok(Sym::Other);
        }
        let c = Sym::new_coll(kind, 1);
        match kind {
            Collection::Dict => {
                let keys: Vec<&Sym<'p>> = items.iter().step_by(2).collect();
                self.insert(at, &c, &keys, &items);
            }
            Collection::Set => {
                let keys: Vec<&Sym<'p>> = items.iter().collect();
                self.insert(at, &c, &keys, &items);
            }
            _ => self.insert(at, &c, &[], &items),
        }
        Ok(c)
    }

    fn extend(
        &mut self,
        at: usize,
        target: &Sym<'p>,
        kind: Extend,
        items: Vec<Sym<'p>>,
    ) -> Result<(), Refusal> {
        match kind {
            Extend::SetItem | Extend::SetItems => {
                let keys: Vec<&Sym<'p>> = items.iter().step_by(2).collect();
                self.insert(at, target, &keys, &items);
            }
            Extend::AddItems => {
                let keys: Vec<&Sym<'p>> = items.iter().collect();
                self.insert(at, target, &keys, &items);
            }
            Extend::Append | Extend::Appends => self.insert(at, target, &[], &items),
        }
        Ok(())
    }

    fn build(&mut self, at: usize, target: &Sym<'p>, _state: Sym<'p>) -> Result<(), Refusal> {
        if let Sym::Global(i) = target {
            let i = *i;
            self.r.globals[i].calls.push(Call {
                opcode: "BUILD",
                offset: at,
            });
            let q = self.r.globals[i].qualified();
            self.note(
                Verdict::Dangerous,
                "build-on-global",
                at,
                format!(
                    "BUILD sets attributes of {q} itself (a module or class), rewriting code other loads run"
                ),
            );
        }
        Ok(())
    }

    fn exotic(
        &mut self,
        at: usize,
        op: Exotic,
        _top: Option<&Sym<'p>>,
    ) -> Result<Option<Sym<'p>>, Refusal> {
        Ok(match op {
            Exotic::Ext(_) => {
                self.odd(at, "EXT");
                Some(Sym::Other)
            }
            Exotic::NextBuffer => {
                self.odd(at, "NEXT_BUFFER");
                Some(Sym::Other)
            }
            Exotic::ReadonlyBuffer => {
                self.odd(at, "READONLY_BUFFER");
                None
            }
        })
    }
}

/// A BYTES/STRING argument that is itself a pickle (`pickle.loads(b"…")`, an embedded legacy
/// stream): walk it as its own member.
fn nested(b: &[u8], at: usize, member: &str, limits: &Limits, r: &mut FileReport, depth: usize) {
    if depth >= 4 || !crate::pickle::ops::could_be_pickle(b, limits.max_string) {
        return;
    }
    let inner = format!("{member}@{at} (embedded)");
    let expected = if crate::container::starts_with_magic(b) {
        5
    } else {
        1
    };
    walk_pickles(b, &inner, expected, limits, r, depth + 1);
}
