#!/usr/bin/env python3
"""Writes the adversarial corpus for tests/security.rs. Standard library only; nothing here ever
unpickles anything.

Every payload is a harmless canary: `touch safetensorize-canary` (relative to the working
directory, which the test makes a fresh empty folder). The test asserts the marker never appears.

Each case records what `convert` must exit with and what verdict `scan` must give:
  convert: 0 converted, 1 refused as malformed/unsupported, 3 refused by the policy (dangerous)
  scan:    safe, suspicious, dangerous
`args` are extra `convert` flags. Run: python3 tests/adversarial/generate.py
"""

import json
import os
import struct
import zipfile
import io
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CANARY = "touch safetensorize-canary"
CASES = []


def case(name, data, convert, scan, note, args=()):
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        f.write(data)
    CASES.append({"file": name, "convert": convert, "scan": scan, "note": note, "args": list(args)})


# ---------------------------------------------------------------- pickle building blocks
def u(s):
    b = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(b)) + b


def short_u(s):
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def g(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def intop(i):
    if 0 <= i < 256:
        return b"K" + bytes([i])
    if -(2**31) <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    n = (i.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + i.to_bytes(n, "little", signed=True)


def tup(*items):
    return b"(" + b"".join(items) + b"t"


def call(module, name, *args):
    """REDUCE of a GLOBAL: the classic payload."""
    return g(module, name) + tup(*args) + b"R"


SYSTEM = call("os", "system", u(CANARY))
EMPTY_OD = g("collections", "OrderedDict") + b")R"


def storage(key, numel, cls="FloatStorage"):
    return tup(u("storage"), g("torch", cls), u(key), u("cpu"), intop(numel)) + b"Q"


def tensor(key, numel, size, stride, offset=0, cls="FloatStorage"):
    return (
        g("torch._utils", "_rebuild_tensor_v2")
        + tup(storage(key, numel, cls), intop(offset), tup(*map(intop, size)), tup(*map(intop, stride)), b"\x89", EMPTY_OD)
        + b"R"
    )


def state_dict(items, extra=b""):
    """`OrderedDict` of (name, value-bytes) pairs, protocol 2. `extra` runs before the dict."""
    body = b"".join(u(k) + v for k, v in items)
    return b"\x80\x02" + extra + EMPTY_OD + b"(" + body + b"u."


W = tensor("0", 4, (2, 2), (2, 1))
W_BYTES = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
BENIGN = state_dict([("w", W)])


def with_payload(payload):
    """A valid state dict whose entry `x` holds the payload's result (an inert object for us)."""
    return state_dict([("w", W), ("x", payload)])


def torch_zip(pkl, storages=None, root="archive", extra=(), order=None, method=zipfile.ZIP_STORED):
    storages = {"0": W_BYTES} if storages is None else storages
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        entries = [(f"{root}/data.pkl", pkl), (f"{root}/byteorder", b"little")]
        entries += [(f"{root}/data/{k}", v) for k, v in storages.items()]
        entries += [(f"{root}/version", b"3\n")]
        entries += list(extra)
        for n, d in order(entries) if order else entries:
            z.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), d, compress_type=method)
    return buf.getvalue()


