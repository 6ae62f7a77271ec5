//! Where a run's data comes from: a `--data KIND:...` spec, built by the
//! data registry ([`DataRegistry`], kiln-tensor's one registry type).
//!
//! kiln's sources are `idx:DIR` ((Fashion)MNIST's four IDX files; the
//! default is the FashionMNIST the setup provides, and `--data-dir DIR` is
//! `idx:DIR`), `csv:PATH,target=COLUMN`, `tensors:PATH` (a safetensors
//! file), `images:DIR` (an image folder, read as torchvision's
//! `ImageFolder` reads it) and `tokens:DIR,block_size=T` (nanoGPT's token
//! files, drawn as random batches: [`Sampling::RandomBatches`]). A
//! downstream crate [`register`](Registry::register)s its own source the
//! same way: a config with [`Options`] and a function from it to
//! [`Splits`]; a source of images registered with
//! [`DataRegistry::register_images`] also takes the run's `--transform`s
//! ([`DataContext::transforms`]). A source whose first option is `path`
//! takes the file first, without its key (`csv:data.csv,target=y`).
use crate::data::images::source::{self as images, ImagesConfig};
use crate::data::images::Pipeline;
use crate::data::tabular::CsvData;
use crate::data::tensors::{self, TensorsConfig};
use crate::data::tokens::{Split, TokenData, TokenDataset, TokensConfig};
use crate::data::{idx, Dataset};
use crate::{Error, Result};
use kiln_tensor::spec::{Entry, OptionInfo, OptionVisitor, Options, Registry, Spec};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the data asks the model to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Class indices (int64 targets) among `classes` classes.
    Classify {
        /// Number of classes.
        classes: i64,
    },
    /// Float targets of `outputs` values per sample.
    Regress {
        /// Values per sample.
        outputs: i64,
    },
    /// Two classes scored by one logit (`BCEWithLogitsLoss`): labels 0/1,
    /// or float targets `[N, 1]` in [0, 1]; a sample is counted correct when
    /// `logit > 0` says what its target does. A run makes the data's
    /// two-class labels (or one float target) this task when its loss is
    /// `bce-with-logits`.
    Binary,
}

/// How a run draws its batches from a source's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// Passes over the samples (epochs), as `torch.utils.data.DataLoader`
    /// reads them; evaluation reads the test set (and the validation split).
    #[default]
    Passes,
    /// Every batch draws its samples at random from the global generator,
    /// as nanoGPT's `get_batch` draws windows of a token file
    /// ([`crate::DataLoader::random_batches`]); there are no epochs, and an
    /// evaluation is nanoGPT's `estimate_loss`: random batches of the
    /// training set and of the test set (nanoGPT's `val` split).
    RandomBatches,
}

/// The train and test sets of a run, and what they ask the model to do.
#[derive(Clone)]
pub struct Splits {
    /// Training samples.
    pub train: Arc<dyn Dataset>,
    /// Test samples.
    pub test: Arc<dyn Dataset>,
    /// Classification or regression.
    pub task: Task,
    /// How batches are drawn.
    pub sampling: Sampling,
}

impl std::fmt::Debug for Splits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splits")
            .field("train", &self.train.len())
            .field("test", &self.test.len())
            .field("task", &self.task)
            .field("sampling", &self.sampling)
            .finish()
    }
}

/// What a data source may use besides its options.
#[derive(Debug, Clone)]
pub struct DataContext {
    /// The run's seed: sources without a test file split with it.
    pub seed: u64,
    /// The training samples' image transforms (`--transform`), for sources
    /// of images: torchvision's canonical pipeline, at least the
    /// `ToDtype(torch.float32, scale=True)` it ends with.
    pub transforms: Arc<Pipeline>,
    /// The evaluation samples' image transforms (`--test-transform`).
    pub test_transforms: Arc<Pipeline>,
}

impl DataContext {
    /// A context with `seed` and no transforms but the pipeline's
    /// `ToDtype(torch.float32, scale=True)` (images as `ToTensor` gives them).
    pub fn new(seed: u64) -> Result<Self> {
        let plain = Arc::new(crate::data::images::transforms().pipeline::<&str>(&[])?);
        Ok(Self {
            seed,
            transforms: plain.clone(),
            test_transforms: plain,
        })
    }
}

