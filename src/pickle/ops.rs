//! Decoding of pickle opcodes and their arguments (protocols 0 to 5). This is the one place that
//! knows the byte layout of every opcode; the VM executes what it yields and `scan` walks it, so
//! both always see the same program.

use std::borrow::Cow;

use super::{Limit, PickleError};

/// One decoded opcode with its inline argument.
///
/// Word-wide tag, as [`super::Value`]'s, and word-wide memo indexes: the decoder writes an
/// opcode and the machine reads it back at once, and a word-wide read of a narrower store is
/// not forwarded from the store but waits for it (perf: with a byte-wide tag, the hottest
/// instruction of `Machine::run`, a third of its own time; then the same for the u32 index of
/// every memo get and put).
#[derive(Debug, Clone, PartialEq)]
#[repr(u64)]
pub enum Op<'a> {
    /// `(` MARK
    Mark,
    /// `.` STOP
    Stop,
    /// `0` POP
    Pop,
    /// `1` POP_MARK
    PopMark,
    /// `2` DUP
    Dup,
    /// `F` FLOAT (text)
    Float(f64),
    /// `I`, `J`, `K`, `M` and small `L`/LONG1/LONG4 integers.
    Int(i64),
    /// LONG/LONG1/LONG4 too large for `i64`: little-endian two's complement.
    BigInt(Vec<u8>),
    /// `I01`/`I00` (protocol 0 booleans), NEWTRUE, NEWFALSE
    Bool(bool),
    /// `N` NONE
    None,
    /// `P` PERSID (text persistent id)
    PersId(&'a [u8]),
    /// `Q` BINPERSID
    BinPersId,
    /// `R` REDUCE
    Reduce,
    /// `S`, `T`, `U` Python 2 strings (raw bytes after unescaping; borrowed when no escape
    /// had to be undone)
    String(Cow<'a, [u8]>),
    /// `V`, `X`, 0x8c, 0x8d unicode strings (may hold invalid UTF-8 from `surrogatepass`;
    /// borrowed from the pickle but for `V`)
    Unicode(Cow<'a, [u8]>),
    /// `B`, `C`, 0x8e bytes
    Bytes(&'a [u8]),
    /// 0x96 BYTEARRAY8
    ByteArray(&'a [u8]),
    /// `a` APPEND
    Append,
    /// `b` BUILD
    Build,
    /// `c` GLOBAL
    Global(&'a [u8], &'a [u8]),
    /// `d` DICT
    Dict,
    /// `}` EMPTY_DICT
    EmptyDict,
    /// `e` APPENDS
    Appends,
    /// `g`, `h`, `j` memo get: a u32 index, held in a word (see the type's note)
    Get(u64),
    /// `i` INST
    Inst(&'a [u8], &'a [u8]),
    /// `l` LIST
    List,
    /// `]` EMPTY_LIST
    EmptyList,
    /// `o` OBJ
    Obj,
    /// `p`, `q`, `r` memo put: a u32 index, held in a word
    Put(u64),
    /// 0x94 MEMOIZE
    Memoize,
    /// `s` SETITEM
    SetItem,
    /// `u` SETITEMS
    SetItems,
    /// `t` TUPLE
    Tuple,
    /// `)` EMPTY_TUPLE
    EmptyTuple,
    /// 0x85..0x87 TUPLE1..3
    TupleN(usize),
    /// `G` BINFLOAT
    BinFloat(f64),
    /// 0x80 PROTO
    Proto(u8),
    /// 0x81 NEWOBJ
    NewObj,
    /// 0x92 NEWOBJ_EX
    NewObjEx,
    /// 0x82..0x84 EXT1/2/4 (extension registry codes)
    Ext(u32),
    /// 0x8f EMPTY_SET
    EmptySet,
    /// 0x90 ADDITEMS
    AddItems,
    /// 0x91 FROZENSET
    FrozenSet,
    /// 0x93 STACK_GLOBAL
    StackGlobal,
    /// 0x95 FRAME (advisory length)
    Frame(u64),
    /// 0x97 NEXT_BUFFER (out-of-band buffer)
    NextBuffer,
    /// 0x98 READONLY_BUFFER
    ReadonlyBuffer,
}

impl Op<'_> {
    /// The opcode's name as Python's `pickletools` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Mark => "MARK",
            Op::Stop => "STOP",
            Op::Pop => "POP",
            Op::PopMark => "POP_MARK",
            Op::Dup => "DUP",
            Op::Float(_) => "FLOAT",
            Op::Int(_) | Op::BigInt(_) => "INT",
            Op::Bool(_) => "BOOL",
            Op::None => "NONE",
            Op::PersId(_) => "PERSID",
            Op::BinPersId => "BINPERSID",
            Op::Reduce => "REDUCE",
            Op::String(_) => "STRING",
            Op::Unicode(_) => "UNICODE",
            Op::Bytes(_) => "BYTES",
            Op::ByteArray(_) => "BYTEARRAY8",
            Op::Append => "APPEND",
            Op::Build => "BUILD",
            Op::Global(..) => "GLOBAL",
            Op::Dict => "DICT",
            Op::EmptyDict => "EMPTY_DICT",
            Op::Appends => "APPENDS",
            Op::Get(_) => "GET",
            Op::Inst(..) => "INST",
            Op::List => "LIST",
            Op::EmptyList => "EMPTY_LIST",
            Op::Obj => "OBJ",
            Op::Put(_) => "PUT",
            Op::Memoize => "MEMOIZE",
            Op::SetItem => "SETITEM",
            Op::SetItems => "SETITEMS",
            Op::Tuple => "TUPLE",
            Op::EmptyTuple => "EMPTY_TUPLE",
            Op::TupleN(_) => "TUPLEn",
            Op::BinFloat(_) => "BINFLOAT",
            Op::Proto(_) => "PROTO",
            Op::NewObj => "NEWOBJ",
            Op::NewObjEx => "NEWOBJ_EX",
            Op::Ext(_) => "EXT",
            Op::EmptySet => "EMPTY_SET",
            Op::AddItems => "ADDITEMS",
            Op::FrozenSet => "FROZENSET",
            Op::StackGlobal => "STACK_GLOBAL",
            Op::Frame(_) => "FRAME",
            Op::NextBuffer => "NEXT_BUFFER",
            Op::ReadonlyBuffer => "READONLY_BUFFER",
        }
    }
}

/// Why an opcode could not be decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// The data ended inside the opcode: more bytes may complete it.
    Incomplete,
    /// The bytes are not a valid opcode.
    Invalid(PickleError),
}

