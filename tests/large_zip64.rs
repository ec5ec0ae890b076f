//! A checkpoint holding one tensor larger than 4 GiB (a zip64 record) converts correctly.
//!
//! Ignored by default: it writes about 9 GB. Run on demand with
//! `cargo test --release --test large_zip64 -- --ignored`.

#[allow(dead_code)]
#[path = "../examples/bench/synth.rs"]
mod synth;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use synth::{Dt, TensorSpec};

/// Reads `len` bytes at `at`.
fn read(f: &File, at: u64, len: u64) -> Vec<u8> {
    let mut b = vec![0u8; len as usize];
    f.read_exact_at(&mut b, at).unwrap();
    b
}

/// The safetensors header and where the data section starts.
fn header(path: &Path) -> (serde_json::Value, u64) {
    let f = File::open(path).unwrap();
    let n = u64::from_le_bytes(read(&f, 0, 8).try_into().unwrap());
    (serde_json::from_slice(&read(&f, 8, n)).unwrap(), 8 + n)
}

#[test]
#[ignore = "writes about 9 GB; run with --ignored"]
fn tensor_larger_than_4_gib_in_a_zip64_record_converts_bit_exactly() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let src = dir.path().join("big.pt");
    let out = dir.path().join("big.safetensors");
    // 4 GiB + 4 KiB of f32, then a small bf16 tensor whose record starts beyond 4 GiB.
    let tensors = vec![
        TensorSpec::contiguous("huge", Dt::F32, &[(1 << 30) + 1024]),
        TensorSpec::contiguous("after", Dt::Bf16, &[3, 1000]),
    ];
    synth::write_zip(&src, "archive", &tensors).unwrap();

    // The source really is zip64: a record over 4 GiB, one starting past 4 GiB, a zip64 EOCD.
    let mut zip = zip::ZipArchive::new(File::open(&src).unwrap()).unwrap();
    let mut starts = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let rec = zip.by_name(&format!("archive/data/{i}")).unwrap();
        assert_eq!(rec.size(), t.storage_bytes());
        starts.push(rec.data_start().unwrap());
    }
    assert!(tensors[0].storage_bytes() > u32::MAX as u64);
    assert!(starts[1] > u32::MAX as u64);
    let src_file = File::open(&src).unwrap();
    let src_len = src_file.metadata().unwrap().len();
    let tail = read(&src_file, src_len - 98, 98);
    assert!(
        tail.windows(4).any(|w| w == b"PK\x06\x06"),
        "no zip64 end of central directory record"
    );

    let status = Command::new(env!("CARGO_BIN_EXE_safetensorize"))
        .arg("convert")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());

    let (h, data_start) = header(&out);
    let out_file = File::open(&out).unwrap();
    for (i, t) in tensors.iter().enumerate() {
        let entry = &h[&t.name];
        assert_eq!(
            entry["dtype"],
            if t.dtype == Dt::F32 { "F32" } else { "BF16" },
            "{}",
            t.name
        );
        assert_eq!(entry["shape"], serde_json::json!(t.shape), "{}", t.name);
        let a = entry["data_offsets"][0].as_u64().unwrap();
        let b = entry["data_offsets"][1].as_u64().unwrap();
        let len = t.storage_bytes();
        assert_eq!(b - a, len, "{}", t.name);
        // The start, the end, around the 4 GiB mark, and a spread of points in between.
        let sample = 4096.min(len);
        let mut at: Vec<u64> = vec![0, len - sample];
        if len > 1 << 32 {
            at.push((1 << 32) - sample / 2);
        }
        at.extend((1..16).map(|k| (len / 16 * k).min(len - sample) / 64 * 64 + 7));
        for off in at {
            let got = read(&out_file, data_start + a + off, sample);
            let source = read(&src_file, starts[i] + off, sample);
            let mut want = vec![0u8; sample as usize];
            synth::fill(i as u64, off, &mut want);
            assert!(
                source == want,
                "{}: the generator's source bytes at {off} are not what it meant to write",
                t.name
            );
            assert!(
                got == source,
                "{}: output bytes at {off} differ from the source",
                t.name
            );
        }
    }
}