/// Builds a source's splits from a resolved spec.
pub type DataBuild = dyn Fn(&mut Spec, &DataContext) -> Result<Splits> + Send + Sync;

/// A registered data source.
pub type DataEntry = Entry<DataBuild>;

/// Data sources by spec: a [`Registry`] of [`DataEntry`] (which it derefs
/// to, for `register`, `describe`…) plus [`DataRegistry::load`], and which
/// of them read images (and so take `--transform`).
#[derive(Debug, Clone)]
pub struct DataRegistry {
    entries: Registry<DataBuild>,
    images: Vec<String>,
}

impl Default for DataRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for DataRegistry {
    type Target = Registry<DataBuild>;
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl std::ops::DerefMut for DataRegistry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.entries
    }
}

impl DataRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            entries: Registry::new("data source", "Data sources"),
            images: Vec::new(),
        }
    }

    /// Registers a source of images: one that applies the run's
    /// `--transform`s ([`DataContext::transforms`]) to its training samples
    /// and `--test-transform`s to its evaluation samples. Runs refuse
    /// transforms with any other source.
    pub fn register_images(&mut self, entry: DataEntry) {
        self.images.push(entry.name.clone());
        self.entries.register(entry);
    }

    /// Whether the source named `name` (any of its names) reads images.
    pub fn takes_transforms(&self, name: &str) -> bool {
        self.entries
            .lookup(name)
            .is_ok_and(|e| self.images.contains(&e.name))
    }

    /// `text` resolved: the canonical name and every option's effective
    /// value, its file options made absolute (so a run resumes from any
    /// working directory).
    pub fn resolve_text(&self, text: &str) -> kiln_tensor::Result<String> {
        let mut spec = self.resolve(&parse_path_first(&self.entries, text)?)?;
        absolute_paths(&mut spec, &["path", "test"])?;
        Ok(spec.to_string())
    }

    /// Loads the splits `text` names.
    pub fn load(&self, text: &str, context: &DataContext) -> Result<Splits> {
        let (entry, mut spec) = self
            .entries
            .prepare(&parse_path_first(&self.entries, text)?)?;
        (entry.build)(&mut spec, context)
    }
}

/// An entry for a source read from a config `C` by `load`: its options and
/// their defaults are what `C::default()` visits.
pub fn data_entry<C>(
    name: &str,
    summary: &str,
    load: impl Fn(C, &DataContext) -> Result<Splits> + Send + Sync + 'static,
) -> DataEntry
where
    C: Options + Default + 'static,
{
    let build: Arc<DataBuild> = Arc::new(move |spec: &mut Spec, context: &DataContext| {
        let mut cfg = C::default();
        spec.apply(&mut cfg)?;
        load(cfg, context)
    });
    Entry::new(name, summary, build).options_of(&mut C::default())
}

/// Parses `text` for `registry`: an entry whose first option is `path`
/// takes the file first without its key (`csv:data.csv,target=y` is
/// `csv:path=data.csv,target=y`).
pub fn parse_path_first<B: ?Sized>(
    registry: &Registry<B>,
    text: &str,
) -> kiln_tensor::Result<Spec> {
    let (name, rest) = text.trim().split_once(':').unwrap_or((text.trim(), ""));
    // The first option ends at the first `,` outside brackets
    // (`tensors:[data/a,b.safetensors]` is one path).
    let pieces = kiln_tensor::spec::split_outside_brackets(rest, ',')?;
    let first = pieces.first().copied().unwrap_or_default();
    // An unknown name is the error to report, whatever follows it.
    let entry = registry.lookup(name.trim())?;
    let takes_path = entry.options.first().is_some_and(|o| o.name == "path");
    // A bracketed first option is a path whatever it holds.
    let positional = kiln_tensor::spec::unbracket(first) != first || !first.contains('=');
    if takes_path && !first.is_empty() && positional {
        let others = pieces.get(1..).unwrap_or_default().join(",");
        return format!("{name}:path={first},{others}").parse();
    }
    text.parse()
}

