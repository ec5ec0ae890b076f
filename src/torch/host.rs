//! The torch side of the VM: persistent ids become [`StorageRef`]s and the `_rebuild_*` calls
//! become [`TensorRef`]s. No data is read here; only what the pickle declares is recorded.

use std::rc::Rc;

use crate::dtype::DType;
use crate::pickle::{Global, Host, ObjectOrigin, Refusal, TensorRecord, Value};

/// A storage as a persistent id declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// The record name (`data/<key>` in zips, the key list entry in legacy streams).
    pub key: Box<str>,
    /// Element type of the storage class; `None` for `UntypedStorage` (bytes).
    pub dtype: Option<DType>,
    /// Declared size, in elements of `dtype` (bytes when untyped).
    pub numel: u64,
    /// Device the storage was saved from (informational: the bytes on disk are host bytes).
    pub location: Rc<str>,
    /// Legacy (torch <= 0.4) storage views: `(offset, numel)` in elements into the root storage
    /// (boxed: rare, and a storage per tensor is kept while the pickle runs).
    pub view: Option<Box<(u64, u64)>>,
}

impl StorageRef {
    /// Bytes per declared element (1 when untyped).
    pub fn unit(&self) -> u64 {
        self.dtype.map_or(1, |d| d.itemsize())
    }

    /// Declared size of the root storage in bytes.
    pub fn nbytes(&self) -> Option<u64> {
        self.numel.checked_mul(self.unit())
    }
}

/// A tensor as a rebuild call declares it: a view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// The storage it views.
    pub storage: Rc<StorageRef>,
    /// The tensor's element type.
    pub dtype: DType,
    /// Offset into the storage, in elements of `dtype`.
    pub offset: u64,
    /// Sizes (boxed: one per tensor, no spare capacity kept).
    pub shape: Box<[u64]>,
    /// Strides, in elements.
    pub stride: Box<[u64]>,
    /// The stored values must be conjugated to give the logical ones.
    pub conj: bool,
    /// The stored values must be negated to give the logical ones.
    pub neg: bool,
}

/// Something tensor-like that cannot become plain tensor bytes (quantized, sparse, meta, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotATensor {
    /// What kind of tensor it is.
    pub kind: String,
    /// Its dtype, when the pickle says.
    pub dtype: Option<String>,
}

/// A numpy array met in the tree: a tensor when its dtype is numeric, else why not.
#[derive(Debug)]
pub struct NumpyArray {
    /// The array as a tensor over an in-memory storage, or why it cannot be one.
    pub tensor: std::cell::RefCell<Result<Rc<TensorRef>, String>>,
}

/// A `numpy.dtype` object: its type string and byte order.
#[derive(Debug)]
struct NumpyDtype {
    descr: String,
    order: std::cell::RefCell<String>,
}

/// The VM host for torch checkpoints.
#[derive(Default)]
pub struct TorchHost {
    /// Storages declared so far, in order of first appearance.
    pub storages: Vec<Rc<StorageRef>>,
    /// Storages whose bytes live inside the pickle (embedded legacy streams, numpy arrays).
    pub memory: std::collections::HashMap<String, Rc<[u8]>>,
    /// Nesting of embedded legacy streams being read.
    depth: u32,
    /// Tar checkpoints (torch <= 0.1.9): the tables the pickle's plain-key persistent ids name.
    pub tar: Option<crate::container::tar::TarTables>,
    /// Tar tensors and storages already resolved, by key (one object per key, as in torch).
    tar_resolved: std::collections::HashMap<String, Value>,
    /// The caller's VM limits, applied to every embedded pickle too.
    limits: crate::pickle::Limits,
    /// The storage class of the last storage persistent id and its dtype: torch memoizes each
    /// class once, so consecutive ids name the same global (looked up once, not per tensor).
    last_class: Option<(Rc<Global>, Option<DType>)>,
}

