//! TorchScript `code/` records, read as text and never run: per class, whether it is a module
//! and the `__parameters__` / `__buffers__` lists the serializer wrote, which say which
//! attributes `state_dict()` holds.
//!
//! `torch.jit.save` prints every class of a scripted module tree into
//! `code/<module path>.py`, e.g. `code/__torch__/torch/nn/modules/linear.py` holds
//! `__torch__.torch.nn.modules.linear.Linear`:
//!
//! ```text
//! class Linear(Module):
//!   __parameters__ = ["weight", "bias", ]
//!   __buffers__ = []
//!   weight : Tensor
//!   ...
//! ```
//!
//! Only the `class` lines at column 0 and these two assignments at the first level of a class
//! body are read; everything else in the text (methods, annotations) is skipped unread.

use std::collections::HashMap;

/// Most bytes read from one code record.
pub const MAX_CODE_RECORD_BYTES: u64 = 16 << 20;
/// Most bytes read from all code records of one archive.
pub const MAX_CODE_BYTES: u64 = 256 << 20;

/// What one class's code declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptClass {
    /// The class derives from `Module` (`class X(Module):`).
    pub module: bool,
    /// `__parameters__`, in the order written; `None` when the class has no such line.
    pub parameters: Option<Vec<String>>,
    /// `__buffers__`, in the order written; `None` when the class has no such line.
    pub buffers: Option<Vec<String>>,
}

/// The classes of a TorchScript archive by qualified name (`__torch__.a.b.Class`).
#[derive(Debug, Clone, Default)]
pub struct ScriptClasses {
    classes: HashMap<String, ScriptClass>,
}

impl ScriptClasses {
    /// The class of this qualified name.
    pub fn get(&self, qualified: &str) -> Option<&ScriptClass> {
        self.classes.get(qualified)
    }

    /// How many classes were declared.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// True when no class was declared.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Reads the declarations of one code record: `module` is its dotted module path
    /// (`__torch__.torch.nn.modules.linear` for `code/__torch__/torch/nn/modules/linear.py`).
    /// Errors say what is wrong and on which line.
    pub fn add_source(&mut self, module: &str, text: &str) -> Result<(), String> {
        for (name, class) in parse_source(text)? {
            let qualified = format!("{module}.{name}");
            if self.classes.contains_key(&qualified) {
                return Err(format!("class {qualified} is declared twice"));
            }
            self.classes.insert(qualified, class);
        }
        Ok(())
    }
}

/// The dotted module path of a code record, from its path under `code/` (`__torch__/a/b.py`).
/// `None` when it is not a `.py` record or its path has an empty or odd component.
pub fn module_of(path_under_code: &str) -> Option<String> {
    let stem = path_under_code.strip_suffix(".py")?;
    let parts: Vec<&str> = stem.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.contains('.') || p.chars().any(char::is_whitespace))
    {
        return None;
    }
    Some(parts.join("."))
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '\t']).len()
}

/// Which declaration a class-body line starts, and the text after its `=`.
fn declaration(line: &str) -> Option<(&'static str, &str)> {
    let t = line.trim_start_matches([' ', '\t']);
    for field in ["__parameters__", "__buffers__"] {
        if let Some(rest) = t.strip_prefix(field) {
            let rest = rest.trim_start_matches([' ', '\t']);
            if let Some(value) = rest.strip_prefix('=')
                && !value.starts_with('=')
            {
                return Some((field, value));
            }
        }
    }
    None
}

/// `class NAME(BASES):` → (NAME, BASES).
fn class_header(line: &str) -> Result<(String, String), String> {
    let rest = line["class".len()..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let name = &rest[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "a class line without a class name: {:?}",
            short(line)
        ));
    }
    let after = rest[end..].trim_start();
    let bases = match after.strip_prefix('(') {
        Some(b) => {
            let close = b
                .find(')')
                .ok_or_else(|| format!("class {name}: its bases are not closed"))?;
            b[..close].trim().to_string()
        }
        None => String::new(),
    };
    Ok((name.to_string(), bases))
}

fn short(s: &str) -> String {
    crate::pickle::truncate(s.trim(), 60)
}

