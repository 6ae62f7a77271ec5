//! nanoGPT's token data: `--data tokens:DIR[,block_size=T,dtype=uint16|uint32,vocab_size=N]`.
//!
//! A directory as nanoGPT's `prepare.py` scripts write it: `train.bin` and
//! `val.bin` (token ids, native little-endian `uint16`, or `uint32` for
//! vocabularies past 65536) and, for character-level data, `meta.pkl`
//! ([`Meta`]). The files are read window by window
//! ([`kiln_tensor::datafile::DataFile`]), never whole: resident memory does
//! not grow with the data.
//!
//! Batches are nanoGPT's `get_batch(split)` ([`TokenData::get_batch`]):
//! `ix = torch.randint(len(data) - block_size, (batch_size,))` on the
//! global generator, inputs `data[i:i+block_size]` and targets
//! `data[i+1:i+1+block_size]`, both int64 `[batch_size, block_size]`.
//!
//! Checks, each a one-line error naming the file: a missing `train.bin` or
//! `val.bin`; a byte count that is not a whole number of tokens (a
//! truncated file, or the wrong `dtype`); a split with no more than
//! `block_size` tokens (nanoGPT's `randint` would fail); token ids `>=
//! vocab_size`, checked on every batch as it is drawn (nanoGPT does not
//! check; scanning a 10 GB file up front would read it all, a batch costs
//! `batch_size × (block_size + 1)` comparisons).
//!
//! The vocabulary size is `vocab_size=N`, else `meta.pkl`'s, else GPT-2's
//! padded 50304 (what nanoGPT's train.py falls back to).
use crate::data::batch::{Sample, INPUTS, TARGETS};
use crate::data::meta::Meta;
use crate::data::Dataset;
use crate::{Error, Result};
use kiln_tensor::datafile::DataFile;
use kiln_tensor::rng::Generator;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options, Spec};
use kiln_tensor::{Device, Kind, Tensor};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How token ids are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenDtype {
    /// `np.uint16`, nanoGPT's choice (vocabularies up to 65536).
    #[default]
    Uint16,
    /// `np.uint32`.
    Uint32,
}

kiln_tensor::choices!(TokenDtype {
    Uint16 = "uint16",
    Uint32 = "uint32",
});

impl TokenDtype {
    /// Bytes per token.
    pub fn size(self) -> usize {
        match self {
            TokenDtype::Uint16 => 2,
            TokenDtype::Uint32 => 4,
        }
    }

    /// The name in specs and messages (`uint16`).
    pub fn name(self) -> &'static str {
        kiln_tensor::spec::Choice::word(self)
    }
}

/// nanoGPT's fallback vocabulary size without `meta.pkl`: GPT-2's 50257
/// padded to a multiple of 64.
pub const GPT2_VOCAB_SIZE: i64 = 50304;

/// `tokens:DIR[,block_size=T,dtype=uint16|uint32,vocab_size=N]` (the text
/// after `tokens:` is what [`TokensSource::from_str`](std::str::FromStr)
/// parses and `Display` prints back, every option given).
#[derive(Debug, Clone, PartialEq)]
pub struct TokensSource {
    /// The directory holding `train.bin`, `val.bin` and maybe `meta.pkl`.
    pub dir: PathBuf,
    /// Tokens per sample (nanoGPT's `block_size`, default 1024); the
    /// `gpt` model's context length.
    pub block_size: i64,
    /// How ids are stored.
    pub dtype: TokenDtype,
    /// The vocabulary size, overriding `meta.pkl`'s.
    pub vocab_size: Option<i64>,
}

impl TokensSource {
    /// `dir` with nanoGPT's defaults: `block_size=1024`, `uint16`, the
    /// vocabulary size from `meta.pkl`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            block_size: 1024,
            dtype: TokenDtype::Uint16,
            vocab_size: None,
        }
    }
}

impl Options for TokensSource {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("block_size", "tokens per sample (the model's context)"),
            &mut self.block_size,
        )?;
        v.option(
            OptionInfo::new("dtype", "how train.bin and val.bin store ids"),
            &mut self.dtype,
        )?;
        v.option(
            OptionInfo::new("vocab_size", "the vocabulary size (default: meta.pkl's)"),
            &mut self.vocab_size,
        )
    }
}

impl std::str::FromStr for TokensSource {
    type Err = Error;