type R<T> = Result<T, DecodeError>;

fn invalid<T>(offset: usize, msg: impl Into<String>) -> R<T> {
    Err(DecodeError::Invalid(PickleError::new(offset, msg)))
}

/// An argument longer than the string limit.
fn too_long<T>(offset: usize, msg: impl Into<String>) -> R<T> {
    Err(DecodeError::Invalid(PickleError::limit(
        offset,
        Limit::String,
        msg,
    )))
}

/// Reads opcodes from a byte slice.
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    /// Longest string or bytes argument accepted.
    max_len: u64,
}

impl<'a> Decoder<'a> {
    /// A decoder at `pos` in `data`.
    pub fn new(data: &'a [u8], pos: usize, max_len: u64) -> Self {
        Decoder { data, pos, max_len }
    }

    /// The offset of the next opcode.
    pub fn pos(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Incomplete)?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or(DecodeError::Incomplete)?;
        self.pos = end;
        Ok(s)
    }

    fn take_len(&mut self, n: u64, start: usize) -> R<&'a [u8]> {
        if n > self.max_len {
            return too_long(
                start,
                format!(
                    "argument of {n} bytes exceeds the limit of {} bytes (--max-string-bytes)",
                    self.max_len
                ),
            );
        }
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            // Checked against what remains before allocating or slicing.
            return Err(DecodeError::Incomplete);
        }
        self.take(n as usize)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> R<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn line(&mut self) -> R<&'a [u8]> {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(DecodeError::Incomplete)?;
        if n as u64 > self.max_len {
            return too_long(self.pos, "text argument too long");
        }
        let line = &rest[..n];
        self.pos += n + 1;
        Ok(line)
    }

    /// Decodes the next opcode. Returns its start offset too.
    #[inline(always)]
    pub fn next_op(&mut self) -> R<(usize, Op<'a>)> {
        let start = self.pos;
        let code = self.u8()?;
        let op = match code {
            b'(' => Op::Mark,
            b'.' => Op::Stop,
            b'0' => Op::Pop,
            b'1' => Op::PopMark,
            b'2' => Op::Dup,
            b'F' => {
                let l = self.line()?;
                let s = ascii(l, start)?;
                match s.trim().parse::<f64>() {
                    Ok(f) => Op::Float(f),
                    Err(_) => {
                        return invalid(start, format!("FLOAT argument {s:?} is not a number"));
                    }
                }
            }
            b'I' => {
                let l = self.line()?;
                match l {
                    b"01" => Op::Bool(true),
                    b"00" => Op::Bool(false),
                    _ => parse_text_int(l, start)?,
                }
            }
            b'J' => Op::Int(i32::from_le_bytes(self.le::<4>()?) as i64),
            b'K' => Op::Int(self.u8()? as i64),
            b'M' => Op::Int(u16::from_le_bytes(self.le::<2>()?) as i64),
            b'L' => {
                let l = self.line()?;
                let l = l.strip_suffix(b"L").unwrap_or(l);
                parse_text_int(l, start)?
            }
            0x8a => {
                let n = self.u8()? as u64;
                long_bytes(self.take_len(n, start)?)
            }
            0x8b => {
                let n = i32::from_le_bytes(self.le::<4>()?);
                if n < 0 {
                    return invalid(start, "LONG4 with a negative length");
                }
                long_bytes(self.take_len(n as u64, start)?)
            }
            b'N' => Op::None,
            0x88 => Op::Bool(true),
            0x89 => Op::Bool(false),
            b'P' => Op::PersId(self.line()?),
            b'Q' => Op::BinPersId,
            b'R' => Op::Reduce,
            b'S' => {
                let l = self.line()?;
                Op::String(Cow::Owned(unquote_py_string(l, start)?))
            }
            b'T' => {
                let n = i32::from_le_bytes(self.le::<4>()?);
                if n < 0 {
                    return invalid(start, "BINSTRING with a negative length");
                }
                Op::String(Cow::Borrowed(self.take_len(n as u64, start)?))
            }
            b'U' => {
                let n = self.u8()? as u64;
                Op::String(Cow::Borrowed(self.take_len(n, start)?))
            }
            b'V' => {
                let l = self.line()?;
                Op::Unicode(Cow::Owned(raw_unicode_unescape(l)))
            }
            b'X' => {
                let n = u32::from_le_bytes(self.le::<4>()?) as u64;
                Op::Unicode(Cow::Borrowed(self.take_len(n, start)?))
            }
            0x8c => {
                let n = self.u8()? as u64;
                Op::Unicode(Cow::Borrowed(self.take_len(n, start)?))
            }
            0x8d => {
                let n = u64::from_le_bytes(self.le::<8>()?);
                Op::Unicode(Cow::Borrowed(self.take_len(n, start)?))
            }
            b'B' => {
                let n = u32::from_le_bytes(self.le::<4>()?) as u64;
                Op::Bytes(self.take_len(n, start)?)
            }
            b'C' => {
                let n = self.u8()? as u64;
                Op::Bytes(self.take_len(n, start)?)
            }
            0x8e => {
                let n = u64::from_le_bytes(self.le::<8>()?);
                Op::Bytes(self.take_len(n, start)?)
            }
            0x96 => {
                let n = u64::from_le_bytes(self.le::<8>()?);
                Op::ByteArray(self.take_len(n, start)?)
            }
            b'a' => Op::Append,
            b'b' => Op::Build,
            b'c' => {
                let m = self.line()?;
                let n = self.line()?;
                Op::Global(m, n)
            }
            b'd' => Op::Dict,
            b'}' => Op::EmptyDict,
            b'e' => Op::Appends,
            b'g' => Op::Get(u64::from(parse_memo_index(self.line()?, start)?)),
            b'h' => Op::Get(u64::from(self.u8()?)),
            b'j' => Op::Get(u64::from(u32::from_le_bytes(self.le::<4>()?))),
            b'i' => {
                let m = self.line()?;
                let n = self.line()?;
                Op::Inst(m, n)
            }
            b'l' => Op::List,
            b']' => Op::EmptyList,
            b'o' => Op::Obj,
            b'p' => Op::Put(u64::from(parse_memo_index(self.line()?, start)?)),
            b'q' => Op::Put(u64::from(self.u8()?)),
            b'r' => Op::Put(u64::from(u32::from_le_bytes(self.le::<4>()?))),
            0x94 => Op::Memoize,
            b's' => Op::SetItem,
            b'u' => Op::SetItems,
            b't' => Op::Tuple,
            b')' => Op::EmptyTuple,
            0x85 => Op::TupleN(1),
            0x86 => Op::TupleN(2),
            0x87 => Op::TupleN(3),
            b'G' => Op::BinFloat(f64::from_be_bytes(self.le::<8>()?)),
            0x80 => Op::Proto(self.u8()?),
            0x81 => Op::NewObj,
            0x92 => Op::NewObjEx,
            0x82 => Op::Ext(self.u8()? as u32),
            0x83 => Op::Ext(u16::from_le_bytes(self.le::<2>()?) as u32),
            0x84 => Op::Ext(u32::from_le_bytes(self.le::<4>()?)),
            0x8f => Op::EmptySet,
            0x90 => Op::AddItems,
            0x91 => Op::FrozenSet,
            0x93 => Op::StackGlobal,
            0x95 => Op::Frame(u64::from_le_bytes(self.le::<8>()?)),
            0x97 => Op::NextBuffer,
            0x98 => Op::ReadonlyBuffer,
            other => return invalid(start, format!("unknown opcode 0x{other:02x}")),
        };
        Ok((start, op))
    }
}

