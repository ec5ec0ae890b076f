//! The VM: the [`Machine`] run strictly over [`Value`]s, with a [`Host`] for what torch means.

use std::cell::RefCell;
use std::rc::Rc;

use super::engine::{
    Anomaly, Call, Collection, Exotic, Extend, Limits, Literal, Machine, Mode, PersistentId,
    Recognised, RecordKey, Semantics, TensorRecord, py3_module,
};
use super::ops::could_be_pickle;
use super::value::{Global, Object, ObjectOrigin, Seq, Value};
use super::{PickleError, Refusal};

/// One GLOBAL/STACK_GLOBAL/INST met while executing, for reports.
#[derive(Debug, Clone)]
pub struct GlobalUse {
    /// The name, after Python 2 names were mapped.
    pub global: Global,
    /// Offset of the opcode in the pickle.
    pub offset: usize,
}

/// The result of running one pickle.
pub struct Loaded {
    /// The value STOP returned.
    pub value: Value,
    /// Offset just past the STOP opcode.
    pub end: usize,
    /// The highest PROTO seen (0 when none).
    pub protocol: u8,
    /// Every global named, in order.
    pub globals: Vec<GlobalUse>,
    /// How many string or bytes values could themselves be pickles
    /// ([`super::ops::could_be_pickle`]): a scanner must look into those.
    pub embedded_pickles: usize,
    /// True when a Python 2 module name was mapped to its Python 3 name.
    pub renamed_globals: bool,
}

/// What a higher layer contributes: the meaning of persistent ids and of some calls. A
/// [`Refusal`] stops the VM (a limit error when it names a limit).
pub trait Host {
    /// Resolves a persistent id (BINPERSID/PERSID). The VM has no storage of its own.
    fn persistent_load(&mut self, pid: Value) -> Result<Value, Refusal>;

    /// Gives meaning to `callable(*args)` (REDUCE, NEWOBJ, INST, OBJ). `Ok(None)` lets the VM
    /// apply its plain-Python rules and otherwise build an inert object.
    fn call(
        &mut self,
        callable: &Value,
        args: &Value,
        origin: ObjectOrigin,
    ) -> Result<Option<Value>, Refusal>;

    /// Handles BUILD on `target`; `Ok(false)` lets the VM apply its default.
    fn build(&mut self, _target: &Value, _state: &Value) -> Result<bool, Refusal> {
        Ok(false)
    }

    /// The value of a tensor record whose storage key is `key` ([`TensorRecord`]): exactly
    /// what [`Host::persistent_load`] and [`Host::call`] (and the VM's own rules for a call
    /// they leave to it) would make of its opcodes run one by one, with the same effects on
    /// the host; `None` to have them run so.
    fn tensor_record(&mut self, _rec: &TensorRecord<'_, '_, Value>, _key: &str) -> Option<Value> {
        None
    }
}

/// A host that refuses persistent ids and interprets nothing: for plain pickles.
pub struct NoHost;

impl Host for NoHost {
    fn persistent_load(&mut self, _pid: Value) -> Result<Value, Refusal> {
        Err("a persistent id appears where none is expected".into())
    }
    fn call(&mut self, _: &Value, _: &Value, _: ObjectOrigin) -> Result<Option<Value>, Refusal> {
        Ok(None)
    }
}

/// Runs the pickle that starts at `start` in `data` and returns its value. Stops at the first
/// error ([`Mode::Strict`]); a limit error is [`PickleError::is_limit`].
pub fn load(
    data: &[u8],
    start: usize,
    host: &mut dyn Host,
    limits: &Limits,
) -> Result<Loaded, PickleError> {
    load_with_reads(data, start, host, limits, None)
}

/// [`load`] with every opcode run on its own, tensor records too ([`TensorRecord`]): the
/// reference the shortcut is compared with. The result is the same.
pub fn load_opcode_by_opcode(
    data: &[u8],
    start: usize,
    host: &mut dyn Host,
    limits: &Limits,
) -> Result<Loaded, PickleError> {
    run(data, start, host, limits, None, false)
}

/// [`load`], with the pickle's memo reads found meanwhile by another thread
/// ([`super::engine::MemoReads::of`] on the same bytes) instead of by a pass before the run.
pub fn load_with_reads(
    data: &[u8],
    start: usize,
    host: &mut dyn Host,
    limits: &Limits,
    reads: Option<&std::sync::OnceLock<super::engine::MemoReads>>,
) -> Result<Loaded, PickleError> {
    run(data, start, host, limits, reads, true)
}