    /// `DIR[,block_size=T,dtype=uint16|uint32,vocab_size=N]`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::Usage(format!(
                "--data tokens:{text}: {why}; accepted: tokens:DIR[,block_size=T,dtype=uint16|uint32,vocab_size=N]"
            ))
        };
        let (dir, options) = text.split_once(',').unwrap_or((text, ""));
        if dir.is_empty() || dir.contains('=') {
            return Err(bad("name the directory first".into()));
        }
        let mut src = TokensSource::new(dir);
        let mut spec: Spec = format!("tokens:{options}")
            .parse()
            .map_err(|e: kiln_tensor::Error| bad(e.to_string()))?;
        spec.apply(&mut src).map_err(|e| bad(e.to_string()))?;
        src.check().map_err(|e| match e {
            Error::Usage(m) => bad(m),
            other => other,
        })?;
        Ok(src)
    }
}

impl TokensSource {
    /// Refuses a `block_size` or `vocab_size` below 1.
    pub fn check(&self) -> Result<()> {
        if self.block_size < 1 {
            return Err(Error::Usage(format!(
                "block_size must be at least 1, got {}",
                self.block_size
            )));
        }
        if let Some(v) = self.vocab_size.filter(|&v| v < 1) {
            return Err(Error::Usage(format!(
                "vocab_size must be at least 1, got {v}"
            )));
        }
        Ok(())
    }
}

/// `tokens:`'s options as the data registry reads them: the directory
/// first (`tokens:DIR,block_size=64` is `tokens:path=DIR,block_size=64`),
/// then [`TokensSource`]'s.
#[derive(Debug, Clone, PartialEq)]
pub struct TokensConfig {
    /// The directory holding `train.bin`, `val.bin` and maybe `meta.pkl`.
    pub path: String,
    /// Tokens per sample.
    pub block_size: i64,
    /// How ids are stored.
    pub dtype: TokenDtype,
    /// The vocabulary size, overriding `meta.pkl`'s.
    pub vocab_size: Option<i64>,
}

impl Default for TokensConfig {
    /// nanoGPT's defaults ([`TokensSource::new`]).
    fn default() -> Self {
        let src = TokensSource::new("");
        Self {
            path: String::new(),
            block_size: src.block_size,
            dtype: src.dtype,
            vocab_size: src.vocab_size,
        }
    }
}

impl Options for TokensConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "path",
                "the directory with train.bin, val.bin and meta.pkl (tokens:DIR for short)",
            )
            .required(),
            &mut self.path,
        )?;
        let mut src = self.source_unchecked();
        src.options(v)?;
        self.block_size = src.block_size;
        self.dtype = src.dtype;
        self.vocab_size = src.vocab_size;
        Ok(())
    }
}

impl TokensConfig {
    fn source_unchecked(&self) -> TokensSource {
        TokensSource {
            dir: PathBuf::from(&self.path),
            block_size: self.block_size,
            dtype: self.dtype,
            vocab_size: self.vocab_size,
        }
    }

    /// The source these options name (checked: [`TokensSource::check`]).
    pub fn source(&self) -> Result<TokensSource> {
        let src = self.source_unchecked();
        src.check()
            .map_err(|e| Error::Usage(format!("--data tokens: {e}")))?;
        Ok(src)
    }
}

impl fmt::Display for TokensSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},block_size={},dtype={}",
            self.dir.display(),
            self.block_size,
            self.dtype.name()
        )?;
        if let Some(v) = self.vocab_size {
            write!(f, ",vocab_size={v}")?;
        }
        Ok(())
    }
}

/// One token file, read window by window (never loaded whole).
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    file: DataFile,
    dtype: TokenDtype,
    len: usize,
}

