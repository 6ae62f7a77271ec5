//! nanoGPT's `meta.pkl`: the vocabulary of a character-level data directory
//! (`{'vocab_size': int, 'itos': {int: str}, 'stoi': {str: int}}`, as
//! `data/shakespeare_char/prepare.py` pickles it).
//!
//! [`Meta::read`] reads any such pickle (train.py reads only `vocab_size`;
//! sample.py also `stoi` and `itos`); [`Meta::from_chars`] +
//! [`Meta::to_pickle`] write what prepare.py writes, byte for byte.
use crate::data::pickle::{self, Pickler, Value};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The contents of `meta.pkl`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Meta {
    /// `meta['vocab_size']`.
    pub vocab_size: i64,
    /// `meta['itos']`: id → string (one character each in nanoGPT's files).
    pub itos: BTreeMap<i64, String>,
    /// `meta['stoi']`: string → id.
    pub stoi: HashMap<String, i64>,
    /// The characters in id order when the vocabulary was made from
    /// characters ([`Meta::from_chars`]): what [`Meta::to_pickle`] writes.
    chars: Vec<char>,
}

impl Meta {
    /// prepare.py's vocabulary of `chars` (sorted, distinct):
    /// `stoi = {ch: i}`, `itos = {i: ch}`, `vocab_size = len(chars)`.
    pub fn from_chars(chars: &[char]) -> Self {
        Self {
            vocab_size: chars.len() as i64,
            itos: chars
                .iter()
                .enumerate()
                .map(|(i, c)| (i as i64, c.to_string()))
                .collect(),
            stoi: chars
                .iter()
                .enumerate()
                .map(|(i, c)| (c.to_string(), i as i64))
                .collect(),
            chars: chars.to_vec(),
        }
    }

    /// Reads `path` (`pickle.load`). Errors name the file and say what is
    /// wrong in one line.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |message: String| Error::Data {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let value = pickle::load(&bytes).map_err(|e| bad(format!("not a readable pickle: {e}")))?;
        Self::from_value(&value).map_err(bad)
    }

    /// The vocabulary in an unpickled `meta` dictionary.
    pub fn from_value(value: &Value) -> std::result::Result<Self, String> {
        let Value::Dict(_) = value else {
            return Err(format!(
                "holds a {}, not nanoGPT's dict with vocab_size, stoi and itos",
                value.type_name()
            ));
        };
        let vocab_size = match value.get("vocab_size") {
            Some(Value::Int(v)) if *v >= 0 => *v,
            Some(other) => {
                return Err(format!(
                    "vocab_size must be an int of at least 0, got {other:?}"
                ))
            }
            None => return Err("has no 'vocab_size'".into()),
        };
        let mut meta = Self {
            vocab_size,
            ..Self::default()
        };
        match value.get("itos") {
            Some(Value::Dict(items)) => {
                for (k, v) in items {
                    let (Value::Int(i), Value::Str(s)) = (k, v) else {
                        return Err(format!("itos maps {k:?} to {v:?}; expected int to str"));
                    };
                    meta.itos.insert(*i, s.clone());
                }
            }
            Some(other) => return Err(format!("itos is a {}, not a dict", other.type_name())),
            None => {}
        }
        match value.get("stoi") {
            Some(Value::Dict(items)) => {
                for (k, v) in items {
                    let (Value::Str(s), Value::Int(i)) = (k, v) else {
                        return Err(format!("stoi maps {k:?} to {v:?}; expected str to int"));
                    };
                    meta.stoi.insert(s.clone(), *i);
                }
            }
            Some(other) => return Err(format!("stoi is a {}, not a dict", other.type_name())),
            None => {}
        }
        Ok(meta)
    }

    /// sample.py's `encode`: `[stoi[c] for c in text]`.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        if self.stoi.is_empty() && !text.is_empty() {
            return Err(Error::Usage(
                "meta.pkl has no stoi: kiln encodes text with nanoGPT's character vocabulary only"
                    .into(),
            ));
        }
        let mut buf = [0u8; 4];
        text.chars()
            .map(|c| {
                self.stoi.get(&*c.encode_utf8(&mut buf)).copied().ok_or_else(|| {
                    Error::Usage(format!(
                        "the text has the character {c:?} (U+{:04X}), which the vocabulary of meta.pkl does not have",
                        u32::from(c)
                    ))
                })
            })
            .collect()
    }

    /// sample.py's `decode`: `''.join([itos[i] for i in ids])`.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let mut out = String::new();
        for id in ids {
            let s = self.itos.get(id).ok_or_else(|| {
                Error::Usage(format!(
                    "token id {id} has no string in the itos of meta.pkl"
                ))
            })?;
            out.push_str(s);
        }
        Ok(out)
    }

    /// The bytes `pickle.dump(meta, f)` writes for a vocabulary made by
    /// [`Meta::from_chars`]: the dict `{'vocab_size', 'itos', 'stoi'}` in
    /// that order, each character pickled once in `itos` and referred to
    /// from the memo in `stoi` (in prepare.py both dicts hold the same
    /// string objects).
    pub fn to_pickle(&self) -> Result<Vec<u8>> {
        if self.chars.len() as i64 != self.vocab_size {
            return Err(Error::InvalidArgument(
                "only a vocabulary made from characters (Meta::from_chars) is written as prepare.py writes it".into(),
            ));
        }
        let chars = &self.chars;
        let mut memo = Vec::with_capacity(chars.len());
        let mut p = Pickler::new();
        let mut buf = [0u8; 4];
        p.dict(3, |p, i| {
            match i {
                0 => {
                    p.str("vocab_size")?;
                    p.int(self.vocab_size)?;
                }
                1 => {
                    p.str("itos")?;
                    p.dict(chars.len(), |p, j| {
                        p.int(j as i64)?;
                        memo.push(p.str(chars[j].encode_utf8(&mut buf))?);
                        Ok(())
                    })?;
                }
                _ => {
                    p.str("stoi")?;
                    p.dict(chars.len(), |p, j| {
                        p.get(memo[j]);
                        p.int(j as i64)
                    })?;
                }
            }
            Ok(())
        })
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(p.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_encode_decode() -> Result<()> {
        let meta = Meta::from_chars(&['\n', ' ', 'a', 'é', '😀']);
        let bytes = meta.to_pickle()?;
        let back = Meta::from_value(&pickle::load(&bytes).map_err(|e| Error::Usage(e.0))?)
            .map_err(Error::Usage)?;
        assert_eq!(back.vocab_size, 5);
        assert_eq!(back.itos, meta.itos);
        assert_eq!(back.stoi, meta.stoi);
        let ids = back.encode("a é😀\n")?;
        assert_eq!(ids, vec![2, 1, 3, 4, 0]);
        assert_eq!(back.decode(&ids)?, "a é😀\n");
        let err = back
            .encode("b")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("'b' (U+0062)"), "{err}");
        assert!(back.decode(&[5]).is_err());
        Ok(())
    }
}
