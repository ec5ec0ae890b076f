//! The object tree to named tensors: which subtree to convert, how leaves are named, and which
//! names are exact aliases of one another.

use std::rc::Rc;

use crate::container::{ScriptClass, ScriptClasses};
use crate::error::ErrorKind;
use crate::pickle::Value;
use crate::torch::{NotATensor, NumpyArray, TensorRef};

/// Keys tried, in order, when the root holds no `state_dict`.
pub const DEFAULT_KEYS: [&str; 4] = ["model_state_dict", "model_state", "model", "module"];

/// Most nodes visited in one walk (shared containers can make a small pickle a huge tree).
const MAX_NODES: usize = 50_000_000;

/// A tensor-like leaf found while walking.
#[derive(Debug, Clone)]
pub enum Leaf {
    /// A tensor whose bytes can be located.
    Tensor(Rc<TensorRef>),
    /// Something tensor-like that safetensors cannot hold.
    NotATensor(Rc<NotATensor>),
}

/// Everything found under the selected subtree.
#[derive(Debug, Default)]
pub struct Flattened {
    /// Tensor-like leaves with their names, in checkpoint order.
    pub leaves: Vec<(String, Leaf)>,
    /// Non-tensor leaves left out: name and Python type.
    pub skipped: Vec<(String, String)>,
}

/// How leaves are recognised, and how deep the walk may go.
#[derive(Debug, Clone, Copy)]
pub struct FlattenOptions {
    /// Treat numeric numpy arrays as tensors (otherwise they are non-tensor leaves).
    pub include_numpy: bool,
    /// Deepest nesting of containers walked (`--max-depth`).
    pub max_depth: usize,
    /// TorchScript modules: also write tensor attributes that are neither parameters nor
    /// buffers (after the `state_dict()` entries), and walk every attribute when the archive's
    /// declarations cannot be read (`--torchscript-attributes`).
    pub torchscript_attributes: bool,
}

impl Default for FlattenOptions {
    fn default() -> Self {
        FlattenOptions {
            include_numpy: false,
            max_depth: crate::pickle::Limits::default().max_depth,
            torchscript_attributes: false,
        }
    }
}

fn leaf(v: &Value, opts: &FlattenOptions) -> Option<Leaf> {
    if let Value::Ext(e) = v {
        if let (true, Some(arr)) = (opts.include_numpy, v.ext::<NumpyArray>()) {
            return Some(match &*arr.tensor.borrow() {
                Ok(t) => Leaf::Tensor(t.clone()),
                Err(why) => Leaf::NotATensor(Rc::new(NotATensor {
                    kind: format!("numpy array ({why})"),
                    dtype: None,
                })),
            });
        }
        if let Ok(t) = e.clone().downcast::<TensorRef>() {
            return Some(Leaf::Tensor(t));
        }
        if let Ok(n) = e.clone().downcast::<NotATensor>() {
            return Some(Leaf::NotATensor(n));
        }
    }
    None
}

/// Whether [`leaf`] would find a leaf in `v` (without making one).
fn is_leaf(v: &Value, opts: &FlattenOptions) -> bool {
    match v {
        Value::Ext(e) => {
            (opts.include_numpy && e.is::<NumpyArray>())
                || e.is::<TensorRef>()
                || e.is::<NotATensor>()
        }
        _ => false,
    }
}

fn key_name(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(String::from(&**s)),
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(b) => Some(if *b { "True".into() } else { "False".into() }),
        _ => None,
    }
}

fn join(prefix: &str, key: String) -> String {
    if prefix.is_empty() {
        return key;
    }
    let mut name = String::with_capacity(prefix.len() + 1 + key.len());
    name.push_str(prefix);
    name.push('.');
    name.push_str(&key);
    name
}

/// Children of a value, as (name part, child) in order. `None` for leaves.
fn children(v: &Value) -> Option<Vec<(Option<String>, Value)>> {
    children_with(v, true)
}

