//! Walking object trees the VM built from hostile pickles: depth limits and shared containers.

use super::*;
use crate::pickle::{Limits, Loaded, NoHost, PickleError, load};

fn run(bytes: &[u8]) -> Result<Loaded, PickleError> {
    load(bytes, 0, &mut NoHost, &Limits::default())
}

#[test]
fn nesting_two_hundred_thousand_lists_deep_neither_overflows_nor_panics() {
    let n = 200_000;
    let mut bytes = b"\x80\x02".to_vec();
    bytes.extend(std::iter::repeat_n(b']', n));
    bytes.extend(std::iter::repeat_n(b'a', n - 1));
    bytes.push(b'.');
    let v = run(&bytes).unwrap().value;
    let err = flatten(&v, "").expect_err("walking stops at the depth limit");
    assert!(err.to_string().contains("--max-depth"), "{err}");
    drop(v);
}

#[test]
fn a_memo_bomb_of_shared_lists_is_walked_in_linear_time() {
    // L0 = []; L(k) = [L(k-1), L(k-1)] for 64 levels: 2^64 paths, 64 distinct lists.
    let mut bytes = b"\x80\x02]".to_vec();
    for _ in 0..64 {
        bytes.extend(b"q\x00](h\x00h\x00e");
    }
    bytes.push(b'.');
    let v = run(&bytes).unwrap().value;
    let started = std::time::Instant::now();
    let flat = flatten(&v, "").unwrap();
    assert!(flat.leaves.is_empty());
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
}

// --- Trees built directly from values: selection, naming, aliases, limits. ---

use std::cell::RefCell;
use std::rc::Rc;

use crate::dtype::DType;
use crate::pickle::{Dict, Global, Object, ObjectOrigin, Seq};
use crate::torch::StorageRef;

fn tensor_on(key: &str, dtype: DType, offset: u64, shape: &[u64]) -> Rc<TensorRef> {
    let mut stride = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    Rc::new(TensorRef {
        storage: Rc::new(StorageRef {
            key: key.into(),
            dtype: Some(dtype),
            numel: 64,
            location: "cpu".into(),
            view: None,
        }),
        dtype,
        offset,
        shape: shape.into(),
        stride: stride.into(),
        conj: false,
        neg: false,
    })
}

fn ext<T: 'static>(rc: Rc<T>) -> Value {
    Value::Ext(rc as Rc<dyn std::any::Any>)
}

/// A float32 tensor of shape [2] on storage `key`.
fn t(key: &str) -> Value {
    ext(tensor_on(key, DType::F32, 0, &[2]))
}

fn dict_of(items: Vec<(Value, Value)>) -> Value {
    let mut d = Dict::default();
    for (k, v) in items {
        d.insert(k, v);
    }
    Value::Dict(Rc::new(RefCell::new(d)))
}

fn dict(items: Vec<(&str, Value)>) -> Value {
    dict_of(items.into_iter().map(|(k, v)| (Value::str(k), v)).collect())
}

fn list(items: Vec<Value>) -> Value {
    Value::List(Rc::new(RefCell::new(Seq(items))))
}

fn object(module: &str, name: &str, state: Option<Value>) -> Rc<Object> {
    let o = Object::new(
        Value::Global(Rc::new(Global::new(module, name))),
        Value::tuple(vec![]),
        ObjectOrigin::Reduce,
    );
    *o.state.borrow_mut() = state;
    Rc::new(o)
}

fn leaf_names(f: &Flattened) -> Vec<&str> {
    f.leaves.iter().map(|(n, _)| n.as_str()).collect()
}

fn skipped(f: &Flattened) -> Vec<(&str, &str)> {
    f.skipped
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect()
}

fn selected_key(root: &Value, key: Option<&str>) -> String {
    select(root, key).unwrap().0
}

