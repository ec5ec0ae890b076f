//! The one classification of every `module.name` a pickle can reference, used by `convert`'s
//! policy and by `scan`. Nothing is ever imported or called whatever the class; the class says
//! what a *normal* unpickler (Python's `pickle`, `torch.load(weights_only=False)`) would do with
//! the name, so the user learns what the file attempted.
//!
//! Matching is on names only, and deliberately pessimistic:
//! - Python 2 spellings are classified both as written and as Python 3's `_compat_pickle` maps
//!   them (`__builtin__.intern` is `sys.intern`); the worse class wins.
//! - A dotted *name* (protocol 4 resolves `getattr` chains: `STACK_GLOBAL('torch.serialization',
//!   'os.system')`) is dangerous when any suffix of the path names a dangerous module or function,
//!   when any part is a dunder (`eval.__call__`, `__class__.__base__`), or when any part is a
//!   code-running function name.

use serde::Serialize;

use crate::dtype::DType;
use crate::pickle::Global;

/// What a global would do in a normal unpickler, and what this tool does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalClass {
    /// The torch rebuild, storage and dtype names and the plain containers the VM understands.
    Interpreted,
    /// Known harmless data classes (numpy arrays, argparse.Namespace, OmegaConf, nn.Module, …):
    /// kept as inert data.
    Inert,
    /// Anything else: kept as inert data and reported. Called, it makes a file suspicious.
    Unknown,
    /// Would run code or touch the system if a normal unpickler resolved it.
    Dangerous,
}

impl GlobalClass {
    /// The lowercase name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            GlobalClass::Interpreted => "interpreted",
            GlobalClass::Inert => "inert",
            GlobalClass::Unknown => "unknown",
            GlobalClass::Dangerous => "dangerous",
        }
    }
}

impl std::fmt::Display for GlobalClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a global as the VM recorded it.
pub fn classify_global(g: &Global) -> GlobalClass {
    classify(&g.module, &g.name)
}

/// Classifies `module.name` (either spelling, Python 2 or 3).
pub fn classify(module: &str, name: &str) -> GlobalClass {
    let raw = classify_one(module, name);
    let (m3, n3) = py3_name(module, name);
    let mapped = classify_one(&m3, &n3);
    if raw == GlobalClass::Dangerous || mapped == GlobalClass::Dangerous {
        GlobalClass::Dangerous
    } else {
        mapped
    }
}

/// Python 3's `_compat_pickle` mapping for the Python 2 names that matter here.
fn py3_name(module: &str, name: &str) -> (String, String) {
    let mapped_pair = match (module, name) {
        ("__builtin__", "xrange") => Some(("builtins", "range")),
        ("__builtin__", "reduce") => Some(("functools", "reduce")),
        ("__builtin__", "intern") => Some(("sys", "intern")),
        ("__builtin__", "unichr") => Some(("builtins", "chr")),
        ("__builtin__", "unicode" | "basestring") => Some(("builtins", "str")),
        ("__builtin__", "long") => Some(("builtins", "int")),
        ("__builtin__", "raw_input") => Some(("builtins", "input")),
        ("itertools", "izip") => Some(("builtins", "zip")),
        ("itertools", "imap") => Some(("builtins", "map")),
        ("itertools", "ifilter") => Some(("builtins", "filter")),
        _ => None,
    };
    if let Some((m, n)) = mapped_pair {
        return (m.to_string(), n.to_string());
    }
    let m = match module {
        "__builtin__" | "exceptions" => "builtins",
        "copy_reg" => "copyreg",
        "cPickle" => "pickle",
        "commands" => "subprocess",
        "httplib" => "http.client",
        "urllib2" => "urllib.request",
        "SocketServer" => "socketserver",
        "_winreg" => "winreg",
        "thread" => "_thread",
        "cStringIO" | "StringIO" => "io",
        "UserDict" | "UserList" | "UserString" => "collections",
        "Queue" => "queue",
        "repr" => "reprlib",
        "urlparse" => "urllib.parse",
        "xmlrpclib" => "xmlrpc.client",
        "cookielib" => "http.cookiejar",
        "Cookie" => "http.cookies",
        "BaseHTTPServer" | "SimpleHTTPServer" | "CGIHTTPServer" => "http.server",
        "Tkinter" => "tkinter",
        "dummy_thread" => "_dummy_thread",
        other => other,
    };
    (m.to_string(), name.to_string())
}

