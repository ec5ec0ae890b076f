//! Tensor records: the two dozen opcodes `torch.save` writes for every tensor, recognised in the
//! bytes and handed to the semantics whole, so that a state dict of many small tensors is not
//! run one opcode, one value and one allocation at a time.
//!
//! A record is only ever a shortcut for running its opcodes: the machine takes it only where
//! the result is known to be the same, and otherwise runs the bytes one by one, which also
//! gives every error at its own opcode. It needs the memo reads of the pickle to be known
//! (none of the values the record memoizes on the way may be read back, bar the tensor
//! itself), a strict machine outside any frame, and room under every limit for the whole
//! record; the semantics then may still decline it ([`Semantics::tensor_record`]).

use super::{Machine, Mode, Semantics};

/// One tensor as protocol 2 writes it:
/// `rebuild(persistent_load((tag, class, key, location, numel)), offset, size, stride,
/// requires_grad, hooks())` (the legacy format adds `None` to the id: no view), where
/// `rebuild`, `tag`, `class`, `location` and `hooks` are memo reads, `key` a BINUNICODE string
/// or a memo read (a storage met before), and every number an int literal.
pub struct TensorRecord<'a, 'p, V> {
    /// The callable of the outer REDUCE.
    pub rebuild: &'a V,
    /// The persistent id's first item.
    pub tag: &'a V,
    /// Its second item (a storage class).
    pub class: &'a V,
    /// Its third item.
    pub key: RecordKey<'a, 'p, V>,
    /// Whether the pickle reads the key back later: the semantics must then give its value,
    /// for the memo ([`Recognised::key`]).
    pub key_kept: bool,
    /// Its fourth item.
    pub location: &'a V,
    /// Its fifth item.
    pub numel: i64,
    /// The storage offset.
    pub offset: i64,
    /// The size tuple's items.
    pub size: &'a [i64],
    /// The stride tuple's items.
    pub stride: &'a [i64],
    /// NEWTRUE or NEWFALSE.
    pub requires_grad: bool,
    /// The callable of the inner REDUCE, called with no arguments.
    pub hooks: &'a V,
}

/// A tensor record's storage key.
pub enum RecordKey<'a, 'p, V> {
    /// A BINUNICODE: its bytes, UTF-8 or not.
    Text(&'p [u8]),
    /// A memo read.
    Memo(&'a V),
}

/// What the semantics make of a [`TensorRecord`].
pub struct Recognised<V> {
    /// The tensor, pushed.
    pub tensor: V,
    /// The key's value, for the memo: given exactly when the record's key is a
    /// [`RecordKey::Text`] and [`TensorRecord::key_kept`].
    pub key: Option<V>,
}

/// Most dimensions of a size or stride a record takes (more: run opcode by opcode).
const MAX_DIMS: usize = 32;
/// Stack and mark slots a record may use at most on top of what is there ([`MAX_DIMS`] items
/// and the record's own marks and values).
const STACK_ROOM: usize = 2 * MAX_DIMS + 16;

/// What a record's bytes say, before any value is looked at.
struct Parsed<'p> {
    /// Memo reads: rebuild, tag, class, location, hooks.
    gets: [u32; 5],
    key: ParsedKey<'p>,
    numel: i64,
    offset: i64,
    /// The size's length; `dims` holds the size, then the stride.
    ndim: usize,
    requires_grad: bool,
    /// Memo writes before the tensor's own, in order, the key's excepted.
    puts: [u32; 5],
    nputs: usize,
    /// The memo write of the tensor, if any.
    last_put: Option<u32>,
    ops: u64,
    end: usize,
}

enum ParsedKey<'p> {
    /// A BINUNICODE and the memo write after it, if any.
    Text(&'p [u8], Option<u32>),
    Memo(u32),
}

struct Cursor<'p> {
    data: &'p [u8],
    pos: usize,
    ops: u64,
}

impl<'p> Cursor<'p> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn arg<const N: usize>(&mut self) -> Option<[u8; N]> {
        let b = self.data.get(self.pos..self.pos.checked_add(N)?)?;
        self.pos += N;
        b.try_into().ok()
    }

    /// Opcode `code`, which takes no argument.
    fn op(&mut self, code: u8) -> Option<()> {
        (self.peek()? == code).then(|| {
            self.pos += 1;
            self.ops += 1;
        })
    }

    /// The opcode byte, if it is one of `codes`.
    fn op_of(&mut self, codes: &[u8]) -> Option<u8> {
        let c = self.peek()?;
        codes.contains(&c).then(|| {
            self.pos += 1;
            self.ops += 1;
            c
        })
    }

    /// BINGET or LONG_BINGET.
    fn get(&mut self) -> Option<u32> {
        match self.op_of(b"hj")? {
            b'h' => Some(u32::from(self.arg::<1>()?[0])),
            _ => Some(u32::from_le_bytes(self.arg::<4>()?)),
        }
    }

    /// An optional BINPUT or LONG_BINPUT; `None` when its argument is cut off.
    fn put(&mut self) -> Option<Option<u32>> {
        Some(match self.op_of(b"qr") {
            None => None,
            Some(b'q') => Some(u32::from(self.arg::<1>()?[0])),
            Some(_) => Some(u32::from_le_bytes(self.arg::<4>()?)),
        })
    }

    /// BININT1, BININT2 or BININT.
    fn int(&mut self) -> Option<i64> {
        match self.op_of(b"KMJ")? {
            b'K' => Some(i64::from(self.arg::<1>()?[0])),
            b'M' => Some(i64::from(u16::from_le_bytes(self.arg::<2>()?))),
            _ => Some(i64::from(i32::from_le_bytes(self.arg::<4>()?))),
        }
    }

    /// A tuple of int literals: EMPTY_TUPLE, one to three ints and TUPLE1/2/3 (exactly as many
    /// as it takes), or MARK, ints and TUPLE.
    fn ints(&mut self, out: &mut Vec<i64>) -> Option<usize> {
        if self.op(b')').is_some() {
            return Some(0);
        }
        let marked = self.op(b'(').is_some();
        let mut n = 0;
        while matches!(self.peek(), Some(b'K' | b'M' | b'J')) {
            if n == MAX_DIMS {
                return None;
            }
            out.push(self.int()?);
            n += 1;
        }
        let closed = match self.op_of(b"t\x85\x86\x87")? {
            b't' => marked,
            code => !marked && usize::from(code - 0x84) == n,
        };
        closed.then_some(n)
    }
}