#[test]
fn the_default_rule_takes_state_dict_whenever_the_root_has_one() {
    let root = dict(vec![
        ("model", dict(vec![("w", t("0"))])),
        ("state_dict", dict(vec![("w", t("1"))])),
    ]);
    let (key, v) = select(&root, None).unwrap();
    assert_eq!(key, "state_dict");
    assert_eq!(leaf_names(&flatten(&v, "").unwrap()), ["w"]);
}

#[test]
fn state_dict_is_taken_even_when_it_holds_no_tensors() {
    // Unlike the other default keys, `state_dict` is not checked for tensors.
    let root = dict(vec![
        ("state_dict", dict(vec![])),
        ("model", dict(vec![("w", t("0"))])),
    ]);
    assert_eq!(selected_key(&root, None), "state_dict");
}

#[test]
fn the_default_keys_are_tried_in_rule_order_not_insertion_order() {
    assert_eq!(
        DEFAULT_KEYS,
        ["model_state_dict", "model_state", "model", "module"]
    );
    let root = dict(vec![
        ("module", dict(vec![("w", t("0"))])),
        ("model", dict(vec![("w", t("1"))])),
        ("model_state", dict(vec![("w", t("2"))])),
        ("model_state_dict", dict(vec![("w", t("3"))])),
    ]);
    assert_eq!(selected_key(&root, None), "model_state_dict");
    let root = dict(vec![
        ("module", dict(vec![("w", t("0"))])),
        ("model", dict(vec![("w", t("1"))])),
        ("model_state", dict(vec![("w", t("2"))])),
    ]);
    assert_eq!(selected_key(&root, None), "model_state");
    let root = dict(vec![
        ("module", dict(vec![("w", t("0"))])),
        ("model", dict(vec![("w", t("1"))])),
    ]);
    assert_eq!(selected_key(&root, None), "model");
}

#[test]
fn a_default_key_without_tensors_is_passed_over() {
    let root = dict(vec![
        ("model_state_dict", dict(vec![])),
        ("model_state", Value::None),
        ("model", Value::str("resnet")),
        ("module", dict(vec![("w", t("0"))])),
    ]);
    assert_eq!(selected_key(&root, None), "module");
}

#[test]
fn without_a_default_key_the_whole_tree_is_selected() {
    let root = dict(vec![
        ("encoder", dict(vec![("w", t("0"))])),
        ("epoch", Value::Int(3)),
    ]);
    let (key, v) = select(&root, None).unwrap();
    assert_eq!(key, "");
    assert_eq!(leaf_names(&flatten(&v, "").unwrap()), ["encoder.w"]);
    // A list root has no keys at all.
    let root = list(vec![t("0")]);
    assert_eq!(selected_key(&root, None), "");
}

#[test]
fn an_explicit_key_overrides_the_default_rule() {
    let root = dict(vec![
        ("state_dict", dict(vec![("w", t("0"))])),
        ("ema", dict(vec![("w", t("1"))])),
    ]);
    let (key, v) = select(&root, Some("ema")).unwrap();
    assert_eq!(key, "ema");
    let f = flatten(&v, "").unwrap();
    let Leaf::Tensor(x) = &f.leaves[0].1 else {
        panic!("a tensor")
    };
    assert_eq!(&*x.storage.key, "1");
}

#[test]
fn an_explicit_dotted_key_walks_dicts_lists_and_objects() {
    let module = object(
        "m",
        "Net",
        Some(dict(vec![("enc", dict(vec![("w", t("0"))]))])),
    );
    let root = dict(vec![(
        "model",
        dict(vec![
            ("layers", list(vec![t("1"), dict(vec![("b", t("2"))])])),
            ("net", Value::Object(module)),
        ]),
    )]);
    let (key, v) = select(&root, Some("model.layers.1")).unwrap();
    assert_eq!(key, "model.layers.1");
    assert_eq!(leaf_names(&flatten(&v, "").unwrap()), ["b"]);
    let v = get_path(&root, "model.net.enc").unwrap();
    assert_eq!(leaf_names(&flatten(&v, "").unwrap()), ["w"]);
    assert!(get_path(&root, "model.layers.2").is_none());
    assert!(get_path(&root, "model.layers.0.x").is_none());
}