/// Modules whose every member (and submodule) is dangerous: they run code, spawn processes,
/// load other pickles, touch files or the network, or resolve arbitrary names.
const DANGEROUS_MODULES: &[&str] = &[
    // processes and the OS
    "os",
    "posix",
    "nt",
    "posixpath",
    "ntpath",
    "subprocess",
    "_posixsubprocess",
    "_winapi",
    "_subprocess",
    "commands",
    "popen2",
    "pty",
    "platform",
    "sys",
    "signal",
    "_signal",
    "resource",
    "fcntl",
    "msvcrt",
    "winreg",
    "_winreg",
    "multiprocessing",
    "_multiprocessing",
    "_posixshmem",
    "concurrent",
    "asyncio",
    "_thread",
    "thread",
    "threading",
    "_interpreters",
    "_xxsubinterpreters",
    "interpreters",
    "gc",
    "ctypes",
    "_ctypes",
    "cffi",
    "mmap",
    // running code, importing, resolving names
    "runpy",
    "importlib",
    "imp",
    "zipimport",
    "pkgutil",
    "pydoc",
    "inspect",
    "code",
    "codeop",
    "types",
    "marshal",
    "operator",
    "_operator",
    "functools",
    "bdb",
    "pdb",
    "cProfile",
    "profile",
    "_lsprof",
    "timeit",
    "trace",
    "doctest",
    "unittest",
    "test",
    "idlelib",
    "_pyrepl",
    "lib2to3",
    "ensurepip",
    "venv",
    "distutils",
    "setuptools",
    "pip",
    "_osx_support",
    "_aix_support",
    "sysconfig",
    "site",
    "builtins.__import__",
    "copyreg.add_extension",
    "_bootlocale",
    // other pickles and serialized code
    "pickle",
    "_pickle",
    "cPickle",
    "pickletools",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "dbm",
    // files
    "shutil",
    "tempfile",
    "io",
    "_io",
    "fileinput",
    "glob",
    "zipfile",
    "tarfile",
    "gzip",
    "bz2",
    "lzma",
    "codecs.open",
    "logging.config",
    "logging.FileHandler",
    "logging.handlers",
    // network
    "socket",
    "_socket",
    "ssl",
    "_ssl",
    "socketserver",
    "SocketServer",
    "http",
    "httplib",
    "urllib",
    "urllib2",
    "urllib3",
    "requests",
    "httpx",
    "aiohttp",
    "smtplib",
    "ftplib",
    "telnetlib",
    "imaplib",
    "poplib",
    "nntplib",
    "xmlrpc",
    "xmlrpclib",
    "webbrowser",
    "uuid._get_command_stdout",
    "uuid._popen",
    "huggingface_hub",
    "paramiko",
    "git",
    // third-party code runners and loaders
    "numpy.f2py",
    "numpy.distutils",
    "numpy.testing",
    "numpy.load",
    "numpy.lib.npyio",
    "numpy.ctypeslib",
    "pandas.read_pickle",
    "pandas.io",
    "yaml.load",
    "yaml.unsafe_load",
    "yaml.full_load",
    "numpy.save",
    "numpy.savez",
    "numpy.savez_compressed",
    "numpy.savetxt",
    "numpy.loadtxt",
    "numpy.genfromtxt",
    "numpy.fromfile",
    "numpy.memmap",
    "torch.save",
    // torch internals that load, compile or run code
    "torch.load",
    "torch.serialization.load",
    "torch.serialization._load",
    "torch.serialization._legacy_load",
    "torch.serialization.save",
    "torch.serialization._save",
    "torch.serialization._open_file",
    "torch.serialization._open_zipfile_reader",
    "torch.serialization._open_zipfile_writer",
    "torch.serialization.pickle",
    "torch.serialization._get_restore_location",
    "torch.hub",
    "torch.jit",
    "torch._C",
    "torch.fx",
    "torch.package",
    "torch._inductor",
    "torch._dynamo",
    "torch._export",
    "torch.export",
    "torch.compiler",
    "torch.utils.bottleneck",
    "torch.utils.collect_env",
    "torch.utils.cpp_extension",
    "torch.utils.data.datapipes",
    "torch.distributed",
    "torch.multiprocessing",
    "torch.testing",
    "torch._ops",
    "torch.ops",
    "torch.library",
    "torch.onnx",
    "torch.cuda.jiterator",
    "torch.compile",
    "torch.utils._config_module",
    "torch._higher_order_ops",
    "torch.classes",
    "torch._classes",
    "torch.utils.model_zoo",
    "torch.utils.tensorboard",
    "torch.utils.benchmark",
    "torch.utils._import_utils",
    // more stdlib gadgets from public scanner advisories
    "linecache",
    "tokenize.open",
    "atexit",
    "sched",
    "tty",
    "termios",
    "syslog",
    "pstats",
    "modulefinder",
    "pyclbr",
    "py_compile",
    "compileall",
    "zipapp",
    "tabnanny",
    "filecmp",
    "netrc",
    "mailcap",
    "pipes",
    "cgi",
    "cgitb",
    "wsgiref",
    "smtpd",
    "asyncore",
    "asynchat",
    "sqlite3",
    "_sqlite3",
    "tkinter",
    "_tkinter",
    "turtle",
    "turtledemo",
    "antigravity",
    "this",
    "numpy.lib.format",
    "numpy.lib._npyio_impl",
    "numpy.lib.utils",
    "pandas.read_csv",
    "pandas.read_hdf",
    "pandas.eval",
    "pandas.core.computation",
    "scipy.io",
    "keras.models.load_model",
    "keras.saving",
    "keras.src.saving",
    "tensorflow.io",
    "tensorflow.python.ops.io_ops",
    "tensorflow.python.ops.script_ops",
    "tensorflow.keras.models.load_model",
    "sklearn.utils._testing",
    "IPython",
    "jupyter_client",
    "nbconvert",
    // scanner modules: a payload that switches the scanner off, or fakes its verdict
    "picklescan",
    "fickling",
    "modelscan",
    "modelaudit",
];

