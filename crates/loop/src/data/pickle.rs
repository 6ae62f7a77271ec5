//! The part of Python's pickle format that nanoGPT's `meta.pkl` uses:
//! dictionaries, lists and tuples of integers, strings, floats, bytes,
//! booleans and `None`.
//!
//! [`load`] reads what any Python 3 `pickle.dump` of such data writes
//! (protocols 2 to 5: framing, memo puts and gets, batched `SETITEMS`);
//! objects (`GLOBAL`, `REDUCE`, …) are refused, so reading never runs code.
//! [`Pickler`] writes, byte for byte, what CPython's C pickler (the one
//! `pickle.dump` uses) writes with the default protocol 4 for dictionaries
//! of integers and short strings: its 64 KiB frames, committed at the same
//! object boundaries, `MEMOIZE` after each string and dictionary, memo
//! references for objects pickled twice, and dictionary items in batches of
//! 1000 (`MARK … SETITEMS`, one `SETITEM` for a single item, and the empty
//! trailing batch CPython writes when the size is a multiple of 1000).
//!
//! The subset is written here rather than taken from a crate because no
//! pickle crate writes CPython's framing and memo bytes, which
//! `prepare-text` must reproduce, and the reader then shares the opcode
//! table with the writer in some 300 lines.
use std::fmt;

/// A pickled value (the subset kiln reads).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int` that fits in 64 bits.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A `bytes` object.
    Bytes(Vec<u8>),
    /// A `list`.
    List(Vec<Value>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A `dict`, items in insertion order.
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// The value under `key` of a dictionary with string keys.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Python's name for the value's type (for error messages).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
        }
    }
}

/// Why a pickle could not be read or written (one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PickleError(pub String);

type Result<T> = std::result::Result<T, PickleError>;

// Opcodes (CPython's Lib/pickle.py names).
const MARK: u8 = b'(';
const STOP: u8 = b'.';
const POP: u8 = b'0';
const POP_MARK: u8 = b'1';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const NONE: u8 = b'N';
const BINUNICODE: u8 = b'X';
const BINFLOAT: u8 = b'G';
const APPEND: u8 = b'a';
const APPENDS: u8 = b'e';
const EMPTY_DICT: u8 = b'}';
const EMPTY_LIST: u8 = b']';
const EMPTY_TUPLE: u8 = b')';
const TUPLE: u8 = b't';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const SETITEM: u8 = b's';
const SETITEMS: u8 = b'u';
const BINBYTES: u8 = b'B';
const SHORT_BINBYTES: u8 = b'C';
const PROTO: u8 = 0x80;
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const LONG1: u8 = 0x8a;
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE8: u8 = 0x8d;
const BINBYTES8: u8 = 0x8e;
const MEMOIZE: u8 = 0x94;
const FRAME: u8 = 0x95;

/// The protocol `pickle.dump` writes by default (`pickle.DEFAULT_PROTOCOL`
/// of Python 3.8 to 3.13; 3.14 writes 5, which differs only in this byte).
pub const DEFAULT_PROTOCOL: u8 = 4;
/// CPython's `FRAME_SIZE_TARGET`: a frame is committed at the first object
/// boundary where it holds at least this many bytes.
const FRAME_SIZE_TARGET: usize = 64 * 1024;
/// A frame shorter than this loses its header (`FRAME_SIZE_MIN`).
const FRAME_SIZE_MIN: usize = 4;
/// `FRAME` and its 8-byte length.
const FRAME_HEADER_SIZE: usize = 9;
/// Dictionary items per `MARK … SETITEMS` (`BATCHSIZE`).
const BATCH_SIZE: usize = 1000;

/// Writes a pickle as CPython's C pickler (`pickle.dump`, protocol 4) does,
/// one `save()` of the object graph at a time: the caller mirrors the
/// objects it pickles, including which of them are the same object (memo
/// references through [`Pickler::get`]).
#[derive(Debug)]
pub struct Pickler {
    out: Vec<u8>,
    /// Where the open frame's header sits.
    frame_start: Option<usize>,
    /// Objects memoized so far (the next memo index).
    memo_len: u32,
}

impl Default for Pickler {
    fn default() -> Self {
        Self::new()
    }
}

impl Pickler {
    /// A pickle that has written its `PROTO 4` header; framing is on.
    pub fn new() -> Self {
        Self {
            out: vec![PROTO, DEFAULT_PROTOCOL],
            frame_start: None,
            memo_len: 0,
        }
    }

    /// `_Pickler_Write`: opens a frame (a placeholder header) when none is open.
    fn write(&mut self, bytes: &[u8]) {
        if self.frame_start.is_none() {
            self.frame_start = Some(self.out.len());
            self.out.extend_from_slice(&[0xFE; FRAME_HEADER_SIZE]);
        }
        self.out.extend_from_slice(bytes);
    }

