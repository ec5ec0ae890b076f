//! The machine's rules, in both modes, over a semantics that records what it is told.

use super::*;
use crate::pickle::PickleErrorKind;

/// Values are their own descriptions; the log holds every call and anomaly, in order.
#[derive(Default)]
struct Recorder {
    log: Vec<String>,
}

impl<'p> Semantics<'p> for Recorder {
    type Value = String;

    fn placeholder(&mut self) -> String {
        "?".into()
    }

    fn report(&mut self, at: usize, anomaly: Anomaly<'_>) {
        self.log.push(format!("{at}: {anomaly:?}"));
    }

    fn literal(&mut self, _: usize, _: usize, literal: Literal<'p>) -> Result<String, Refusal> {
        Ok(match literal {
            Literal::Text(b) => String::from_utf8_lossy(&b).into_owned(),
            other => format!("{other:?}"),
        })
    }

    fn global(&mut self, _: usize, m: &str, n: &str, _: &'static str) -> Result<String, Refusal> {
        Ok(format!("{}.{n}", py3_module(m)))
    }

    fn stack_global(&mut self, _: usize, m: String, n: String) -> Result<String, Refusal> {
        Ok(format!("{m}.{n}"))
    }

    fn persistent_load(
        &mut self,
        _: usize,
        _: PersistentId<'p, String>,
    ) -> Result<String, Refusal> {
        Ok("pid".into())
    }

    fn call(&mut self, at: usize, call: Call<String>) -> Result<String, Refusal> {
        let (callable, args) = match call {
            Call::Reduce { callable, args } => (callable, args),
            Call::NewObj { cls, args } | Call::NewObjEx { cls, args, .. } => (cls, args),
            Call::Inst { cls, args } => (cls, args.join(",")),
            Call::Obj { items } => (items.join(","), String::new()),
        };
        self.log.push(format!("{at}: call {callable}({args})"));
        Ok(format!("{callable}()"))
    }

    fn collection(
        &mut self,
        _: usize,
        k: Collection,
        items: Vec<String>,
    ) -> Result<String, Refusal> {
        Ok(format!("{k:?}[{}]", items.join(",")))
    }

    fn extend(&mut self, _: usize, _: &String, _: Extend, _: Vec<String>) -> Result<(), Refusal> {
        Ok(())
    }

    fn build(&mut self, _: usize, _: &String, _: String) -> Result<(), Refusal> {
        Ok(())
    }

    /// EXT refuses plainly; NEXT_BUFFER as a nested pickle over a limit would.
    fn exotic(
        &mut self,
        _: usize,
        op: Exotic,
        _: Option<&String>,
    ) -> Result<Option<String>, Refusal> {
        match op {
            Exotic::Ext(_) => Err("no extensions".into()),
            Exotic::NextBuffer => Err(Refusal {
                msg: "nested: more than 1 opcodes (--max-pickle-ops)".into(),
                limit: Some(Limit::Ops),
            }),
            Exotic::ReadonlyBuffer => Ok(None),
        }
    }
}

/// `os.system('ls')`, protocol 0.
const OS_SYSTEM: &[u8] = b"cos\nsystem\n(S'ls'\ntR";

fn run(
    data: &[u8],
    mode: Mode,
    limits: &Limits,
) -> (Result<Stopped<String>, PickleError>, Vec<String>) {
    let mut m = Machine::new(Recorder::default(), mode, limits);
    let r = m.run(data, 0);
    (r, m.into_semantics().log)
}

fn with_payload(prefix: &[u8]) -> Vec<u8> {
    [prefix, OS_SYSTEM, b"."].concat()
}

#[test]
fn both_modes_run_a_well_formed_pickle_alike() {
    let data = with_payload(b"");
    for mode in [Mode::Strict, Mode::Superset] {
        let (r, log) = run(&data, mode, &Limits::default());
        let stopped = r.unwrap();
        assert_eq!(stopped.value, "os.system()");
        assert_eq!(stopped.end, data.len());
        assert_eq!(log, ["19: call os.system(Tuple[ls])"]);
    }
}

#[test]
fn strict_stops_at_an_underflow_superset_walks_on_to_the_payload() {
    // POP on an empty stack, then the payload.
    let data = with_payload(b"0");
    let (r, log) = run(&data, Mode::Strict, &Limits::default());
    let e = r.unwrap_err();
    assert_eq!(e.offset, 0);
    assert!(e.msg.contains("stack underflow"), "{e}");
    assert!(log.is_empty());

    let (r, log) = run(&data, Mode::Superset, &Limits::default());
    assert_eq!(r.unwrap().value, "os.system()");
    assert_eq!(log, ["0: Underflow", "20: call os.system(Tuple[ls])"]);
}