/// Calls `get` with the memo index of every GET / BINGET / LONG_BINGET of the pickle that
/// starts at `start`, up to its STOP, without decoding any other argument: opcodes are only
/// measured (a fixed width, a length prefix or a line). Returns `None` when the opcodes do not
/// reach a STOP: an unknown opcode, a negative length, a GET index [`Decoder::next_op`] would
/// refuse, or the data ending first.
///
/// Opcode boundaries are exactly the decoder's, so on a pickle the decoder reads up to its
/// STOP this sees the same GETs. Arguments the decoder would refuse (a bad float line, a string
/// over `--max-string-bytes`) are not checked here: a run decodes them and fails there anyway.
pub fn memo_gets(data: &[u8], start: usize, mut get: impl FnMut(u32)) -> Option<()> {
    let mut p = start;
    let arg = |p: usize, n: usize| data.get(p..p.checked_add(n)?);
    let le = |p: usize, n: usize| -> Option<u64> {
        let b = arg(p, n)?;
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    };
    let line_end = |p: usize| -> Option<usize> {
        let rest = data.get(p..)?;
        Some(p + rest.iter().position(|&b| b == b'\n')? + 1)
    };
    // A length-prefixed argument: `width` bytes of length, then that many bytes.
    let counted = |p: usize, width: usize, signed: bool| -> Option<usize> {
        let n = le(p, width)?;
        if signed && n & 0x8000_0000 != 0 {
            return None;
        }
        let body = p + width;
        let n = usize::try_from(n).ok()?;
        arg(body, n)?;
        Some(body + n)
    };
    loop {
        let code = *data.get(p)?;
        let at = p + 1;
        p = match code {
            b'.' => return Some(()),
            b'(' | b'0' | b'1' | b'2' | b'N' | 0x88 | 0x89 | b'Q' | b'R' | b'a' | b'b' | b'd'
            | b'}' | b'e' | b'l' | b']' | b'o' | 0x94 | b's' | b'u' | b't' | b')' | 0x85 | 0x86
            | 0x87 | 0x81 | 0x92 | 0x8f | 0x90 | 0x91 | 0x93 | 0x97 | 0x98 => at,
            b'K' | b'q' | 0x80 | 0x82 => arg(at, 1).map(|_| at + 1)?,
            b'M' | 0x83 => arg(at, 2).map(|_| at + 2)?,
            b'J' | b'r' | 0x84 => arg(at, 4).map(|_| at + 4)?,
            b'G' | 0x95 => arg(at, 8).map(|_| at + 8)?,
            b'h' => {
                get(u32::from(*data.get(at)?));
                at + 1
            }
            b'j' => {
                get(u32::try_from(le(at, 4)?).ok()?);
                at + 4
            }
            b'g' => {
                let end = line_end(at)?;
                get(parse_memo_index(&data[at..end - 1], at - 1).ok()?);
                end
            }
            b'F' | b'I' | b'L' | b'P' | b'S' | b'V' | b'p' => line_end(at)?,
            b'c' | b'i' => line_end(line_end(at)?)?,
            0x8a | b'U' | 0x8c | b'C' => counted(at, 1, false)?,
            0x8b | b'T' => counted(at, 4, true)?,
            b'X' | b'B' => counted(at, 4, false)?,
            0x8d | 0x8e | 0x96 => counted(at, 8, false)?,
            _ => return None,
        };
    }
}

