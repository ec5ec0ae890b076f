//! The values the restricted VM builds. Containers are shared (`Rc`), never deep-copied, so a
//! container memoized empty and filled later is seen filled everywhere. Nothing here can run code:
//! a class or function named by the pickle is only a [`Global`] name.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

/// A `module.name` pair met in a GLOBAL, STACK_GLOBAL or INST opcode, after Python 2 names were
/// mapped to Python 3 ones. It is a name only: nothing is imported or resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Global {
    /// The module part, e.g. `torch._utils`.
    pub module: String,
    /// The qualified name inside the module, e.g. `_rebuild_tensor_v2`.
    pub name: String,
}

impl Global {
    /// Builds a global from its two parts.
    pub fn new(module: impl Into<String>, name: impl Into<String>) -> Self {
        Global {
            module: module.into(),
            name: name.into(),
        }
    }

    /// True when this is exactly `module.name`.
    pub fn is(&self, module: &str, name: &str) -> bool {
        self.module == module && self.name == name
    }
}

impl fmt::Display for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// How an inert object came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectOrigin {
    /// REDUCE: `callable(*args)`.
    Reduce,
    /// NEWOBJ / NEWOBJ_EX: `cls.__new__(cls, *args)`.
    NewObj,
    /// INST / OBJ (protocol 0/1 class instantiation).
    Inst,
}

/// An object the VM did not understand: the call it stands for, never performed.
#[derive(Debug)]
pub struct Object {
    /// What was called (usually a [`Value::Global`]).
    pub callable: Value,
    /// The argument tuple it would have been called with.
    pub args: Value,
    /// How it was built.
    pub origin: ObjectOrigin,
    /// The BUILD state, if any (the object's would-be `__dict__` or `__setstate__` argument).
    pub state: RefCell<Option<Value>>,
    /// SETITEM(S) applied to the object (dict subclasses such as `AttributeDict`, `defaultdict`).
    pub items: RefCell<Dict>,
    /// APPEND(S) applied to the object (list subclasses).
    pub list: RefCell<Seq>,
}

impl Object {
    /// A fresh object with no state.
    pub fn new(callable: Value, args: Value, origin: ObjectOrigin) -> Self {
        Object {
            callable,
            args,
            origin,
            state: RefCell::new(None),
            items: RefCell::new(Dict::default()),
            list: RefCell::new(Seq::default()),
        }
    }

    /// The class or function name of the call, when it is a plain global.
    pub fn class(&self) -> Option<&Global> {
        match &self.callable {
            Value::Global(g) => Some(g),
            _ => None,
        }
    }
}

/// A key usable for hashing inside [`Dict`]: the hashable primitive values, borrowed.
#[derive(PartialEq, Eq, Hash)]
enum DictKey<'a> {
    None,
    Int(i64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

impl DictKey<'_> {
    fn of(v: &Value) -> Option<DictKey<'_>> {
        Some(match v {
            Value::None => DictKey::None,
            // Python: True == 1 and hash(True) == hash(1).
            Value::Bool(b) => DictKey::Int(*b as i64),
            Value::Int(i) => DictKey::Int(*i),
            Value::Str(s) => DictKey::Str(s),
            Value::Bytes(b) => DictKey::Bytes(b),
            _ => return None,
        })
    }
}

/// An insertion-ordered dictionary. Setting an existing primitive key replaces its value in place,
/// as Python does; other keys (tuples, objects) are kept as given.
///
/// The index holds each key's hash (per-process seeds) and its position in `entries`: growing
/// the table rehashes from the stored hashes, without reading every key again (a state dict of
/// 100,000 names is rebuilt 17 times as it grows, each time touching every name's string in
/// cold memory), and a lookup compares a key only when the whole hash matches.
#[derive(Default)]
pub struct Dict {
    entries: Vec<(Value, Value)>,
    index: hashbrown::HashTable<(u64, usize)>,
    seeds: foldhash::fast::RandomState,
}

impl fmt::Debug for Dict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dict[{} entries]", self.entries.len())
    }
}

impl Dict {
    fn hash(seeds: &foldhash::fast::RandomState, k: &DictKey<'_>) -> u64 {
        std::hash::BuildHasher::hash_one(seeds, k)
    }