#[test]
fn a_key_that_itself_contains_dots_is_matched_longest_first() {
    let root = dict(vec![
        ("a.b", dict(vec![("c", t("0"))])),
        ("a", dict(vec![("b", dict(vec![("c", t("1"))]))])),
    ]);
    let v = get_path(&root, "a.b.c").unwrap();
    let Some(x) = v.ext::<TensorRef>() else {
        panic!("a tensor")
    };
    assert_eq!(&*x.storage.key, "0");
    // The names a flatten gives are the same for both: the longest key wins on the way back.
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["a.b.c", "a.b.c"]);
}

#[test]
fn an_empty_key_selects_the_whole_tree() {
    let root = dict(vec![("state_dict", dict(vec![("w", t("0"))]))]);
    let (key, v) = select(&root, Some("")).unwrap();
    assert_eq!(key, "");
    assert_eq!(leaf_names(&flatten(&v, "").unwrap()), ["state_dict.w"]);
}

#[test]
fn a_missing_key_is_a_selection_error_listing_the_top_level_keys() {
    let root = dict(vec![("state_dict", dict(vec![])), ("epoch", Value::Int(1))]);
    let e = select(&root, Some("model.encoder")).unwrap_err();
    assert!(matches!(e, ErrorKind::Selection(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "--key \"model.encoder\" does not exist in the checkpoint; top-level keys are [\"state_dict\", \"epoch\"]"
    );
}

#[test]
fn the_missing_key_message_lists_at_most_twelve_top_level_keys() {
    let root = dict(
        (0..20)
            .map(|i| (format!("k{i}"), Value::Int(i)))
            .collect::<Vec<_>>()
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect(),
    );
    let e = select(&root, Some("nope")).unwrap_err().to_string();
    let want: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    assert_eq!(
        e,
        format!("--key \"nope\" does not exist in the checkpoint; top-level keys are {want:?}")
    );
}

#[test]
fn nested_dicts_lists_and_tuples_are_named_by_dotted_keys_and_indices_in_order() {
    let root = dict(vec![
        ("encoder", dict(vec![("w", t("0"))])),
        (
            "heads",
            list(vec![
                t("1"),
                dict(vec![("b", t("2"))]),
                Value::tuple(vec![Value::str("x"), t("3")]),
            ]),
        ),
    ]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(
        leaf_names(&f),
        ["encoder.w", "heads.0", "heads.1.b", "heads.2.1"]
    );
    assert_eq!(skipped(&f), [("heads.2.0", "str")]);
}

#[test]
fn a_prefix_is_put_before_every_name() {
    let root = dict(vec![("w", t("0")), ("l", list(vec![t("1")]))]);
    let f = flatten(&root, "model").unwrap();
    assert_eq!(leaf_names(&f), ["model.w", "model.l.0"]);
}

#[test]
fn a_tensor_at_the_root_has_the_empty_name() {
    let f = flatten(&t("0"), "").unwrap();
    assert_eq!(leaf_names(&f), [""]);
}

#[test]
fn int_and_bool_keys_are_named_as_python_prints_them() {
    let root = dict_of(vec![
        (Value::Int(5), t("0")),
        (Value::Int(-7), t("1")),
        (Value::Bool(true), dict(vec![("x", t("2"))])),
        (Value::Bool(false), t("3")),
    ]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["5", "-7", "True.x", "False"]);
}

#[test]
fn false_and_zero_are_one_dict_key_as_in_python_keeping_the_first_spelling() {
    // {0: a, False: b} == {0: b} in Python.
    let root = dict_of(vec![(Value::Int(0), t("a")), (Value::Bool(false), t("b"))]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["0"]);
    let Leaf::Tensor(x) = &f.leaves[0].1 else {
        panic!("a tensor")
    };
    assert_eq!(&*x.storage.key, "b");
}

#[test]
fn a_tensor_under_a_key_that_cannot_be_a_name_is_refused() {
    let root = dict(vec![(
        "opt",
        dict_of(vec![(Value::Float(0.5), dict(vec![("w", t("0"))]))]),
    )]);
    let e = flatten(&root, "").unwrap_err();
    assert!(matches!(e, ErrorKind::Unsupported(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "a tensor sits under a dict key that is not a string or int (opt.<unnamed key>.w); it cannot be given a safetensors name"
    );
}

#[test]
fn a_non_tensor_under_an_unnameable_key_is_only_skipped() {
    let root = dict_of(vec![
        (Value::tuple(vec![Value::Int(1)]), Value::Int(5)),
        (Value::str("w"), t("0")),
    ]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["w"]);
    assert_eq!(skipped(&f), [("<unnamed key>", "int")]);
}

#[test]
fn non_tensor_leaves_are_reported_as_skipped_with_their_python_type_and_none_is_not() {
    let root = dict(vec![
        ("w", t("0")),
        ("name", Value::str("x")),
        ("epoch", Value::Int(3)),
        ("lr", Value::Float(0.1)),
        ("raw", Value::Bytes(Rc::from(&b"ab"[..]))),
        ("flag", Value::Bool(true)),
        ("nothing", Value::None),
        (
            "cls",
            Value::Global(Rc::new(Global::new("argparse", "Namespace"))),
        ),
    ]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["w"]);
    assert_eq!(
        skipped(&f),
        [
            ("name", "str"),
            ("epoch", "int"),
            ("lr", "float"),
            ("raw", "bytes"),
            ("flag", "bool"),
            ("cls", "global argparse.Namespace")
        ]
    );
}

#[test]
fn an_empty_container_is_neither_a_leaf_nor_skipped() {
    let root = dict(vec![
        ("w", t("0")),
        ("empty", dict(vec![])),
        ("l", list(vec![])),
    ]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["w"]);
    assert!(f.skipped.is_empty(), "{:?}", f.skipped);
}

#[test]
fn a_tensor_that_safetensors_cannot_hold_is_a_leaf_of_its_own_kind() {
    let q = Rc::new(NotATensor {
        kind: "quantized".into(),
        dtype: Some("quint8".into()),
    });
    let root = dict(vec![("q", ext(q)), ("w", t("0"))]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["q", "w"]);
    match &f.leaves[0].1 {
        Leaf::NotATensor(n) => assert_eq!(n.kind, "quantized"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(f.leaves[1].1, Leaf::Tensor(_)));
    assert!(holds_tensors(&root));
}

#[test]
fn a_module_is_named_as_its_state_dict_parameters_buffers_then_submodules() {
    let mut non_persistent = Seq::default();
    non_persistent.push(Value::str("cache"));
    let child = object(
        "torch.nn",
        "Linear",
        Some(dict(vec![
            (
                "_parameters",
                dict(vec![("weight", t("c0")), ("bias", Value::None)]),
            ),
            ("_buffers", dict(vec![])),
            ("_modules", dict(vec![])),
            ("training", Value::Bool(true)),
        ])),
    );
    let root = object(
        "torch.nn",
        "Sequential",
        Some(dict(vec![
            ("_modules", dict(vec![("0", Value::Object(child))])),
            (
                "_buffers",
                dict(vec![("running", t("b0")), ("cache", t("b1"))]),
            ),
            ("_parameters", dict(vec![("scale", t("p0"))])),
            (
                "_non_persistent_buffers_set",
                Value::Set(Rc::new(RefCell::new(non_persistent))),
            ),
            ("training", Value::Bool(true)),
        ])),
    );
    let f = flatten(&Value::Object(root), "").unwrap();
    // Non-persistent buffers, None parameters and plain attributes are not in a state_dict.
    assert_eq!(leaf_names(&f), ["scale", "running", "0.weight"]);
    assert!(f.skipped.is_empty(), "{:?}", f.skipped);
}

#[test]
fn an_object_is_walked_through_its_state_items_and_list() {
    // BUILD state as a (dict, slots) pair, then SETITEMS, then APPENDS.
    let o = object(
        "argparse",
        "Namespace",
        Some(Value::tuple(vec![
            dict(vec![("a", t("0"))]),
            dict(vec![("slot", t("1"))]),
        ])),
    );
    o.items.borrow_mut().insert(Value::str("item"), t("2"));
    o.list.borrow_mut().push(t("3"));
    let f = flatten(&Value::Object(o), "").unwrap();
    assert_eq!(leaf_names(&f), ["a", "slot", "item", "0"]);
}

#[test]
fn an_object_without_state_items_or_list_adds_nothing_to_the_report() {
    let root = dict(vec![
        ("w", t("0")),
        (
            "cfg",
            Value::Object(object("omegaconf", "DictConfig", None)),
        ),
    ]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["w"]);
    assert!(f.skipped.is_empty(), "{:?}", f.skipped);
}

#[test]
fn the_depth_limit_stops_the_walk_with_the_path_and_the_flag_that_raises_it() {
    let root = dict(vec![("a", dict(vec![("b", dict(vec![("c", t("0"))]))]))]);
    let tight = FlattenOptions {
        max_depth: 2,
        ..FlattenOptions::default()
    };
    let e = flatten_with(&root, "", &tight).unwrap_err();
    assert!(matches!(e, ErrorKind::Malformed(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the object tree is nested deeper than 2 levels at \"a.b\" (raise with --max-depth)"
    );
    let enough = FlattenOptions {
        max_depth: 3,
        ..FlattenOptions::default()
    };
    assert_eq!(
        leaf_names(&flatten_with(&root, "", &enough).unwrap()),
        ["a.b.c"]
    );
    let max_depth = crate::pickle::Limits::default().max_depth;
    assert_eq!(FlattenOptions::default().max_depth, max_depth);
    assert_eq!(max_depth, 1000);
}

#[test]
fn a_shared_container_with_tensors_is_named_at_every_place_it_appears() {
    let shared = dict(vec![("w", t("0"))]);
    let root = dict(vec![("a", shared.clone()), ("b", shared)]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["a.w", "b.w"]);
    // ... and the two names are exact aliases.
    let named: Vec<Named> = f
        .leaves
        .into_iter()
        .map(|(n, l)| match l {
            Leaf::Tensor(t) => (n, t),
            Leaf::NotATensor(_) => panic!("a tensor"),
        })
        .collect();
    let (keep, aliases) = dedupe(named);
    assert_eq!(
        keep.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["a.w"]
    );
    assert_eq!(aliases, [("b.w".to_string(), "a.w".to_string())]);
}

#[test]
fn a_shared_container_without_tensors_is_walked_once_and_then_listed() {
    let shared = dict(vec![("lr", Value::Float(0.1))]);
    let root = dict(vec![("a", shared.clone()), ("b", shared), ("w", t("0"))]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["w"]);
    assert_eq!(skipped(&f), [("a.lr", "float"), ("b", "dict")]);
}

#[test]
fn a_list_that_contains_itself_is_walked_without_looping() {
    let l = Rc::new(RefCell::new(Seq::default()));
    let v = Value::List(l.clone());
    l.borrow_mut().push(Value::Int(1));
    l.borrow_mut().push(v.clone());
    let root = dict(vec![("loop", v), ("w", t("0"))]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["w"]);
    assert_eq!(skipped(&f), [("loop.0", "int"), ("loop.1", "list")]);
    // Break the cycle so the test does not leak it.
    l.borrow_mut().clear();
}

#[test]
fn holds_tensors_is_true_only_when_a_tensor_like_leaf_is_below() {
    assert!(holds_tensors(&dict(vec![("a", list(vec![t("0")]))])));
    assert!(!holds_tensors(&dict(vec![(
        "a",
        list(vec![Value::Int(1)])
    )])));
    assert!(!holds_tensors(&Value::None));
}

#[test]
fn only_the_very_same_view_of_the_same_storage_is_an_alias() {
    let base = tensor_on("0", DType::F32, 0, &[2, 2]);
    let same = tensor_on("0", DType::F32, 0, &[2, 2]);
    let offset = tensor_on("0", DType::F32, 1, &[2, 2]);
    let dtype = tensor_on("0", DType::I32, 0, &[2, 2]);
    let shape = tensor_on("0", DType::F32, 0, &[4]);
    let other = tensor_on("1", DType::F32, 0, &[2, 2]);
    let mut transposed = (*base).clone();
    transposed.stride = vec![1, 2].into();
    let mut negated = (*base).clone();
    negated.neg = true;
    let mut conj = (*base).clone();
    conj.conj = true;
    let mut viewed = (*base).clone();
    viewed.storage = Rc::new(StorageRef {
        view: Some(Box::new((4, 4))),
        ..(*base.storage).clone()
    });
    let named: Vec<Named> = vec![
        ("base".into(), base),
        ("same".into(), same),
        ("offset".into(), offset),
        ("dtype".into(), dtype),
        ("shape".into(), shape),
        ("other".into(), other),
        ("transposed".into(), Rc::new(transposed)),
        ("negated".into(), Rc::new(negated)),
        ("conj".into(), Rc::new(conj)),
        ("viewed".into(), Rc::new(viewed)),
        ("same_again".into(), tensor_on("0", DType::F32, 0, &[2, 2])),
    ];
    let (keep, aliases) = dedupe(named);
    assert_eq!(
        keep.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "base",
            "offset",
            "dtype",
            "shape",
            "other",
            "transposed",
            "negated",
            "conj",
            "viewed"
        ]
    );
    assert_eq!(
        aliases,
        [
            ("same".to_string(), "base".to_string()),
            ("same_again".to_string(), "base".to_string())
        ]
    );
}

#[test]
fn numpy_arrays_are_tensors_only_when_asked_for() {
    let arr = Rc::new(crate::torch::NumpyArray {
        tensor: RefCell::new(Ok(tensor_on("np", DType::I64, 0, &[3]))),
    });
    let bad = Rc::new(crate::torch::NumpyArray {
        tensor: RefCell::new(Err("dtype object".into())),
    });
    let root = dict(vec![("a", ext(arr)), ("b", ext(bad))]);
    let f = flatten(&root, "").unwrap();
    assert!(f.leaves.is_empty());
    assert_eq!(
        skipped(&f),
        [("a", "numpy.ndarray"), ("b", "numpy.ndarray")]
    );
    let with = FlattenOptions {
        include_numpy: true,
        ..FlattenOptions::default()
    };
    let f = flatten_with(&root, "", &with).unwrap();
    assert_eq!(leaf_names(&f), ["a", "b"]);
    assert!(matches!(&f.leaves[0].1, Leaf::Tensor(t) if &*t.storage.key == "np"));
    match &f.leaves[1].1 {
        Leaf::NotATensor(n) => {
            assert_eq!(n.kind, "numpy array (dtype object)");
            assert_eq!(n.dtype, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn leaves_and_skipped_values_come_in_checkpoint_order_at_every_depth() {
    // Leaves before, between and after nested containers, and shared tensor-free containers:
    // the walk names them in the pickle's order, depth first.
    let empty = dict(vec![]);
    let root = dict(vec![
        ("a", t("0")),
        (
            "b",
            dict(vec![
                ("c", t("1")),
                (
                    "d",
                    list(vec![t("2"), Value::Int(1), dict(vec![("e", t("3"))])]),
                ),
                ("s", empty.clone()),
            ]),
        ),
        ("f", Value::str("x")),
        ("g", t("4")),
        ("h", empty),
    ]);
    let f = flatten(&root, "").unwrap();
    assert_eq!(leaf_names(&f), ["a", "b.c", "b.d.0", "b.d.2.e", "g"]);
    assert_eq!(skipped(&f), [("b.d.1", "int"), ("f", "str"), ("h", "dict")]);
    // Under a prefix, every name carries it.
    let f = flatten(&root, "m").unwrap();
    assert_eq!(leaf_names(&f)[..2], ["m.a", "m.b.c"]);
}