/// [`children`]; with `named` false every name part is `None` (not built), for walks that
/// only need the values.
fn children_with(v: &Value, named: bool) -> Option<Vec<(Option<String>, Value)>> {
    let key = |k: &Value| if named { key_name(k) } else { None };
    let index = |i: usize| named.then(|| i.to_string());
    Some(match v {
        Value::Dict(d) => d
            .borrow()
            .entries()
            .iter()
            .map(|(k, v)| (key(k), v.clone()))
            .collect(),
        Value::List(_) | Value::Tuple(_) => v
            .items()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, v)| (index(i), v.clone()))
            .collect(),
        Value::Object(o) => {
            if let Some(inner) = script_container(o) {
                return children_with(&inner, named);
            }
            let state = o.state.borrow().clone();
            if let Some(m) = state.as_ref().and_then(|s| module_children(s, named)) {
                return Some(m);
            }
            let mut out = Vec::new();
            // BUILD state: an attribute dict, or a (dict, slots) pair.
            match &state {
                Some(s @ Value::Dict(_)) => out.extend(children_with(s, named).unwrap_or_default()),
                Some(Value::Tuple(t)) => {
                    for part in t.iter() {
                        if let Value::Dict(_) = part {
                            out.extend(children_with(part, named).unwrap_or_default());
                        }
                    }
                }
                _ => {}
            }
            out.extend(
                o.items
                    .borrow()
                    .entries()
                    .iter()
                    .map(|(k, v)| (key(k), v.clone())),
            );
            out.extend(
                o.list
                    .borrow()
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (index(i), v.clone())),
            );
            out
        }
        _ => return None,
    })
}

/// The TorchScript pickler wraps typed lists and dicts in calls that return their first
/// argument (`torch.jit._pickle.build_tensorlist([...])`, `restore_type_tag(d, "Dict[…]")`):
/// that argument, so the container is walked as what `torch.jit.load` makes of it.
fn script_container(o: &crate::pickle::Object) -> Option<Value> {
    let g = o.class()?;
    if g.module != "torch.jit._pickle"
        || !matches!(
            g.name.as_str(),
            "build_tensorlist"
                | "build_intlist"
                | "build_floatlist"
                | "build_doublelist"
                | "build_boollist"
                | "restore_type_tag"
        )
        || o.origin != crate::pickle::ObjectOrigin::Reduce
    {
        return None;
    }
    let first = o.args.as_seq()?.into_iter().next()?;
    matches!(first, Value::List(_) | Value::Dict(_) | Value::Tuple(_)).then_some(first)
}