/// Every class of one code record with its declarations, in the order written.
pub fn parse_source(text: &str) -> Result<Vec<(String, ScriptClass)>, String> {
    let mut out: Vec<(String, ScriptClass)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // (index in `out`, indentation of the class body once known)
    let mut current: Option<(usize, Option<usize>)> = None;
    let mut pos = 0usize;
    let mut line_no = 0usize;
    while pos < text.len() {
        let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = text[pos..end].trim_end_matches('\r');
        let line_start = pos;
        pos = end + 1;
        line_no += 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = indent_of(line);
        if indent == 0 {
            current = None;
            if line.starts_with("class ") || line.starts_with("class\t") {
                let (name, bases) =
                    class_header(line).map_err(|e| format!("line {line_no}: {e}"))?;
                if !seen.insert(name.clone()) {
                    return Err(format!("line {line_no}: class {name} is declared twice"));
                }
                out.push((
                    name,
                    ScriptClass {
                        module: bases == "Module",
                        ..ScriptClass::default()
                    },
                ));
                current = Some((out.len() - 1, None));
            }
            continue;
        }
        let Some((at, body)) = current.as_mut() else {
            continue;
        };
        let body = *body.get_or_insert(indent);
        if indent != body {
            continue;
        }
        let Some((field, _)) = declaration(line) else {
            continue;
        };
        // The list may run over several lines: parse from after the `=` in the whole text.
        let eq = line.find('=').unwrap_or(0);
        let start = line_start + eq + 1;
        let (names, used) = parse_list(&text[start..])
            .map_err(|e| format!("line {line_no}: {field} of class {}: {e}", out[*at].0))?;
        let consumed = &text[start..start + used];
        line_no += consumed.matches('\n').count();
        // Nothing but a comment may follow on the line that closes the list.
        let rest_end = text[start + used..]
            .find('\n')
            .map_or(text.len(), |i| start + used + i);
        let rest = text[start + used..rest_end].trim();
        if !rest.is_empty() && !rest.starts_with('#') {
            return Err(format!(
                "line {line_no}: {field} of class {}: unexpected {:?} after the list",
                out[*at].0,
                short(rest)
            ));
        }
        pos = rest_end + 1;
        let class = &mut out[*at].1;
        let slot = if field == "__parameters__" {
            &mut class.parameters
        } else {
            &mut class.buffers
        };
        if slot.is_some() {
            return Err(format!(
                "line {line_no}: class {} declares {field} twice",
                out[*at].0
            ));
        }
        *slot = Some(names);
    }
    Ok(out)
}

fn skip_space(s: &str, mut i: usize) -> usize {
    let b = s.as_bytes();
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `[ "a", 'b', ]` at the start of `s` (after spaces): the strings and the bytes used.
pub fn parse_list(s: &str) -> Result<(Vec<String>, usize), String> {
    let mut i = skip_space(s, 0);
    if s.as_bytes().get(i) != Some(&b'[') {
        return Err("expected a list of names in [ ]".into());
    }
    i += 1;
    let mut names = Vec::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        i = skip_space(s, i);
        match s.as_bytes().get(i) {
            Some(b']') => return Ok((names, i + 1)),
            Some(b'"' | b'\'') => {
                let (name, next) = parse_string(s, i)?;
                if !seen.insert(name.clone()) {
                    return Err(format!("the name {name:?} is listed twice"));
                }
                names.push(name);
                i = skip_space(s, next);
                match s.as_bytes().get(i) {
                    Some(b',') => i += 1,
                    Some(b']') => return Ok((names, i + 1)),
                    Some(_) => {
                        return Err(format!(
                            "expected `,` or `]`, found {:?}",
                            short(&s[i..s.len().min(i + 20)])
                        ));
                    }
                    None => return Err("the list is not closed".into()),
                }
            }
            Some(_) => {
                let end = s[i..]
                    .char_indices()
                    .nth(20)
                    .map_or(s.len(), |(k, _)| i + k);
                return Err(format!(
                    "expected a quoted name, found {:?}",
                    short(&s[i..end])
                ));
            }
            None => return Err("the list is not closed".into()),
        }
    }
}

