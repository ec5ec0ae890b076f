//! `convert -o` never writes over its source, whatever path spells it, and never writes
//! through a link at the output path.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");
const FIXTURE: &str = "tests/fixtures/ckpt/views_zip.pt";

fn convert(cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(BIN)
        .current_dir(cwd)
        .arg("convert")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn setup() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let bytes = std::fs::read(src).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("a.pt"), &bytes).unwrap();
    (dir, bytes)
}

#[test]
fn an_output_that_is_the_source_is_refused_with_or_without_overwrite_in_every_spelling() {
    let (dir, bytes) = setup();
    std::fs::hard_link(dir.path().join("a.pt"), dir.path().join("hard.pt")).unwrap();
    std::os::unix::fs::symlink("a.pt", dir.path().join("link.pt")).unwrap();
    for out in ["a.pt", "./a.pt", "sub/../a.pt", "hard.pt", "link.pt"] {
        for extra in [&[][..], &["--overwrite"][..]] {
            let mut args = vec!["a.pt", "-o", out];
            args.extend(extra);
            let (code, err) = convert(dir.path(), &args);
            assert_eq!(code, Some(1), "-o {out} {extra:?}: {err}");
            assert!(err.contains("is the source"), "-o {out} {extra:?}: {err}");
            assert_eq!(
                std::fs::read(dir.path().join("a.pt")).unwrap(),
                bytes,
                "-o {out} {extra:?} changed the source"
            );
        }
    }
    // The link still points at the source, and no temp file is left behind.
    assert!(
        std::fs::symlink_metadata(dir.path().join("link.pt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.pt", "hard.pt", "link.pt", "sub"]);
}

#[test]
fn a_link_at_the_output_is_replaced_never_written_through() {
    let (dir, _) = setup();
    let other = dir.path().join("other.txt");
    std::fs::write(&other, b"not yours").unwrap();
    std::os::unix::fs::symlink("other.txt", dir.path().join("out.safetensors")).unwrap();
    let (code, err) = convert(dir.path(), &["a.pt", "-o", "out.safetensors"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already exists"), "{err}");
    let (code, err) = convert(
        dir.path(),
        &["a.pt", "-o", "out.safetensors", "--overwrite"],
    );
    assert_eq!(code, Some(0), "{err}");
    let meta = std::fs::symlink_metadata(dir.path().join("out.safetensors")).unwrap();
    assert!(meta.file_type().is_file(), "the link was not replaced");
    assert_eq!(std::fs::read(&other).unwrap(), b"not yours");
    let out = std::fs::read(dir.path().join("out.safetensors")).unwrap();
    let n = u64::from_le_bytes(out[..8].try_into().unwrap()) as usize;
    assert_eq!(out[8], b'{');
    assert!(8 + n <= out.len());
}

#[test]
fn the_library_convert_refuses_the_source_as_its_output() {
    let (dir, bytes) = setup();
    let a = dir.path().join("a.pt");
    let spelled = dir.path().join("sub").join("..").join("a.pt");
    let opts = safetensorize::ConvertOptions {
        overwrite: true,
        ..Default::default()
    };
    let err = safetensorize::convert(&a, &spelled, &opts, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("is the source"), "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), bytes);
}

#[test]
fn sharded_outputs_and_their_index_never_replace_the_source() {
    let (dir, bytes) = setup();
    // A checkpoint saved under the name its single shard would get.
    std::fs::rename(
        dir.path().join("a.pt"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec![
            "model.safetensors",
            "--max-shard-size",
            "1TB",
            "-o",
            "./model.safetensors",
        ];
        args.extend(extra);
        let (code, err) = convert(dir.path(), &args);
        assert_eq!(code, Some(1), "{extra:?}: {err}");
        assert!(err.contains("is the source"), "{extra:?}: {err}");
        assert_eq!(
            std::fs::read(dir.path().join("model.safetensors")).unwrap(),
            bytes
        );
    }
    // Several shards: an index at the output name that links to the source is refused too.
    std::fs::rename(
        dir.path().join("model.safetensors"),
        dir.path().join("a.pt"),
    )
    .unwrap();
    std::os::unix::fs::symlink("a.pt", dir.path().join("m.safetensors.index.json")).unwrap();
    let args = [
        "a.pt",
        "--max-shard-size",
        "100B",
        "-o",
        "m.safetensors",
        "--overwrite",
    ];
    let (code, err) = convert(dir.path(), &args);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("m.safetensors.index.json") && err.contains("is the source"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.path().join("a.pt")).unwrap(), bytes);
    // Checked before anything is written: no shard appeared.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.pt", "m.safetensors.index.json", "sub"]);
}

#[test]
fn migrate_never_replaces_a_source_that_its_output_name_links_to() {
    let (dir, bytes) = setup();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::rename(dir.path().join("a.pt"), model.join("pytorch_model.bin")).unwrap();
    std::os::unix::fs::symlink("pytorch_model.bin", model.join("model.safetensors")).unwrap();
    let o = Command::new(BIN)
        .args(["migrate", "--overwrite", "--json"])
        .arg(&model)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(out.contains("is the source"), "{out}\n{err}");
    assert_eq!(
        std::fs::read(model.join("pytorch_model.bin")).unwrap(),
        bytes
    );
    assert!(
        std::fs::symlink_metadata(model.join("model.safetensors"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// Converting, scanning and inspecting a checkpoint leave it as it was: its bytes and its
/// modification time, and its access time too (the file is read with `O_NOATIME`, which its
/// owner may set). Both times are set three days back first, so that a `relatime` mount would
/// update the access time on the first read.
#[test]
fn converting_scanning_and_inspecting_leave_the_source_and_its_times_alone() {
    let (dir, bytes) = setup();
    let src = dir.path().join("a.pt");
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
    let times = std::fs::FileTimes::new()
        .set_accessed(past)
        .set_modified(past);
    std::fs::File::options()
        .write(true)
        .open(&src)
        .unwrap()
        .set_times(times)
        .unwrap();
    let before = std::fs::metadata(&src).unwrap();
    let (code, err) = convert(dir.path(), &["a.pt", "-o", "out.safetensors"]);
    assert_eq!(code, Some(0), "{err}");
    for cmd in ["scan", "inspect"] {
        let o = Command::new(BIN)
            .current_dir(dir.path())
            .args([cmd, "a.pt"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{cmd}: {o:?}");
    }
    let after = std::fs::metadata(&src).unwrap();
    assert_eq!(std::fs::read(&src).unwrap(), bytes);
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
    assert_eq!(
        after.accessed().unwrap(),
        before.accessed().unwrap(),
        "the source's access time changed"
    );
}
