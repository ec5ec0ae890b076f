//! Golden tests: run the real binary over the torch-written fixture corpus.
//!
//! `tests/fixtures/manifest.json` (written by `tests/fixtures/generate.py`, which needs torch and
//! is not run here) lists every case. An `ok` case must convert and match its golden file, which
//! the official `safetensors.torch.save_file` wrote: equal headers as JSON values (so
//! `__metadata__` is compared as a map) and a byte-identical data section. An `error` case must
//! fail cleanly: a non-zero exit that is not a panic, the expected words on stderr, and nothing
//! left in the output directory.
//!
//! Each test is named after the behaviour its cases pin (see [`BEHAVIOURS`]); it collects every
//! failing case and reports them together, each with the manifest's note on what the case is.
//! `every_manifest_case_is_pinned_by_exactly_one_behaviour_test` keeps the table and the
//! manifest in step, so no case is left unrun.

use serde_json::Value;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_safetensorize");
/// A case that runs longer than this is a failure (the fixtures are a few KB each).
const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Rust's exit code for a panic in the main thread.
const PANIC_EXIT_CODE: i32 = 101;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures_dir() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

/// One manifest entry.
#[derive(Debug)]
struct Case {
    name: String,
    group: String,
    /// Relative to the repository root (the binary's working directory).
    input: PathBuf,
    args: Vec<String>,
    expect_ok: bool,
    golden: Option<PathBuf>,
    error_contains: Vec<String>,
    /// What the case is, from the manifest (named in failure messages).
    note: String,
}

/// `a/b/../../c` -> `c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn str_field(case: &Value, key: &str) -> String {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("manifest case {case}: missing string field {key:?}"))
        .to_owned()
}

fn string_list(case: &Value, key: &str) -> Vec<String> {
    match &case[key] {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .unwrap_or_else(|| panic!("manifest: {key} must hold strings"))
                    .to_owned()
            })
            .collect(),
        other => panic!("manifest: {key} must be a list, got {other}"),
    }
}