/// Makes the file options `keys` of `spec` absolute (those it has and that
/// are not `none`).
pub fn absolute_paths(spec: &mut Spec, keys: &[&str]) -> kiln_tensor::Result<()> {
    for key in keys {
        if let Some(path) = spec.raw(key).filter(|p| p != "none") {
            // A path holding `,` is given (and kept) in brackets.
            let path = absolute(Path::new(kiln_tensor::spec::unbracket(&path)));
            spec.set(key, path.display().to_string())?;
        }
    }
    Ok(())
}

/// `path` made absolute against the working directory (without resolving
/// links); unchanged if it already is, or if there is no working directory.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The (Fashion)MNIST directory the setup provides when neither `--data`
/// nor `--data-dir` is given: `$KILN_DATA_DIR`, the build's default, or
/// Debian's location.
pub fn default_data_dir() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("KILN_DATA_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(option_env!("KILN_DEFAULT_DATA_DIR").map(PathBuf::from))
        .chain([PathBuf::from("/usr/share/datasets/fashion-mnist")])
        .collect();
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            Error::Data {
                path: candidates.first().cloned().unwrap_or_default(),
                message: format!(
                    "no FashionMNIST found (tried {}); run `make setup` or pass --data-dir DIR",
                    tried.join(", ")
                ),
            }
        })
}

/// The classes of (Fashion)MNIST.
pub const MNIST_CLASSES: i64 = 10;

/// `idx:DIR`'s options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdxConfig {
    /// The directory holding the four IDX files.
    pub path: String,
}

impl Options for IdxConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "path",
                "directory with the four (Fashion)MNIST IDX files, gzipped or not (idx:DIR for short)",
            )
            .required(),
            &mut self.path,
        )
    }
}

/// `csv:PATH,target=COLUMN`'s options.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvConfig {
    /// The file.
    pub path: String,
    /// The target column.
    pub target: String,
    /// The share of rows held out for testing (seeded split).
    pub test_fraction: f64,
    /// The target column holds class indices `0..classes` (classification);
    /// `None`: regression values.
    pub classes: Option<i64>,
    /// Regression targets standardised with the training rows' mean and
    /// standard deviation (losses are then in standard deviations).
    pub standardize_targets: bool,
}

impl Default for CsvConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            target: String::new(),
            test_fraction: 0.2,
            classes: None,
            standardize_targets: false,
        }
    }
}

impl Options for CsvConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "path",
                "the CSV file, with a header row (csv:PATH for short)",
            )
            .required(),
            &mut self.path,
        )?;
        v.option(
            OptionInfo::new("target", "the column to predict").required(),
            &mut self.target,
        )?;
        v.option(
            OptionInfo::new(
                "test_fraction",
                "share of the rows held out for testing (split with the run's seed)",
            ),
            &mut self.test_fraction,
        )?;
        v.option(
            OptionInfo::new(
                "classes",
                "the target column holds class indices 0..classes (classification); none: regression values",
            ),
            &mut self.classes,
        )?;
        v.option(
            OptionInfo::new(
                "standardize_targets",
                "regression: standardise the targets with the training rows' mean and standard deviation",
            ),
            &mut self.standardize_targets,
        )
    }
}

/// Errors unless `fraction` is strictly between 0 and 1.
pub fn check_fraction(what: &str, fraction: f64) -> Result<()> {
    if fraction > 0.0 && fraction < 1.0 {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{what} must be between 0 and 1 (exclusive), got {fraction}"
        )))
    }
}

