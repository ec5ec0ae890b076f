//! The scan's walk over hand-made pickles: what it names, what it sees called, what it finds,
//! and that it goes on where the VM stops.

use super::*;
use crate::pickle::{NoHost, load};

/// `os.system('ls')`, protocol 0, without its STOP.
const OS_SYSTEM: &[u8] = b"cos\nsystem\n(S'ls'\ntR";

fn report() -> FileReport {
    let mut r = FileReport::new(Path::new("test.pkl"));
    r.format = "pickle".into();
    r
}

fn walk_with(data: &[u8], limits: &Limits) -> FileReport {
    let mut r = report();
    walk_pickles(data, "pickle", 1, limits, &mut r, 0);
    r.finish()
}

fn walk(data: &[u8]) -> FileReport {
    walk_with(data, &Limits::default())
}

fn kinds(r: &FileReport) -> Vec<&str> {
    r.findings.iter().map(|f| f.kind.as_str()).collect()
}

/// The global `module.name`, which must be in the report.
fn global<'a>(r: &'a FileReport, qualified: &str) -> &'a GlobalRef {
    r.globals
        .iter()
        .find(|g| g.qualified() == qualified)
        .unwrap_or_else(|| panic!("{qualified} not in {:?}", r.globals))
}

fn vm_fails(data: &[u8]) -> bool {
    load(data, 0, &mut NoHost, &Limits::default()).is_err()
}