    /// `_Pickler_CommitFrame`: fills in the open frame's header, or removes
    /// it when the frame is shorter than `FRAME_SIZE_MIN`.
    fn commit_frame(&mut self) {
        let Some(start) = self.frame_start.take() else {
            return;
        };
        let len = self.out.len() - start - FRAME_HEADER_SIZE;
        if len >= FRAME_SIZE_MIN {
            self.out[start] = FRAME;
            self.out[start + 1..start + FRAME_HEADER_SIZE]
                .copy_from_slice(&(len as u64).to_le_bytes());
        } else {
            self.out.drain(start..start + FRAME_HEADER_SIZE);
        }
    }

    /// `_Pickler_OpcodeBoundary`, which CPython runs at the end of every
    /// `save()`: a frame that reached 64 KiB is committed there.
    fn boundary(&mut self) {
        if let Some(start) = self.frame_start {
            if self.out.len() - start - FRAME_HEADER_SIZE >= FRAME_SIZE_TARGET {
                self.commit_frame();
            }
        }
    }

    /// `memo_put`: `MEMOIZE`; returns the object's memo index.
    fn memoize(&mut self) -> u32 {
        self.write(&[MEMOIZE]);
        self.memo_len += 1;
        self.memo_len - 1
    }

    /// `save(int)` for an int in the signed 32-bit range (ints are never
    /// memoized).
    pub fn int(&mut self, value: i64) -> Result<()> {
        if let Ok(v) = u8::try_from(value) {
            self.write(&[BININT1, v]);
        } else if let Ok(v) = u16::try_from(value) {
            let b = v.to_le_bytes();
            self.write(&[BININT2, b[0], b[1]]);
        } else if let Ok(v) = i32::try_from(value) {
            let b = v.to_le_bytes();
            self.write(&[BININT, b[0], b[1], b[2], b[3]]);
        } else {
            return Err(PickleError(format!(
                "kiln pickles integers of 32 bits, not {value}"
            )));
        }
        self.boundary();
        Ok(())
    }

    /// `save(str)` of a string not pickled before: returns its memo index,
    /// which [`Pickler::get`] refers to when the same object is saved again.
    /// Strings of 64 KiB or more (which CPython writes outside frames) are
    /// refused.
    pub fn str(&mut self, text: &str) -> Result<u32> {
        let bytes = text.as_bytes();
        if bytes.len() >= FRAME_SIZE_TARGET {
            return Err(PickleError(format!(
                "kiln pickles strings shorter than 64 KiB, not one of {} bytes",
                bytes.len()
            )));
        }
        match u8::try_from(bytes.len()) {
            Ok(n) => self.write(&[SHORT_BINUNICODE, n]),
            Err(_) => {
                let mut header = vec![BINUNICODE];
                header.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                self.write(&header);
            }
        }
        self.write(bytes);
        let index = self.memoize();
        self.boundary();
        Ok(index)
    }

    /// `save()` of an object already in the memo: `BINGET` / `LONG_BINGET`.
    pub fn get(&mut self, index: u32) {
        match u8::try_from(index) {
            Ok(i) => self.write(&[BINGET, i]),
            Err(_) => {
                let b = index.to_le_bytes();
                self.write(&[LONG_BINGET, b[0], b[1], b[2], b[3]]);
            }
        }
        self.boundary();
    }

    /// `save(dict)` of a dictionary of `len` items: `EMPTY_DICT`, `MEMOIZE`,
    /// then the items as `batch_dict_exact` writes them; `item(self, i)`
    /// saves the `i`-th key and value.
    pub fn dict(
        &mut self,
        len: usize,
        mut item: impl FnMut(&mut Self, usize) -> Result<()>,
    ) -> Result<()> {
        self.write(&[EMPTY_DICT]);
        self.memoize();
        if len == 1 {
            item(self, 0)?;
            self.write(&[SETITEM]);
        } else if len > 1 {
            let mut next = 0;
            loop {
                self.write(&[MARK]);
                let batch_end = (next + BATCH_SIZE).min(len);
                let in_batch = batch_end - next;
                while next < batch_end {
                    item(self, next)?;
                    next += 1;
                }
                self.write(&[SETITEMS]);
                // CPython's loop runs again after a full batch, so a size
                // that is a multiple of 1000 ends with an empty batch.
                if in_batch != BATCH_SIZE {
                    break;
                }
            }
        }
        self.boundary();
        Ok(())
    }

    /// `STOP`, the last frame committed: the pickle's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.write(&[STOP]);
        self.commit_frame();
        self.out
    }
}