/// An `nn.Module`'s state, named as `state_dict()` would: parameters, persistent buffers, then
/// submodules.
fn module_children(state: &Value, named: bool) -> Option<Vec<(Option<String>, Value)>> {
    let Value::Dict(d) = state else { return None };
    let d = d.borrow();
    if d.get_str("_parameters").is_none() && d.get_str("_modules").is_none() {
        return None;
    }
    let non_persistent: Vec<String> = match d.get_str("_non_persistent_buffers_set") {
        Some(Value::Set(s)) => s
            .borrow()
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for (field, skip_none) in [
        ("_parameters", true),
        ("_buffers", true),
        ("_modules", true),
    ] {
        let Some(Value::Dict(m)) = d.get_str(field) else {
            continue;
        };
        for (k, v) in m.borrow().entries() {
            if skip_none && matches!(v, Value::None) {
                continue;
            }
            let name = key_name(k);
            if field == "_buffers" && name.as_ref().is_some_and(|n| non_persistent.contains(n)) {
                continue;
            }
            out.push((name.filter(|_| named), v.clone()));
        }
    }
    Some(out)
}

/// Identity of a container value (shared containers have one identity).
pub(crate) fn node_id(v: &Value) -> Option<usize> {
    Some(match v {
        Value::Dict(d) => Rc::as_ptr(d) as *const () as usize,
        Value::List(l) | Value::Set(l) => Rc::as_ptr(l) as *const () as usize,
        Value::Tuple(t) => Rc::as_ptr(t) as *const () as usize,
        Value::Object(o) => Rc::as_ptr(o) as *const () as usize,
        _ => return None,
    })
}

/// For every container reachable from `root`, whether any tensor-like leaf is below it. Each
/// distinct container is visited once, so shared containers (memo bombs) cost nothing extra.
fn tensor_holders(root: &Value, opts: &FlattenOptions) -> foldhash::HashMap<usize, bool> {
    /// A container to open, or one whose children (listed once, when it was opened) are done:
    /// whether a leaf is among them, and its container children.
    enum Visit {
        Open(Value),
        Close(usize, bool, Vec<Value>),
    }
    let mut holds: foldhash::HashMap<usize, bool> = Default::default();
    let mut stack = vec![Visit::Open(root.clone())];
    while let Some(visit) = stack.pop() {
        match visit {
            Visit::Close(id, leafy, containers) => {
                let any = leafy
                    || containers.iter().any(|c| {
                        node_id(c)
                            .and_then(|i| holds.get(&i).copied())
                            .unwrap_or(false)
                    });
                holds.insert(id, any);
            }
            Visit::Open(v) => {
                let Some(id) = node_id(&v) else { continue };
                if holds.contains_key(&id) {
                    continue;
                }
                // Provisional value: a cycle back to an open container adds nothing.
                holds.insert(id, false);
                // A leaf is never a container (leaves are extension values), so the children
                // split in two: leaves, of which one is enough, and containers, to visit.
                let mut leafy = false;
                let mut containers = Vec::new();
                let mut sort = |c: &Value| {
                    if is_leaf(c, opts) {
                        leafy = true;
                    } else if node_id(c).is_some() {
                        containers.push(c.clone());
                    }
                };
                // Dicts, lists and tuples are read in place: a state dict's tensors are looked
                // at, not copied into a list of all its values.
                match &v {
                    Value::Dict(d) => d.borrow().entries().iter().for_each(|(_, c)| sort(c)),
                    Value::List(l) => l.borrow().iter().for_each(&mut sort),
                    Value::Tuple(t) => t.iter().for_each(&mut sort),
                    _ => children_with(&v, false)
                        .unwrap_or_default()
                        .iter()
                        .for_each(|(_, c)| sort(c)),
                }
                let open: Vec<Value> = containers
                    .iter()
                    .filter(|c| node_id(c).is_some_and(|i| !holds.contains_key(&i)))
                    .cloned()
                    .collect();
                stack.push(Visit::Close(id, leafy, containers));
                stack.extend(open.into_iter().map(Visit::Open));
            }
        }
    }
    holds
}

/// The children of a container being walked by [`flatten_with`], from the next one on.
enum Kids {
    /// A dict's entries, read in place from this index.
    Dict(Rc<std::cell::RefCell<crate::pickle::Dict>>, usize),
    /// Any other container's children, listed once.
    Listed(std::vec::IntoIter<(Option<String>, Value)>),
}

impl Kids {
    fn len(&self) -> usize {
        match self {
            Kids::Dict(d, i) => d.borrow().len().saturating_sub(*i),
            Kids::Listed(k) => k.len(),
        }
    }
}

/// A container being walked: its name, its children left, and how it was reached.
struct Walk {
    name: String,
    kids: Kids,
    depth: usize,
    nameable: bool,
}

impl Walk {
    /// The next child as [`children`] names it (a dict key as [`key_name`] makes it).
    fn next_child(&mut self) -> Option<(Option<String>, Value)> {
        match &mut self.kids {
            Kids::Dict(d, i) => {
                let d = d.borrow();
                let (k, v) = d.entries().get(*i)?;
                *i += 1;
                Some((key_name(k), v.clone()))
            }
            Kids::Listed(k) => k.next(),
        }
    }
}

/// Walks `root` and names every leaf below it.
pub fn flatten(root: &Value, prefix: &str) -> Result<Flattened, ErrorKind> {
    flatten_with(root, prefix, &FlattenOptions::default())
}

/// [`flatten`] with options.
pub fn flatten_with(
    root: &Value,
    prefix: &str,
    opts: &FlattenOptions,
) -> Result<Flattened, ErrorKind> {
    let mut out = Flattened::default();
    let holders = tensor_holders(root, opts);
    let mut walked: foldhash::HashSet<usize> = Default::default();
    // The containers being walked, innermost last, each with its next child. A dict is read in
    // place, by index: a state dict's 100,000 entries are not first copied into a list of
    // children (and their keys into strings) that a stack of 100,000 pending names would then
    // hold too; each leaf's name is made once, as it is met.
    let mut open: Vec<Walk> = Vec::new();
    // (name, value, depth, nameable): the value to visit next, the root first.
    let mut next = Some((prefix.to_string(), root.clone(), 0, true));
    let mut visited = 0usize;
    loop {
        let (name, v, depth, nameable) = match next.take() {
            Some(n) => n,
            None => {
                let Some(w) = open.last_mut() else { break };
                let Some((k, child)) = w.next_child() else {
                    open.pop();
                    continue;
                };
                let (part, ok) = match k {
                    Some(k) => (k, w.nameable),
                    None => ("<unnamed key>".to_string(), false),
                };
                (join(&w.name, part), child, w.depth + 1, ok)
            }
        };
        visited += 1;
        if visited > MAX_NODES {
            return Err(ErrorKind::Malformed(format!(
                "the object tree has more than {MAX_NODES} nodes (shared containers nested too often)"
            )));
        }
        if let Some(l) = leaf(&v, opts) {
            if !nameable {
                return Err(ErrorKind::Unsupported(format!(
                    "a tensor sits under a dict key that is not a string or int ({name}); it cannot be given a safetensors name"
                )));
            }
            out.leaves.push((name, l));
            continue;
        }
        let kids = match &v {
            Value::Dict(d) => Some(Kids::Dict(d.clone(), 0)),
            _ => children(&v).map(|k| Kids::Listed(k.into_iter())),
        };
        match kids {
            // A tensor-free container met again (shared) is listed, not walked again: shared
            // containers can make a small pickle an exponentially large tree.
            Some(_)
                if node_id(&v)
                    .is_some_and(|i| holders.get(&i) == Some(&false) && !walked.insert(i)) =>
            {
                out.skipped.push((name, v.type_name()));
            }
            Some(kids) => {
                if depth >= opts.max_depth {
                    return Err(ErrorKind::Malformed(format!(
                        "the object tree is nested deeper than {} levels at {name:?} (raise with --max-depth)",
                        opts.max_depth
                    )));
                }
                // Sized once per container, not grown by doubling: at most every child is a
                // leaf.
                out.leaves.reserve(kids.len());
                open.push(Walk {
                    name,
                    kids,
                    depth,
                    nameable,
                });
            }
            None => {
                if v.ext::<NumpyArray>().is_some() {
                    out.skipped.push((name, "numpy.ndarray".into()));
                } else if !matches!(v, Value::None) {
                    out.skipped.push((name, v.type_name()));
                }
            }
        }
    }
    Ok(out)
}

/// The qualified class name of a TorchScript object (`__torch__.a.b.Class`), when `v` is one.
pub fn script_class_name(v: &Value) -> Option<String> {
    let Value::Object(o) = v else { return None };
    let g = o.class()?;
    (g.module == "__torch__" || g.module.starts_with("__torch__."))
        .then(|| format!("{}.{}", g.module, g.name))
}

/// The `Module` class declared for `v`, when `v` is an object of one.
fn script_module<'a>(v: &Value, classes: &'a ScriptClasses) -> Option<&'a ScriptClass> {
    classes.get(&script_class_name(v)?).filter(|c| c.module)
}

