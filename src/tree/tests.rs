//! Walking object trees the VM built from hostile pickles: depth limits and shared containers.

use super::*;
use crate::pickle::{Limits, Loaded, NoHost, PickleError, load};

fn run(bytes: &[u8]) -> Result<Loaded, PickleError> {
    load(bytes, 0, &mut NoHost, &Limits::default())
}

#[test]
fn nesting_two_hundred_thousand_lists_deep_neither_overflows_nor_panics() {
    let n = 200_000;
    let mut bytes = b"\x80\x02".to_vec();
    bytes.extend(std::iter::repeat_n(b']', n));
    bytes.extend(std::iter::repeat_n(b'a', n - 1));
    bytes.push(b'.');
    let v = run(&bytes).unwrap().value;
    let err = flatten(&v, "").expect_err("walking stops at the depth limit");
    assert!(err.to_string().contains("--max-depth"), "{err}");
    drop(v);
}

#[test]
fn a_memo_bomb_of_shared_lists_is_walked_in_linear_time() {
    // L0 = []; L(k) = [L(k-1), L(k-1)] for 64 levels: 2^64 paths, 64 distinct lists.
    let mut bytes = b"\x80\x02]".to_vec();
    for _ in 0..64 {
        bytes.extend(b"q\x00](h\x00h\x00e");
    }
    bytes.push(b'.');
    let v = run(&bytes).unwrap().value;
    let started = std::time::Instant::now();
    let flat = flatten(&v, "").unwrap();
    assert!(flat.leaves.is_empty());
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
}