fn run(
    data: &[u8],
    start: usize,
    host: &mut dyn Host,
    limits: &Limits,
    reads: Option<&std::sync::OnceLock<super::engine::MemoReads>>,
    records: bool,
) -> Result<Loaded, PickleError> {
    let vm = Vm {
        host,
        globals: Vec::new(),
        max_string: limits.max_string,
        embedded_pickles: 0,
        renamed_globals: false,
    };
    let mut m = Machine::new(vm, Mode::Strict, limits);
    if !records {
        m.opcode_by_opcode();
    }
    match reads {
        Some(reads) => m.keep_only_memo_reads_when(reads),
        None => m.keep_only_memo_reads(data, start),
    }
    let r = m.run(data, start);
    // Drop what is left without recursion, whatever happened.
    m.clear_values();
    let stopped = r?;
    let Vm {
        globals,
        embedded_pickles,
        renamed_globals,
        ..
    } = m.into_semantics();
    Ok(Loaded {
        value: stopped.value,
        end: stopped.end,
        protocol: stopped.protocol,
        globals,
        embedded_pickles,
        renamed_globals,
    })
}

/// The VM's semantics: values are [`Value`]s, the host interprets persistent ids and calls.
struct Vm<'h> {
    host: &'h mut dyn Host,
    globals: Vec<GlobalUse>,
    max_string: u64,
    embedded_pickles: usize,
    renamed_globals: bool,
}

fn text(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::str(s),
        // Python's `surrogatepass` strings and non-UTF-8 Python 2 strings: keep the bytes.
        Err(_) => Value::Bytes(Rc::from(b)),
    }
}

impl Vm<'_> {
    fn named(&mut self, at: usize, module: &str, name: &str) -> Value {
        let m3 = py3_module(module);
        self.renamed_globals |= m3 != module;
        let g = Global::new(m3, name);
        self.globals.push(GlobalUse {
            global: g.clone(),
            offset: at,
        });
        Value::Global(Rc::new(g))
    }

    fn call_value(
        &mut self,
        callable: Value,
        args: Value,
        origin: ObjectOrigin,
    ) -> Result<Value, Refusal> {
        if let Some(v) = self.host.call(&callable, &args, origin)? {
            return Ok(v);
        }
        if let Value::Global(g) = &callable
            && let Some(v) = builtin_call(g, &args, origin)?
        {
            return Ok(v);
        }
        Ok(Value::Object(Rc::new(Object::new(callable, args, origin))))
    }
}