fn load_manifest() -> Vec<Case> {
    let path = fixtures_dir().join("manifest.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let manifest: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixtures_rel = Path::new("tests").join("fixtures");
    manifest["cases"]
        .as_array()
        .expect("manifest: `cases` must be a list")
        .iter()
        .map(|case| {
            let expect = str_field(case, "expect");
            assert!(
                expect == "ok" || expect == "error",
                "manifest: bad expect {expect:?}"
            );
            Case {
                name: str_field(case, "name"),
                group: str_field(case, "group"),
                input: normalize(&fixtures_rel.join(str_field(case, "input"))),
                args: string_list(case, "args"),
                expect_ok: expect == "ok",
                golden: case["golden"]
                    .as_str()
                    .map(|g| normalize(&fixtures_rel.join(g))),
                error_contains: string_list(case, "error_contains"),
                note: case["note"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// What one run of the binary produced.
struct Run {
    /// `None` if it was killed after [`CASE_TIMEOUT`] or by a signal.
    status: Option<ExitStatus>,
    timed_out: bool,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        let status = match (self.timed_out, self.status) {
            (true, _) => "timed out".to_owned(),
            (false, Some(s)) => s.to_string(),
            (false, None) => "no status".to_owned(),
        };
        let mut stderr = self.stderr.trim().to_owned();
        if stderr.len() > 2000 {
            let mut cut = 2000;
            while !stderr.is_char_boundary(cut) {
                cut -= 1;
            }
            stderr.truncate(cut);
            stderr.push_str("...");
        }
        format!("{status}; stderr: {stderr:?}")
    }

    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Run `safetensorize <args>` from the repository root. stdout/stderr go to files in `log_dir`
/// (never the output directory, which error cases require to stay empty).
fn run_binary(args: &[&std::ffi::OsStr], log_dir: &Path) -> Run {
    let stdout_path = log_dir.join("stdout");
    let stderr_path = log_dir.join("stderr");
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).expect("create stdout log"))
        .stderr(fs::File::create(&stderr_path).expect("create stderr log"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let deadline = Instant::now() + CASE_TIMEOUT;
    let (status, timed_out) = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break (Some(status), false),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let stderr = String::from_utf8_lossy(&fs::read(&stderr_path).unwrap_or_default()).into_owned();
    Run {
        status,
        timed_out,
        stderr,
    }
}

fn convert(input: &Path, output: &Path, extra: &[String], log_dir: &Path) -> Run {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "convert".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    run_binary(&args, log_dir)
}

/// A parsed safetensors file.
struct Safetensors {
    header: Value,
    data: Vec<u8>,
}

fn parse_safetensors(bytes: &[u8]) -> Result<Safetensors, String> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .ok_or_else(|| {
            format!(
                "file is {} bytes, shorter than the 8-byte prefix",
                bytes.len()
            )
        })?
        .try_into()
        .expect("8 bytes");
    let n = u64::from_le_bytes(len_bytes);
    let header_end = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| format!("header length {n} exceeds file length {}", bytes.len()))?;
    let text = std::str::from_utf8(&bytes[8..header_end])
        .map_err(|e| format!("header is not UTF-8: {e}"))?;
    if !text.starts_with('{') {
        return Err(format!(
            "header text does not start with '{{': {:?}",
            &text[..text.len().min(40)]
        ));
    }
    let header: Value =
        serde_json::from_str(text).map_err(|e| format!("header is not JSON: {e}"))?;
    let tensors = header.as_object().ok_or("header is not a JSON object")?;
    let data = bytes[header_end..].to_vec();
    // The total length must be exactly 8 + N + (end of the last tensor).
    let mut data_end = 0u64;
    for (name, info) in tensors {
        if name == "__metadata__" {
            continue;
        }
        let end = info["data_offsets"][1]
            .as_u64()
            .ok_or_else(|| format!("tensor {name:?}: no data_offsets"))?;
        data_end = data_end.max(end);
    }
    if data_end != data.len() as u64 {
        return Err(format!(
            "total length {} != 8 + N ({n}) + data ({data_end}): {} stray or missing bytes",
            bytes.len(),
            data.len() as i128 - data_end as i128
        ));
    }
    Ok(Safetensors { header, data })
}

/// Name the tensors whose headers differ, so a failure says more than "not equal".
fn header_diff(got: &Value, want: &Value) -> String {
    let (Some(got), Some(want)) = (got.as_object(), want.as_object()) else {
        return format!("got {got}, want {want}");
    };
    let mut lines = Vec::new();
    for (name, w) in want {
        match got.get(name) {
            None => lines.push(format!("missing {name:?} (want {w})")),
            Some(g) if g != w => lines.push(format!("{name:?}: got {g}, want {w}")),
            Some(_) => {}
        }
    }
    for (name, g) in got {
        if !want.contains_key(name) {
            lines.push(format!("unexpected {name:?}: {g}"));
        }
    }
    lines.truncate(12);
    lines.join("; ")
}

fn check_ok(case: &Case, run: &Run, out: &Path) -> Result<(), String> {
    if run.code() != Some(0) {
        return Err(format!("expected success, got {}", run.describe()));
    }
    let golden_path = repo_root().join(case.golden.as_ref().ok_or("ok case without golden")?);
    let golden_bytes =
        fs::read(&golden_path).map_err(|e| format!("{}: {e}", golden_path.display()))?;
    let golden = parse_safetensors(&golden_bytes)
        .map_err(|e| format!("golden {}: {e}", golden_path.display()))?;
    let out_bytes = fs::read(out).map_err(|e| format!("no output file: {e}"))?;
    let got = parse_safetensors(&out_bytes).map_err(|e| format!("output: {e}"))?;
    if got.header != golden.header {
        return Err(format!(
            "header differs: {}",
            header_diff(&got.header, &golden.header)
        ));
    }
    if got.data != golden.data {
        let first = got
            .data
            .iter()
            .zip(&golden.data)
            .position(|(a, b)| a != b)
            .unwrap_or(got.data.len().min(golden.data.len()));
        return Err(format!(
            "data differs: {} vs {} golden bytes, first difference at data offset {first}",
            got.data.len(),
            golden.data.len()
        ));
    }
    Ok(())
}

fn check_error(case: &Case, run: &Run, out_dir: &Path) -> Result<(), String> {
    let mut problems = Vec::new();
    match run.code() {
        Some(0) => problems.push("expected failure, got exit 0".to_owned()),
        Some(PANIC_EXIT_CODE) => problems.push("exit 101: the binary panicked".to_owned()),
        Some(_) => {}
        None => problems.push(format!("no exit code ({})", run.describe())),
    }
    for word in &case.error_contains {
        if !run.stderr.contains(word.as_str()) {
            problems.push(format!("stderr lacks {word:?}"));
        }
    }
    let leftovers: Vec<String> = fs::read_dir(out_dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !leftovers.is_empty() {
        problems.push(format!("output directory not empty: {leftovers:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} ({})", problems.join("; "), run.describe()))
    }
}

fn check_case(case: &Case) -> Result<(), String> {
    if !repo_root().join(&case.input).is_file() {
        return Err(format!("input {} does not exist", case.input.display()));
    }
    let out_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = out_dir.path().join("out.safetensors");
    let run = convert(&case.input, &out, &case.args, log_dir.path());
    if case.expect_ok {
        check_ok(case, &run, &out)
    } else {
        check_error(case, &run, out_dir.path())
    }
}

/// The manifest's cases by the behaviour they pin: (test name, manifest group, case names).
const BEHAVIOURS: &[(&str, &str, &[&str])] = &[
    (
        "every_safetensors_dtype_survives_bit_exact_from_zip",
        "core",
        &["dtypes_zip"],
    ),
    (
        "every_legacy_typed_storage_dtype_survives_bit_exact",
        "core",
        &["dtypes_legacy"],
    ),
    (
        "pickle_protocols_2_to_5_convert_in_the_zip_and_the_legacy_format",
        "core",
        &[
            "proto2_zip",
            "proto2_legacy",
            "proto3_zip",
            "proto3_legacy",
            "proto4_zip",
            "proto4_legacy",
            "proto5_zip",
            "proto5_legacy",
        ],
    ),
    (
        "the_zip_root_folder_is_found_whatever_torch_named_it_or_none",
        "core",
        &[
            "zip_prefix_archive",
            "zip_prefix_stem",
            "zip_prefix_dots",
            "zip_root_level",
        ],
    ),
    (
        "an_archive_rezipped_stored_or_deflated_converts_to_the_same_bytes",
        "core",
        &["rezip_deflated", "rezip_stored"],
    ),
    (
        "strided_views_are_written_as_their_row_major_values",
        "core",
        &["views_zip", "views_legacy"],
    ),
    (
        "exact_aliases_are_written_once_and_recorded_in_the_metadata",
        "core",
        &["aliases", "aliases_legacy"],
    ),
    (
        "keep_aliases_writes_every_name_with_its_own_copy",
        "core",
        &["aliases_keep"],
    ),
    (
        "parameters_and_module_state_dicts_convert_as_plain_tensors",
        "core",
        &["parameters", "module_state_dict"],
    ),
    (
        "the_default_selection_takes_state_dict_then_the_first_default_key_holding_tensors",
        "core",
        &[
            "sel_state_dict",
            "sel_model",
            "sel_priority",
            "sel_fallthrough",
        ],
    ),
    (
        "an_explicit_key_selects_a_subtree_and_names_tensors_relative_to_it",
        "core",
        &["sel_key_model", "sel_key_dotted", "sel_key_empty"],
    ),
    (
        "without_a_selectable_key_the_whole_tree_is_named_by_dotted_paths",
        "core",
        &["names_nested", "root_list"],
    ),
    (
        "hundreds_of_storages_with_long_names_convert_in_checkpoint_order",
        "core",
        &["many_tensors"],
    ),
    (
        "the_shipped_example_model_converts_to_its_golden",
        "core",
        &["example"],
    ),
    (
        "tensors_safetensors_cannot_hold_are_refused_naming_the_dtype_and_the_tensor",
        "refuse",
        &[
            "refuse_complex128",
            "refuse_complex32",
            "refuse_quint8",
            "refuse_qint8_per_channel",
            "refuse_sparse",
            "refuse_bits8",
        ],
    ),
    (
        "truncated_or_incomplete_checkpoints_fail_cleanly_naming_the_file_and_writing_nothing",
        "malformed",
        &[
            "mal_zip_truncated",
            "mal_legacy_truncated",
            "mal_legacy_short_last",
            "mal_zip_short_record",
            "mal_zip_missing_record",
        ],
    ),
    (
        "files_that_are_not_checkpoints_fail_cleanly_naming_the_file_and_writing_nothing",
        "malformed",
        &["mal_empty", "mal_random", "mal_text"],
    ),
    (
        "a_torchscript_archive_converts_its_module_attributes",
        "wild",
        &["torchscript"],
    ),
    (
        "a_scripted_module_with_plain_tensor_attributes_converts_to_exactly_its_state_dict",
        "wild",
        &["torchscript_attrs"],
    ),
    (
        "torchscript_tensor_attributes_are_written_after_the_state_dict_only_when_asked",
        "wild",
        &["torchscript_attrs_flag"],
    ),
    (
        "a_whole_pickled_module_converts_as_its_state_dict",
        "wild",
        &["whole_module_zip", "whole_module_legacy"],
    ),
    (
        "lightning_and_fairseq_checkpoints_convert_their_model_weights",
        "wild",
        &["lightning", "fairseq"],
    ),
    (
        "lazy_conjugate_and_negative_views_are_resolved_bit_exact",
        "wild",
        &["conj_neg"],
    ),
    (
        "a_big_endian_checkpoint_is_written_little_endian",
        "wild",
        &["big_endian"],
    ),
    (
        "plain_pickle_dumps_of_tensors_convert_from_their_embedded_streams",
        "wild",
        &["pickle_dumps_p2", "pickle_dumps_p4"],
    ),
    (
        "numpy_arrays_are_written_only_with_include_numpy",
        "wild",
        &["numpy_arrays", "numpy_skipped"],
    ),
    (
        "tensors_rebuilt_with_python_state_convert_as_plain_tensors",
        "wild",
        &["rebuild_with_state"],
    ),
    (
        "new_dtypes_saved_in_the_legacy_format_convert_although_torch_cannot_load_them",
        "wild",
        &["legacy_new_dtypes"],
    ),
    (
        "the_tar_container_of_torch_0_1_converts_and_a_short_storage_in_it_is_refused",
        "wild",
        &["tar_v2", "tar_truncated_storage"],
    ),
    (
        "a_python2_era_legacy_stream_converts",
        "wild",
        &["py2_legacy"],
    ),
    (
        "legacy_storage_views_convert_and_one_past_its_root_storage_is_refused",
        "wild",
        &["legacy_views", "legacy_view_out_of_range"],
    ),
];

/// Runs the cases of one [`BEHAVIOURS`] entry; every failing case is reported with its note.
fn run_behaviour(test: &str) {
    let &(_, group, names) = BEHAVIOURS
        .iter()
        .find(|(t, _, _)| *t == test)
        .unwrap_or_else(|| panic!("no behaviour {test:?} in BEHAVIOURS"));
    let manifest = load_manifest();
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| !manifest.iter().any(|c| c.name == **n && c.group == group))
        .collect();
    assert!(
        missing.is_empty(),
        "{test}: cases {missing:?} are not in manifest group {group:?}"
    );
    let cases: Vec<Case> = manifest
        .into_iter()
        .filter(|c| c.group == group && names.contains(&c.name.as_str()))
        .collect();
    assert!(!cases.is_empty(), "no cases in group {group:?}");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            check_case(case).err().map(|e| {
                format!(
                    "  {} ({} {}): {e}\n    the case: {}",
                    case.name,
                    case.input.display(),
                    case.args.join(" "),
                    case.note
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} `{group}` cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// One test per [`BEHAVIOURS`] entry, named after it.
macro_rules! behaviours {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_behaviour(stringify!($name));
            }
        )*
        /// The test functions, to check them against [`BEHAVIOURS`].
        const BEHAVIOUR_TESTS: &[&str] = &[$(stringify!($name)),*];
    };
}

behaviours!(
    every_safetensors_dtype_survives_bit_exact_from_zip,
    every_legacy_typed_storage_dtype_survives_bit_exact,
    pickle_protocols_2_to_5_convert_in_the_zip_and_the_legacy_format,
    the_zip_root_folder_is_found_whatever_torch_named_it_or_none,
    an_archive_rezipped_stored_or_deflated_converts_to_the_same_bytes,
    strided_views_are_written_as_their_row_major_values,
    exact_aliases_are_written_once_and_recorded_in_the_metadata,
    keep_aliases_writes_every_name_with_its_own_copy,
    parameters_and_module_state_dicts_convert_as_plain_tensors,
    the_default_selection_takes_state_dict_then_the_first_default_key_holding_tensors,
    an_explicit_key_selects_a_subtree_and_names_tensors_relative_to_it,
    without_a_selectable_key_the_whole_tree_is_named_by_dotted_paths,
    hundreds_of_storages_with_long_names_convert_in_checkpoint_order,
    the_shipped_example_model_converts_to_its_golden,
    tensors_safetensors_cannot_hold_are_refused_naming_the_dtype_and_the_tensor,
    truncated_or_incomplete_checkpoints_fail_cleanly_naming_the_file_and_writing_nothing,
    files_that_are_not_checkpoints_fail_cleanly_naming_the_file_and_writing_nothing,
    a_torchscript_archive_converts_its_module_attributes,
    a_scripted_module_with_plain_tensor_attributes_converts_to_exactly_its_state_dict,
    torchscript_tensor_attributes_are_written_after_the_state_dict_only_when_asked,
    a_whole_pickled_module_converts_as_its_state_dict,
    lightning_and_fairseq_checkpoints_convert_their_model_weights,
    lazy_conjugate_and_negative_views_are_resolved_bit_exact,
    a_big_endian_checkpoint_is_written_little_endian,
    plain_pickle_dumps_of_tensors_convert_from_their_embedded_streams,
    numpy_arrays_are_written_only_with_include_numpy,
    tensors_rebuilt_with_python_state_convert_as_plain_tensors,
    new_dtypes_saved_in_the_legacy_format_convert_although_torch_cannot_load_them,
    the_tar_container_of_torch_0_1_converts_and_a_short_storage_in_it_is_refused,
    a_python2_era_legacy_stream_converts,
    legacy_storage_views_convert_and_one_past_its_root_storage_is_refused,
);

/// Every manifest case is run by exactly one behaviour test, in its own group, and every
/// behaviour has a test of that name: a case added to the manifest fails here until it is
/// given a behaviour.
#[test]
fn every_manifest_case_is_pinned_by_exactly_one_behaviour_test() {
    let mut problems = Vec::new();
    for case in load_manifest() {
        let owners: Vec<&str> = BEHAVIOURS
            .iter()
            .filter(|(_, g, names)| *g == case.group && names.contains(&case.name.as_str()))
            .map(|(t, _, _)| *t)
            .collect();
        if owners.len() != 1 {
            problems.push(format!(
                "case {} (group {}) is run by {} behaviour tests {owners:?}; the case: {}",
                case.name,
                case.group,
                owners.len(),
                case.note
            ));
        }
    }
    let mut tests: Vec<&str> = BEHAVIOUR_TESTS.to_vec();
    tests.sort();
    let mut table: Vec<&str> = BEHAVIOURS.iter().map(|(t, _, _)| *t).collect();
    table.sort();
    if tests != table {
        problems.push(format!(
            "test functions {tests:?} differ from the BEHAVIOURS table {table:?}"
        ));
    }
    let groups: std::collections::BTreeSet<&str> = BEHAVIOURS.iter().map(|(_, g, _)| *g).collect();
    assert_eq!(
        groups.into_iter().collect::<Vec<_>>(),
        ["core", "malformed", "refuse", "wild"]
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every manifest entry points at files that exist; needs no binary behaviour.
#[test]
fn every_manifest_case_names_an_existing_input_and_every_ok_case_a_golden() {
    let cases = load_manifest();
    let mut names = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for case in &cases {
        if !names.insert(case.name.clone()) {
            problems.push(format!("duplicate case name {}", case.name));
        }
        if !repo_root().join(&case.input).is_file() {
            problems.push(format!(
                "{}: missing input {}",
                case.name,
                case.input.display()
            ));
        }
        match (&case.golden, case.expect_ok) {
            (Some(g), true) if !repo_root().join(g).is_file() => {
                problems.push(format!("{}: missing golden {}", case.name, g.display()))
            }
            (None, true) => problems.push(format!("{}: ok case without golden", case.name)),
            _ => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The input is never modified; an existing output is refused without `--overwrite` and left
/// intact; `--overwrite` then replaces it.
#[test]
fn convert_never_changes_its_input_and_replaces_an_existing_output_only_with_overwrite() {
    let case = load_manifest()
        .into_iter()
        .find(|c| c.name == "example")
        .expect("manifest case `example`");
    let input = repo_root().join(&case.input);
    let before = fs::read(&input).expect("read input");

    let out_dir = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.safetensors");

    let first = convert(&case.input, &out, &[], log_dir.path());
    assert_eq!(first.code(), Some(0), "first run: {}", first.describe());
    check_ok(&case, &first, &out).expect("first output matches the golden");
    let first_output = fs::read(&out).unwrap();
    assert_eq!(
        fs::read(&input).unwrap(),
        before,
        "input changed by the first run"
    );

    let second = convert(&case.input, &out, &[], log_dir.path());
    assert!(
        !matches!(second.code(), Some(0) | Some(PANIC_EXIT_CODE)),
        "second run without --overwrite must fail cleanly: {}",
        second.describe()
    );
    assert_eq!(
        fs::read(&out).unwrap(),
        first_output,
        "refused run changed the existing output"
    );
    let entries: Vec<_> = fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "refused run left files behind: {entries:?}"
    );

    // Make the old output recognisably different, so we can tell it was really replaced.
    fs::write(&out, b"stale").unwrap();
    let third = convert(
        &case.input,
        &out,
        &["--overwrite".to_owned()],
        log_dir.path(),
    );
    assert_eq!(
        third.code(),
        Some(0),
        "--overwrite run: {}",
        third.describe()
    );
    check_ok(&case, &third, &out).expect("overwritten output matches the golden");
    assert_eq!(fs::read(&input).unwrap(), before, "input changed");
}
