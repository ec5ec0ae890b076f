#!/usr/bin/env python3
"""Check safetensorize's output with the official safetensors Python package (no torch).

    python tests/interop.py path/to/safetensorize [--group core] [--all]

For every `ok` case of tests/fixtures/manifest.json, run the binary into a temporary directory,
load the output and the golden file with `safetensors` (safe_open for names and metadata,
deserialize for raw bytes, numpy / ml_dtypes for values) and compare names, dtypes, shapes,
metadata and values bit for bit (so NaN payloads and -0.0 count). Default: every group except
`wild`; `--group G` selects one group, `--all` every group.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import ml_dtypes
import numpy as np
import safetensors

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

# safetensors dtype -> numpy dtype used to interpret values (bytes are compared regardless).
NUMPY_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
    "U32": np.uint32, "I32": np.int32, "U64": np.uint64, "I64": np.int64,
    "F16": np.float16, "F32": np.float32, "F64": np.float64, "C64": np.complex64,
    "BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2, "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz,
    "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz, "F8_E8M0": ml_dtypes.float8_e8m0fnu,
}


def load(path: pathlib.Path):
    """(metadata, {name: (dtype, shape, raw bytes)}) via the official package."""
    with safetensors.safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        names = set(f.keys())
    tensors = {name: (info["dtype"], list(info["shape"]), bytes(info["data"]))
               for name, info in safetensors.deserialize(path.read_bytes())}
    if set(tensors) != names:
        raise AssertionError(f"safe_open keys {sorted(names)} != deserialize keys {sorted(tensors)}")
    return metadata, tensors


def values(dtype: str, shape: list[int], raw: bytes) -> np.ndarray:
    np_dtype = NUMPY_DTYPES.get(dtype)
    if np_dtype is None:
        raise AssertionError(f"unexpected safetensors dtype {dtype}")
    return np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder("<")).reshape(shape)


def numpy_get_tensor(path: pathlib.Path, name: str, dtype: str):
    """safe_open(framework="numpy").get_tensor where numpy knows the dtype, else None."""
    if dtype in ("BF16",) or dtype.startswith("F8"):
        return None
    with safetensors.safe_open(str(path), framework="numpy") as f:
        return f.get_tensor(name)


def compare(out: pathlib.Path, golden: pathlib.Path) -> list[str]:
    problems = []
    got_meta, got = load(out)
    want_meta, want = load(golden)
    if got_meta != want_meta:
        problems.append(f"metadata {got_meta} != golden {want_meta}")
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        problems.append(f"names differ: missing {missing[:10]}, unexpected {extra[:10]}")
    for name in sorted(set(got) & set(want)):
        (gd, gs, gb), (wd, ws, wb) = got[name], want[name]
        if (gd, gs) != (wd, ws):
            problems.append(f"{name}: {gd}{gs} != golden {wd}{ws}")
            continue
        gv, wv = values(gd, gs, gb), values(wd, ws, wb)
        # Bitwise, so NaN == NaN only with the same payload and -0.0 != 0.0.
        if gb != wb or gv.tobytes() != wv.tobytes():
            diff = "bytes differ"
            try:
                bad = np.flatnonzero(gv.view(np.uint8).reshape(-1) != wv.view(np.uint8).reshape(-1))
                diff = f"{len(bad)} byte(s) differ, first at byte {bad[0]}"
            except Exception:
                pass
            problems.append(f"{name} ({gd}{gs}): {diff}")
            continue
        via_numpy = numpy_get_tensor(out, name, gd)
        if via_numpy is not None and via_numpy.tobytes() != wb:
            problems.append(f"{name}: safe_open(numpy).get_tensor disagrees with the raw bytes")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", type=pathlib.Path)
    parser.add_argument("--group", help="only this manifest group")
    parser.add_argument("--all", action="store_true", help="every group, including wild")
    opts = parser.parse_args()

    binary = opts.binary.resolve()
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    cases = [c for c in manifest["cases"] if c["expect"] == "ok"]
    if opts.group:
        cases = [c for c in cases if c["group"] == opts.group]
    elif not opts.all:
        cases = [c for c in cases if c["group"] != "wild"]
    if not cases:
        print("no cases selected", file=sys.stderr)
        return 2

    passed = failed = 0
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp) / "out.safetensors"
            cmd = [str(binary), "convert", str(FIXTURES / case["input"]), "-o", str(out),
                   *case["args"]]
            try:
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
                if proc.returncode != 0:
                    problems = [f"exit {proc.returncode}: {proc.stderr.strip()[:500]}"]
                else:
                    problems = compare(out, FIXTURES / case["golden"])
            except Exception as e:  # a crash in the checker is a failed case, not a stop
                problems = [f"{type(e).__name__}: {e}"]
        if problems:
            failed += 1
            print(f"FAIL {case['group']}/{case['name']}: " + "; ".join(problems)[:2000])
        else:
            passed += 1
            print(f"ok   {case['group']}/{case['name']}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