#[test]
fn an_underflowing_call_gets_placeholders_in_superset_mode() {
    // REDUCE with only the callable: the missing arguments become the placeholder.
    let (r, log) = run(b"cos\nsystem\nR.", Mode::Superset, &Limits::default());
    assert_eq!(r.unwrap().value, "?()");
    assert_eq!(log, ["11: Underflow", "11: call ?(os.system)"]);
    let (r, _) = run(b"cos\nsystem\nR.", Mode::Strict, &Limits::default());
    assert!(r.unwrap_err().msg.contains("stack underflow"));
}

#[test]
fn a_memo_miss_is_an_error_or_a_reported_placeholder() {
    let data = with_payload(b"g3\n0");
    let (r, _) = run(&data, Mode::Strict, &Limits::default());
    let e = r.unwrap_err();
    assert_eq!(
        (e.offset, e.msg.as_str()),
        (0, "memo index 3 read before it was written")
    );
    assert!(!e.is_limit());

    let (r, log) = run(&data, Mode::Superset, &Limits::default());
    assert_eq!(r.unwrap().value, "os.system()");
    assert_eq!(log[0], "0: MemoMiss(3)");
    assert!(log[1].contains("call os.system"), "{log:?}");
}

#[test]
fn a_missing_mark_is_an_error_or_an_empty_item_list() {
    // TUPLE with no MARK open, popped again, then the payload.
    let data = with_payload(b"t0");
    let (r, _) = run(&data, Mode::Strict, &Limits::default());
    assert_eq!(
        r.unwrap_err().msg,
        "an opcode needs a MARK but none is open"
    );
    let (r, log) = run(&data, Mode::Superset, &Limits::default());
    assert_eq!(r.unwrap().value, "os.system()");
    assert_eq!(log[0], "0: NoMark");
}

#[test]
fn the_memo_keeps_values_and_dup_copies_the_top() {
    let (r, log) = run(b"(S'a'\np0\n0g0\n2t.", Mode::Strict, &Limits::default());
    assert_eq!(r.unwrap().value, "Tuple[a,a]");
    assert!(log.is_empty());
}

#[test]
fn frames_that_straddle_are_reported_in_both_modes() {
    // A FRAME of 2 bytes, then a 7-byte SHORT_BINUNICODE that runs past it.
    let data = b"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00\x8c\x05hello.";
    for mode in [Mode::Strict, Mode::Superset] {
        let (r, log) = run(data, mode, &Limits::default());
        assert_eq!(r.unwrap().value, "hello");
        assert_eq!(
            log,
            ["11: FrameCrossed { opcode: \"UNICODE\", boundary: 13 }"]
        );
    }
    // A FRAME longer than the pickle, and one inside an unfinished frame.
    let data = b"\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x95\x01\x00\x00\x00\x00\x00\x00\x00N.";
    let (r, log) = run(data, Mode::Superset, &Limits::default());
    assert!(r.is_ok());
    assert_eq!(log, ["9: NestedFrame"]);
    let (_, log) = run(
        b"\x95\xff\x00\x00\x00\x00\x00\x00\x00N.",
        Mode::Strict,
        &Limits::default(),
    );
    assert_eq!(log, ["0: FrameOverrun(255)"]);
}

#[test]
fn protocol_above_five_stops_strict_and_is_reported_in_superset() {
    let (r, _) = run(b"\x80\x06N.", Mode::Strict, &Limits::default());
    assert_eq!(
        r.unwrap_err().msg,
        "unsupported pickle protocol 6 (expected 0 to 5)"
    );
    let (r, log) = run(b"\x80\x06N.", Mode::Superset, &Limits::default());
    assert_eq!(r.unwrap().protocol, 0);
    assert_eq!(log, ["0: Protocol { version: 6, first: true }"]);
    let (r, log) = run(b"\x80\x02N\x80\x03.", Mode::Strict, &Limits::default());
    assert_eq!(r.unwrap().protocol, 3);
    assert_eq!(log, ["3: Protocol { version: 3, first: false }"]);
}