/// A quoted string starting at byte `at`: its value and the byte after its closing quote.
fn parse_string(s: &str, at: usize) -> Result<(String, usize), String> {
    let mut chars = s[at..].char_indices();
    let (_, quote) = chars.next().ok_or("expected a string")?;
    let mut out = String::new();
    while let Some((k, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((out, at + k + c.len_utf8())),
            '\n' | '\r' => return Err("a name's quotes are not closed on its line".into()),
            '\\' => {
                let (_, e) = chars.next().ok_or("a name ends in a lone backslash")?;
                let hex = |n: usize, chars: &mut std::str::CharIndices| -> Result<char, String> {
                    let digits: String = chars.by_ref().take(n).map(|(_, c)| c).collect();
                    u32::from_str_radix(&digits, 16)
                        .ok()
                        .filter(|_| digits.len() == n)
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("a bad escape \\{e}{digits} in a name"))
                };
                out.push(match e {
                    '\\' => '\\',
                    '\'' => '\'',
                    '"' => '"',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    'x' => hex(2, &mut chars)?,
                    'u' => hex(4, &mut chars)?,
                    'U' => hex(8, &mut chars)?,
                    other => return Err(format!("an unknown escape \\{other} in a name")),
                });
            }
            c => out.push(c),
        }
    }
    Err("a name's quotes are not closed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn reads_the_declarations_of_several_classes() {
        let text = "\
class Net(Module):
  __parameters__ = [\"gain\", ]
  __buffers__ = [\"steps\", \"cache\", ]
  gain : Tensor
  training : bool
  def forward(self: __torch__.Net,
    x: Tensor) -> Tensor:
    __parameters__ = [\"not\", \"this\"]
    return x
class Inner(Module):
  __parameters__ = []
  __buffers__ = [\"scale\", ]
  scale : Tensor
class Helper:
  x : Tensor
  def __init__(self: __torch__.Helper) -> NoneType:
    return None
def free(x: Tensor) -> Tensor:
  return x
";
        let got = parse_source(text).unwrap();
        assert_eq!(
            got,
            vec![
                (
                    "Net".to_string(),
                    ScriptClass {
                        module: true,
                        parameters: names(&["gain"]),
                        buffers: names(&["steps", "cache"]),
                    }
                ),
                (
                    "Inner".to_string(),
                    ScriptClass {
                        module: true,
                        parameters: names(&[]),
                        buffers: names(&["scale"]),
                    }
                ),
                (
                    "Helper".to_string(),
                    ScriptClass {
                        module: false,
                        parameters: None,
                        buffers: None,
                    }
                ),
            ]
        );
    }

    #[test]
    fn lists_may_span_lines_and_spacing_may_vary() {
        let text = "class  M ( Module ) :\r\n\
\t__parameters__=[ 'w' ,\n\
\t   \"b\"\n\
\t  ]   # trailing comment\n\
\n\
\t__buffers__   =   [\n\
\t]\n\
\tw : Tensor\n";
        let got = parse_source(text).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "M");
        assert!(got[0].1.module);
        assert_eq!(got[0].1.parameters, names(&["w", "b"]));
        assert_eq!(got[0].1.buffers, names(&[]));
    }

    #[test]
    fn escapes_and_odd_names() {
        let (v, used) = parse_list(r#"["a\"b", 'c\x41\u00e9', "0", ] rest"#).unwrap();
        assert_eq!(v, vec!["a\"b", "cAé", "0"]);
        assert_eq!(&r#"["a\"b", 'c\x41\u00e9', "0", ] rest"#[used..], " rest");
    }

    #[test]
    fn malformed_declarations_are_errors() {
        for bad in [
            "class A(Module):\n  __parameters__ = [\"a\" \"b\"]\n",
            "class A(Module):\n  __parameters__ = [\"a\",\n",
            "class A(Module):\n  __parameters__ = [a]\n",
            "class A(Module):\n  __parameters__ = (\"a\",)\n",
            "class A(Module):\n  __parameters__ = [\"a]\n",
            "class A(Module):\n  __parameters__ = [\"a\\q\"]\n",
            "class A(Module):\n  __parameters__ = [\"a\", \"a\"]\n",
            "class A(Module):\n  __parameters__ = []\n  __parameters__ = []\n",
            "class A(Module):\n  __buffers__ = [] + x\n",
            "class A(Module):\n  pass\nclass A(Module):\n  pass\n",
            "class (Module):\n",
            "class A(Module:\n",
        ] {
            assert!(parse_source(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_class_without_declarations_has_none() {
        let got = parse_source("class A(Module):\n  x : int\n").unwrap();
        assert_eq!(got[0].1.parameters, None);
        assert_eq!(got[0].1.buffers, None);
        // An empty file and a file of functions declare nothing.
        assert!(parse_source("").unwrap().is_empty());
        assert!(
            parse_source("def f(x: int) -> int:\n  return x\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn classes_are_qualified_by_their_record_path() {
        assert_eq!(
            module_of("__torch__/torch/nn/modules/linear/___torch_mangle_0.py").as_deref(),
            Some("__torch__.torch.nn.modules.linear.___torch_mangle_0")
        );
        assert_eq!(module_of("__torch__.py").as_deref(), Some("__torch__"));
        assert_eq!(module_of("__torch__.py.debug_pkl"), None);
        assert_eq!(module_of("a//b.py"), None);
        let mut c = ScriptClasses::default();
        c.add_source(
            "__torch__",
            "class Net(Module):\n  __parameters__ = []\n  __buffers__ = []\n",
        )
        .unwrap();
        assert!(c.get("__torch__.Net").is_some_and(|k| k.module));
        assert!(
            c.add_source("__torch__", "class Net(Module):\n  __parameters__ = []\n")
                .is_err()
        );
    }

    #[test]
    fn never_panics_on_odd_text() {
        for s in [
            "class",
            "class \n",
            "class A(Module):\n  __parameters__ =",
            "class A(Module):\n  __parameters__ = [\"\\",
            "class A(Module):\n  __parameters__ = [\"\\u12",
            "class A(Module):\n  __parameters__ = [\"é",
            "class A(Module):\n  __parameters__ = ]",
            "class é(Module):\n  __buffers__=['\\U0011ffff']",
            "\n\n\r\r class A",
        ] {
            let _ = parse_source(s);
        }
    }
}