fn ascii(l: &[u8], start: usize) -> R<&str> {
    match std::str::from_utf8(l) {
        Ok(s) => Ok(s),
        Err(_) => invalid(start, "text argument is not ASCII"),
    }
}

fn parse_text_int(l: &[u8], start: usize) -> R<Op<'static>> {
    let s = ascii(l, start)?.trim();
    // `I010`: C's strtol reads octal 8, Python's int(x, 0) refuses, Rust reads 10. Refuse.
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.len() > 1 && digits.starts_with('0') {
        return invalid(
            start,
            format!(
                "integer argument {:?} has a leading zero, which unpicklers read differently",
                super::value::truncate(s, 40)
            ),
        );
    }
    if let Ok(i) = s.parse::<i64>() {
        return Ok(Op::Int(i));
    }
    match s.parse::<i128>() {
        Ok(i) => Ok(Op::BigInt(i.to_le_bytes().to_vec())),
        Err(_) => invalid(
            start,
            format!(
                "integer argument {:?} is not a number or is too large",
                super::value::truncate(s, 40)
            ),
        ),
    }
}

fn parse_memo_index(l: &[u8], start: usize) -> R<u32> {
    let s = ascii(l, start)?;
    match s.trim().parse::<u32>() {
        Ok(i) => Ok(i),
        Err(_) => invalid(
            start,
            format!(
                "memo index {:?} is not a valid index",
                super::value::truncate(s, 40)
            ),
        ),
    }
}