#[test]
fn stop_with_leftovers_is_reported() {
    let (r, log) = run(b"NN(.", Mode::Strict, &Limits::default());
    assert_eq!(
        r.unwrap_err().msg,
        "stack underflow (an opcode needs more values than there are)"
    );
    assert_eq!(log, ["3: StopLeftovers { values: 2, marks: 1 }"]);
}

#[test]
fn a_text_number_the_decoder_rejects_is_skipped_only_in_superset_mode() {
    let data = with_payload(b"I0x10\n0");
    let (r, _) = run(&data, Mode::Strict, &Limits::default());
    assert!(!r.unwrap_err().is_limit());
    let (r, log) = run(&data, Mode::Superset, &Limits::default());
    assert_eq!(r.unwrap().value, "os.system()");
    assert!(log[0].starts_with("0: UnreadNumber"), "{log:?}");
}

#[test]
fn every_limit_stops_both_modes_with_a_limit_error_that_names_its_flag() {
    let tight = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        l
    };
    let cases: [(&[u8], Limits, Limit, &str); 5] = [
        (
            b"(NNNNt.",
            tight(|l| l.max_ops = 3),
            Limit::Ops,
            "--max-pickle-ops",
        ),
        (
            b"NNNN(t.",
            tight(|l| l.max_stack = 2),
            Limit::Stack,
            "--max-stack",
        ),
        (
            b"Np0\np1\n.",
            tight(|l| l.max_memo = 1),
            Limit::Memo,
            "--max-memo",
        ),
        (
            b"N\x94N\x94.",
            tight(|l| l.max_memo = 1),
            Limit::Memo,
            "--max-memo",
        ),
        (
            b"C\x05hello.",
            tight(|l| l.max_string = 2),
            Limit::String,
            "--max-string-bytes",
        ),
    ];
    for (data, limits, limit, flag) in cases {
        for mode in [Mode::Strict, Mode::Superset] {
            let (r, _) = run(data, mode, &limits);
            let e = r.unwrap_err();
            assert!(e.is_limit(), "{e}");
            assert_eq!(e.kind(), PickleErrorKind::Limit(limit));
            assert!(e.msg.contains(flag), "{e}");
        }
    }
}

#[test]
fn the_ops_limit_counts_stop_and_errs_at_the_first_opcode_over_it() {
    let limits = Limits {
        max_ops: 2,
        ..Limits::default()
    };
    assert!(run(b"N.", Mode::Strict, &limits).0.is_ok());
    let e = run(b"NN.", Mode::Strict, &limits).0.unwrap_err();
    assert_eq!(
        (e.offset, e.msg.as_str()),
        (2, "more than 2 opcodes (--max-pickle-ops)")
    );
}

#[test]
fn a_truncated_pickle_is_a_truncation_error_in_both_modes() {
    for mode in [Mode::Strict, Mode::Superset] {
        let e = run(OS_SYSTEM, mode, &Limits::default()).0.unwrap_err();
        assert!(e.is_truncated() && !e.is_limit(), "{e}");
        assert_eq!(e.offset, OS_SYSTEM.len());
    }
}

#[test]
fn py2_module_names_map_to_python_3() {
    assert_eq!(py3_module("__builtin__"), "builtins");
    assert_eq!(py3_module("copy_reg"), "copyreg");
    assert_eq!(py3_module("exceptions"), "builtins");
    assert_eq!(py3_module("os"), "os");
    let (r, _) = run(b"c__builtin__\neval\n.", Mode::Strict, &Limits::default());
    assert_eq!(r.unwrap().value, "builtins.eval");
}

#[test]
fn a_refusal_stops_both_modes_and_one_that_names_a_limit_is_a_limit_error() {
    for mode in [Mode::Strict, Mode::Superset] {
        let e = run(b"N\x82\x01.", mode, &Limits::default()).0.unwrap_err();
        assert_eq!(
            (e.offset, e.msg.as_str(), e.is_limit()),
            (1, "no extensions", false)
        );
        let e = run(b"N\x97.", mode, &Limits::default()).0.unwrap_err();
        assert_eq!(e.offset, 1);
        assert_eq!(e.kind(), PickleErrorKind::Limit(Limit::Ops));
    }
}