/// What [`flatten_script`] made of the selected value.
pub enum ScriptFlat {
    /// The value is a TorchScript module: its `state_dict()` (and, when asked, the other
    /// tensor attributes).
    Module(Flattened),
    /// The value is not a TorchScript module; it is flattened like any other tree.
    NotAModule,
}

/// Names a TorchScript module tree as `torch.jit.load(f).state_dict()` does: per module, the
/// attributes declared in `__parameters__`, then those in `__buffers__` (both in attribute
/// order, `None` left out), then each submodule in attribute order, depth first. Other
/// attributes holding tensors are listed in `skipped`, or with
/// [`FlattenOptions::torchscript_attributes`] written after every `state_dict()` entry, named by
/// attribute path. A class without declarations, or a declaration that does not match the
/// object, is an error.
pub fn flatten_script(
    root: &Value,
    classes: &ScriptClasses,
    opts: &FlattenOptions,
) -> Result<ScriptFlat, ErrorKind> {
    match script_class_name(root) {
        None => return Ok(ScriptFlat::NotAModule),
        Some(name) => match classes.get(&name) {
            None => {
                return Err(ErrorKind::Malformed(format!(
                    "the TorchScript class {name} is not declared in the archive's code/ records"
                )));
            }
            Some(c) if !c.module => return Ok(ScriptFlat::NotAModule),
            Some(_) => {}
        },
    }
    let mut out = Flattened::default();
    let mut extras: Vec<(String, Leaf)> = Vec::new();
    let mut tensor_free: foldhash::HashSet<usize> = Default::default();
    // (name prefix, module, depth)
    let mut stack: Vec<(String, Value, usize)> = vec![(String::new(), root.clone(), 0)];
    let mut visited = 0usize;
    while let Some((prefix, module, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_NODES {
            return Err(ErrorKind::Malformed(format!(
                "the TorchScript module tree has more than {MAX_NODES} modules (shared submodules nested too often)"
            )));
        }
        if depth >= opts.max_depth {
            return Err(ErrorKind::Malformed(format!(
                "the TorchScript module tree is nested deeper than {} levels at {prefix:?} (raise with --max-depth)",
                opts.max_depth
            )));
        }
        let class_name = script_class_name(&module).unwrap_or_default();
        let class = script_module(&module, classes).ok_or_else(|| {
            ErrorKind::Unsupported(format!("internal: {prefix:?} is not a declared module"))
        })?;
        let declared = |field: &str, list: &Option<Vec<String>>| {
            list.clone().ok_or_else(|| {
                ErrorKind::Malformed(format!(
                    "the TorchScript module class {class_name} declares no {field} in its code/ record"
                ))
            })
        };
        let params = declared("__parameters__", &class.parameters)?;
        let buffers = declared("__buffers__", &class.buffers)?;
        let Value::Object(o) = &module else {
            continue;
        };
        let state = o.state.borrow().clone();
        let Some(Value::Dict(attrs)) = state else {
            return Err(ErrorKind::Malformed(format!(
                "the TorchScript module {} (class {class_name}) has no attribute dict",
                if prefix.is_empty() {
                    "at the root"
                } else {
                    &prefix
                }
            )));
        };
        let attrs: Vec<(String, Value)> = attrs
            .borrow()
            .entries()
            .iter()
            .map(|(k, v)| match k {
                Value::Str(s) => Ok((String::from(&**s), v.clone())),
                other => Err(ErrorKind::Malformed(format!(
                    "the TorchScript module class {class_name} has an attribute named by a {}",
                    other.type_name()
                ))),
            })
            .collect::<Result<_, _>>()?;
        let names: std::collections::HashSet<&str> =
            attrs.iter().map(|(k, _)| k.as_str()).collect();
        for name in params.iter().chain(&buffers) {
            if !names.contains(name.as_str()) {
                return Err(ErrorKind::Malformed(format!(
                    "the TorchScript module class {class_name} declares {name:?} as a parameter or buffer, but the object has no such attribute"
                )));
            }
        }
        let params: std::collections::HashSet<String> = params.into_iter().collect();
        let buffers: std::collections::HashSet<String> = buffers.into_iter().collect();
        // Attribute order within each kind, as the C++ module's slots are iterated.
        for (list, what) in [(&params, "parameter"), (&buffers, "buffer")] {
            for (k, v) in attrs.iter().filter(|(k, _)| list.contains(k)) {
                if matches!(v, Value::None) {
                    continue;
                }
                let l = leaf(v, opts).ok_or_else(|| {
                    ErrorKind::Malformed(format!(
                        "the {what} {:?} of TorchScript class {class_name} is a {}, not a tensor",
                        join(&prefix, k.clone()),
                        v.type_name()
                    ))
                })?;
                out.leaves.push((join(&prefix, k.clone()), l));
            }
        }
        let mut subs = Vec::new();
        for (k, v) in &attrs {
            if params.contains(k) || buffers.contains(k) {
                continue;
            }
            let path = join(&prefix, k.clone());
            if script_module(v, classes).is_some() {
                subs.push((path, v.clone(), depth + 1));
                continue;
            }
            if let Some(name) = script_class_name(v)
                && classes.get(&name).is_none()
            {
                return Err(ErrorKind::Malformed(format!(
                    "the attribute {path:?} is of TorchScript class {name}, which the archive's code/ records do not declare"
                )));
            }
            // A tensor-free value shared by many modules is walked once.
            let id = node_id(v);
            if id.is_some_and(|i| tensor_free.contains(&i)) {
                out.skipped.push((path, v.type_name()));
                continue;
            }
            let sub = FlattenOptions {
                max_depth: opts.max_depth.saturating_sub(depth + 1),
                ..*opts
            };
            let flat = flatten_with(v, &path, &sub)?;
            if let Some(i) = id
                && flat.leaves.is_empty()
            {
                tensor_free.insert(i);
            }
            out.skipped.extend(flat.skipped);
            for (n, l) in flat.leaves {
                if opts.torchscript_attributes {
                    extras.push((n, l));
                } else {
                    out.skipped.push((
                        n,
                        "tensor attribute, not a parameter or buffer (--torchscript-attributes writes it)"
                            .into(),
                    ));
                }
            }
        }
        stack.extend(subs.into_iter().rev());
    }
    out.leaves.extend(extras);
    Ok(ScriptFlat::Module(out))
}

/// True when any tensor-like leaf is below `v`.
pub fn holds_tensors(v: &Value) -> bool {
    flatten(v, "")
        .map(|f| !f.leaves.is_empty())
        .unwrap_or(false)
}

/// Follows a dotted path (dict keys, list indices, object attributes). Keys that themselves
/// contain dots are matched greedily, longest first.
pub fn get_path(root: &Value, path: &str) -> Option<Value> {
    if path.is_empty() {
        return Some(root.clone());
    }
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = root.clone();
    let mut i = 0;
    while i < parts.len() {
        let kids = children(&cur)?;
        let mut found = None;
        for j in (i + 1..=parts.len()).rev() {
            let want = parts[i..j].join(".");
            if let Some((_, v)) = kids
                .iter()
                .find(|(k, _)| k.as_deref() == Some(want.as_str()))
            {
                found = Some((v.clone(), j));
                break;
            }
        }
        let (v, j) = found?;
        cur = v;
        i = j;
    }
    Some(cur)
}

/// Picks the subtree to convert: `key` when given, else the default rule. Returns the path
/// taken (empty for the whole tree) and the value.
pub fn select(root: &Value, key: Option<&str>) -> Result<(String, Value), ErrorKind> {
    if let Some(k) = key {
        return match get_path(root, k) {
            Some(v) => Ok((k.to_string(), v)),
            None => {
                let top: Vec<String> = children(root)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(k, _)| k)
                    .take(12)
                    .collect();
                Err(ErrorKind::Selection(format!(
                    "--key {k:?} does not exist in the checkpoint; top-level keys are {top:?}"
                )))
            }
        };
    }
    if let Value::Dict(d) = root {
        let d = d.borrow();
        if let Some(v) = d.get_str("state_dict") {
            return Ok(("state_dict".into(), v.clone()));
        }
        for k in DEFAULT_KEYS {
            if let Some(v) = d.get_str(k)
                && holds_tensors(v)
            {
                return Ok((k.to_string(), v.clone()));
            }
        }
    }
    Ok((String::new(), root.clone()))
}