impl<'p> Semantics<'p> for Vm<'_> {
    type Value = Value;

    fn placeholder(&mut self) -> Value {
        Value::None
    }

    /// The VM runs strictly: it is only told what it may ignore (frames, PROTO placement).
    fn report(&mut self, _at: usize, _anomaly: Anomaly<'_>) {}

    fn literal(&mut self, _at: usize, _end: usize, literal: Literal<'p>) -> Result<Value, Refusal> {
        Ok(match literal {
            Literal::Int(i) => Value::Int(i),
            Literal::BigInt(b) => Value::BigInt(Rc::from(b)),
            Literal::Float(f) => Value::Float(f),
            Literal::Bool(b) => Value::Bool(b),
            Literal::None => Value::None,
            Literal::Text(b) => {
                self.embedded_pickles += usize::from(could_be_pickle(&b, self.max_string));
                text(&b)
            }
            Literal::Bytes(b) => {
                self.embedded_pickles += usize::from(could_be_pickle(b, self.max_string));
                Value::Bytes(Rc::from(b))
            }
        })
    }

    fn global(
        &mut self,
        at: usize,
        module: &str,
        name: &str,
        _opcode: &'static str,
    ) -> Result<Value, Refusal> {
        Ok(self.named(at, module, name))
    }

    fn stack_global(&mut self, at: usize, module: Value, name: Value) -> Result<Value, Refusal> {
        match (module.as_str(), name.as_str()) {
            (Some(m), Some(n)) => Ok(self.named(at, m, n)),
            _ => Err(format!(
                "STACK_GLOBAL needs two strings, found {} and {}",
                module.type_name(),
                name.type_name()
            )
            .into()),
        }
    }

    fn persistent_load(
        &mut self,
        _at: usize,
        pid: PersistentId<'p, Value>,
    ) -> Result<Value, Refusal> {
        let pid = match pid {
            PersistentId::Text(id) => text(id),
            PersistentId::Value(v) => v,
        };
        self.host.persistent_load(pid)
    }

    fn call(&mut self, _at: usize, call: Call<Value>) -> Result<Value, Refusal> {
        match call {
            Call::Reduce { callable, args } => {
                self.call_value(callable, args, ObjectOrigin::Reduce)
            }
            Call::NewObj { cls, args } | Call::NewObjEx { cls, args, .. } => {
                self.call_value(cls, args, ObjectOrigin::NewObj)
            }
            Call::Inst { cls, args } => {
                self.call_value(cls, Value::tuple(args), ObjectOrigin::Inst)
            }
            Call::Obj { mut items } => {
                if items.is_empty() {
                    return Err("OBJ needs a class after its MARK".into());
                }
                let cls = items.remove(0);
                self.call_value(cls, Value::tuple(items), ObjectOrigin::Inst)
            }
        }
    }

    fn collection(
        &mut self,
        _at: usize,
        kind: Collection,
        items: Vec<Value>,
    ) -> Result<Value, Refusal> {
        Ok(match kind {
            Collection::Dict => {
                let d = Value::new_dict();
                if !items.is_empty() {
                    set_items(&d, items)?;
                }
                d
            }
            Collection::List => Value::List(Rc::new(RefCell::new(Seq(items)))),
            Collection::Tuple => Value::tuple(items),
            Collection::Set => Value::Set(Rc::new(RefCell::new(Seq(items)))),
        })
    }

    fn extend(
        &mut self,
        _at: usize,
        target: &Value,
        kind: Extend,
        items: Vec<Value>,
    ) -> Result<(), Refusal> {
        match kind {
            Extend::Append | Extend::Appends => Ok(append(target, items)?),
            Extend::SetItem | Extend::SetItems => Ok(set_items(target, items)?),
            Extend::AddItems => match target {
                Value::Set(s) => {
                    s.borrow_mut().extend(items);
                    Ok(())
                }
                other => Err(format!(
                    "ADDITEMS applied to a {}, expected a set",
                    other.type_name()
                )
                .into()),
            },
        }
    }

    fn build(&mut self, _at: usize, target: &Value, state: Value) -> Result<(), Refusal> {
        if !self.host.build(target, &state)? {
            build_default(target, state)?;
        }
        Ok(())
    }

    const TENSOR_RECORDS: bool = true;

    fn tensor_record(
        &mut self,
        _at: usize,
        rec: &TensorRecord<'_, 'p, Value>,
    ) -> Option<Recognised<Value>> {
        let key = match &rec.key {
            // A key that is not UTF-8 would be a bytes value, which no storage id takes.
            RecordKey::Text(b) => std::str::from_utf8(b).ok()?,
            RecordKey::Memo(v) => v.as_str()?,
        };
        let tensor = self.host.tensor_record(rec, key)?;
        let mut kept = None;
        if let RecordKey::Text(b) = &rec.key {
            // What the key's literal would have counted and made.
            self.embedded_pickles += usize::from(could_be_pickle(b, self.max_string));
            kept = rec.key_kept.then(|| Value::str(key));
        }
        Some(Recognised { tensor, key: kept })
    }

    fn exotic(
        &mut self,
        _at: usize,
        op: Exotic,
        _top: Option<&Value>,
    ) -> Result<Option<Value>, Refusal> {
        match op {
            Exotic::Ext(code) => Err(format!(
                "EXT opcode (extension registry code {code}) is not supported: torch never writes it"
            )
            .into()),
            Exotic::NextBuffer => Err(
                "NEXT_BUFFER (out-of-band buffer) is not supported: torch never writes it".into(),
            ),
            Exotic::ReadonlyBuffer => Ok(None),
        }
    }
}

fn append(target: &Value, items: Vec<Value>) -> Result<(), String> {
    match target {
        Value::List(l) => l.borrow_mut().extend(items),
        Value::Object(o) => o.list.borrow_mut().extend(items),
        other => {
            return Err(format!(
                "APPEND applied to a {}, expected a list",
                other.type_name()
            ));
        }
    }
    Ok(())
}

fn set_items(target: &Value, items: Vec<Value>) -> Result<(), String> {
    if !items.len().is_multiple_of(2) {
        return Err("SETITEMS needs key/value pairs but found an odd number of items".into());
    }
    let mut it = items.into_iter();
    match target {
        Value::Dict(d) => {
            let mut d = d.borrow_mut();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                d.insert(k, v);
            }
        }
        // Dict subclasses (AttributeDict, defaultdict kept as an object) receive items as data.
        Value::Object(o) => {
            let mut d = o.items.borrow_mut();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                d.insert(k, v);
            }
        }
        other => {
            return Err(format!(
                "SETITEM applied to a {}, expected a dict",
                other.type_name()
            ));
        }
    }
    Ok(())
}