/// Inserts indices in every order a pickle can (sequential, overwritten, ahead of the sequence,
/// huge) into `m` and into a plain map, and after each insert checks that `m` has the map's
/// length and membership, and the map's values for the indices `m` keeps (all, or `reads`).
/// Returns the map.
fn memo_matches_a_map(
    m: &mut Memo<u32>,
    reads: Option<&std::collections::HashSet<u32, MemoHash>>,
) -> std::collections::HashMap<u32, u32> {
    let mut reference = std::collections::HashMap::new();
    let ops: [u32; 14] = [0, 1, 2, 5, 4, 3, 1, 6, u32::MAX, 9, 7, 8, 0, 10];
    for (n, &i) in ops.iter().enumerate() {
        // As the machine does: no value is made for an index nothing reads back.
        assert_eq!(
            m.keeps(i),
            reads.is_none_or(|r| r.contains(&i)),
            "index {i}"
        );
        m.insert(i, m.keeps(i).then_some(n as u32));
        reference.insert(i, n as u32);
        assert_eq!(m.len(), reference.len(), "after inserting {i}");
        for k in (0..12u32).chain([u32::MAX]) {
            assert_eq!(m.contains(k), reference.contains_key(&k), "index {k}");
            let kept = reference
                .get(&k)
                .filter(|_| reads.is_none_or(|r| r.contains(&k)));
            assert_eq!(m.get(k), kept, "index {k} after inserting {i}");
        }
    }
    reference
}

#[test]
fn the_memo_keeps_every_index_in_one_place_whatever_the_order() {
    let mut m: Memo<u32> = Memo::new();
    let reference = memo_matches_a_map(&mut m, None);
    // Everything ahead of the sequence has joined it.
    assert_eq!(m.dense.len(), 11);
    assert_eq!(m.sparse.len(), 1);
    let mut held: Vec<u32> = m.dense.iter().chain(m.sparse.values()).copied().collect();
    let mut want: Vec<u32> = reference.into_values().collect();
    held.sort();
    want.sort();
    assert_eq!(held, want);
    m.clear();
    assert_eq!(m.len(), 0);
    assert_eq!(m.get(0), None);
}

#[test]
fn a_memo_keeping_only_read_indices_counts_every_index_it_was_given() {
    // The same length and membership as a plain map, but the values of read indices only.
    let reads: std::collections::HashSet<u32, MemoHash> = [1, 4, 9, u32::MAX].into_iter().collect();
    let mut m: Memo<u32> = Memo::new();
    m.keep_only(reads.clone());
    memo_matches_a_map(&mut m, Some(&reads));
    assert_eq!(m.sparse.len(), 4);
    assert!(m.dense.is_empty());
    m.clear();
    assert_eq!(m.len(), 0);
    assert!(!m.contains(0));
    assert_eq!(m.get(1), None);
}

/// A memo that kept every value and is told partway which indices are read (the reads found on
/// another thread, [`Machine::keep_only_memo_reads_when`]) is, from then on, the memo that kept
/// only those from the start: same length and membership, same values held, whatever the switch
/// point.
#[test]
fn a_memo_told_its_reads_partway_is_the_memo_told_them_first() {
    let reads: std::collections::HashSet<u32, MemoHash> =
        [1, 4, 9, 6, u32::MAX].into_iter().collect();
    let ops: [u32; 14] = [0, 1, 2, 5, 4, 3, 1, 6, u32::MAX, 9, 7, 8, 0, 10];
    let agree = |a: &Memo<u32>, b: &Memo<u32>, when: &str| {
        assert_eq!(a.len(), b.len(), "{when}");
        for k in (0..12u32).chain([u32::MAX]) {
            assert_eq!(a.contains(k), b.contains(k), "index {k} {when}");
            assert_eq!(a.get(k), b.get(k), "index {k} {when}");
            assert_eq!(a.keeps(k), b.keeps(k), "index {k} {when}");
        }
        assert_eq!(
            (a.dense.len(), a.sparse.len()),
            (b.dense.len(), b.sparse.len()),
            "{when}"
        );
    };
    for switch in 0..=ops.len() {
        let mut first: Memo<u32> = Memo::new();
        first.keep_only(reads.clone());
        let mut late: Memo<u32> = Memo::new();
        for (n, &i) in ops.iter().enumerate() {
            if n == switch {
                late.keep_only_now(reads.clone());
                agree(&first, &late, &format!("right after switching at {switch}"));
            }
            first.insert(i, first.keeps(i).then_some(n as u32));
            late.insert(i, late.keeps(i).then_some(n as u32));
            if n >= switch {
                agree(
                    &first,
                    &late,
                    &format!("after inserting {i}, switched at {switch}"),
                );
            }
        }
        if switch == ops.len() {
            // Told after the last write: the same state as well.
            late.keep_only_now(reads.clone());
            agree(&first, &late, "switched at the end");
        }
        // A second switch changes nothing.
        late.keep_only_now(std::collections::HashSet::default());
        agree(&first, &late, &format!("switched twice at {switch}"));
    }
}

