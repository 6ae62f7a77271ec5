//! `kiln prepare-text`: nanoGPT's `data/shakespeare_char/prepare.py` for
//! any text file.
//!
//! What prepare.py does, step for step: read the file as text (Python's
//! `open(path, 'r')`: UTF-8 on a UTF-8 locale, universal newlines, so
//! `\r\n` and a lone `\r` become `\n`); the vocabulary is the sorted set of
//! its characters (code points); the first `int(n * 0.9)` characters are
//! the training split, the rest validation; ids are written as `uint16`
//! (`train.bin`, `val.bin`) and the vocabulary as `meta.pkl`, byte for byte
//! what prepare.py writes (see [`Meta::to_pickle`]). More than 65536
//! distinct characters do not fit `uint16` and are refused (numpy refuses
//! them too). Files are written through kiln's atomic writer.
use crate::data::meta::Meta;
use crate::{Error, Result};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

/// What prepare-text found and wrote (its `Display` is prepare.py's
/// printed report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedText {
    /// Characters in the text (after newline translation).
    pub characters: usize,
    /// The vocabulary, sorted: id `i` is `chars[i]`.
    pub chars: Vec<char>,
    /// Tokens in `train.bin`.
    pub train_tokens: usize,
    /// Tokens in `val.bin`.
    pub val_tokens: usize,
}

/// `f"{n:,}"`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

impl fmt::Display for PreparedText {
    /// The five lines prepare.py prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "length of dataset in characters: {}",
            thousands(self.characters)
        )?;
        writeln!(
            f,
            "all the unique characters: {}",
            self.chars.iter().collect::<String>()
        )?;
        writeln!(f, "vocab size: {}", thousands(self.chars.len()))?;
        writeln!(f, "train has {} tokens", thousands(self.train_tokens))?;
        write!(f, "val has {} tokens", thousands(self.val_tokens))
    }
}

/// Python's text-mode reading of `bytes`: UTF-8, universal newlines.
fn decode_text(path: &Path, bytes: Vec<u8>) -> Result<String> {
    let text = String::from_utf8(bytes).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        message: format!(
            "is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })?;
    if !text.contains('\r') {
        return Ok(text);
    }
    Ok(text.replace("\r\n", "\n").replace('\r', "\n"))
}

/// Reads a text file as Python's `open(path, 'r').read()` on a UTF-8
/// locale does (also sample.py's `FILE:` prompt, opened with
/// `encoding='utf-8'`).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    decode_text(path, bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    kiln_tensor::io::write_atomic(path, bytes).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn id_bytes(ids: &[u16]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// prepare.py on `input`: writes `train.bin`, `val.bin` and `meta.pkl`
/// into `out_dir` (created if missing) and returns what it printed.
pub fn prepare_text(input: &Path, out_dir: &Path) -> Result<PreparedText> {
    let text: Vec<char> = read_text(input)?.chars().collect();
    let chars: Vec<char> = text
        .iter()
        .copied()
        .collect::<BTreeSet<char>>()
        .into_iter()
        .collect();
    if chars.len() > usize::from(u16::MAX) + 1 {
        return Err(Error::Data {
            path: input.to_path_buf(),
            message: format!(
                "has {} distinct characters, but train.bin stores uint16 ids: at most 65536",
                chars.len()
            ),
        });
    }
    let stoi: HashMap<char, u16> = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, i as u16))
        .collect();
    let ids: Vec<u16> = text
        .iter()
        .map(|c| stoi.get(c).copied().unwrap_or(0))
        .collect();
    let n = ids.len();
    // int(n * 0.9): a float product, truncated.
    let split = ((n as f64) * 0.9) as usize;
    let (train, val) = ids.split_at(split.min(n));
    let meta = Meta::from_chars(&chars).to_pickle()?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::Write {
        path: out_dir.to_path_buf(),
        message: e.to_string(),
    })?;
    write(&out_dir.join("train.bin"), &id_bytes(train))?;
    write(&out_dir.join("val.bin"), &id_bytes(val))?;
    write(&out_dir.join("meta.pkl"), &meta)?;
    Ok(PreparedText {
        characters: n,
        train_tokens: train.len(),
        val_tokens: val.len(),
        chars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_and_newlines() -> Result<()> {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1115394), "1,115,394");
        let p = Path::new("x");
        assert_eq!(decode_text(p, b"a\r\nb\rc\n".to_vec())?, "a\nb\nc\n");
        let err = decode_text(p, vec![b'a', 0xff])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("not UTF-8 text (invalid byte at offset 1)"),
            "{err}"
        );
        Ok(())
    }
}