/// LONG1/LONG4 payload: little-endian two's complement.
fn long_bytes(b: &[u8]) -> Op<'static> {
    if b.is_empty() {
        return Op::Int(0);
    }
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
        a[..b.len()].copy_from_slice(b);
        return Op::Int(i64::from_le_bytes(a));
    }
    Op::BigInt(b.to_vec())
}

/// Undoes Python 2 `repr()` quoting of a protocol-0 STRING argument.
fn unquote_py_string(l: &[u8], start: usize) -> R<Vec<u8>> {
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let inner = match l {
        [q, inner @ .., q2] if (*q == b'\'' || *q == b'"') && q == q2 => inner,
        _ => return invalid(start, "STRING argument is not quoted"),
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = inner.get(i + 1) else {
            return invalid(start, "STRING argument ends with a backslash");
        };
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' | b'\'' | b'"' => out.push(e),
            b'\n' => {}
            b'x' => {
                let h = inner
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match h.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => out.push(v),
                    None => return invalid(start, "bad \\x escape in STRING argument"),
                }
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v: u32 = (e - b'0') as u32;
                let mut k = 0;
                while k < 2 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                            k += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Decodes Python's `raw-unicode-escape` (protocol-0 UNICODE) into UTF-8 bytes.
fn raw_unicode_unescape(l: &[u8]) -> Vec<u8> {
    let mut s = String::with_capacity(l.len());
    let mut i = 0;
    while i < l.len() {
        let c = l[i];
        if c == b'\\' && matches!(l.get(i + 1), Some(b'u') | Some(b'U')) {
            let n = if l[i + 1] == b'u' { 4 } else { 8 };
            let hex = l
                .get(i + 2..i + 2 + n)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(ch) = hex
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
            {
                s.push(ch);
                i += 2 + n;
                continue;
            }
        }
        // Every other byte is a Latin-1 code point.
        s.push(c as char);
        i += 1;
    }
    s.into_bytes()
}

/// True when a string or bytes value could itself be a pickle (`pickle.loads(b"…")`, an
/// embedded legacy stream): it decodes exactly as one whole pickle, or starts with a protocol
/// 2-5 header and decodes up to a STOP. Random tensor bytes and names rarely do either.
pub fn could_be_pickle(b: &[u8], max_len: u64) -> bool {
    if b.len() < 2 {
        return false;
    }
    let proto = b[0] == 0x80 && (2..=5).contains(&b[1]);
    // A whole pickle ends with its STOP byte: most names and payloads fail this at once.
    if !proto && b.last() != Some(&b'.') {
        return false;
    }
    matches!(pickle_end(b, 0, max_len), Ok(Some(e)) if e == b.len() || proto)
}

/// Finds where the pickle starting at `pos` ends (the offset just past its STOP), without
/// building any value. `Ok(None)` means the data ends before the STOP.
pub fn pickle_end(data: &[u8], pos: usize, max_len: u64) -> Result<Option<usize>, PickleError> {
    let mut d = Decoder::new(data, pos, max_len);
    loop {
        match d.next_op() {
            Ok((_, Op::Stop)) => return Ok(Some(d.pos())),
            Ok(_) => {}
            Err(DecodeError::Incomplete) => return Ok(None),
            Err(DecodeError::Invalid(e)) => return Err(e),
        }
    }
}