/// `builtins` members that run code, resolve names or touch files.
const DANGEROUS_BUILTINS: &[&str] = &[
    "eval",
    "exec",
    "execfile",
    "compile",
    "getattr",
    "setattr",
    "delattr",
    "hasattr",
    "__import__",
    "open",
    "file",
    "input",
    "raw_input",
    "breakpoint",
    "globals",
    "locals",
    "vars",
    "dir",
    "apply",
    "reload",
    "type",
    "super",
    "classmethod",
    "staticmethod",
    "property",
    "help",
    "exit",
    "quit",
    "memoryview",
    "__build_class__",
    "__loader__",
    "__spec__",
    "copyright",
    "credits",
    "license",
    "intern",
];

/// Names that run code wherever they appear as part of a dotted attribute path.
const DANGEROUS_WORDS: &[&str] = &[
    "eval",
    "exec",
    "execfile",
    "system",
    "popen",
    "popen2",
    "popen3",
    "popen4",
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnv",
    "spawnve",
    "spawnvp",
    "execl",
    "execle",
    "execlp",
    "execv",
    "execve",
    "execvp",
    "fork",
    "forkpty",
    "__import__",
    "import_module",
    "run_path",
    "run_module",
    "_run_code",
    "getoutput",
    "getstatusoutput",
    "check_output",
    "check_call",
    "Popen",
    "getattr",
    "setattr",
    "attrgetter",
    "methodcaller",
    "loads",
    "load",
    "compile",
    "locate",
    "resolve_name",
    "open",
    "unlink",
    "remove",
    "rmtree",
    "urlopen",
    "write_text",
    "write_bytes",
    "read_text",
    "read_bytes",
    "symlink_to",
    "hardlink_to",
    "chmod",
    "rmdir",
    "mkdir",
    "touch",
    "load_config",
    "_load_from_bytes",
    "get_server_certificate",
    "create_connection",
    "spawn",
    "startfile",
    "run",
    "call",
];

/// Dangerous module names that, reached through an attribute (`torch.serialization.os`), expose
/// the module itself.
const DANGEROUS_ATTRIBUTES: &[&str] = &[
    "os",
    "sys",
    "subprocess",
    "builtins",
    "__builtins__",
    "__builtin__",
    "posix",
    "nt",
    "pty",
    "runpy",
    "importlib",
    "pickle",
    "marshal",
    "ctypes",
    "shutil",
    "socket",
    "pydoc",
    "pkgutil",
    "operator",
    "types",
    "code",
    "inspect",
    "io",
    "functools",
    "torch",
];