/// What the reader's stack and memo hold: indices into its arena, so a
/// memo reference to a container sees the container as finally built.
#[derive(Debug)]
enum Node {
    Leaf(Value),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Mark,
    Node(usize),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u32, usize>,
}

impl<'a> Reader<'a> {
    fn error(&self, what: impl fmt::Display) -> PickleError {
        PickleError(format!("{what} at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.error("the pickle ends early"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.error("a length beyond the address space"))
    }

    fn push(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(Slot::Node(self.nodes.len() - 1));
    }

    fn leaf(&mut self, value: Value) {
        self.push(Node::Leaf(value));
    }

    fn pop(&mut self) -> Result<usize> {
        match self.stack.pop() {
            Some(Slot::Node(i)) => Ok(i),
            Some(Slot::Mark) => Err(self.error("a MARK where an object was expected")),
            None => Err(self.error("an empty stack")),
        }
    }

    fn top(&self) -> Result<usize> {
        match self.stack.last() {
            Some(Slot::Node(i)) => Ok(*i),
            _ => Err(self.error("no object on the stack")),
        }
    }

    /// The objects above the topmost MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<usize>> {
        let at = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| self.error("no MARK on the stack"))?;
        let items = self
            .stack
            .split_off(at + 1)
            .into_iter()
            .filter_map(|s| match s {
                Slot::Node(i) => Some(i),
                Slot::Mark => None,
            })
            .collect();
        self.stack.truncate(at);
        Ok(items)
    }

    fn text(&mut self, n: usize) -> Result<()> {
        let raw = self.take(n)?;
        let s = std::str::from_utf8(raw).map_err(|_| self.error("a string that is not UTF-8"))?;
        self.leaf(Value::Str(s.to_string()));
        Ok(())
    }

    fn set_items(&mut self, dict: usize, pairs: &[usize]) -> Result<()> {
        if !pairs.len().is_multiple_of(2) {
            return Err(self.error("SETITEMS with a key and no value"));
        }
        let Some(Node::Dict(items)) = self.nodes.get_mut(dict) else {
            return Err(self.error("SETITEM(S) on an object that is not a dict"));
        };
        items.extend(pairs.chunks(2).map(|kv| (kv[0], kv[1])));
        Ok(())
    }

    fn append(&mut self, list: usize, values: &[usize]) -> Result<()> {
        let Some(Node::List(items)) = self.nodes.get_mut(list) else {
            return Err(self.error("APPEND(S) on an object that is not a list"));
        };
        items.extend_from_slice(values);
        Ok(())
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let top = self.top()?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<()> {
        let node = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.error(format!("memo index {index} was never stored")))?;
        self.stack.push(Slot::Node(node));
        Ok(())
    }