#[test]
fn keeping_only_read_memo_values_changes_no_run() {
    /// A run asked to keep only the memo values read back: its result, its log, and the memo's
    /// length and the values it holds (dense, sparse) at the end.
    type Kept = (
        Result<Stopped<String>, PickleError>,
        Vec<String>,
        (usize, usize, usize),
    );
    fn run_kept(data: &[u8], mode: Mode, limits: &Limits) -> Kept {
        let mut m = Machine::new(Recorder::default(), mode, limits);
        m.keep_only_memo_reads(data, 0);
        let r = m.run(data, 0);
        let memo = (m.memo.len(), m.memo.dense.len(), m.memo.sparse.len());
        (r, m.into_semantics().log, memo)
    }
    let tight = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        l
    };
    let cases: Vec<(&[u8], Limits)> = vec![
        // PUT, then GET of it.
        (b"(S'a'\np0\n0g0\n2t.", Limits::default()),
        // MEMOIZE numbers by the count of entries, kept or not: entry 2 is the third value.
        (
            b"\x80\x04N\x94K\x01\x94K\x02\x94(h\x02h\x00t.",
            Limits::default(),
        ),
        // An index written twice counts once; one written ahead joins the sequence.
        (
            b"\x80\x02Nq\x05K\x01q\x05K\x02q\x00\x94(h\x01h\x05t.",
            Limits::default(),
        ),
        // A miss stays a miss.
        (b"(N\x94h\x03t.", Limits::default()),
        // The memo bound counts entries whose values are not kept.
        (b"Np0\np1\n.", tight(|l| l.max_memo = 1)),
        (b"N\x94N\x94.", tight(|l| l.max_memo = 1)),
        (b"N\x94N\x94h\x00.", tight(|l| l.max_memo = 2)),
        // Undecodable after the STOP: nothing read there counts; before it: keep everything.
        (b"N\x94h\x00.\xff", Limits::default()),
        (b"N\x94h\x00\xff.", Limits::default()),
    ];
    /// The same run with the reads handed over by a cell: already set (the switch comes at the
    /// first PUT), or never set (every value kept).
    fn run_when(data: &[u8], limits: &Limits, set: bool) -> Kept {
        let cell = std::sync::OnceLock::new();
        if set {
            let _ = cell.set(MemoReads::of(data, 0));
        }
        let mut m = Machine::new(Recorder::default(), Mode::Strict, limits);
        m.keep_only_memo_reads_when(&cell);
        let r = m.run(data, 0);
        let memo = (m.memo.len(), m.memo.dense.len(), m.memo.sparse.len());
        (r, m.into_semantics().log, memo)
    }
    for (data, limits) in cases {
        let (a, alog) = run(data, Mode::Strict, &limits);
        let (b, blog, bmemo) = run_kept(data, Mode::Strict, &limits);
        let show = |r: &Result<Stopped<String>, PickleError>| match r {
            Ok(s) => format!("ok {} at {} proto {}", s.value, s.end, s.protocol),
            Err(e) => format!("err {e} {:?}", e.kind()),
        };
        assert_eq!(show(&a), show(&b), "{data:?}");
        assert_eq!(alog, blog, "{data:?}");
        let (c, clog, cmemo) = run_when(data, &limits, true);
        assert_eq!((show(&a), &alog), (show(&c), &clog), "{data:?}");
        if a.is_ok() {
            assert_eq!(bmemo, cmemo, "{data:?}");
        }
        let (d, dlog, _) = run_when(data, &limits, false);
        assert_eq!((show(&a), &alog), (show(&d), &dlog), "{data:?}");
    }
    // The values are the ones the plain memo gives, and of the three entries the two read are
    // held.
    let data = b"\x80\x04N\x94K\x01\x94K\x02\x94(h\x02h\x00t.";
    let limits = Limits::default();
    let (r, _, memo) = run_kept(data, Mode::Strict, &limits);
    assert_eq!(r.unwrap().value, "Tuple[Int(2),None]");
    assert_eq!(memo, (3, 0, 2));
    // The superset machine (the scan) keeps everything.
    let (r, _, memo) = run_kept(data, Mode::Superset, &limits);
    r.unwrap();
    assert_eq!(memo.1, 3);
}