fn int_arg(v: Option<&Value>, what: &str) -> Result<u64, String> {
    match v {
        Some(Value::Int(i)) if *i >= 0 => Ok(*i as u64),
        Some(Value::Bool(b)) => Ok(*b as u64),
        Some(other) => Err(format!(
            "{what}: expected a non-negative int, found {}",
            describe(other)
        )),
        None => Err(format!("{what}: missing")),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Int(i) => format!("int {i}"),
        Value::BigInt(_) => "an int too large for 64 bits".into(),
        other => other.type_name(),
    }
}

fn int_tuple(v: Option<&Value>, what: &str) -> Result<Vec<u64>, String> {
    let v = v.ok_or_else(|| format!("{what}: missing"))?;
    let items = match v {
        // `torch.Size` objects are rebuilt as tuples by `call` below.
        Value::Tuple(_) | Value::List(_) => v.items().unwrap_or_default(),
        other => {
            return Err(format!(
                "{what}: expected a tuple of ints, found {}",
                describe(other)
            ));
        }
    };
    // A plain loop: collecting through `Result` measured twice as slow on torch's one- and
    // two-element size and stride tuples (two per tensor).
    let mut out = Vec::with_capacity(items.len());
    for x in items.iter() {
        out.push(match x {
            Value::Int(i) if *i >= 0 => *i as u64,
            other => int_arg(Some(other), what)?,
        });
    }
    Ok(out)
}

fn storage_arg(v: Option<&Value>) -> Result<Rc<StorageRef>, String> {
    match v {
        Some(Value::Ext(e)) => match e.clone().downcast::<StorageRef>() {
            Ok(s) => Ok(s),
            Err(_) => Err("the storage argument is not a storage".into()),
        },
        Some(other) => Err(format!(
            "expected a storage (persistent id), found {}",
            describe(other)
        )),
        None => Err("storage argument missing".into()),
    }
}