fn data_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl TokenFile {
    /// Opens `path`; refuses a missing file and a byte count that is not a
    /// whole number of `dtype` ids.
    pub fn open(path: &Path, dtype: TokenDtype) -> Result<Self> {
        let file = DataFile::open(path).map_err(|e| match e {
            kiln_tensor::Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                data_error(
                    path,
                    "no such file: a token directory holds train.bin and val.bin (nanoGPT's prepare.py or `kiln prepare-text` write them)",
                )
            }
            kiln_tensor::Error::Io { source, .. } => data_error(path, source.to_string()),
            other => data_error(path, other.to_string()),
        })?;
        let bytes = file.len();
        if !bytes.is_multiple_of(dtype.size()) {
            return Err(data_error(
                path,
                format!(
                    "{bytes} bytes is not a whole number of {} ids ({} bytes each): a truncated file, or another dtype",
                    dtype.name(),
                    dtype.size()
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            dtype,
            len: bytes / dtype.size(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tokens in the file (`len(np.memmap(...))`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids `start..start + count`; an error names the file past its
    /// end or when the read fails.
    pub fn ids(&self, start: usize, count: usize) -> Result<Vec<u32>> {
        let size = self.dtype.size();
        let past_end = || {
            data_error(
                &self.path,
                format!(
                    "ids {start}..{} are past the end ({} ids)",
                    start.saturating_add(count),
                    self.len
                ),
            )
        };
        let (from, len) = (
            start.checked_mul(size).ok_or_else(past_end)?,
            count.checked_mul(size).ok_or_else(past_end)?,
        );
        if !self.file.contains(from, len) {
            return Err(past_end());
        }
        let bytes = self.file.read(from, len).map_err(|e| match e {
            kiln_tensor::Error::Io { source, .. } => data_error(&self.path, source.to_string()),
            other => data_error(&self.path, other.to_string()),
        })?;
        Ok(match self.dtype {
            TokenDtype::Uint16 => bytes
                .chunks_exact(2)
                .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            TokenDtype::Uint32 => bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        })
    }
}

/// Which file a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `train.bin`.
    Train,
    /// `val.bin`.
    Val,
}

impl Split {
    /// nanoGPT's name of the split (`train`, `val`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// Where the vocabulary size came from (nanoGPT prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VocabOrigin {
    /// `vocab_size=N` in the spec.
    Option,
    /// `meta.pkl` (its path).
    Meta(PathBuf),
    /// Neither: GPT-2's [`GPT2_VOCAB_SIZE`], as nanoGPT's train.py defaults.
    Gpt2Default,
}

/// A token directory, opened and checked: both splits open.
#[derive(Debug)]
pub struct TokenData {
    source: TokensSource,
    train: TokenFile,
    val: TokenFile,
    vocab_size: i64,
    vocab_origin: VocabOrigin,
    meta: Option<Meta>,
}

impl TokenData {
    /// Opens `source.dir`: maps `train.bin` and `val.bin`, reads `meta.pkl`
    /// when present, and checks that each split holds more than
    /// `block_size` tokens.
    pub fn open(source: &TokensSource) -> Result<Self> {
        let dir = &source.dir;
        if !dir.is_dir() {
            return Err(data_error(
                dir,
                "no such directory (a token directory holds train.bin, val.bin and meta.pkl)",
            ));
        }
        let train = TokenFile::open(&dir.join("train.bin"), source.dtype)?;
        let val = TokenFile::open(&dir.join("val.bin"), source.dtype)?;
        for file in [&train, &val] {
            let t = source.block_size;
            if file.len() as u64 <= t as u64 {
                return Err(data_error(
                    file.path(),
                    format!(
                        "holds {} tokens, but block_size={t} needs more than {t} (a window and the token after it); use a smaller block_size",
                        file.len()
                    ),
                ));
            }
        }
        let meta_path = dir.join("meta.pkl");
        let meta = if meta_path.is_file() {
            Some(Meta::read(&meta_path)?)
        } else {
            None
        };
        let (vocab_size, vocab_origin) = match (source.vocab_size, &meta) {
            (Some(v), _) => (v, VocabOrigin::Option),
            (None, Some(m)) => (m.vocab_size, VocabOrigin::Meta(meta_path)),
            (None, None) => (GPT2_VOCAB_SIZE, VocabOrigin::Gpt2Default),
        };
        Ok(Self {
            source: source.clone(),
            train,
            val,
            vocab_size,
            vocab_origin,
            meta,
        })
    }

    /// What it was opened from.
    pub fn source(&self) -> &TokensSource {
        &self.source
    }

    /// Tokens per sample.
    pub fn block_size(&self) -> i64 {
        self.source.block_size
    }

    /// Ids are `0..vocab_size`.
    pub fn vocab_size(&self) -> i64 {
        self.vocab_size
    }

    /// Where [`TokenData::vocab_size`] came from.
    pub fn vocab_origin(&self) -> &VocabOrigin {
        &self.vocab_origin
    }

    /// `meta.pkl`, when the directory has one.
    pub fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    /// The file of `split`.
    pub fn file(&self, split: Split) -> &TokenFile {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// nanoGPT's `get_batch(split)`: `batch_size` random windows of the
    /// split, drawn with `torch.randint(len(data) - block_size,
    /// (batch_size,))` on the global CPU generator; returns `(x, y)`, int64
    /// `[batch_size, block_size]` on the CPU, `y` shifted one token right.
    /// A token id `>= vocab_size` in the batch is an error naming the file
    /// and position.
    pub fn get_batch(&self, split: Split, batch_size: i64) -> Result<(Tensor, Tensor)> {
        if batch_size < 1 {
            return Err(Error::Usage(format!(
                "batch size must be at least 1, got {batch_size}"
            )));
        }
        let ix = Tensor::f_randint(
            self.windows(split) as i64,
            [batch_size],
            (Kind::Int64, Device::Cpu),
        )?;
        self.windows_at(split, &Vec::<i64>::try_from(&ix)?)
    }

    /// The number of windows of `split`, `len(data) - block_size`: the
    /// starts `get_batch` draws from (at least 1, see [`TokenData::open`]).
    pub fn windows(&self, split: Split) -> usize {
        self.file(split)
            .len()
            .saturating_sub(self.source.block_size as usize)
    }

    /// The windows starting at `starts` (each below
    /// [`TokenData::windows`]): `(x, y)` as [`TokenData::get_batch`] builds
    /// them for the starts it drew.
    pub fn windows_at(&self, split: Split, starts: &[i64]) -> Result<(Tensor, Tensor)> {
        let file = self.file(split);
        let t = self.source.block_size;
        let tu = t as usize;
        let mut x = Vec::with_capacity(starts.len() * tu);
        let mut y = Vec::with_capacity(starts.len() * tu);
        for &i in starts {
            let start = usize::try_from(i)
                .map_err(|_| data_error(file.path(), format!("window {i} is out of range")))?;
            let window = file.ids(start, tu + 1)?;
            if let Some((at, &id)) = window
                .iter()
                .enumerate()
                .find(|(_, &id)| i64::from(id) >= self.vocab_size)
            {
                return Err(data_error(
                    file.path(),
                    format!(
                        "token id {id} at position {} is not below vocab_size {} ({})",
                        start + at,
                        self.vocab_size,
                        match &self.vocab_origin {
                            VocabOrigin::Option => "vocab_size=N of --data".to_string(),
                            VocabOrigin::Meta(p) => format!("from {}", p.display()),
                            VocabOrigin::Gpt2Default =>
                                "GPT-2's default without meta.pkl; give vocab_size=N".to_string(),
                        }
                    ),
                ));
            }
            x.extend(window[..tu].iter().map(|&id| i64::from(id)));
            y.extend(window[1..].iter().map(|&id| i64::from(id)));
        }
        let shape = [starts.len() as i64, t];
        Ok((
            Tensor::from_slice(&x).f_view(shape)?,
            Tensor::from_slice(&y).f_view(shape)?,
        ))
    }
}

/// One split of a token directory as a [`Dataset`]: sample `i` is the
/// window starting at token `i` (`inputs`, `[block_size]` int64) and the
/// window one token later (`targets`), so there are `len(data) -
/// block_size` samples, the starts nanoGPT's `get_batch` draws from. A
/// loader of random batches ([`crate::DataLoader::random_batches`]) draws
/// them as `get_batch` does.
#[derive(Debug, Clone)]
pub struct TokenDataset {
    data: Arc<TokenData>,
    split: Split,
}

impl TokenDataset {
    /// The windows of `split`.
    pub fn new(data: Arc<TokenData>, split: Split) -> Self {
        Self { data, split }
    }

    /// The token directory.
    pub fn data(&self) -> &Arc<TokenData> {
        &self.data
    }

    /// Which file it reads.
    pub fn split(&self) -> Split {
        self.split
    }
}

impl Dataset for TokenDataset {
    fn len(&self) -> usize {
        self.data.windows(self.split)
    }

    fn get(&self, index: usize, _rng: &mut Generator) -> Result<Sample> {
        let (x, y) = self.data.windows_at(self.split, &[index as i64])?;
        Ok(Sample::new()
            .with(INPUTS, x.f_select(0, 0)?)
            .with(TARGETS, y.f_select(0, 0)?))
    }

    fn get_batch(&self, indices: &[i64], _rng: &mut Generator) -> Result<Option<Sample>> {
        let (x, y) = self.data.windows_at(self.split, indices)?;
        Ok(Some(Sample::new().with(INPUTS, x).with(TARGETS, y)))
    }

    fn describe(&self, index: usize) -> String {
        format!(
            "tokens {index}..{} of {}",
            index + self.data.block_size() as usize + 1,
            self.data.file(self.split).path().display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_print_back_canonically() -> Result<()> {
        let src: TokensSource = "data/chars,vocab_size=65,block_size=64".parse()?;
        assert_eq!(src.block_size, 64);
        assert_eq!(src.vocab_size, Some(65));
        let text = src.to_string();
        assert_eq!(text, "data/chars,block_size=64,dtype=uint16,vocab_size=65");
        assert_eq!(text.parse::<TokensSource>()?, src);
        let default: TokensSource = "d".parse()?;
        assert_eq!(default.to_string(), "d,block_size=1024,dtype=uint16");
        let err = "d,dtype=int8"
            .parse::<TokensSource>()
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|m| m.contains("uint16")),
            "{err:?}"
        );
        Ok(())
    }
}