fn build_default(target: &Value, state: Value) -> Result<(), String> {
    match target {
        Value::Object(o) => {
            *o.state.borrow_mut() = Some(state);
            Ok(())
        }
        // `OrderedDict.__dict__.update(state)`: attributes such as `_metadata`, not entries.
        Value::Dict(_) => Ok(()),
        other => Err(format!(
            "BUILD applied to a {}, which has no state to set",
            other.type_name()
        )),
    }
}

fn dict_from_pairs(src: &Value) -> Result<Value, String> {
    let d = Value::new_dict();
    let Value::Dict(dd) = &d else {
        return Err("internal".into());
    };
    match src {
        Value::Dict(s) => {
            for (k, v) in s.borrow().entries() {
                dd.borrow_mut().insert(k.clone(), v.clone());
            }
        }
        other => {
            let pairs = other.as_seq().ok_or_else(|| {
                format!(
                    "expected pairs to build a dict, found {}",
                    other.type_name()
                )
            })?;
            for p in pairs {
                match p.as_seq().as_deref() {
                    Some([k, v]) => dd.borrow_mut().insert(k.clone(), v.clone()),
                    _ => {
                        return Err(format!(
                            "expected a (key, value) pair, found {}",
                            p.type_name()
                        ));
                    }
                }
            }
        }
    }
    Ok(d)
}

/// Plain-Python constructors whose result is data. Nothing is called: the VM builds the value.
fn builtin_call(g: &Global, args: &Value, origin: ObjectOrigin) -> Result<Option<Value>, String> {
    let a = args.items().unwrap_or_default();
    let name = (g.module.as_str(), g.name.as_str());
    Ok(Some(match (name, origin) {
        (("collections", "OrderedDict") | ("builtins", "dict"), _) => match a.first() {
            None => Value::new_dict(),
            Some(src) => dict_from_pairs(src)?,
        },
        (("collections", "defaultdict"), _) => match a.get(1) {
            None => Value::new_dict(),
            Some(src) => dict_from_pairs(src)?,
        },
        (("collections", "Counter"), _) => match a.first() {
            Some(src @ Value::Dict(_)) => dict_from_pairs(src)?,
            _ => Value::new_dict(),
        },
        (("builtins", "set") | ("builtins", "frozenset"), _) => {
            let items = a.first().and_then(|v| v.as_seq()).unwrap_or_default();
            Value::Set(Rc::new(RefCell::new(Seq(items))))
        }
        (("builtins", "list"), _) => {
            let items = a.first().and_then(|v| v.as_seq()).unwrap_or_default();
            Value::List(Rc::new(RefCell::new(Seq(items))))
        }
        (("builtins", "tuple"), _) => {
            Value::tuple(a.first().and_then(|v| v.as_seq()).unwrap_or_default())
        }
        (("builtins", "complex"), ObjectOrigin::Reduce) => {
            let f = |v: Option<&Value>| match v {
                Some(Value::Float(x)) => Some(*x),
                Some(Value::Int(i)) => Some(*i as f64),
                None => Some(0.0),
                _ => None,
            };
            match (f(a.first()), f(a.get(1))) {
                (Some(re), Some(im)) => Value::Complex(re, im),
                _ => return Ok(None),
            }
        }
        (("builtins", "bytearray") | ("builtins", "bytes"), ObjectOrigin::Reduce) => {
            match a.first() {
                Some(b @ Value::Bytes(_)) => b.clone(),
                None => Value::Bytes(Rc::from(&[][..])),
                _ => return Ok(None),
            }
        }
        (("_codecs", "encode"), ObjectOrigin::Reduce) => {
            match (a.first(), a.get(1).and_then(|e| e.as_str())) {
                (Some(Value::Str(s)), Some("latin1" | "latin-1" | "iso-8859-1")) => {
                    let mut out = Vec::with_capacity(s.len());
                    for c in s.chars() {
                        let c = u32::from(c);
                        if c > 255 {
                            return Err(
                                "_codecs.encode: a character above U+00FF cannot be latin-1".into(),
                            );
                        }
                        out.push(c as u8);
                    }
                    Value::Bytes(Rc::from(out))
                }
                (Some(Value::Str(s)), Some("utf-8" | "utf8") | None) => {
                    Value::Bytes(Rc::from(s.as_bytes()))
                }
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    }))
}