    /// Runs opcodes up to `STOP`; returns the arena index of the result.
    fn run(&mut self) -> Result<usize> {
        loop {
            let op = self.u8()?;
            match op {
                PROTO => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.error(format!("unsupported pickle protocol {proto}")));
                    }
                }
                FRAME => {
                    self.u64()?;
                }
                STOP => return self.pop(),
                MARK => self.stack.push(Slot::Mark),
                POP => {
                    self.stack.pop();
                }
                POP_MARK => {
                    self.pop_mark()?;
                }
                NONE => self.leaf(Value::None),
                NEWTRUE => self.leaf(Value::Bool(true)),
                NEWFALSE => self.leaf(Value::Bool(false)),
                BININT1 => {
                    let v = self.u8()?;
                    self.leaf(Value::Int(v.into()));
                }
                BININT2 => {
                    let b = self.take(2)?;
                    let v = u16::from_le_bytes([b[0], b[1]]);
                    self.leaf(Value::Int(v.into()));
                }
                BININT => {
                    let v = self.u32()? as i32;
                    self.leaf(Value::Int(v.into()));
                }
                LONG1 => {
                    let n = usize::from(self.u8()?);
                    let raw = self.take(n)?;
                    if n > 8 {
                        return Err(self.error("an integer wider than 64 bits"));
                    }
                    // Little-endian two's complement, sign-extended.
                    let fill = if raw.last().is_some_and(|b| b & 0x80 != 0) {
                        0xFF
                    } else {
                        0
                    };
                    let mut a = [fill; 8];
                    a[..n].copy_from_slice(raw);
                    self.leaf(Value::Int(i64::from_le_bytes(a)));
                }
                BINFLOAT => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.leaf(Value::Float(f64::from_be_bytes(a)));
                }
                SHORT_BINUNICODE => {
                    let n = usize::from(self.u8()?);
                    self.text(n)?;
                }
                BINUNICODE => {
                    let n = self.u32()? as usize;
                    self.text(n)?;
                }
                BINUNICODE8 => {
                    let n = self.len64()?;
                    self.text(n)?;
                }
                SHORT_BINBYTES | BINBYTES | BINBYTES8 => {
                    let n = match op {
                        SHORT_BINBYTES => usize::from(self.u8()?),
                        BINBYTES => self.u32()? as usize,
                        _ => self.len64()?,
                    };
                    let raw = self.take(n)?.to_vec();
                    self.leaf(Value::Bytes(raw));
                }
                EMPTY_DICT => self.push(Node::Dict(Vec::new())),
                EMPTY_LIST => self.push(Node::List(Vec::new())),
                EMPTY_TUPLE => self.push(Node::Tuple(Vec::new())),
                TUPLE => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items));
                }
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = usize::from(op - TUPLE1 + 1);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items));
                }
                SETITEM => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, &[key, value])?;
                }
                SETITEMS => {
                    let pairs = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, &pairs)?;
                }
                APPEND => {
                    let value = self.pop()?;
                    let list = self.top()?;
                    self.append(list, &[value])?;
                }
                APPENDS => {
                    let values = self.pop_mark()?;
                    let list = self.top()?;
                    self.append(list, &values)?;
                }
                MEMOIZE => {
                    let index = u32::try_from(self.memo.len())
                        .map_err(|_| self.error("too many memo entries"))?;
                    self.memo_put(index)?;
                }
                BINPUT => {
                    let index = self.u8()?;
                    self.memo_put(index.into())?;
                }
                LONG_BINPUT => {
                    let index = self.u32()?;
                    self.memo_put(index)?;
                }
                BINGET => {
                    let index = self.u8()?;
                    self.memo_get(index.into())?;
                }
                LONG_BINGET => {
                    let index = self.u32()?;
                    self.memo_get(index)?;
                }
                other => {
                    self.pos -= 1;
                    return Err(self.error(format!(
                        "unsupported pickle opcode 0x{other:02x} (kiln reads dicts, lists and tuples of ints, floats, strings and bytes, not objects)"
                    )));
                }
            }
        }
    }

    /// The value at `node`, built out of the arena; `depth` refuses cycles.
    fn value(&self, node: usize, depth: usize) -> Result<Value> {
        if depth > 100 {
            return Err(PickleError(
                "the pickle nests deeper than 100 levels (or refers to itself)".into(),
            ));
        }
        let values = |ids: &[usize]| -> Result<Vec<Value>> {
            ids.iter().map(|&i| self.value(i, depth + 1)).collect()
        };
        Ok(match self.nodes.get(node) {
            Some(Node::Leaf(v)) => v.clone(),
            Some(Node::List(ids)) => Value::List(values(ids)?),
            Some(Node::Tuple(ids)) => Value::Tuple(values(ids)?),
            Some(Node::Dict(pairs)) => Value::Dict(
                pairs
                    .iter()
                    .map(|&(k, v)| Ok((self.value(k, depth + 1)?, self.value(v, depth + 1)?)))
                    .collect::<Result<_>>()?,
            ),
            None => return Err(PickleError("a dangling object reference".into())),
        })
    }
}

/// `pickle.loads(bytes)` for the subset kiln reads; refuses trailing bytes
/// after `STOP`, objects and anything malformed, naming the byte offset.
pub fn load(bytes: &[u8]) -> Result<Value> {
    let mut reader = Reader {
        bytes,
        pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
    };
    let root = reader.run()?;
    reader.value(root, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_dict_round_trips_with_memo_references() -> Result<()> {
        let mut p = Pickler::new();
        let mut key = 0;
        p.dict(2, |p, i| {
            if i == 0 {
                key = p.str("a")?;
                p.int(70000)
            } else {
                p.get(key);
                p.int(-1)
            }
        })?;
        let bytes = p.finish();
        // A frame of fewer than 4 bytes loses its header; this one keeps it.
        assert_eq!(&bytes[..3], &[PROTO, 4, FRAME]);
        let v = load(&bytes)?;
        assert_eq!(
            v,
            Value::Dict(vec![
                (Value::Str("a".into()), Value::Int(70000)),
                (Value::Str("a".into()), Value::Int(-1)),
            ])
        );
        Ok(())
    }

    #[test]
    fn refuses_objects_truncation_and_wide_ints() {
        // pickle.dumps(object) starts with a GLOBAL-type opcode.
        let global = [PROTO, 4, 0x93];
        assert!(load(&global)
            .err()
            .is_some_and(|e| e.0.contains("unsupported pickle opcode 0x93")));
        assert!(load(&[PROTO, 4, BININT2, 1])
            .err()
            .is_some_and(|e| e.0.contains("ends early")));
        assert!(Pickler::new().int(1 << 40).is_err());
        assert!(Pickler::new().str(&"x".repeat(70000)).is_err());
    }
}