/// Reads a record starting at `pos` (a memo read of its callable), its dimensions into `dims`.
fn parse<'p>(
    data: &'p [u8],
    pos: usize,
    max_string: u64,
    dims: &mut Vec<i64>,
) -> Option<Parsed<'p>> {
    let mut c = Cursor { data, pos, ops: 0 };
    let mut puts = [0u32; 5];
    let mut nputs = 0;
    let mut put = |c: &mut Cursor<'p>| -> Option<()> {
        if let Some(i) = c.put()? {
            *puts.get_mut(nputs)? = i;
            nputs += 1;
        }
        Some(())
    };
    let rebuild = c.get()?;
    c.op(b'(')?;
    c.op(b'(')?;
    let tag = c.get()?;
    let class = c.get()?;
    let key = if c.op(b'X').is_some() {
        let len = u32::from_le_bytes(c.arg::<4>()?);
        if u64::from(len) > max_string {
            return None;
        }
        let text = c.data.get(c.pos..c.pos.checked_add(len as usize)?)?;
        c.pos += len as usize;
        ParsedKey::Text(text, c.put()?)
    } else {
        ParsedKey::Memo(c.get()?)
    };
    let location = c.get()?;
    let numel = c.int()?;
    // The legacy format's sixth item: no view.
    let _ = c.op(b'N');
    c.op(b't')?;
    put(&mut c)?;
    c.op(b'Q')?;
    let offset = c.int()?;
    dims.clear();
    let ndim = c.ints(dims)?;
    put(&mut c)?;
    if c.ints(dims)? != ndim {
        return None;
    }
    put(&mut c)?;
    let requires_grad = c.op_of(b"\x88\x89")? == 0x88;
    let hooks = c.get()?;
    c.op(b')')?;
    c.op(b'R')?;
    put(&mut c)?;
    c.op(b't')?;
    put(&mut c)?;
    c.op(b'R')?;
    let last_put = c.put()?;
    Some(Parsed {
        gets: [rebuild, tag, class, location, hooks],
        key,
        numel,
        offset,
        ndim,
        requires_grad,
        puts,
        nputs,
        last_put,
        ops: c.ops,
        end: c.pos,
    })
}

impl<'p, S: Semantics<'p>> Machine<'_, 'p, S> {
    /// Runs the tensor record at `pos` (a memo read), when there is one the machine may take
    /// and the semantics accept: the value is pushed and the offset after the record returned.
    /// `ops` is the count of opcodes run so far, checked against the limit with the record's.
    pub(super) fn tensor_record(
        &mut self,
        data: &'p [u8],
        pos: usize,
        ops: u64,
    ) -> Option<(usize, u64)> {
        if self.mode != Mode::Strict || self.pending_reads.is_some() {
            return None;
        }
        let written = self.memo.only.as_ref()?;
        let limits = self.limits;
        let p = parse(data, pos, limits.max_string, &mut self.dims)?;
        let room = self.stack.len() + self.marks.len() + STACK_ROOM <= limits.max_stack
            && ops.saturating_add(p.ops) <= limits.max_ops
            && self.memo.len() + p.nputs + 2 <= limits.max_memo
            && !p.puts[..p.nputs].iter().any(|i| written.reads.contains(i));
        if !room {
            return None;
        }
        let memo = &self.memo;
        let [rebuild, tag, class, location, hooks] = p.gets.map(|i| memo.get(i));
        let (Some(rebuild), Some(tag), Some(class), Some(location), Some(hooks)) =
            (rebuild, tag, class, location, hooks)
        else {
            return None;
        };
        let (key, key_put) = match p.key {
            ParsedKey::Text(b, put) => (RecordKey::Text(b), put),
            ParsedKey::Memo(i) => (RecordKey::Memo(memo.get(i)?), None),
        };
        // The location and the hooks are read after the key is memoized: a record that reads
        // the key's own index back there is left to the opcodes.
        if key_put.is_some_and(|i| i == p.gets[3] || i == p.gets[4]) {
            return None;
        }
        let key_kept = key_put.is_some_and(|i| memo.keeps(i));
        let (size, stride) = self.dims.split_at(p.ndim);
        let rec = TensorRecord {
            rebuild,
            tag,
            class,
            key,
            key_kept,
            location,
            numel: p.numel,
            offset: p.offset,
            size,
            stride,
            requires_grad: p.requires_grad,
            hooks,
        };
        let Recognised { tensor: v, key } = self.sem.tensor_record(pos, &rec)?;
        // The memo is written in the order the opcodes would write it.
        if let Some(i) = key_put {
            self.memo.insert(i, key);
        }
        for &i in &p.puts[..p.nputs] {
            self.memo.insert(i, None);
        }
        if let Some(i) = p.last_put {
            let kept = self.memo.keeps(i).then(|| v.clone());
            self.memo.insert(i, kept);
        }
        self.stack.push(v);
        Some((p.end, p.ops))
    }
}