/// kiln's data sources: `idx`, `csv`, `tensors`, `images`, `tokens`.
pub fn data_sources() -> DataRegistry {
    let mut r = DataRegistry::new();
    r.register(
        data_entry::<IdxConfig>(
            "idx",
            "(Fashion)MNIST's four IDX files (train/t10k images and labels): uint8 images scaled as ToTensor, 10 classes",
            |cfg, _| {
                let (train, test) = idx::load_dir(Path::new(&cfg.path))?;
                train.check_labels(MNIST_CLASSES)?;
                test.check_labels(MNIST_CLASSES)?;
                Ok(Splits {
                    train: Arc::new(train),
                    test: Arc::new(test),
                    task: Task::Classify {
                        classes: MNIST_CLASSES,
                    },
                    sampling: Sampling::Passes,
                })
            },
        )
        .aliases(&["mnist", "MNIST", "FashionMNIST"]),
    );
    r.register(data_entry::<CsvConfig>(
        "csv",
        "a CSV table of numbers with a header row: one column the regression target, the others the features",
        |cfg, context| {
            check_fraction("--data csv: test_fraction", cfg.test_fraction)?;
            let path = PathBuf::from(&cfg.path);
            let mut split = CsvData::load(&path, &cfg.target, cfg.test_fraction, context.seed)?;
            let task = match cfg.classes {
                Some(classes) => {
                    if cfg.standardize_targets {
                        return Err(Error::Usage("--data csv: standardize_targets is for regression targets; classes= makes them class labels".into()));
                    }
                    split.class_targets(classes)?;
                    Task::Classify { classes }
                }
                None => {
                    if cfg.standardize_targets {
                        split.standardize_targets()?;
                    }
                    Task::Regress { outputs: 1 }
                }
            };
            let name = |part: &str| format!("{} ({part})", path.display());
            Ok(Splits {
                train: Arc::new(crate::data::TensorDataset::new(
                    split.train_inputs,
                    split.train_targets,
                    &name("train split"),
                )?),
                test: Arc::new(crate::data::TensorDataset::new(
                    split.test_inputs,
                    split.test_targets,
                    &name("test split"),
                )?),
                task,
                sampling: Sampling::Passes,
            })
        },
    ));
    r.register(data_entry::<TensorsConfig>(
        "tensors",
        "your own tensors from a safetensors file: inputs [N, ...] and targets (int: classes, float: values)",
        |cfg, context| tensors::load(&cfg, context.seed),
    ));
    r.register_images(
        data_entry::<ImagesConfig>(
            "images",
            "an image folder as torchvision's ImageFolder reads it (one sub-directory per class, PNG and JPEG decoded as PIL does), through --transform/--test-transform",
            |cfg, context| images::load(&cfg, context),
        )
        .aliases(&["ImageFolder"]),
    );
    r.register(data_entry::<TokensConfig>(
        "tokens",
        "nanoGPT's token directory (train.bin, val.bin, meta.pkl), read window by window: windows of block_size ids, targets shifted by one; batches drawn as nanoGPT's get_batch, evaluated on train and val",
        |cfg, _| {
            let data = Arc::new(TokenData::open(&cfg.source()?)?);
            Ok(Splits {
                train: Arc::new(TokenDataset::new(data.clone(), Split::Train)),
                test: Arc::new(TokenDataset::new(data.clone(), Split::Val)),
                task: Task::Classify {
                    classes: data.vocab_size(),
                },
                sampling: Sampling::RandomBatches,
            })
        },
    ));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_resolve_with_paths_first_and_made_absolute() -> Result<()> {
        let r = data_sources();
        let resolved = r.resolve_text("csv:/tmp/d.csv,target=y")?;
        assert_eq!(
            resolved,
            "csv:path=/tmp/d.csv,target=y,test_fraction=0.2,classes=none,standardize_targets=false"
        );
        // A path holding `,` is given and kept in brackets, with or without `path=`.
        for text in [
            "csv:[/tmp/a,b.csv],target=y",
            "csv:path=[/tmp/a,b.csv],target=y",
        ] {
            assert!(
                r.resolve_text(text)?
                    .starts_with("csv:path=[/tmp/a,b.csv],target=y,"),
                "{text}"
            );
        }
        assert!(r.resolve_text("idx:rel/dir")?.starts_with("idx:path=/"));
        assert!(r
            .resolve_text("ImageFolder:rel/train,test=rel/test")?
            .starts_with("images:path=/"));
        assert!(r.takes_transforms("images") && r.takes_transforms("ImageFolder"));
        assert!(!r.takes_transforms("tensors") && !r.takes_transforms("nothing"));
        let tokens = r.resolve_text("tokens:/d/chars,block_size=64")?;
        assert_eq!(
            tokens,
            "tokens:path=/d/chars,block_size=64,dtype=uint16,vocab_size=none"
        );
        let err = |t: &str| {
            r.resolve_text(t)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            err("csv:/tmp/d.csv").contains("target"),
            "{}",
            err("csv:/tmp/d.csv")
        );
        assert!(
            err("parquet:x").contains("unknown data source 'parquet'"),
            "{}",
            err("parquet:x")
        );
        Ok(())
    }
}