/// The GETs the decoder meets up to a STOP, or `None` when it does not reach one.
fn decoded_gets(data: &[u8]) -> Option<Vec<u32>> {
    let mut d = Decoder::new(data, 0, u64::MAX);
    let mut gets = Vec::new();
    loop {
        match d.next_op().ok()?.1 {
            Op::Get(i) => gets.push(i as u32),
            Op::Stop => return Some(gets),
            _ => {}
        }
    }
}

fn scanned_gets(data: &[u8]) -> Option<Vec<u32>> {
    let mut gets = Vec::new();
    crate::pickle::ops::memo_gets(data, 0, |i| gets.push(i))?;
    Some(gets)
}

/// The memo pre-pass measures opcodes instead of decoding them: on every real checkpoint's
/// pickle, and on thousands of mutations of them, wherever the decoder reaches a STOP the scan
/// reaches it too with the same GETs (a pickle the decoder rejects is failed by the run itself).
#[test]
fn the_memo_scan_sees_exactly_the_gets_the_decoder_sees() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut pickles = Vec::new();
    for dir in ["ckpt", "jit"] {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).unwrap();
            // Every pickle inside a zip (data.pkl, constants.pkl); a legacy stream's first one.
            match zip::ZipArchive::new(std::io::Cursor::new(&bytes)) {
                Ok(mut z) => {
                    for i in 0..z.len() {
                        let mut f = z.by_index(i).unwrap();
                        if f.name().is_ok_and(|n| n.ends_with(".pkl")) {
                            // (This build's zip reader stores only: deflated members
                            // are left out here.)
                            let mut data = Vec::new();
                            if std::io::Read::read_to_end(&mut f, &mut data).is_ok() {
                                pickles.push(data);
                            }
                        }
                    }
                }
                Err(_) if bytes.first() == Some(&0x80) => pickles.push(bytes),
                Err(_) => {}
            }
        }
    }
    // Every opcode family, text ones included, written by hand.
    pickles.push(
        b"(I1\nF2.5\nL3L\nS'a'\nVb\np0\ng0\nccollections\nOrderedDict\nq\x01h\x01tp1\n.".to_vec(),
    );
    pickles.push(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01M\x02\x00J\x03\x00\x00\x00\x8a\x01\x05\x8b\x01\x00\x00\x00\x06G?\xf0\x00\x00\x00\x00\x00\x00U\x01aT\x01\x00\x00\x00bX\x01\x00\x00\x00c\x8c\x01d\x8d\x01\x00\x00\x00\x00\x00\x00\x00eC\x01fB\x01\x00\x00\x00g\x8e\x01\x00\x00\x00\x00\x00\x00\x00h\x96\x01\x00\x00\x00\x00\x00\x00\x00i\x88\x89N)\x85\x86\x87\x8f\x90\x91j\x00\x00\x00\x00h\x00r\x05\x00\x00\x00q\x06e.".to_vec());
    assert!(pickles.len() > 40, "the fixtures hold pickles");
    let mut rng = 0x5eed_u64;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize
    };
    let (mut agreed, mut stopped) = (0, 0);
    for p in &pickles {
        let want = decoded_gets(p);
        assert!(want.is_some(), "a real pickle decodes to its STOP");
        assert_eq!(scanned_gets(p), want);
        for _ in 0..300 {
            let mut m = p.clone();
            for _ in 0..1 + next() % 3 {
                let i = next() % m.len();
                m[i] = match next() % 3 {
                    0 => next() as u8,
                    1 => {
                        let codes = b"(.hjgqr\nKMJXUT\x8c\x95";
                        codes[next() % codes.len()]
                    }
                    _ => m[i] ^ 0x80,
                };
            }
            if next() % 8 == 0 {
                m.truncate(next() % m.len());
            }
            if let Some(gets) = decoded_gets(&m) {
                stopped += 1;
                assert_eq!(scanned_gets(&m), Some(gets), "{m:?}");
            }
            agreed += 1;
        }
    }
    assert!(
        stopped > agreed / 10,
        "enough mutations still reach a STOP: {stopped} of {agreed}"
    );
}