/// `metadata` dict of `_rebuild_tensor_v2/v3`: `(conj, neg)`.
fn tensor_flags(v: Option<&Value>) -> Result<(bool, bool), String> {
    let mut flags = (false, false);
    if let Some(Value::Dict(d)) = v {
        for (k, val) in d.borrow().entries() {
            let on = matches!(val, Value::Bool(true)) || matches!(val, Value::Int(i) if *i != 0);
            match k.as_str() {
                Some("conj") => flags.0 = on,
                Some("neg") => flags.1 = on,
                Some(other) if on => {
                    return Err(format!(
                        "unknown tensor metadata flag {other:?}: refusing to guess its meaning"
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(flags)
}

fn is_torch(g: &Global, name: &str) -> bool {
    g.module == "torch" && g.name == name
}

/// The dtype a storage class global stands for, and whether it names a storage class at all.
fn storage_class(g: &Global) -> Option<Option<DType>> {
    if (g.module == "torch.storage" || g.module == "torch") && g.name == "UntypedStorage" {
        return Some(None);
    }
    if g.module == "torch" || g.module == "torch.cuda" {
        return DType::from_storage_name(&g.name).map(Some);
    }
    None
}

impl TorchHost {
    /// A host whose embedded pickles run under `limits` (the caller's, e.g. `--max-pickle-ops`).
    pub fn with_limits(limits: crate::pickle::Limits) -> Self {
        TorchHost {
            limits,
            ..TorchHost::default()
        }
    }

    /// The dtype of storage class `cls` (`None` for untyped), or `None` when it names none.
    /// torch memoizes each class once, so consecutive ids name the same global: it is looked
    /// up once, not per tensor.
    fn storage_dtype(&mut self, cls: &Rc<Global>) -> Option<Option<DType>> {
        match &self.last_class {
            Some((last, dtype)) if Rc::ptr_eq(last, cls) => Some(*dtype),
            _ => {
                let dtype = storage_class(cls)?;
                self.last_class = Some((cls.clone(), dtype));
                Some(dtype)
            }
        }
    }

    /// Records a storage declared by a persistent id.
    fn declare_storage(&mut self, s: StorageRef) -> Rc<StorageRef> {
        let s = Rc::new(s);
        self.storages.push(s.clone());
        s
    }

    fn storage_pid(&mut self, items: &[Value]) -> Result<Value, String> {
        let cls = match items.get(1) {
            Some(Value::Global(g)) => g.clone(),
            Some(other) => {
                return Err(format!(
                    "storage persistent id: expected a storage class, found {}",
                    describe(other)
                ));
            }
            None => return Err("storage persistent id: too short".into()),
        };
        let dtype = self.storage_dtype(&cls).ok_or_else(|| {
            format!("storage persistent id names {cls}, which is not a torch storage class")
        })?;
        let key = match items.get(2) {
            Some(Value::Str(s)) => String::from(&**s),
            Some(Value::Int(i)) => i.to_string(),
            Some(other) => {
                return Err(format!(
                    "storage key: expected a string, found {}",
                    describe(other)
                ));
            }
            None => return Err("storage persistent id: no key".into()),
        };
        // Shared with the pickle's string (memoized once for every storage of a device).
        let location = match items.get(3) {
            Some(Value::Str(s)) => s.clone(),
            _ => Rc::from(""),
        };
        let numel = int_arg(items.get(4), "storage size")?;
        let view = match items.get(5) {
            None | Some(Value::None) => None,
            Some(v) => {
                let t = v.as_seq().unwrap_or_default();
                // (view_key, offset, size) in elements of the root storage.
                let off = int_arg(t.get(1), "storage view offset")?;
                let size = int_arg(t.get(2), "storage view size")?;
                Some(Box::new((off, size)))
            }
        };
        Ok(Value::Ext(self.declare_storage(StorageRef {
            key: key.into(),
            dtype,
            numel,
            location,
            view,
        })))
    }

    fn rebuild(&mut self, g: &Global, a: &[Value]) -> Result<Option<Value>, String> {
        let name = g.name.as_str();
        let tensor = |storage: Rc<StorageRef>,
                      dtype: DType,
                      a: &[Value],
                      flags: (bool, bool)|
         -> Result<Value, String> {
            let offset = int_arg(a.get(1), "storage_offset")?;
            let shape = int_tuple(a.get(2), "size")?;
            let stride = int_tuple(a.get(3), "stride")?;
            if shape.len() != stride.len() {
                return Err(format!(
                    "size has {} dimensions but stride has {}",
                    shape.len(),
                    stride.len()
                ));
            }
            let (conj, neg) = flags;
            Ok(Value::Ext(Rc::new(TensorRef {
                storage,
                dtype,
                offset,
                shape: shape.into(),
                stride: stride.into(),
                conj,
                neg,
            })))
        };
        let v = match name {
            "_rebuild_tensor" | "_rebuild_tensor_v2" => {
                let s = storage_arg(a.first())?;
                let dtype = s.dtype.ok_or(
                    "an untyped storage passed to _rebuild_tensor_v2 (expected _rebuild_tensor_v3)",
                )?;
                let flags = if name == "_rebuild_tensor_v2" {
                    tensor_flags(a.get(6))?
                } else {
                    (false, false)
                };
                tensor(s, dtype, a, flags)?
            }
            "_rebuild_tensor_v3" => {
                let s = storage_arg(a.first())?;
                let dtype = match a.get(6) {
                    Some(Value::Global(d)) if d.module == "torch" => {
                        DType::from_torch_name(&d.name)
                            .ok_or_else(|| format!("unknown dtype torch.{}", d.name))?
                    }
                    Some(other) => {
                        return Err(format!(
                            "_rebuild_tensor_v3: expected a torch dtype, found {}",
                            describe(other)
                        ));
                    }
                    None => return Err("_rebuild_tensor_v3: dtype argument missing".into()),
                };
                tensor(s, dtype, a, tensor_flags(a.get(7))?)?
            }
            "_rebuild_parameter" | "_rebuild_parameter_with_state" => match a.first() {
                Some(v) => v.clone(),
                None => return Err(format!("{name}: data argument missing")),
            },
            "_rebuild_device_tensor_from_cpu_tensor" => match a.first() {
                Some(v) => v.clone(),
                None => return Err(format!("{name}: tensor argument missing")),
            },
            "_rebuild_qtensor" => {
                let dtype = storage_arg(a.first())
                    .ok()
                    .and_then(|s| s.dtype)
                    .map(|d| d.name().to_string());
                not_a_tensor("quantized", dtype)
            }
            "_rebuild_sparse_tensor" | "_rebuild_sparse_csr" => not_a_tensor("sparse", None),
            "_rebuild_nested_tensor" => not_a_tensor("nested", None),
            "_rebuild_meta_tensor_no_storage" => {
                not_a_tensor("meta (no data)", dtype_name(a.first()))
            }
            "_rebuild_wrapper_subclass" => {
                not_a_tensor("wrapper subclass (no data)", dtype_name(a.get(1)))
            }
            "_rebuild_device_tensor_from_numpy" | "_rebuild_xla_tensor" | "_rebuild_mlc_tensor" => {
                not_a_tensor("device tensor stored as numpy", dtype_name(a.get(1)))
            }
            _ => return Ok(None),
        };
        Ok(Some(v))
    }
}

fn dtype_name(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Global(g)) => Some(g.name.clone()),
        _ => None,
    }
}

fn not_a_tensor(kind: &str, dtype: Option<String>) -> Value {
    Value::Ext(Rc::new(NotATensor {
        kind: kind.to_string(),
        dtype,
    }))
}

fn numpy_dtype(descr: &str) -> Option<DType> {
    Some(match descr.trim_start_matches(['<', '>', '|', '=']) {
        "f8" | "float64" => DType::F64,
        "f4" | "float32" => DType::F32,
        "f2" | "float16" => DType::F16,
        "i8" | "int64" => DType::I64,
        "i4" | "int32" => DType::I32,
        "i2" | "int16" => DType::I16,
        "i1" | "int8" => DType::I8,
        "u1" | "uint8" => DType::U8,
        "u2" | "uint16" => DType::U16,
        "u4" | "uint32" => DType::U32,
        "u8" | "uint64" => DType::U64,
        "b1" | "bool" => DType::Bool,
        "c8" | "complex64" => DType::C64,
        "c16" | "complex128" => DType::C128,
        _ => return None,
    })
}

impl TorchHost {
    fn add_memory_storage(
        &mut self,
        prefix: &str,
        dtype: Option<DType>,
        numel: u64,
        bytes: Rc<[u8]>,
    ) -> Rc<StorageRef> {
        let key = format!("{prefix}-{}", self.memory.len());
        self.memory.insert(key.clone(), bytes);
        let s = Rc::new(StorageRef {
            key: key.into(),
            dtype,
            numel,
            location: "cpu".into(),
            view: None,
        });
        self.storages.push(s.clone());
        s
    }

    /// `torch.storage._load_from_bytes(b)`: a whole legacy stream holding one storage.
    /// A nested pickle over the caller's limits stays a limit error ([`Refusal::nested`]).
    fn load_from_bytes(&mut self, b: &[u8]) -> Result<Value, Refusal> {
        if self.depth >= 2 {
            return Err("embedded legacy streams nested more than twice".into());
        }
        let archive =
            crate::container::Archive::from_legacy_bytes(b, &self.limits).map_err(|e| {
                let msg = format!("torch.storage._load_from_bytes: embedded storage: {e}");
                match &e {
                    crate::error::ErrorKind::Pickle { source, .. } => Refusal::nested(source, msg),
                    _ => Refusal::from(msg),
                }
            })?;
        let mut inner = TorchHost {
            depth: self.depth + 1,
            ..TorchHost::with_limits(self.limits)
        };
        let loaded =
            crate::pickle::load(&archive.pickle, 0, &mut inner, &self.limits).map_err(|e| {
                Refusal::nested(
                    &e,
                    format!("in the embedded legacy stream's object pickle {e}"),
                )
            })?;
        let s = storage_arg(Some(&loaded.value)).map_err(|e| format!("embedded stream: {e}"))?;
        let mut declared = std::collections::HashMap::new();
        for st in &inner.storages {
            declared
                .entry(st.key.to_string())
                .or_insert((st.unit(), st.numel));
        }
        let records = archive
            .locate_storages(&declared)
            .map_err(|e| format!("embedded storage: {e}"))?;
        let rec = records
            .get(&s.key)
            .ok_or("embedded storage: its data record is missing")?;
        let data = crate::container::read_record(&archive.file, rec, u64::MAX)
            .map_err(|e| format!("embedded storage: {e}"))?;
        Ok(Value::Ext(self.add_memory_storage(
            "pickled-storage",
            s.dtype,
            s.numel,
            Rc::from(data),
        )))
    }

    /// BUILD of a numpy array: `(version, shape, dtype, is_fortran, raw data)`.
    fn numpy_build(&mut self, arr: &NumpyArray, state: &Value) -> Result<(), String> {
        let st = state.as_seq().unwrap_or_default();
        let result = (|| {
            let shape = int_tuple(st.get(1), "numpy shape")?;
            let dt = st
                .get(2)
                .and_then(|v| v.ext::<NumpyDtype>())
                .ok_or("numpy array without a dtype")?;
            let fortran = matches!(st.get(3), Some(Value::Bool(true)));
            let descr = dt.descr.clone();
            let dtype = numpy_dtype(&descr).ok_or_else(|| {
                format!("numpy dtype {descr:?} is not numeric (object or string array)")
            })?;
            let Some(Value::Bytes(raw)) = st.get(4) else {
                return Err(format!(
                    "numpy array of dtype {descr:?} holds Python objects, not raw data"
                ));
            };
            let numel = shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or("numpy shape overflows")?;
            let item = dtype.itemsize();
            if numel.checked_mul(item) != Some(raw.len() as u64) {
                return Err(format!(
                    "numpy array data is {} bytes, expected {numel} elements of {item} bytes",
                    raw.len()
                ));
            }
            let mut data = raw.to_vec();
            if dt.order.borrow().as_str() == ">" && item > 1 {
                let unit = dtype.info().swap_unit as usize;
                data.chunks_exact_mut(unit).for_each(|c| c.reverse());
            }
            let mut stride = vec![0u64; shape.len()];
            let mut acc = 1u64;
            let dims: Vec<usize> = if fortran {
                (0..shape.len()).collect()
            } else {
                (0..shape.len()).rev().collect()
            };
            for i in dims {
                stride[i] = acc;
                acc = acc.saturating_mul(shape[i]);
            }
            let storage = self.add_memory_storage("numpy", Some(dtype), numel, Rc::from(data));
            Ok(Rc::new(TensorRef {
                storage,
                dtype,
                offset: 0,
                shape: shape.into(),
                stride: stride.into(),
                conj: false,
                neg: false,
            }))
        })();
        *arr.tensor.borrow_mut() = result;
        Ok(())
    }
}

impl TorchHost {
    /// A plain-key persistent id of a tar checkpoint: a tensor or a storage (view) of its tables.
    fn tar_pid(&mut self, pid: &Value) -> Result<Value, String> {
        let Some(tables) = &self.tar else {
            return Err(format!(
                "persistent id {}: a bare key, which only tar checkpoints (torch <= 0.1.9) use",
                describe_pid(pid)
            ));
        };
        let key = crate::container::tar::canonical_key(pid).unwrap_or_default();
        if let Some(v) = self.tar_resolved.get(&key) {
            return Ok(v.clone());
        }
        let storage_of = |s: &crate::container::tar::TarStorage| {
            Rc::new(StorageRef {
                key: s.root.as_str().into(),
                dtype: Some(s.dtype),
                numel: s.numel,
                location: Rc::from(s.location.as_str()),
                view: s.view.map(Box::new),
            })
        };
        // torch keeps tensors and storages in one table; tensors are added last and win.
        let (value, storage) = if let Some(t) = tables.tensors.get(&key) {
            let s = tables.storages.get(&t.storage).ok_or_else(|| {
                format!(
                    "tensor {key:?} views storage {:?}, which the tar does not hold",
                    t.storage
                )
            })?;
            if t.shape.len() != t.stride.len() {
                return Err(format!(
                    "tensor {key:?}: size has {} dimensions but stride has {}",
                    t.shape.len(),
                    t.stride.len()
                ));
            }
            let storage = storage_of(s);
            let tensor = TensorRef {
                storage: storage.clone(),
                // torch builds the tensor with the storage's dtype; the saved class is informational.
                dtype: s.dtype,
                offset: t.offset,
                shape: t.shape.as_slice().into(),
                stride: t.stride.as_slice().into(),
                conj: false,
                neg: false,
            };
            (Value::Ext(Rc::new(tensor)), storage)
        } else if let Some(s) = tables.storages.get(&key) {
            let storage = storage_of(s);
            (Value::Ext(storage.clone()), storage)
        } else {
            return Err(format!(
                "persistent id {}: no tensor or storage with key {key:?} in the tar's tensors and storages members ({} tensors, {} storages)",
                describe_pid(pid),
                tables.tensors.len(),
                tables.storages.len()
            ));
        };
        self.storages.push(storage);
        self.tar_resolved.insert(key, value.clone());
        Ok(value)
    }
}

fn describe_pid(pid: &Value) -> String {
    match pid {
        Value::Str(s) => format!("{:?}", crate::pickle::truncate(s, 40)),
        other => describe(other),
    }
}

impl Host for TorchHost {
    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())` over a
    /// `("storage", class, key, location, numel)` id, as `persistent_load`, `call` and the VM's
    /// `OrderedDict` would make it; any other record, or one they would refuse, is left to them.
    fn tensor_record(&mut self, rec: &TensorRecord<'_, '_, Value>, key: &str) -> Option<Value> {
        let (
            Value::Global(rebuild),
            Value::Str(tag),
            Value::Global(cls),
            Value::Str(location),
            Value::Global(hooks),
        ) = (rec.rebuild, rec.tag, rec.class, rec.location, rec.hooks)
        else {
            return None;
        };
        if !rebuild.is("torch._utils", "_rebuild_tensor_v2")
            || !hooks.is("collections", "OrderedDict")
            || &**tag != "storage"
        {
            return None;
        }
        // `_rebuild_tensor_v2` refuses an untyped storage.
        let dtype = self.storage_dtype(cls)??;
        let unsigned = |v: i64| u64::try_from(v).ok();
        let numel = unsigned(rec.numel)?;
        let offset = unsigned(rec.offset)?;
        let shape: Option<Box<[u64]>> = rec.size.iter().map(|&d| unsigned(d)).collect();
        let stride: Option<Box<[u64]>> = rec.stride.iter().map(|&d| unsigned(d)).collect();
        let (shape, stride) = (shape?, stride?);
        if shape.len() != stride.len() {
            return None;
        }
        let storage = self.declare_storage(StorageRef {
            key: key.into(),
            dtype: Some(dtype),
            numel,
            location: location.clone(),
            view: None,
        });
        Some(Value::Ext(Rc::new(TensorRef {
            storage,
            dtype,
            offset,
            shape,
            stride,
            conj: false,
            neg: false,
        })))
    }

    fn build(&mut self, target: &Value, state: &Value) -> Result<bool, Refusal> {
        if let Some(arr) = target.ext::<NumpyArray>() {
            self.numpy_build(arr, state)?;
            return Ok(true);
        }
        if let Some(dt) = target.ext::<NumpyDtype>() {
            if let Some(Value::Str(o)) = state.as_seq().unwrap_or_default().get(1) {
                *dt.order.borrow_mut() = o.to_string();
            }
            return Ok(true);
        }
        // BUILD on a tensor sets Python attributes, which carry no data.
        if target.ext::<TensorRef>().is_some() || target.ext::<NotATensor>().is_some() {
            return Ok(true);
        }
        Ok(false)
    }

    fn persistent_load(&mut self, pid: Value) -> Result<Value, Refusal> {
        if matches!(pid, Value::Int(_) | Value::Str(_) | Value::Bytes(_)) {
            return Ok(self.tar_pid(&pid)?);
        }
        let items = pid
            .items()
            .ok_or_else(|| format!("persistent id: expected a tuple, found {}", describe(&pid)))?;
        let tag: std::borrow::Cow<'_, str> = match items.first() {
            Some(Value::Str(s)) => std::borrow::Cow::Borrowed(s),
            Some(Value::Bytes(b)) => String::from_utf8_lossy(b),
            _ => std::borrow::Cow::Borrowed(""),
        };
        match &*tag {
            "storage" => Ok(self.storage_pid(&items)?),
            // Whole modules saved in the legacy format: the class, kept as an inert name.
            "module" => Ok(items.get(1).cloned().unwrap_or(Value::None)),
            other => Err(format!(
                "unknown persistent id kind {:?}",
                crate::pickle::truncate(other, 40)
            )
            .into()),
        }
    }

    fn call(
        &mut self,
        callable: &Value,
        args: &Value,
        _origin: ObjectOrigin,
    ) -> Result<Option<Value>, Refusal> {
        let Value::Global(g) = callable else {
            return Ok(None);
        };
        let a = args.items().unwrap_or_default();
        if g.module == "torch._utils" {
            return Ok(self.rebuild(g, &a)?);
        }
        if g.module == "torch._tensor"
            && (g.name == "_rebuild_from_type_v2" || g.name == "_rebuild_from_type")
        {
            // (func, new_type, args, state): unwrap func(*args); the subclass is metadata.
            let (Some(func), Some(inner)) = (a.first(), a.get(2)) else {
                return Err(format!("{g}: expected (func, type, args, state)").into());
            };
            return match self.call(func, inner, ObjectOrigin::Reduce)? {
                Some(v) => Ok(Some(v)),
                None => Ok(None),
            };
        }
        if g.module == "torch.storage" && g.name == "_load_from_bytes" {
            return match a.first() {
                Some(Value::Bytes(b)) => self.load_from_bytes(b).map(Some),
                _ => Err("torch.storage._load_from_bytes: expected bytes".into()),
            };
        }
        if (g.module == "numpy.core.multiarray" || g.module == "numpy._core.multiarray")
            && g.name == "_reconstruct"
        {
            let arr = NumpyArray {
                tensor: std::cell::RefCell::new(Err("numpy array without state".into())),
            };
            return Ok(Some(Value::Ext(Rc::new(arr))));
        }
        if g.module == "numpy" && g.name == "dtype" {
            let descr = a.first().and_then(|v| v.as_str()).unwrap_or("").to_string();
            let d = NumpyDtype {
                descr,
                order: std::cell::RefCell::new("<".into()),
            };
            return Ok(Some(Value::Ext(Rc::new(d))));
        }
        if is_torch(g, "Size") {
            return Ok(Some(Value::tuple(
                a.first().and_then(|v| v.as_seq()).unwrap_or_default(),
            )));
        }
        Ok(None)
    }
}