/// The identity of a tensor view: two names with equal keys are exact aliases. It holds the
/// tensor and compares the fields of its [`ViewRef`].
#[derive(Debug, Clone)]
pub struct ViewKey(Rc<TensorRef>);

impl ViewKey {
    /// The identity of `t`.
    pub fn of(t: &Rc<TensorRef>) -> ViewKey {
        ViewKey(t.clone())
    }
}

impl PartialEq for ViewKey {
    fn eq(&self, other: &Self) -> bool {
        ViewRef::of(&self.0) == ViewRef::of(&other.0)
    }
}

impl Eq for ViewKey {}

impl std::hash::Hash for ViewKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        ViewRef::of(&self.0).hash(state);
    }
}

/// What makes two views of a storage the same view, borrowed from the tensor: [`ViewKey`]'s
/// identity (and so [`dedupe`]'s).
#[derive(PartialEq, Eq, Hash)]
struct ViewRef<'a> {
    storage: &'a str,
    base: u64,
    dtype: &'static str,
    offset: u64,
    shape: &'a [u64],
    stride: &'a [u64],
    conj: bool,
    neg: bool,
}

impl<'a> ViewRef<'a> {
    fn of(t: &'a TensorRef) -> Self {
        ViewRef {
            storage: &t.storage.key,
            base: t
                .storage
                .view
                .as_deref()
                .map_or(0, |v| v.0.saturating_mul(t.storage.unit())),
            dtype: t.dtype.name(),
            offset: t.offset,
            shape: &t.shape,
            stride: &t.stride,
            conj: t.conj,
            neg: t.neg,
        }
    }
}

