//! The scan's walk: the pickle [`Machine`] in [`Mode::Superset`], over symbols that remember
//! which global is called where. Where the VM would stop at a broken stack, mark or memo rule,
//! the walk notes it and goes on, so it sees a superset of what `convert` runs.

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
    Other,
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
    let walk = Walk {
        data,
        member,
        limits,
        r: &mut *r,
        depth,
    };
    let mut machine = Machine::new(walk, Mode::Superset, limits);
    let result = machine.run(data, start);
    drop(machine);
    match result {
        Ok(stopped) => Some(stopped.end),
        Err(e) => {
            halted(r, member, &e);
            None
        }
    }
}

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
            // A missing value or mark is already a placeholder; what it leads to is judged.
            Anomaly::Underflow | Anomaly::NoMark => {}
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
            Literal::Int(_) | Literal::BigInt(_) => {
                self.check_text_int(at, end);
                Sym::Other
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
                self.note(
                    Verdict::Suspicious,
                    "stack-global-operands",
                    at,
                    "STACK_GLOBAL with operands that are not two strings".into(),
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
                if let (Sym::Global(i), Sym::Args1(bytes)) = (&callable, &args) {
                    let g = &self.r.globals[*i];
                    if g.module == "torch.storage"
                        && g.name == "_load_from_bytes"
                        && let Some(why) = crate::container::stream_problem(bytes, self.limits)
                    {
                        self.note(
                            Verdict::Suspicious,
                            "embedded-not-checkpoint",
                            at,
                            format!(
                                "torch.storage._load_from_bytes called by REDUCE at byte {at}: {why}"
                            ),
                        );
                    }
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
        _at: usize,
        kind: Collection,
        mut items: Vec<Sym<'p>>,
    ) -> Result<Sym<'p>, Refusal> {
        Ok(match (kind, items.len(), items.pop()) {
            (Collection::Tuple, 1, Some(Sym::Blob(b))) => Sym::Args1(b),
            _ => Sym::Other,
        })
    }

    fn extend(
        &mut self,
        _at: usize,
        _target: &Sym<'p>,
        _kind: Extend,
        _items: Vec<Sym<'p>>,
    ) -> Result<(), Refusal> {
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
    if depth >= 4 || b.len() < 2 {
        return;
    }
    // A pickle header, or bytes that decode exactly as one whole pickle; random tensor bytes
    // rarely do either.
    let proto = b[0] == 0x80 && (2..=5).contains(&b[1]);
    let exact = matches!(crate::pickle::ops::pickle_end(b, 0, limits.max_string), Ok(Some(e)) if e == b.len());
    if !(exact || proto && looks_like_pickle(b, limits)) {
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