    /// The hashable key of the entry at position `i` of the index.
    fn key_at(entries: &[(Value, Value)], i: usize) -> Option<DictKey<'_>> {
        entries.get(i).and_then(|e| DictKey::of(&e.0))
    }

    /// Inserts or replaces `key`.
    pub fn insert(&mut self, key: Value, value: Value) {
        if let Some(k) = DictKey::of(&key) {
            let entries = &self.entries;
            let hash = Self::hash(&self.seeds, &k);
            let found = self.index.entry(
                hash,
                |&(h, i)| h == hash && Self::key_at(entries, i).as_ref() == Some(&k),
                |&(h, _)| h,
            );
            match found {
                hashbrown::hash_table::Entry::Occupied(e) => {
                    let (_, i) = *e.get();
                    if let Some(slot) = self.entries.get_mut(i) {
                        slot.1 = value;
                        return;
                    }
                }
                hashbrown::hash_table::Entry::Vacant(e) => {
                    e.insert((hash, self.entries.len()));
                }
            }
        }
        self.entries.push((key, value));
    }

    /// Looks a string key up.
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        let k = DictKey::Str(key);
        let entries = &self.entries;
        let hash = Self::hash(&self.seeds, &k);
        let (_, i) = *self.index.find(hash, |&(h, i)| {
            h == hash && Self::key_at(entries, i).as_ref() == Some(&k)
        })?;
        self.entries.get(i).map(|e| &e.1)
    }

    /// The entries in insertion order.
    pub fn entries(&self) -> &[(Value, Value)] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A value on the VM stack or in the memo.
///
/// The tag is a whole word (it takes the padding a one-byte tag leaves anyway): the VM reads a
/// value back right after writing it, and a word-wide read of a byte-wide store is not
/// forwarded from the store but waits for it (profiled: a few percent of a run of 100,000
/// tensors).
#[derive(Clone)]
#[repr(u64)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A larger integer, as little-endian two's complement bytes.
    BigInt(Rc<[u8]>),
    /// A float.
    Float(f64),
    /// A complex number (`builtins.complex(re, im)`).
    Complex(f64, f64),
    /// A text string.
    Str(Rc<str>),
    /// A bytes object (also Python 2 `str` when it is not valid UTF-8).
    Bytes(Rc<[u8]>),
    /// A tuple.
    Tuple(Rc<Seq>),
    /// A list (shared, mutable).
    List(Rc<RefCell<Seq>>),
    /// A dict, OrderedDict, defaultdict or Counter (shared, mutable).
    Dict(Rc<RefCell<Dict>>),
    /// A set or frozenset (shared, mutable).
    Set(Rc<RefCell<Seq>>),
    /// A class or function name, never resolved.
    Global(Rc<Global>),
    /// An inert object: a call that was not performed.
    Object(Rc<Object>),
    /// A value made by a higher layer (e.g. a tensor or storage reference).
    Ext(Rc<dyn Any>),
}

impl Value {
    /// Makes a string value.
    pub fn str(s: &str) -> Value {
        Value::Str(Rc::from(s))
    }

    /// Makes a tuple value.
    pub fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(Rc::new(Seq(items)))
    }

    /// Makes an empty dict value.
    pub fn new_dict() -> Value {
        Value::Dict(Rc::new(RefCell::new(Dict::default())))
    }

    /// The Python type name of this value, for messages and reports.
    pub fn type_name(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Complex(..) => "complex".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Set(_) => "set".into(),
            Value::Global(g) => format!("global {g}"),
            Value::Object(o) => match o.class() {
                Some(g) => g.to_string(),
                None => "object".into(),
            },
            Value::Ext(_) => "extension".into(),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one that fits in `i64` (bools count, as in Python).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// The items, if this is a tuple or a list (a snapshot of the list).
    pub fn as_seq(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.0.clone()),
            Value::List(l) => Some(l.borrow().0.clone()),
            _ => None,
        }
    }

    /// The items, if this is a tuple (borrowed) or a list (a snapshot): [`Value::as_seq`]
    /// without copying a tuple.
    pub fn items(&self) -> Option<std::borrow::Cow<'_, [Value]>> {
        match self {
            Value::Tuple(t) => Some(std::borrow::Cow::Borrowed(&t.0)),
            Value::List(l) => Some(std::borrow::Cow::Owned(l.borrow().0.clone())),
            _ => None,
        }
    }

    /// The extension value of type `T`, if this is one.
    pub fn ext<T: 'static>(&self) -> Option<&T> {
        match self {
            Value::Ext(e) => e.downcast_ref::<T>(),
            _ => None,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shallow on purpose: a hostile pickle can nest values arbitrarily deep.
        match self {
            Value::None => write!(f, "None"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{:?}", truncate(s, 80)),
            Value::Tuple(t) => write!(f, "tuple[{}]", t.len()),
            Value::List(l) => write!(f, "list[{}]", l.try_borrow().map(|l| l.len()).unwrap_or(0)),
            Value::Dict(d) => write!(f, "dict[{}]", d.try_borrow().map(|d| d.len()).unwrap_or(0)),
            other => write!(f, "<{}>", other.type_name()),
        }
    }
}