/// A tensor with its output name.
pub type Named = (String, Rc<TensorRef>);

/// Splits named tensors into those to write and aliases (`alias name -> kept name`). The kept
/// name is the one met first.
pub fn dedupe(mut tensors: Vec<Named>) -> (Vec<Named>, Vec<(String, String)>) {
    // For each tensor, the index of the first tensor with its view (itself when it is first).
    let first_of: Vec<usize> = {
        // Keyed by the tensor (one pointer), compared by its view.
        let mut first: foldhash::HashMap<ViewKey, usize> =
            foldhash::HashMap::with_capacity_and_hasher(tensors.len(), Default::default());
        tensors
            .iter()
            .enumerate()
            .map(|(i, (_, t))| *first.entry(ViewKey::of(t)).or_insert(i))
            .collect()
    };
    // In place: an alias gives up its name (its first is earlier, kept, and named), then the
    // aliases are removed from the list, the others keeping their order.
    let mut aliases = Vec::new();
    for (i, &f) in first_of.iter().enumerate() {
        if f != i {
            let name = std::mem::take(&mut tensors[i].0);
            aliases.push((name, tensors[f].0.clone()));
        }
    }
    let mut i = 0;
    tensors.retain(|_| {
        let kept = first_of[i] == i;
        i += 1;
        kept
    });
    (tensors, aliases)
}

#[cfg(test)]
mod tests;
