//! The scan's walk over hand-made pickles: what it names, what it sees called, what it finds,
//! and that it goes on where the VM stops.

use super::*;
use crate::pickle::{NoHost, load};

/// `os.system('ls')`, protocol 0, without its STOP.
const OS_SYSTEM: &[u8] = b"cos\nsystem\n(S'ls'\ntR";

fn report() -> FileReport {
    FileReport {
        path: PathBuf::from("test.pkl"),
        format: "pickle".into(),
        verdict: Verdict::Safe,
        globals: Vec::new(),
        findings: Vec::new(),
        error: None,
    }
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
    // REDUCE of a placeholder is a call of a computed value.
    assert_eq!(kinds(&r), ["computed-callable"]);
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
fn load_from_bytes_on_bytes_that_are_not_a_legacy_stream_is_suspicious() {
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
    assert_eq!(r.verdict, Verdict::Suspicious);
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