/// Shortens attacker-controlled text for messages.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// A sequence of values (tuple, list or set items) that drops its children without recursion.
#[derive(Default)]
pub struct Seq(pub Vec<Value>);

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} items]", self.0.len())
    }
}

impl std::ops::Deref for Seq {
    type Target = Vec<Value>;
    fn deref(&self) -> &Vec<Value> {
        &self.0
    }
}

impl std::ops::DerefMut for Seq {
    fn deref_mut(&mut self) -> &mut Vec<Value> {
        &mut self.0
    }
}

// Dropping a deeply nested value recursively could overflow the stack, so every container hands
// its children to an explicit work list instead. Only children that are themselves containers
// this drop owns alone go on the list; every other child is dropped where it is met, so a dict
// of 100,000 tensors frees them in place rather than first copying them to a list.
fn is_container(v: &Value) -> bool {
    matches!(
        v,
        Value::Tuple(_) | Value::List(_) | Value::Set(_) | Value::Dict(_) | Value::Object(_)
    )
}

fn defer(v: Value, out: &mut Vec<Value>) {
    if is_container(&v) {
        out.push(v);
    }
}

fn drain_children(v: Value, out: &mut Vec<Value>) {
    match v {
        Value::Tuple(rc) => {
            if let Ok(mut seq) = Rc::try_unwrap(rc) {
                seq.0.drain(..).for_each(|c| defer(c, out));
            }
        }
        Value::List(rc) | Value::Set(rc) => {
            if let Ok(cell) = Rc::try_unwrap(rc) {
                cell.into_inner().0.drain(..).for_each(|c| defer(c, out));
            }
        }
        Value::Dict(rc) => {
            if let Ok(cell) = Rc::try_unwrap(rc) {
                cell.into_inner().drain_into(out);
            }
        }
        Value::Object(rc) => {
            if let Ok(mut obj) = Rc::try_unwrap(rc) {
                obj.take_children(out);
            }
        }
        _ => {}
    }
}

impl Dict {
    fn drain_into(&mut self, out: &mut Vec<Value>) {
        self.index = Default::default();
        for (k, v) in self.entries.drain(..) {
            defer(k, out);
            defer(v, out);
        }
    }
}

impl Object {
    fn take_children(&mut self, out: &mut Vec<Value>) {
        defer(std::mem::replace(&mut self.callable, Value::None), out);
        defer(std::mem::replace(&mut self.args, Value::None), out);
        if let Some(s) = self.state.get_mut().take() {
            defer(s, out);
        }
        self.items.get_mut().drain_into(out);
        self.list.get_mut().0.drain(..).for_each(|c| defer(c, out));
    }
}

impl Drop for Seq {
    fn drop(&mut self) {
        // The items themselves are the work list (no allocation): leaves are dropped as they
        // are popped, containers open up in place.
        if self.0.iter().any(is_container) {
            drop_iteratively(std::mem::take(&mut self.0));
        }
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let mut work = Vec::new();
        self.take_children(&mut work);
        drop_iteratively(work);
    }
}

impl Drop for Dict {
    fn drop(&mut self) {
        if self.entries.is_empty() {
            return;
        }
        let mut work = Vec::new();
        self.drain_into(&mut work);
        drop_iteratively(work);
    }
}

/// Drops a list of values without recursion.
fn drop_iteratively(mut work: Vec<Value>) {
    while let Some(v) = work.pop() {
        drain_children(v, &mut work);
    }
}