def legacy(main, keys=("0",), storages=None, sys_info=None, magic=None, proto=None):
    storages = {"0": W_BYTES} if storages is None else storages
    out = magic if magic is not None else b"\x80\x02" + intop(0x1950A86A20F9469CFC6C) + b"."
    out += proto if proto is not None else b"\x80\x02" + intop(1001) + b"."
    out += sys_info if sys_info is not None else b"\x80\x02}(" + u("little_endian") + b"\x88" + u("protocol_version") + intop(1001) + b"u."
    out += main
    out += b"\x80\x02(" + b"".join(u(k) for k in keys) + b"l."
    for k in keys:
        d = storages[k]
        out += struct.pack("<q", len(d) // 4) + d
    return out


def legacy_tensor(key, numel, size, stride):
    st = tup(u("storage"), g("torch", "FloatStorage"), u(key), u("cpu"), intop(numel), b"N") + b"Q"
    return g("torch._utils", "_rebuild_tensor_v2") + tup(st, intop(0), tup(*map(intop, size)), tup(*map(intop, stride)), b"\x89", EMPTY_OD) + b"R"


LEGACY_MAIN = b"\x80\x02" + EMPTY_OD + b"(" + u("w") + legacy_tensor("0", 4, (2, 2), (2, 1)) + b"u."

# ---------------------------------------------------------------- benign controls
case("benign_zip.pt", torch_zip(BENIGN), 0, "safe", "a plain torch-style zip")
case("benign_zip_stem_root.pt", torch_zip(BENIGN, root="my_model"), 0, "safe", "root folder named after the file stem")
case("benign_legacy.pt", legacy(LEGACY_MAIN), 0, "safe", "a legacy stream")
case(
    "benign_numpy_hparams.pt",
    torch_zip(state_dict([("w", W), ("hp", g("argparse", "Namespace") + b")\x81}" + u("lr") + b"G" + struct.pack(">d", 0.1) + b"sb")])),
    0,
    "safe",
    "argparse.Namespace hyper-parameters beside the weights",
)
case(
    "benign_json_name.pt",
    torch_zip(state_dict([('a", "b": {"x', W)])),
    0,
    "safe",
    "a tensor name full of JSON syntax: escaped, not injected",
)

# ---------------------------------------------------------------- dangerous call families
families = [
    ("os_system", call("os", "system", u(CANARY))),
    ("posix_system", call("posix", "system", u(CANARY))),
    ("nt_system", call("nt", "system", u(CANARY))),
    ("builtins_eval", call("builtins", "eval", u(f"__import__('os').system('{CANARY}')"))),
    ("py2_builtin_eval", call("__builtin__", "eval", u(f"__import__('os').system('{CANARY}')"))),
    ("builtins_exec", call("builtins", "exec", u(f"import os; os.system('{CANARY}')"))),
    ("builtins_compile", call("builtins", "compile", u("1"), u("x"), u("eval"))),
    ("builtins_import_getattr", g("builtins", "getattr") + tup(call("builtins", "__import__", u("os")), u("system")) + b"R" + tup(u(CANARY)) + b"R"),
    ("builtins_open", call("builtins", "open", u("safetensorize-canary"), u("w"))),
    ("subprocess_popen", call("subprocess", "Popen", b"(" + u("touch") + u("safetensorize-canary") + b"l")),
    ("subprocess_check_output", call("subprocess", "check_output", u(CANARY))),
    ("commands_getoutput_py2", call("commands", "getoutput", u(CANARY))),
    ("runpy_run_path", call("runpy", "run_path", u("/nonexistent/canary.py"))),
    ("pip_main", call("pip", "main", b"(" + u("install") + u("canary-nonexistent") + b"l")),
    ("importlib_import_module", call("importlib", "import_module", u("os"))),
    ("pydoc_locate", g("pydoc", "locate") + tup(u("os.system")) + b"R" + tup(u(CANARY)) + b"R"),
    ("pkgutil_resolve_name", g("pkgutil", "resolve_name") + tup(u("os:system")) + b"R" + tup(u(CANARY)) + b"R"),
    ("operator_attrgetter", g("operator", "attrgetter") + tup(u("system")) + b"R" + tup(call("builtins", "__import__", u("os"))) + b"R"),
    ("operator_methodcaller", g("operator", "methodcaller") + tup(u("system"), u(CANARY)) + b"R" + tup(call("builtins", "__import__", u("os"))) + b"R"),
    ("marshal_functiontype", call("types", "FunctionType", call("marshal", "loads", b"C\x04\x00\x00\x00junk"), b"}")),
    ("types_codetype", call("types", "CodeType", intop(0))),
    ("ctypes_cdll", call("ctypes", "CDLL", u("libc.so.6"))),
    ("shutil_rmtree", call("shutil", "rmtree", u("/nonexistent/safetensorize-canary"))),
    ("webbrowser_open", call("webbrowser", "open", u("http://127.0.0.1:9/canary"))),
    ("socket_connection", call("socket", "create_connection", tup(u("127.0.0.1"), intop(9)))),
    ("torch_hub_load", call("torch.hub", "load_state_dict_from_url", u("http://127.0.0.1:9/canary.pt"))),
    ("torch_load", call("torch", "load", u("/nonexistent/canary.pt"))),
    ("torch_jit_load", call("torch.jit", "load", u("/nonexistent/canary.pt"))),
    ("functools_partial_torch_load", call("functools", "partial", g("torch", "load"), u("/nonexistent/canary.pt"))),
    ("asyncio_subprocess_gadget", call("asyncio.unix_events", "_UnixSubprocessTransport._start", u(CANARY))),
    ("uuid_command_stdout", call("uuid", "_get_command_stdout", u("touch"), u("safetensorize-canary"))),
]
for name, payload in families:
    case(f"call_{name}.pt", torch_zip(with_payload(payload)), 3, "dangerous", f"REDUCE payload: {name}")

# A dangerous payload with --allow-dangerous: converted, nothing called, tensors extracted.
case("allow_dangerous_os_system.pt", torch_zip(with_payload(SYSTEM)), 0, "dangerous", "converted with --allow-dangerous", args=["--allow-dangerous"])


def p4(*ops):
    return b"\x80\x04" + b"".join(ops)


def stack_global(module, name):
    return short_u(module) + short_u(name) + b"\x93"


def stack_global_p4_call(module, name, args):
    """STACK_GLOBAL of `module`, `name` (a protocol 4 opcode in a protocol 2 stream), called with args."""
    if not args:
        return short_u(module) + short_u(name) + b"\x93"
    return short_u(module) + short_u(name) + b"\x93" + tup(*args) + b"R"


# Dotted-attribute tricks (protocol 4 resolves `getattr` chains in STACK_GLOBAL names).
dotted = [
    ("torch_serialization_os_system", "torch.serialization", "os.system"),
    ("pathlib_os_system", "pathlib", "os.system"),
    ("builtins_eval_call", "builtins", "eval.__call__"),
    ("print_subclasses", "builtins", "print.__class__.__base__.__subclasses__"),
]
for name, m, n in dotted:
    pkl = p4(EMPTY_OD, b"(", u("w"), W, u("x"), stack_global(m, n), tup(u(CANARY)), b"R", b"u.")
    case(f"dotted_{name}.pt", torch_zip(pkl), 3, "dangerous", f"STACK_GLOBAL {m} {n}")

# STACK_GLOBAL operands fetched from the memo, with decoys (ImaginaryCTF "Safe Pickle").
memo_ctf = p4(
    short_u("torch"), b"\x94", short_u("LongStorage"), b"\x94", b"0", b"0",
    short_u("os"), b"\x94", short_u("system"), b"\x94", b"0", b"0",
    EMPTY_OD, b"(", u("w"), W, u("x"), b"h\x02h\x03\x93", tup(u(CANARY)), b"R", b"u.",
)
case("stack_global_memo.pt", torch_zip(memo_ctf), 3, "dangerous", "STACK_GLOBAL operands from the memo behind decoys")
# STACK_GLOBAL with a non-string operand after a real os.system call.
nonstr = b"\x80\x04" + SYSTEM + b"0" + intop(1) + short_u("x") + b"\x93" + b"."
case("stack_global_nonstring.pt", torch_zip(nonstr), 3, "dangerous", "type-confused STACK_GLOBAL after os.system")
# Protocol 0/1 class calls.
case("inst_os_system.pkl", b"(" + b"S'" + CANARY.encode() + b"'\n" + b"ios\nsystem\n.", 3, "dangerous", "INST os.system")
case("obj_os_system.pkl", b"(cos\nsystem\nS'" + CANARY.encode() + b"'\no.", 3, "dangerous", "OBJ os.system")
case("obj_pop_hidden.pt", torch_zip(b"\x80\x02(cos\nsystem\nS'" + CANARY.encode() + b"'\no0" + BENIGN[2:]), 3, "dangerous", "OBJ whose result is POPped")
case("newobj_subprocess.pt", torch_zip(with_payload(g("subprocess", "Popen") + tup(u(CANARY)) + b"\x81")), 3, "dangerous", "NEWOBJ subprocess.Popen")
case("newobj_ex_os.pt", torch_zip(with_payload(g("os", "system") + tup(u(CANARY)) + b"}\x92")), 3, "dangerous", "NEWOBJ_EX os.system")
case("newobj_ex_unknown.pt", torch_zip(with_payload(g("mypkg.models", "Net") + b")}\x92")), 0, "suspicious", "NEWOBJ_EX of an unknown class")
case("reduce_unknown.pt", torch_zip(with_payload(call("mypkg.gadgets", "run", u("x")))), 0, "suspicious", "REDUCE of an unknown global")
case("reduce_unknown_strict.pt", torch_zip(with_payload(call("mypkg.gadgets", "run", u("x")))), 3, "suspicious", "REDUCE of an unknown global, --strict", args=["--strict"])
for code, op in [(1, b"\x82\x01"), (2, b"\x83\x01\x00"), (4, b"\x84\x01\x00\x00\x00")]:
    case(f"ext{code}.pt", torch_zip(with_payload(op + tup(u(CANARY)) + b"R")), 1, "suspicious", f"EXT{code} registry call")
# BUILD on a module: rewrites torch._utils._rebuild_tensor to builtins.eval for later loads.
build_gadget = b"\x80\x02" + g("torch", "_utils") + b"}" + u("_rebuild_tensor") + g("builtins", "eval") + b"sb0" + BENIGN[2:]
case("build_module_override.pt", torch_zip(build_gadget), 3, "dangerous", "BUILD on a module replaces its attribute with eval")
# Nested pickle.loads of an inner os.system pickle.
inner = b"\x80\x02" + SYSTEM + b"."
nested = g("pickle", "loads") + tup(b"C" + bytes([len(inner)]) + inner) + b"R"
case("nested_pickle_loads.pt", torch_zip(with_payload(nested)), 3, "dangerous", "pickle.loads of an embedded os.system pickle")
case(
    "nested_via_codecs.pt",
    torch_zip(with_payload(g("_pickle", "loads") + tup(g("_codecs", "encode") + tup(u(inner.decode("latin1")), u("latin1")) + b"R") + b"R")),
    3,
    "dangerous",
    "_pickle.loads of bytes built by _codecs.encode",
)

# ---------------------------------------------------------------- hidden payloads
case("zip_hidden_member.pt", torch_zip(BENIGN, extra=[("archive/extra/evil.bin", inner)]), 3, "dangerous", "a pickle hidden in another member")
case("zip_payload_after_stop.pt", torch_zip(BENIGN + inner), 3, "dangerous", "a second pickle after data.pkl's STOP")
case("zip_junk_after_stop.pt", torch_zip(BENIGN + b"\n\n\t\t"), 0, "suspicious", "junk after STOP (nobody reads it)")
case("legacy_payload_sys_info.pt", legacy(LEGACY_MAIN, sys_info=b"\x80\x02" + SYSTEM + b"."), 3, "dangerous", "os.system in the legacy sys_info pickle")
case("legacy_payload_main.pt", legacy(b"\x80\x02" + EMPTY_OD + b"(" + u("w") + legacy_tensor("0", 4, (2, 2), (2, 1)) + u("x") + SYSTEM + b"u."), 3, "dangerous", "os.system in the legacy main pickle")
case("legacy_payload_keys.pt", legacy(LEGACY_MAIN, keys=("0",)).replace(b"\x80\x02(" + u("0") + b"l.", b"\x80\x02(" + u("0") + SYSTEM + b"0l."), 3, "dangerous", "os.system in the legacy key-list pickle")
case(
    "legacy_magic_via_eval.pt",
    legacy(LEGACY_MAIN, magic=b"\x80\x02" + call("builtins", "eval", u("0x1950A86A20F9469CFC6C")) + b"."),
    3,
    "dangerous",
    "the legacy magic number produced by eval (GHSA-97f8-7cmv-76j2)",
)
case("plain_pickle_os_system.pkl", b"\x80\x02" + SYSTEM + b".", 3, "dangerous", "a bare pickle calling os.system")
case("broken_after_exec.pkl", b"cbuiltins\nexec\n(X>\x00\x00\x00import os", 3, "dangerous", "exec followed by a corrupt BINUNICODE (nullifAI)")

# ---------------------------------------------------------------- parser differentials
frame_straddle = b"\x80\x04\x95" + struct.pack("<Q", 3) + b"(" + g("os", "system") + tup(u(CANARY)) + b"R0" + EMPTY_OD + b"(" + u("w") + W + b"u."
case("frame_straddle.pt", torch_zip(frame_straddle), 3, "dangerous", "an opcode straddling a FRAME boundary")
case("frame_straddle_benign.pt", torch_zip(b"\x80\x04\x95" + struct.pack("<Q", 3) + BENIGN[2:]), 0, "suspicious", "a benign pickle with a FRAME straddle")
case("proto6.pt", torch_zip(b"\x80\x06" + BENIGN[2:]), 1, "suspicious", "PROTO 6")
case("proto_twice.pt", torch_zip(b"\x80\x02\x80\x02" + BENIGN[2:]), 0, "suspicious", "PROTO repeated mid-stream")
case("text_int_hex.pkl", b"I0x10\n0" + b"\x80\x02" + SYSTEM + b".", 3, "dangerous", "I0x10 prefix then os.system (CPython reads 16)")
case("text_int_octal.pt", torch_zip(b"\x80\x02" + EMPTY_OD + b"(" + u("n") + b"I010\n" + u("w") + W + b"u."), 1, "suspicious", "I010: 8 in C, 10 in Rust, error in Python")
case("memo_miss.pt", torch_zip(b"\x80\x02" + SYSTEM + b"0h\x07" + b"."), 3, "dangerous", "os.system then a memo read of an unset index")

# ---------------------------------------------------------------- resource exhaustion
doubling = b"]q\x00" + b"h\x00h\x00\x86q\x00" * 40
memo_bomb = b"\x80\x02}(" + u("state_dict") + EMPTY_OD + b"(" + u("w") + W + b"u" + u("junk") + doubling + b"u."
case("memo_bomb.pt", torch_zip(memo_bomb), 0, "suspicious", "tuple DAG doubling 40 times through the memo (2^40 paths), beside the state_dict: an expansion bomb")
case("dup_bomb.pkl", b"\x80\x02N" + b"2" * 200_000 + b".", 1, "suspicious", "200k DUPs and a STOP with leftovers")
case("deep_lists.pt", torch_zip(state_dict([("w", W), ("x", b"]" * 200_000 + b"a" * 199_999)])), 1, "safe", "200k nested lists")
case("deep_marks.pkl", b"\x80\x02" + b"(" * 200_000 + b"N.", 1, "suspicious", "200k open MARKs")
case("huge_binunicode.pkl", b"\x80\x02X\xff\xff\xff\xffabc.", 1, "suspicious", "BINUNICODE declaring 4 GiB in 12 bytes")
case("huge_binbytes8.pkl", b"\x80\x04\x8e" + struct.pack("<Q", 2**63) + b"abc.", 1, "suspicious", "BINBYTES8 declaring 2^63 bytes")
case("huge_long4.pkl", b"\x80\x02\x8b\xff\xff\xff\x7f" + b"\x00" * 8 + b".", 1, "suspicious", "LONG4 declaring 2 GiB")
case("memo_index_huge.pt", torch_zip(b"\x80\x02" + EMPTY_OD + b"r\xff\xff\xff\xff(" + u("w") + W + b"u."), 0, "safe", "LONG_BINPUT 0xFFFFFFFF (sparse memo)")
case("op_limit.pt", torch_zip(b"\x80\x02" + b"N0" * 1000 + BENIGN[2:]), 1, "safe", "more opcodes than --max-pickle-ops", args=["--max-pickle-ops", "1000"])
case("pickle_size_limit.pt", torch_zip(BENIGN), 1, "safe", "data.pkl larger than --max-pickle-bytes", args=["--max-pickle-bytes", "16"])
case("tensor_count_limit.pt", torch_zip(state_dict([("a", W), ("b", tensor("1", 4, (4,), (1,)))]), storages={"0": W_BYTES, "1": W_BYTES}), 1, "safe", "more tensors than --max-tensors", args=["--max-tensors", "1"])


def deflated_zip(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in entries:
            z.writestr(zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0)), d, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


bomb_pkl = BENIGN[:-1] + b"0" * 0 + b"."
case(
    "zip_bomb_pickle.pt",
    deflated_zip([("archive/data.pkl", b"\x80\x02" + b"N0" * 2_000_000 + BENIGN[2:]), ("archive/data/0", W_BYTES), ("archive/version", b"3\n")]),
    1,
    "safe",
    "a 4 MB data.pkl deflated to a few KB, over --max-pickle-bytes",
    args=["--max-pickle-bytes", "1000000"],
)
case(
    "zip_bomb_inflated_total.pt",
    deflated_zip([("archive/data.pkl", BENIGN), ("archive/data/0", W_BYTES), ("archive/pad", b"\x00" * 3_000_000), ("archive/version", b"3\n")]),
    1,
    "suspicious",
    "3 MB of zeros in a few KB, over --max-inflated-bytes",
    args=["--max-inflated-bytes", "1000000"],
)

# ---------------------------------------------------------------- zip ambiguities
def patch(data, old, new, count=1):
    assert data.count(old) >= count, old
    return data.replace(old, new, count)


with_dup = torch_zip(BENIGN, extra=[("archive/data.pkl", b"\x80\x02" + SYSTEM + b".")])
case("zip_duplicate_datapkl.pt", with_dup, 3, "dangerous", "two archive/data.pkl, the second calling os.system")
case("zip_case_variant.pt", torch_zip(BENIGN, extra=[("archive/DATA.PKL", b"\x80\x02" + SYSTEM + b".")]), 3, "dangerous", "archive/DATA.PKL beside archive/data.pkl")
z = torch_zip(BENIGN)
case("zip_local_name_mismatch.pt", patch(z, b"archive/data.pkl", b"archive/datp.kl"), 1, "suspicious", "local header name differs from the central one")
case("zip_prepended.pt", b"JUNK" * 8 + z, 1, "suspicious", "32 bytes before the first local header")
case("zip_trailing.pt", z + b"TRAILING", 1, "suspicious", "bytes after the end record")
case("zip_two_roots.pt", torch_zip(BENIGN, extra=[("other/data/1", W_BYTES)]), 1, "suspicious", "entries under two root folders")
case("zip_path_traversal.pt", torch_zip(BENIGN, extra=[("archive/../../evil", b"x")]), 1, "suspicious", "an entry name with ..")
crc_bad = bytearray(z)
i = crc_bad.index(b"\x80\x02", 30)  # first byte of data.pkl's data
crc_bad[i + 20] ^= 0x01
case("zip_crc_mismatch.pt", bytes(crc_bad), 1, "suspicious", "data.pkl bytes edited after zipping")
enc = bytearray(z)
enc[6] |= 0x01  # local header flags: encrypted
cd = enc.index(b"PK\x01\x02")
enc[cd + 8] |= 0x01
case("zip_encrypted_flag.pt", bytes(enc), 1, "suspicious", "the encryption flag set")


def overlapping(data):
    """Adds a second central entry pointing at data.pkl's local header under another name."""
    cd = data.index(b"PK\x01\x02")
    eocd = data.rindex(b"PK\x05\x06")
    first = data[cd : cd + 46 + struct.unpack("<H", data[cd + 28 : cd + 30])[0]]
    name = b"archive/data/9"
    dup = first[:28] + struct.pack("<H", len(name)) + first[30:46] + name
    n = struct.unpack("<H", data[eocd + 10 : eocd + 12])[0] + 1
    cd_size = eocd - cd + len(dup)
    end = data[eocd:eocd + 8] + struct.pack("<HHII", n, n, cd_size, cd) + data[eocd + 20:]
    return data[:eocd] + dup + end


case("zip_overlapping.pt", overlapping(z), 1, "suspicious", "two central entries share one local header")
case("zip_torchscript.pt", torch_zip(BENIGN, extra=[("archive/constants.pkl", b"\x80\x02)."), ("archive/code/m.py", b"def f(): pass\n")]), 0, "safe", "a TorchScript archive: its code is never run, its weights convert")

# ---------------------------------------------------------------- tensor metadata
case("view_stride0.pt", torch_zip(state_dict([("w", tensor("0", 4, (1 << 20, 1 << 20, 1 << 20), (0, 0, 0)))])), 1, "safe", "stride-0 view of 4 floats as 2^60 elements")
case("view_out_of_range.pt", torch_zip(state_dict([("w", tensor("0", 4, (4,), (1,), offset=3))])), 1, "safe", "a view past its storage")
case("view_negative_stride.pt", torch_zip(state_dict([("w", tensor("0", 4, (2,), (-1,)))])), 1, "safe", "a negative stride")
case("view_negative_offset.pt", torch_zip(state_dict([("w", tensor("0", 4, (2,), (1,), offset=-1))])), 1, "safe", "a negative offset")
case("size_overflow.pt", torch_zip(state_dict([("w", tensor("0", 2**61, (2**61,), (1,), cls="DoubleStorage"))])), 1, "safe", "2^61 doubles: wraps to 0 bytes mod 2^64")
case("storage_two_sizes.pt", torch_zip(state_dict([("a", tensor("0", 4, (4,), (1,))), ("b", tensor("0", 2, (2,), (1,)))])), 1, "safe", "one storage declared with two sizes")
case("record_short.pt", torch_zip(state_dict([("w", tensor("0", 8, (8,), (1,)))])), 1, "safe", "a storage record shorter than declared")

# ---------------------------------------------------------------- hostile names
case("name_metadata.pt", torch_zip(state_dict([("__metadata__", W)])), 1, "safe", "a tensor named __metadata__")
case("name_duplicate_flatten.pt", torch_zip(state_dict([("a.b", W), ("a", b"}" + u("b") + W + b"s")])), 1, "safe", "a.b twice after flattening")
case("name_empty.pt", torch_zip(state_dict([("", W)])), 0, "safe", "an empty tensor name becomes `tensor`")
case("name_empty_collides.pt", torch_zip(state_dict([("", W), ("tensor", tensor("1", 4, (4,), (1,)))]), storages={"0": W_BYTES, "1": W_BYTES}), 1, "safe", "an empty name colliding with `tensor`")

# ---------------------------------------------------------------- issue 11: the dangerous families
# Each a REDUCE (or a reference) in an otherwise valid state dict; none is ever resolved.
families = [
    # torch-internal loaders and code runners
    ("torch_config_module_load_config", "torch.utils._config_module", "ConfigModule.load_config", (b"}", b"C\x00")),
    ("torch_compile", "torch", "compile", (u("x"),)),
    ("torch_dynamo_optimize", "torch._dynamo.eval_frame", "optimize", (u("x"),)),
    ("torch_fx_reduce_graph_module", "torch.fx.graph_module", "reduce_graph_module", (b"}", u("import os")),),
    ("torch_package_importer", "torch.package.package_importer", "PackageImporter", (u("x.pt"),)),
    ("torch_hub_load_state_dict_from_url", "torch.hub", "load_state_dict_from_url", (u("http://127.0.0.1:9/x"),)),
    ("torch_collect_env_run", "torch.utils.collect_env", "run", (u(CANARY),)),
    # stdlib gadgets from public scanner advisories
    ("test_support_script_helper", "test.support.script_helper", "assert_python_ok", (u("-c"), u(CANARY))),
    ("idlelib_pyshell", "idlelib.pyshell", "ModifiedInterpreter.runcode", (u(CANARY),)),
    ("lib2to3_pgen", "lib2to3.pgen2.pgen", "generate_grammar", (u("x"),)),
    ("pydoc_pipepager", "pydoc", "pipepager", (u("x"), u(CANARY))),
    ("code_interact", "code", "InteractiveInterpreter.runsource", (u(CANARY),)),
    ("timeit_timeit", "timeit", "timeit", (u(CANARY),)),
    ("cprofile_run", "cProfile", "run", (u(CANARY),)),
    ("profile_run", "profile", "run", (u(CANARY),)),
    ("pdb_run", "pdb", "run", (u(CANARY),)),
    ("bdb_run", "bdb", "Bdb.run", (u(CANARY),)),
    ("trace_run", "trace", "Trace.run", (u(CANARY),)),
    ("logging_config_listen", "logging.config", "listen", (intop(9),)),
    ("linecache_getline", "linecache", "getline", (u("/etc/passwd"), intop(1))),
    ("asyncio_create_subprocess_shell", "asyncio.subprocess", "create_subprocess_shell", (u(CANARY),)),
    ("multiprocessing_spawnv_passfds", "multiprocessing.util", "spawnv_passfds", (u("/bin/sh"), tup(u("sh"), u("-c"), u(CANARY)), tup())),
    ("ctypes_cast", "ctypes", "cast", (intop(0), intop(0))),
    ("ssl_get_server_certificate", "ssl", "get_server_certificate", (tup(u("127.0.0.1"), intop(9)),)),
    # scanner modules: switching the scanner off or faking its verdict
    ("picklescan_scanner", "picklescan.scanner", "scan_pickle_bytes", (u("x"),)),
    ("fickling_always_safe", "fickling.analysis", "check_safety", (u("x"),)),
    ("modelscan_settings", "modelscan.settings", "DEFAULT_SETTINGS", ()),
]
for name, m, n, args in families:
    case(f"family_{name}.pt", torch_zip(with_payload(stack_global_p4_call(m, n, args))), 3, "dangerous", f"REDUCE {m}.{n}")
# A name reached through module objects: an attribute chain from an innocent module.
case("family_attribute_chain.pt", torch_zip(with_payload(stack_global_p4_call("torch.nn.functional", "torch.load", (u("x"),)))), 3, "dangerous", "torch.nn.functional.torch.load: torch.load reached through a module object")
# _load_from_bytes on something that is not a byte string holding a checkpoint.
case("family_load_from_bytes_not_bytes.pt", torch_zip(with_payload(call("torch.storage", "_load_from_bytes", u("not a stream")))), 3, "dangerous", "_load_from_bytes of a str: torch.load of anything")
# STACK_GLOBAL whose operands are computed: the name cannot be read.
case("stack_global_computed.pkl", b"\x80\x04" + call("builtins", "str", u("os")) + short_u("system") + b"\x93" + tup(u(CANARY)) + b"R.", 3, "dangerous", "STACK_GLOBAL of a call result")
# Unknown names stay suspicious, called or not (importing a module runs its code).
case("unknown_reference_only.pt", torch_zip(with_payload(g("ast", "parse"))), 0, "suspicious", "a reference to ast.parse, never called")

# ---------------------------------------------------------------- bombs and malformed pickles
dup_dag = b"\x80\x02}(" + u("w") + W + u("x") + b"N" + b"2\x86" * 50 + b"u."
case("dup_dag_bomb.pt", torch_zip(dup_dag), 0, "suspicious", "a DUP chain doubling a tuple 50 times: 2^50 values")
hash_keys = b"".join(b"\x8a\x10" + (i * (2**61 - 1)).to_bytes(16, "little") + b"N" for i in range(1, 3001))
case("hash_bomb.pt", torch_zip(b"\x80\x02}(" + u("w") + W + u("x") + b"}(" + hash_keys + b"uu."), 0, "suspicious", "3000 int keys with one Python hash: a quadratic insert")
case("duplicate_key.pt", torch_zip(b"\x80\x02" + EMPTY_OD + b"(" + u("w") + W + u("w") + tensor("0", 4, (4,), (1,)) + b"u."), 0, "suspicious", "a state dict setting one key twice (convert keeps the last, as torch.load does)")
case("unhashable_key.pkl", b"\x80\x02}\x94h\x00X\x01\x00\x00\x00vs.", 1, "suspicious", "a dict that is its own key (malformed)")
case("missing_mark.pkl", b"\x80\x04t.", 1, "suspicious", "TUPLE without a MARK (malformed)")

# ---------------------------------------------------------------- containers users receive
def npy(descr, shape, data):
    h = "{'descr': %s, 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    h += " " * (63 - (len(h) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + data


case("npy_float.npy", npy("'<f4'", "(4,)", W_BYTES), 1, "safe", "a numeric .npy cannot carry code")
npy_payload = b"\x80\x02" + call("ssl", "get_server_certificate", tup(u("127.0.0.1"), intop(9))) + b"."
case("npy_object_payload.npy", npy("'|O'", "(1,)", npy_payload), 3, "dangerous", "an object .npy whose pickle fetches a certificate (network)")
case("npz_numeric.npz", deflated_zip([("a.npy", npy("'<f4'", "(4,)", W_BYTES)), ("b.npy", npy("'<i8'", "(2,)", b"\x00" * 16))]), 1, "safe", "an .npz of numeric arrays")
case("npz_object_payload.npz", deflated_zip([("a.npy", npy("'|O'", "(1,)", b"\x80\x02" + SYSTEM + b"."))]), 3, "dangerous", "an .npz member that is an object array calling os.system")
import gzip as _gzip
case("gzip_pickle.pkl.gz", _gzip.compress(b"\x80\x02" + SYSTEM + b".", mtime=0), 3, "dangerous", "a gzip-compressed pickle calling os.system")


def tar_of(entries):
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for n, d in entries:
            ti = tarfile.TarInfo(n)
            ti.size = len(d)
            ti.mtime = 0
            t.addfile(ti, io.BytesIO(d))
    return buf.getvalue()


case("gzip_tar_pickles.tar.gz", _gzip.compress(tar_of([("model/config.txt", b"lr=1\n"), ("model/data.pkl", b"\x80\x02" + SYSTEM + b".")]), mtime=0), 3, "dangerous", "a .tar.gz whose member pickle calls os.system")
case("archive_7z.7z", b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 24, 1, "unscannable", "a 7z archive: not opened, never safe")
case("compressed_bz2.pkl.bz2", b"BZh91AY&SY" + b"\x00" * 24, 1, "unscannable", "a bzip2 stream: not opened, never safe")
case("unknown_binary.bin", b"\x00\xff\xfe\x01" * 16, 1, "unscannable", "an unknown binary: never safe")
# TorchScript: __torch__ classes and torch.jit._pickle builders are what torch.jit.save writes.
ts_pkl = (
    b"\x80\x02" + g("__torch__", "MyModule") + b")\x81}(" + u("training") + b"\x88" + u("w") + W
    + u("sizes") + g("torch.jit._pickle", "build_intlist") + tup(b"]" + b"(" + intop(1) + intop(2) + b"e") + b"R"
    + b"ub."
)
case("torchscript_classes.pt", torch_zip(ts_pkl, extra=[("archive/constants.pkl", b"\x80\x02)."), ("archive/code/__torch__.py", b"class MyModule(Module):\n  __parameters__ = [\"w\", ]\n  __buffers__ = []\n  w : Tensor\n  training : bool\n")]), 0, "safe", "a TorchScript archive of a __torch__ class")

with open(os.path.join(HERE, "manifest.json"), "w") as f:
    json.dump({"canary": "safetensorize-canary", "cases": CASES}, f, indent=1)
    f.write("\n")
print(f"wrote {len(CASES)} cases")