#[test]
fn a_called_os_system_is_dangerous_and_its_call_recorded() {
    let r = walk(&[OS_SYSTEM, b"."].concat());
    let g = global(&r, "os.system");
    assert_eq!(g.class, GlobalClass::Dangerous);
    assert_eq!((g.offset, g.opcode), (0, "GLOBAL"));
    assert_eq!(g.calls.len(), 1);
    assert_eq!((g.calls[0].opcode, g.calls[0].offset), ("REDUCE", 19));
    assert!(g.is_called());
    assert_eq!(r.verdict, Verdict::Dangerous);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn a_walk_past_an_underflow_still_sees_a_later_os_system() {
    // POP and REDUCE on an empty stack stop the VM at byte 0; the payload comes after.
    let data = [b"0NR0".as_slice(), OS_SYSTEM, b"."].concat();
    assert!(vm_fails(&data));
    let r = walk(&data);
    assert!(global(&r, "os.system").is_called());
    assert_eq!(r.verdict, Verdict::Dangerous);
    // The underflow makes the pickle malformed; REDUCE of a placeholder is a call of a
    // computed value.
    assert_eq!(kinds(&r), ["malformed-pickle", "computed-callable"]);
}

#[test]
fn a_walk_past_a_missing_mark_still_sees_a_later_os_system() {
    let data = [b"t0".as_slice(), OS_SYSTEM, b"."].concat();
    assert!(vm_fails(&data));
    let r = walk(&data);
    assert!(global(&r, "os.system").is_called());
    assert_eq!(r.verdict, Verdict::Dangerous);
}

#[test]
fn a_memo_miss_is_a_finding_and_the_walk_goes_on() {
    let data = [b"g7\n0".as_slice(), OS_SYSTEM, b"."].concat();
    assert!(vm_fails(&data));
    let r = walk(&data);
    assert_eq!(kinds(&r), ["memo-miss"]);
    assert_eq!(
        r.findings[0].detail,
        "memo index 7 read before it was written"
    );
    assert_eq!(r.findings[0].offset, Some(0));
    assert!(global(&r, "os.system").is_called());
}

#[test]
fn a_global_fetched_from_the_memo_is_still_seen_called() {
    // The global is memoized, popped, fetched back and then called.
    let data = b"cos\nsystem\np0\n0g0\n(S'ls'\ntR.";
    let r = walk(data);
    assert!(global(&r, "os.system").is_called());
}

#[test]
fn an_opcode_across_a_frame_boundary_is_a_frame_straddle() {
    let data = b"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00\x8c\x05hello.";
    let r = walk(data);
    assert_eq!(kinds(&r), ["frame-straddle"]);
    assert_eq!(
        r.findings[0].detail,
        "the UNICODE opcode at 11 crosses the frame boundary at 13"
    );
    assert_eq!(r.verdict, Verdict::Suspicious);
}

#[test]
fn a_pickle_embedded_in_bytes_is_walked_as_its_own_member() {
    let inner = [OS_SYSTEM, b"."].concat();
    let mut data = vec![0x80, 3, b'C', inner.len() as u8];
    data.extend_from_slice(&inner);
    data.push(b'.');
    let r = walk(&data);
    let g = global(&r, "os.system");
    assert_eq!(g.member, "pickle@2 (embedded)");
    assert!(g.is_called());
    assert_eq!(r.verdict, Verdict::Dangerous);
}

#[test]
fn load_from_bytes_on_bytes_that_are_not_a_legacy_stream_is_dangerous() {
    let data = b"\x80\x02ctorch.storage\n_load_from_bytes\nC\x03abc\x85R.";
    let r = walk(data);
    assert_eq!(kinds(&r), ["embedded-not-checkpoint"]);
    assert!(
        r.findings[0]
            .detail
            .starts_with("torch.storage._load_from_bytes called by REDUCE at byte 40"),
        "{}",
        r.findings[0].detail
    );
    assert_eq!(r.verdict, Verdict::Dangerous);
    // Nor on anything but one byte string.
    let r = walk(b"\x80\x02ctorch.storage\n_load_from_bytes\nK\x01\x85R.");
    assert_eq!(kinds(&r), ["embedded-not-checkpoint"]);
    assert_eq!(r.verdict, Verdict::Dangerous);
}

#[test]
fn memo_dags_and_dup_chains_are_expansion_bombs_and_cycles_are_not() {
    // A tuple doubled 40 times through the memo: 2^40 values from ~200 bytes.
    let mut d = b"\x80\x02N".to_vec();
    for _ in 0..40 {
        d.extend(b"q\x00h\x00\x86");
    }
    d.push(b'.');
    let r = walk(&d);
    assert!(kinds(&r).contains(&"expansion-bomb"), "{:?}", kinds(&r));
    assert_eq!(r.verdict, Verdict::Suspicious);
    // The same with DUP.
    let mut d = b"\x80\x02N".to_vec();
    for _ in 0..40 {
        d.extend(b"2\x86");
    }
    d.push(b'.');
    assert!(kinds(&walk(&d)).contains(&"expansion-bomb"));
    // A list appending itself 100 times is a cycle a loader builds once.
    let mut d = b"\x80\x02]q\x00".to_vec();
    for _ in 0..100 {
        d.extend(b"h\x00a");
    }
    d.push(b'.');
    assert!(walk(&d).findings.is_empty());
}

#[test]
fn duplicate_keys_unhashable_keys_and_hash_collisions_are_suspicious() {
    let r = walk(b"\x80\x02}(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00aK\x02u.");
    assert_eq!(kinds(&r), ["duplicate-key"]);
    assert_eq!(r.verdict, Verdict::Suspicious);
    // In an OrderedDict state dict too.
    let r = walk(b"\x80\x02ccollections\nOrderedDict\n)R(K\x01K\x01K\x01K\x02u.");
    assert_eq!(kinds(&r), ["duplicate-key"]);
    // A dict that is its own key.
    let r = walk(b"\x80\x02}\x94h\x00X\x01\x00\x00\x00vs.");
    assert_eq!(kinds(&r), ["unhashable-key"]);
    // 2000 int keys equal modulo 2^61 - 1: one Python hash bucket.
    let mut d = b"\x80\x02}(".to_vec();
    for i in 1..2001i128 {
        d.push(b'\x8a');
        d.push(16);
        d.extend((i * ((1i128 << 61) - 1)).to_le_bytes());
        d.extend(b"N");
    }
    d.extend(b"u.");
    let r = walk(&d);
    assert!(kinds(&r).contains(&"hash-bomb"), "{:?}", kinds(&r));
    assert_eq!(walk::py_big_hash(&(-1i128).to_le_bytes()), -2);
    assert_eq!(walk::py_big_hash(&((1i128 << 61) + 4).to_le_bytes()), 5);
    assert_eq!(walk::py_big_hash(&(-7i128).to_le_bytes()), -7);
}

#[test]
fn python_2_names_are_reported_as_python_3_and_classified_as_written() {
    let r = walk(b"c__builtin__\neval\n(S'1'\ntR.");
    let g = global(&r, "builtins.eval");
    assert_eq!(g.class, GlobalClass::Dangerous);
    // `__builtin__.intern` is `sys.intern` to Python 3: dangerous, though `builtins.intern`
    // alone would not say so.
    let r = walk(b"c__builtin__\nintern\n.");
    assert_eq!(global(&r, "builtins.intern").class, GlobalClass::Dangerous);
    let r = walk(b"ccopy_reg\n_reconstructor\n.");
    global(&r, "copyreg._reconstructor");
    let r = walk(b"\x80\x04\x8c\nexceptions\x8c\tException\x93.");
    assert_eq!(global(&r, "builtins.Exception").opcode, "STACK_GLOBAL");
}

#[test]
fn stack_global_on_non_strings_is_a_finding() {
    let r = walk(b"\x80\x04NN\x93.");
    assert_eq!(kinds(&r), ["stack-global-operands"]);
}

#[test]
fn build_on_a_global_is_dangerous() {
    let r = walk(b"cos\npath\n}b.");
    assert_eq!(kinds(&r), ["build-on-global"]);
    assert_eq!(r.verdict, Verdict::Dangerous);
    assert_eq!(global(&r, "os.path").calls[0].opcode, "BUILD");
}

#[test]
fn a_text_number_the_vm_rejects_is_noted_and_skipped() {
    let data = [b"I0x10\n0".as_slice(), OS_SYSTEM, b"."].concat();
    assert!(vm_fails(&data));
    let r = walk(&data);
    assert_eq!(kinds(&r), ["text-int-differential"]);
    assert!(global(&r, "os.system").is_called());
}

#[test]
fn the_walk_stops_at_the_callers_limits() {
    let data = [OS_SYSTEM, b"."].concat();
    let few_ops = Limits {
        max_ops: 3,
        ..Limits::default()
    };
    let r = walk_with(&data, &few_ops);
    assert_eq!(kinds(&r), ["limit-exceeded"]);
    assert_eq!(r.findings[0].offset, Some(18));
    // The string limit is met while decoding: the opcode is undecodable.
    let short = Limits {
        max_string: 2,
        ..Limits::default()
    };
    let r = walk_with(b"C\x05hello.", &short);
    assert_eq!(kinds(&r), ["undecodable-pickle"]);
    assert!(r.findings[0].detail.contains("--max-string-bytes"));
}

#[test]
fn truncation_and_trailing_bytes_are_findings() {
    let r = walk(OS_SYSTEM);
    assert_eq!(kinds(&r), ["truncated-pickle"]);
    assert_eq!(r.findings[0].offset, Some(OS_SYSTEM.len() as u64));
    let r = walk(b"N.garbage");
    assert_eq!(kinds(&r), ["bytes-after-stop"]);
    let r = walk(b"N.N.");
    assert_eq!(kinds(&r), ["multiple-pickles"]);
}

#[test]
fn stop_with_leftovers_and_odd_opcodes_are_findings() {
    let r = walk(b"NN.");
    assert_eq!(kinds(&r), ["stop-with-leftovers"]);
    assert_eq!(r.findings[0].detail, "STOP with 2 values and 0 open marks");
    let r = walk(b"(cos\nsystem\nS'ls'\no.");
    assert_eq!(kinds(&r), ["opcode-obj"]);
    assert!(global(&r, "os.system").is_called());
    let r = walk(b"(S'ls'\nios\nsystem\n.");
    assert_eq!(kinds(&r), ["opcode-inst"]);
    assert_eq!(global(&r, "os.system").opcode, "INST");
}

/// The policy skips its walk of the main pickle only where the VM's run answers for it; every
/// file the walk finds dangerous is still refused, whichever way the policy took.
#[test]
fn the_policy_relies_on_the_vm_run_only_where_it_answers_for_the_pickle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let open = |p: &str| Checkpoint::open(&root.join(p)).expect(p);
    // A plain state dict: the run answers.
    let plain = open("tests/fixtures/ckpt/many_tensors.pt");
    assert!(vm_answers_the_policy(&plain));
    assert!(policy_check(&plain, false, &Limits::default()).is_ok());
    // A pickle in a string, `_codecs.encode`, a payload after STOP: the walk must run, and it
    // finds what the VM did not look at.
    for p in [
        "tests/adversarial/nested_pickle_loads.pt",
        "tests/adversarial/nested_via_codecs.pt",
        "tests/adversarial/zip_payload_after_stop.pt",
    ] {
        // The VM reads each of them (their payloads are data to it).
        let c = open(p);
        assert!(!vm_answers_the_policy(&c), "{p}");
        let r = scan_file(&root.join(p), &OpenOptions::default());
        assert_eq!(r.verdict, Verdict::Dangerous, "{p}");
        assert!(policy_check(&c, false, &Limits::default()).is_err(), "{p}");
    }
}