/// Harmless data classes: their instances are plain state.
const INERT: &[(&str, &str)] = &[
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "bool_"),
    ("numpy.random", "__RandomState_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("argparse", "Namespace"),
    ("builtins", "object"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "str"),
    ("builtins", "bool"),
    ("builtins", "slice"),
    ("builtins", "range"),
    ("builtins", "NoneType"),
    ("builtins", "Ellipsis"),
    ("builtins", "chr"),
    ("builtins", "zip"),
    ("builtins", "map"),
    ("builtins", "filter"),
    ("copyreg", "_reconstructor"),
    ("copyreg", "__newobj__"),
    ("copyreg", "__newobj_ex__"),
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "time"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("decimal", "Decimal"),
    ("fractions", "Fraction"),
    ("uuid", "UUID"),
    ("uuid", "SafeUUID"),
    ("pathlib", "Path"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("enum", "Enum"),
    ("typing", "Any"),
    ("collections", "deque"),
    ("collections", "namedtuple"),
    ("collections", "UserDict"),
    ("collections", "UserList"),
    ("re", "_compile"),
    ("torch", "device"),
    ("torch", "Tensor"),
    ("torch", "finfo"),
    ("torch", "iinfo"),
    ("torch", "memory_format"),
    ("torch", "contiguous_format"),
    ("torch", "channels_last"),
    ("torch", "preserve_format"),
    ("torch", "layout"),
    ("torch", "strided"),
    ("torch", "sparse_coo"),
    ("torch._tensor", "Tensor"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.nn.parameter", "Buffer"),
    ("torch.nn.parameter", "UninitializedParameter"),
    ("torch.serialization", "_get_layout"),
    ("torch._utils", "_get_layout"),
    ("torch", "per_tensor_affine"),
    ("torch", "per_channel_affine"),
    ("torch", "per_tensor_symmetric"),
    ("torch", "per_channel_symmetric"),
    ("torch", "per_channel_affine_float_qparams"),
    ("torch", "qscheme"),
    ("torch", "dtype"),
    ("torch", "sparse_csr"),
    ("torch", "sparse_csc"),
    ("torch", "sparse_bsr"),
    ("torch", "sparse_bsc"),
    ("torch.jit._pickle", "build_intlist"),
    ("torch.jit._pickle", "build_floatlist"),
    ("torch.jit._pickle", "build_boollist"),
    ("torch.jit._pickle", "build_tensorlist"),
    ("torch.jit._pickle", "build_doublelist"),
    ("torch.jit._pickle", "restore_type_tag"),
    ("pytorch_lightning.utilities.parsing", "AttributeDict"),
    ("lightning.pytorch.utilities.parsing", "AttributeDict"),
    ("lightning.fabric.utilities.data", "AttributeDict"),
    ("lightning_fabric.utilities.data", "AttributeDict"),
    ("fairseq.dataclass.configs", "FairseqConfig"),
];

/// Module prefixes whose members are data classes (configs, layers, optimizers as state).
const INERT_MODULES: &[&str] = &[
    "torch.nn.modules",
    "torch.nn.parameter",
    "torch.optim",
    "torch.amp.grad_scaler",
    "torch.cuda.amp.grad_scaler",
    "torch.distributions",
    "omegaconf",
    "numpy.dtypes",
    "transformers.configuration_utils",
    "transformers.models",
    "typing",
];

/// Names the restricted VM and the torch host give meaning to.
fn is_interpreted(module: &str, name: &str) -> bool {
    match (module, name) {
        ("collections", "OrderedDict" | "defaultdict" | "Counter")
        | ("builtins", "dict" | "list" | "tuple" | "set" | "frozenset" | "complex" | "bytearray" | "bytes")
        | ("_codecs", "encode")
        | ("torch", "Size")
        | ("torch.storage", "UntypedStorage")
        | ("torch._tensor", "_rebuild_from_type_v2" | "_rebuild_from_type")
        // The host reads the embedded legacy stream with the same restricted VM, and `scan`
        // walks the embedded bytes for globals.
        | ("torch.storage", "_load_from_bytes") => true,
        ("torch._utils", n) => matches!(
            n,
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_tensor_v3"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
                | "_rebuild_device_tensor_from_cpu_tensor"
                | "_rebuild_qtensor"
                | "_rebuild_sparse_tensor"
                | "_rebuild_sparse_csr"
                | "_rebuild_nested_tensor"
                | "_rebuild_meta_tensor_no_storage"
                | "_rebuild_wrapper_subclass"
                | "_rebuild_device_tensor_from_numpy"
                | "_rebuild_xla_tensor"
                | "_rebuild_mlc_tensor"
        ),
        // Storage classes, dtypes and the legacy tensor classes of tar checkpoints (torch <= 0.1.9).
        ("torch" | "torch.cuda", n) => {
            DType::from_storage_name(n).is_some()
                || DType::from_tensor_type_name(n).is_some()
                || (module == "torch" && DType::from_torch_name(n).is_some())
        }
        _ => false,
    }
}

/// True when `path` (dotted) is, or lies under, a dangerous module or name.
fn under_dangerous(path: &str) -> bool {
    DANGEROUS_MODULES
        .iter()
        .any(|d| path == *d || (path.starts_with(d) && path.as_bytes().get(d.len()) == Some(&b'.')))
        || path.strip_prefix("builtins.").is_some_and(|rest| {
            DANGEROUS_BUILTINS.contains(&rest.split('.').next().unwrap_or(rest))
        })
        || path.strip_prefix("__builtin__.").is_some_and(|rest| {
            DANGEROUS_BUILTINS.contains(&rest.split('.').next().unwrap_or(rest))
        })
}

fn classify_one(module: &str, name: &str) -> GlobalClass {
    let module = module.trim();
    let name = name.trim();
    if module.is_empty() || name.is_empty() {
        return GlobalClass::Unknown;
    }
    // Exact known-harmless pairs first: they may live inside a module that is otherwise
    // dangerous (`torch.jit._pickle.build_intlist`, `torch.serialization._get_layout`).
    if INERT.contains(&(module, name)) {
        return GlobalClass::Inert;
    }
    let full = format!("{module}.{name}");
    if under_dangerous(&full) {
        return GlobalClass::Dangerous;
    }
    let parts: Vec<&str> = name.split('.').collect();
    // Attribute traversal: any dunder, any code-running word, or a path that re-enters a
    // dangerous module (`torch.serialization` + `os.system`, `pathlib` + `os.system`).
    if parts.len() > 1 {
        if parts
            .iter()
            .any(|p| p.starts_with("__") && p.ends_with("__"))
        {
            return GlobalClass::Dangerous;
        }
        if parts
            .iter()
            .any(|p| DANGEROUS_WORDS.contains(p) || DANGEROUS_ATTRIBUTES.contains(p))
        {
            return GlobalClass::Dangerous;
        }
        for i in 0..parts.len() {
            if under_dangerous(&parts[i..].join(".")) {
                return GlobalClass::Dangerous;
            }
        }
    } else if DANGEROUS_ATTRIBUTES.contains(&name) && module != "torch" {
        // `getattr(torch.serialization, "os")` is the `os` module itself.
        return GlobalClass::Dangerous;
    } else if name.starts_with("__")
        && name.ends_with("__")
        && !INERT.contains(&(module, name))
        && module != "copyreg"
    {
        // `__builtins__`, `__globals__`, `__subclasses__`: introspection, never data.
        return GlobalClass::Dangerous;
    } else if matches!(
        name,
        "eval" | "exec" | "execfile" | "system" | "popen" | "__import__"
    ) {
        // The classic entry points, whatever module re-exports them.
        return GlobalClass::Dangerous;
    }
    // `torch.serialization.os` as a *module* cannot be imported by `find_class`, but a file that
    // spells it so is still an attempt.
    if module.split('.').skip(1).any(|p| {
        matches!(
            p,
            "os" | "sys" | "subprocess" | "builtins" | "__builtins__" | "posix" | "nt"
        )
    }) {
        return GlobalClass::Dangerous;
    }
    if is_interpreted(module, name) {
        return GlobalClass::Interpreted;
    }
    if INERT.contains(&(module, name)) {
        return GlobalClass::Inert;
    }
    if parts.len() == 1
        && INERT_MODULES.iter().any(|m| {
            module == *m || (module.starts_with(m) && module.as_bytes().get(m.len()) == Some(&b'.'))
        })
    {
        return GlobalClass::Inert;
    }
    // torch.nn layer classes are also pickled under their public path (`torch.nn.Linear`).
    if module == "torch.nn"
        && parts.len() == 1
        && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
    {
        return GlobalClass::Inert;
    }
    GlobalClass::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use GlobalClass::*;

    #[test]
    fn torch_rebuild_and_storage_names_are_interpreted() {
        for (m, n) in [
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_parameter"),
            ("torch", "FloatStorage"),
            ("torch", "BFloat16Storage"),
            ("torch.storage", "UntypedStorage"),
            ("torch", "float16"),
            ("collections", "OrderedDict"),
            ("__builtin__", "set"),
            ("torch._tensor", "_rebuild_from_type_v2"),
        ] {
            assert_eq!(classify(m, n), Interpreted, "{m}.{n}");
        }
    }

    #[test]
    fn data_classes_are_inert() {
        for (m, n) in [
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy", "dtype"),
            ("argparse", "Namespace"),
            ("omegaconf.dictconfig", "DictConfig"),
            ("pytorch_lightning.utilities.parsing", "AttributeDict"),
            ("torch", "device"),
            ("torch.nn.modules.linear", "Linear"),
            ("torch.nn.parameter", "Parameter"),
        ] {
            assert_eq!(classify(m, n), Inert, "{m}.{n}");
        }
    }

    #[test]
    fn code_running_names_are_dangerous() {
        for (m, n) in [
            ("os", "system"),
            ("posix", "system"),
            ("nt", "system"),
            ("subprocess", "Popen"),
            ("sys", "exit"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "getattr"),
            ("builtins", "__import__"),
            ("builtins", "open"),
            ("__builtin__", "eval"),
            ("__builtin__", "execfile"),
            ("__builtin__", "intern"),
            ("commands", "getoutput"),
            ("runpy", "_run_code"),
            ("pip", "main"),
            ("importlib", "import_module"),
            ("pydoc", "locate"),
            ("pkgutil", "resolve_name"),
            ("operator", "attrgetter"),
            ("operator", "methodcaller"),
            ("pickle", "loads"),
            ("_pickle", "loads"),
            ("cPickle", "loads"),
            ("marshal", "loads"),
            ("types", "FunctionType"),
            ("types", "CodeType"),
            ("ctypes", "CDLL"),
            ("shutil", "rmtree"),
            ("webbrowser", "open"),
            ("socket", "create_connection"),
            ("torch.hub", "load_state_dict_from_url"),
            ("torch", "load"),
            ("torch.serialization", "load"),
            ("torch.jit", "load"),
            ("torch.serialization", "os.system"),
            ("pathlib", "os.system"),
            ("builtins", "eval.__call__"),
            ("builtins", "print.__class__.__base__.__subclasses__"),
            ("torch._inductor.codecache", "compile_file"),
            ("asyncio.unix_events", "_UnixSubprocessTransport._start"),
            ("functools", "partial"),
            ("httplib", "HTTPSConnection"),
            ("http.client", "HTTPSConnection"),
            ("numpy.testing._private.utils", "runstring"),
            ("uuid", "_get_command_stdout"),
            ("some.module", "eval"),
            ("some.module", "os"),
            ("io", "FileIO"),
            ("torch", "compile"),
            ("torch.utils._config_module", "ConfigModule.load_config"),
            ("torch.utils._config_module", "ConfigModule"),
            ("torch._dynamo.eval_frame", "optimize"),
            ("torch.fx.graph_module", "reduce_graph_module"),
            ("torch.package.package_importer", "PackageImporter"),
            ("torch.hub", "load"),
            ("torch.utils.collect_env", "run"),
            ("test.support.script_helper", "assert_python_ok"),
            ("idlelib.pyshell", "ModifiedInterpreter.runcode"),
            ("lib2to3.pgen2.pgen", "generate_grammar"),
            ("pydoc", "pipepager"),
            ("code", "InteractiveInterpreter.runsource"),
            ("timeit", "timeit"),
            ("cProfile", "run"),
            ("profile", "Profile.run"),
            ("pdb", "run"),
            ("bdb", "Bdb.run"),
            ("trace", "Trace.run"),
            ("logging.config", "listen"),
            ("linecache", "getline"),
            ("asyncio.subprocess", "create_subprocess_shell"),
            ("multiprocessing.util", "spawnv_passfds"),
            ("ctypes", "cast"),
            ("ssl", "get_server_certificate"),
            ("picklescan.scanner", "scan_pickle_bytes"),
            ("fickling.analysis", "check_safety"),
            ("modelscan.modelscan", "ModelScan"),
            ("modelaudit.core", "scan_file"),
            ("pathlib", "Path.write_text"),
        ] {
            assert_eq!(classify(m, n), Dangerous, "{m}.{n}");
        }
    }

    #[test]
    fn everything_else_is_unknown() {
        for (m, n) in [
            ("__main__", "MyConfig"),
            ("mypkg.models", "Net"),
            ("numpy", "core.multiarray.scalar_thing"),
        ] {
            assert_eq!(classify(m, n), Unknown, "{m}.{n}");
        }
    }
}
