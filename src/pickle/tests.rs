//! VM behaviour pinned against byte streams Python's own `pickle` wrote.

use super::*;

/// A canonical text form of a value, for comparisons.
fn render(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => {
            if *b {
                "True".into()
            } else {
                "False".into()
            }
        }
        Value::Int(i) => i.to_string(),
        Value::BigInt(b) => format!("big{:02x?}", b),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => format!("{s:?}"),
        Value::Bytes(b) => format!("b{:02x?}", b),
        Value::Tuple(t) => format!("({})", t.iter().map(render).collect::<Vec<_>>().join(", ")),
        Value::List(l) => format!(
            "[{}]",
            l.borrow().iter().map(render).collect::<Vec<_>>().join(", ")
        ),
        Value::Set(l) => format!(
            "set{{{}}}",
            l.borrow().iter().map(render).collect::<Vec<_>>().join(", ")
        ),
        Value::Dict(d) => format!(
            "{{{}}}",
            d.borrow()
                .entries()
                .iter()
                .map(|(k, v)| format!("{}: {}", render(k), render(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("<{}>", other.type_name()),
    }
}

fn run(bytes: &[u8]) -> Result<Loaded, PickleError> {
    load(bytes, 0, &mut NoHost, &Limits::default())
}

/// `pickle.dumps(obj, protocol=p)` for p in 0..=5, where obj is
/// `{'a': [1, -2, 2.5, 'xé', None, True, False, (1, 2), 2**70, -2**63], 'b': b'\x00\xff',
///   's': {3}, 'f': frozenset([4])}`.
const PYTHON_PICKLES: [&[u8]; 6] = [
    &[
        40, 100, 112, 48, 10, 86, 97, 10, 112, 49, 10, 40, 108, 112, 50, 10, 73, 49, 10, 97, 73,
        45, 50, 10, 97, 70, 50, 46, 53, 10, 97, 86, 120, 233, 10, 112, 51, 10, 97, 78, 97, 73, 48,
        49, 10, 97, 73, 48, 48, 10, 97, 40, 73, 49, 10, 73, 50, 10, 116, 112, 52, 10, 97, 76, 49,
        49, 56, 48, 53, 57, 49, 54, 50, 48, 55, 49, 55, 52, 49, 49, 51, 48, 51, 52, 50, 52, 76, 10,
        97, 76, 45, 57, 50, 50, 51, 51, 55, 50, 48, 51, 54, 56, 53, 52, 55, 55, 53, 56, 48, 56, 76,
        10, 97, 115, 86, 98, 10, 112, 53, 10, 99, 95, 99, 111, 100, 101, 99, 115, 10, 101, 110, 99,
        111, 100, 101, 10, 112, 54, 10, 40, 86, 92, 117, 48, 48, 48, 48, 255, 10, 112, 55, 10, 86,
        108, 97, 116, 105, 110, 49, 10, 112, 56, 10, 116, 112, 57, 10, 82, 112, 49, 48, 10, 115,
        86, 115, 10, 112, 49, 49, 10, 99, 95, 95, 98, 117, 105, 108, 116, 105, 110, 95, 95, 10,
        115, 101, 116, 10, 112, 49, 50, 10, 40, 40, 108, 112, 49, 51, 10, 73, 51, 10, 97, 116, 112,
        49, 52, 10, 82, 112, 49, 53, 10, 115, 86, 102, 10, 112, 49, 54, 10, 99, 95, 95, 98, 117,
        105, 108, 116, 105, 110, 95, 95, 10, 102, 114, 111, 122, 101, 110, 115, 101, 116, 10, 112,
        49, 55, 10, 40, 40, 108, 112, 49, 56, 10, 73, 52, 10, 97, 116, 112, 49, 57, 10, 82, 112,
        50, 48, 10, 115, 46,
    ],
    &[
        125, 113, 0, 40, 88, 1, 0, 0, 0, 97, 113, 1, 93, 113, 2, 40, 75, 1, 74, 254, 255, 255, 255,
        71, 64, 4, 0, 0, 0, 0, 0, 0, 88, 3, 0, 0, 0, 120, 195, 169, 113, 3, 78, 73, 48, 49, 10, 73,
        48, 48, 10, 40, 75, 1, 75, 2, 116, 113, 4, 76, 49, 49, 56, 48, 53, 57, 49, 54, 50, 48, 55,
        49, 55, 52, 49, 49, 51, 48, 51, 52, 50, 52, 76, 10, 76, 45, 57, 50, 50, 51, 51, 55, 50, 48,
        51, 54, 56, 53, 52, 55, 55, 53, 56, 48, 56, 76, 10, 101, 88, 1, 0, 0, 0, 98, 113, 5, 99,
        95, 99, 111, 100, 101, 99, 115, 10, 101, 110, 99, 111, 100, 101, 10, 113, 6, 40, 88, 3, 0,
        0, 0, 0, 195, 191, 113, 7, 88, 6, 0, 0, 0, 108, 97, 116, 105, 110, 49, 113, 8, 116, 113, 9,
        82, 113, 10, 88, 1, 0, 0, 0, 115, 113, 11, 99, 95, 95, 98, 117, 105, 108, 116, 105, 110,
        95, 95, 10, 115, 101, 116, 10, 113, 12, 40, 93, 113, 13, 75, 3, 97, 116, 113, 14, 82, 113,
        15, 88, 1, 0, 0, 0, 102, 113, 16, 99, 95, 95, 98, 117, 105, 108, 116, 105, 110, 95, 95, 10,
        102, 114, 111, 122, 101, 110, 115, 101, 116, 10, 113, 17, 40, 93, 113, 18, 75, 4, 97, 116,
        113, 19, 82, 113, 20, 117, 46,
    ],
    &[
        128, 2, 125, 113, 0, 40, 88, 1, 0, 0, 0, 97, 113, 1, 93, 113, 2, 40, 75, 1, 74, 254, 255,
        255, 255, 71, 64, 4, 0, 0, 0, 0, 0, 0, 88, 3, 0, 0, 0, 120, 195, 169, 113, 3, 78, 136, 137,
        75, 1, 75, 2, 134, 113, 4, 138, 9, 0, 0, 0, 0, 0, 0, 0, 0, 64, 138, 8, 0, 0, 0, 0, 0, 0, 0,
        128, 101, 88, 1, 0, 0, 0, 98, 113, 5, 99, 95, 99, 111, 100, 101, 99, 115, 10, 101, 110, 99,
        111, 100, 101, 10, 113, 6, 88, 3, 0, 0, 0, 0, 195, 191, 113, 7, 88, 6, 0, 0, 0, 108, 97,
        116, 105, 110, 49, 113, 8, 134, 113, 9, 82, 113, 10, 88, 1, 0, 0, 0, 115, 113, 11, 99, 95,
        95, 98, 117, 105, 108, 116, 105, 110, 95, 95, 10, 115, 101, 116, 10, 113, 12, 93, 113, 13,
        75, 3, 97, 133, 113, 14, 82, 113, 15, 88, 1, 0, 0, 0, 102, 113, 16, 99, 95, 95, 98, 117,
        105, 108, 116, 105, 110, 95, 95, 10, 102, 114, 111, 122, 101, 110, 115, 101, 116, 10, 113,
        17, 93, 113, 18, 75, 4, 97, 133, 113, 19, 82, 113, 20, 117, 46,
    ],
    &[
        128, 3, 125, 113, 0, 40, 88, 1, 0, 0, 0, 97, 113, 1, 93, 113, 2, 40, 75, 1, 74, 254, 255,
        255, 255, 71, 64, 4, 0, 0, 0, 0, 0, 0, 88, 3, 0, 0, 0, 120, 195, 169, 113, 3, 78, 136, 137,
        75, 1, 75, 2, 134, 113, 4, 138, 9, 0, 0, 0, 0, 0, 0, 0, 0, 64, 138, 8, 0, 0, 0, 0, 0, 0, 0,
        128, 101, 88, 1, 0, 0, 0, 98, 113, 5, 67, 2, 0, 255, 113, 6, 88, 1, 0, 0, 0, 115, 113, 7,
        99, 98, 117, 105, 108, 116, 105, 110, 115, 10, 115, 101, 116, 10, 113, 8, 93, 113, 9, 75,
        3, 97, 133, 113, 10, 82, 113, 11, 88, 1, 0, 0, 0, 102, 113, 12, 99, 98, 117, 105, 108, 116,
        105, 110, 115, 10, 102, 114, 111, 122, 101, 110, 115, 101, 116, 10, 113, 13, 93, 113, 14,
        75, 4, 97, 133, 113, 15, 82, 113, 16, 117, 46,
    ],
    &[
        128, 4, 149, 93, 0, 0, 0, 0, 0, 0, 0, 125, 148, 40, 140, 1, 97, 148, 93, 148, 40, 75, 1,
        74, 254, 255, 255, 255, 71, 64, 4, 0, 0, 0, 0, 0, 0, 140, 3, 120, 195, 169, 148, 78, 136,
        137, 75, 1, 75, 2, 134, 148, 138, 9, 0, 0, 0, 0, 0, 0, 0, 0, 64, 138, 8, 0, 0, 0, 0, 0, 0,
        0, 128, 101, 140, 1, 98, 148, 67, 2, 0, 255, 148, 140, 1, 115, 148, 143, 148, 40, 75, 3,
        144, 140, 1, 102, 148, 40, 75, 4, 145, 148, 117, 46,
    ],
    &[
        128, 5, 149, 93, 0, 0, 0, 0, 0, 0, 0, 125, 148, 40, 140, 1, 97, 148, 93, 148, 40, 75, 1,
        74, 254, 255, 255, 255, 71, 64, 4, 0, 0, 0, 0, 0, 0, 140, 3, 120, 195, 169, 148, 78, 136,
        137, 75, 1, 75, 2, 134, 148, 138, 9, 0, 0, 0, 0, 0, 0, 0, 0, 64, 138, 8, 0, 0, 0, 0, 0, 0,
        0, 128, 101, 140, 1, 98, 148, 67, 2, 0, 255, 148, 140, 1, 115, 148, 143, 148, 40, 75, 3,
        144, 140, 1, 102, 148, 40, 75, 4, 145, 148, 117, 46,
    ],
];

#[test]
fn every_protocol_python_writes_gives_the_same_value() {
    // 2**70 as little-endian two's complement: protocols 0 and 1 write it as text (`L...L\n`),
    // which decodes to a 16-byte buffer; protocols 2+ write LONG1 with the minimal 9 bytes.
    // Both are byte 8 = 0x40 and zero elsewhere, so the same number.
    let text_long = "big[00, 00, 00, 00, 00, 00, 00, 00, 40, 00, 00, 00, 00, 00, 00, 00]";
    let long1 = "big[00, 00, 00, 00, 00, 00, 00, 00, 40]";
    let want = |big: &str| {
        format!(
            "{{\"a\": [1, -2, 2.5, \"xé\", None, True, False, (1, 2), {big}, -9223372036854775808], \"b\": b[00, ff], \"s\": set{{3}}, \"f\": set{{4}}}}"
        )
    };
    let expected = [
        want(text_long),
        want(text_long),
        want(long1),
        want(long1),
        want(long1),
        want(long1),
    ];
    for (p, bytes) in PYTHON_PICKLES.iter().enumerate() {
        let loaded = run(bytes).unwrap_or_else(|e| panic!("protocol {p}: {e}"));
        assert_eq!(render(&loaded.value), expected[p], "protocol {p}");
        assert_eq!(
            loaded.end,
            bytes.len(),
            "protocol {p}: STOP is the last byte"
        );
        assert_eq!(
            loaded.protocol as usize,
            if p >= 2 { p } else { 0 },
            "protocol {p}"
        );
    }
}

#[test]
fn a_container_memoized_empty_and_filled_later_is_seen_filled_everywhere() {
    // [ {}, (memo 0) ] then BINGET 0, SETITEM 'k' 1 on the fetched dict, POP, STOP.
    let bytes = b"\x80\x02]}q\x00ah\x00X\x01\x00\x00\x00kK\x01s0.";
    let v = run(bytes).unwrap().value;
    assert_eq!(render(&v), "[{\"k\": 1}]");
}

#[test]
fn globals_are_names_and_calls_on_them_are_inert() {
    // os.system('touch x') via GLOBAL + REDUCE: nothing runs, an inert object results.
    let bytes = b"\x80\x02cos\nsystem\nX\x07\x00\x00\x00touch x\x85R.";
    let loaded = run(bytes).unwrap();
    assert_eq!(loaded.value.type_name(), "os.system");
    assert_eq!(loaded.globals.len(), 1);
    assert_eq!(loaded.globals[0].global.to_string(), "os.system");
    assert_eq!(loaded.globals[0].offset, 2);
}

#[test]
fn python2_module_names_are_mapped() {
    let v = run(b"c__builtin__\nset\n]K\x01a\x85R.").unwrap().value;
    assert_eq!(render(&v), "set{1}");
}

#[test]
fn truncated_and_invalid_pickles_are_errors_with_offsets() {
    let e = run(b"\x80\x02}q\x00(X\x05\x00\x00\x00ab").err().unwrap();
    assert!(e.msg.contains("truncated"), "{e}");
    let e = run(b"\x80\x02\xff.").err().unwrap();
    assert_eq!(e.offset, 2);
    let e = run(b"\x80\x02h\x07.").err().unwrap();
    assert!(e.msg.contains("memo"), "{e}");
    let e = run(b"\x80\x02a.").err().unwrap();
    assert!(e.msg.contains("underflow"), "{e}");
    let e = run(b"\x80\x02K\x05K\x01K\x02s.").err().unwrap();
    assert!(e.msg.contains("SETITEM"), "{e}");
    let e = run(b"\x80\x07N.").err().unwrap();
    assert!(e.msg.contains("protocol"), "{e}");
}

#[test]
fn a_huge_declared_length_is_checked_against_the_bytes_that_remain() {
    // BINBYTES8 declaring 2^60 bytes: refused without allocating.
    let mut b = b"\x80\x04\x8e".to_vec();
    b.extend((1u64 << 60).to_le_bytes());
    b.push(b'.');
    assert!(run(&b).is_err());
}

#[test]
fn the_vm_stops_at_a_limit_with_an_error_that_says_which() {
    let limits = Limits {
        max_ops: 3,
        ..Limits::default()
    };
    let Err(e) = load(b"(NNNNt.", 0, &mut NoHost, &limits) else {
        panic!("four opcodes ran under a limit of three");
    };
    assert!(e.is_limit(), "{e}");
    assert_eq!(
        e.to_string(),
        "at byte 3: more than 3 opcodes (--max-pickle-ops)"
    );
    let Err(e) = load(b"(NN", 0, &mut NoHost, &Limits::default()) else {
        panic!("a truncated pickle loaded");
    };
    assert!(e.is_truncated() && !e.is_limit(), "{e}");
    let Err(e) = load(b"g0\n.", 0, &mut NoHost, &Limits::default()) else {
        panic!("a memo miss loaded");
    };
    assert_eq!(e.kind(), PickleErrorKind::Malformed);
}

#[test]
fn a_value_is_three_words() {
    // Every value on the stack, in the memo and in a dict is this size (a state dict of
    // 100,000 tensors holds several per tensor): the word-wide tag (`repr(u64)`, so that a tag
    // read right after it is written is forwarded from the store) costs no space.
    assert_eq!(std::mem::size_of::<Value>(), 24);
    assert_eq!(std::mem::size_of::<Option<Value>>(), 24);
}
