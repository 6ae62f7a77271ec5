//! A [`Dataset`] of one's own that reads one file per sample from a
//! directory (`DIR/<class>/<name>.f32`: little-endian float32 features),
//! registered as the data source `files:DIR[,noise=S]`: what the
//! `file_per_sample` example trains and kiln-loop's run test checks.
//!
//! Nothing is held in memory but the file names: `get` reads its file, and
//! adds Gaussian noise (an augmentation) drawn from the generator the
//! loader hands it — the worker's own with `--workers N`, so the same seed
//! gives the same batches for a given N, as PyTorch's workers.
use kiln_loop::data::source::{data_entry, DataContext, Sampling, Splits, Task};
use kiln_loop::data::{random_split, Dataset, Fields, Sample};
use kiln_loop::run::Registries;
use kiln_loop::{Error, Result};
use kiln_tensor::rng::Generator;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Kind, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One file per sample under `DIR/<class>/`, classes in sorted order (as
/// torchvision's `DatasetFolder`).
#[derive(Debug)]
pub struct SampleFiles {
    files: Vec<(PathBuf, i64)>,
    classes: i64,
    noise: f64,
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl SampleFiles {
    /// Lists `dir`'s class directories and their `.f32` files, sorted.
    pub fn open(dir: &Path, noise: f64) -> Result<Self> {
        let sorted = |dir: &Path| -> Result<Vec<PathBuf>> {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| io_error(dir, e))?
                .map(|e| e.map(|e| e.path()).map_err(|e| io_error(dir, e)))
                .collect::<Result<Vec<_>>>()?;
            entries.sort();
            Ok(entries)
        };
        let classes: Vec<PathBuf> = sorted(dir)?.into_iter().filter(|p| p.is_dir()).collect();
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            for file in sorted(class)? {
                if file.extension().is_some_and(|e| e == "f32") {
                    files.push((file, label as i64));
                }
            }
        }
        if files.is_empty() {
            return Err(Error::Data {
                path: dir.to_path_buf(),
                message: "no class directory holds a .f32 file".into(),
            });
        }
        Ok(Self {
            files,
            classes: classes.len() as i64,
            noise,
        })
    }

    /// The number of classes (class directories).
    pub fn classes(&self) -> i64 {
        self.classes
    }
}

impl Dataset for SampleFiles {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn get(&self, index: usize, rng: &mut Generator) -> Result<Sample> {
        let (path, label) = self.files.get(index).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "index {index} is past {} samples",
                self.files.len()
            ))
        })?;
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        if bytes.is_empty() || bytes.len() % 4 != 0 {
            return Err(Error::Data {
                path: path.clone(),
                message: format!(
                    "{} bytes is not a whole number of float32 values",
                    bytes.len()
                ),
            });
        }
        let features = Tensor::f_from_data_size(&bytes, &[bytes.len() as i64 / 4], Kind::Float)?;
        let noisy = features.f_add(
            &rng.randn(&features.size(), Kind::Float)?
                .f_mul_scalar(self.noise)?,
        )?;
        Ok(Sample::new()
            .with("inputs", noisy)
            .with("targets", Tensor::from(*label)))
    }

    fn fields(&self) -> Fields {
        Fields::default()
    }

    fn describe(&self, index: usize) -> String {
        self.files.get(index).map_or_else(
            || format!("sample {index}"),
            |(p, _)| p.display().to_string(),
        )
    }
}

/// `files:DIR[,noise=S,test_fraction=F]`.
#[derive(Debug, Clone)]
struct FilesConfig {
    path: String,
    noise: f64,
    test_fraction: f64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            noise: 0.1,
            test_fraction: 0.2,
        }
    }
}

impl Options for FilesConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("path", "the directory of class directories").required(),
            &mut self.path,
        )?;
        v.option(
            OptionInfo::new("noise", "standard deviation of the noise added per read"),
            &mut self.noise,
        )?;
        v.option(
            OptionInfo::new("test_fraction", "share held out for testing (seeded)"),
            &mut self.test_fraction,
        )
    }
}

/// Writes `per_class` samples of `classes` blobs (`features` values each,
/// centred on the class index) under `dir`, one file per sample.
pub fn write_demo(dir: &Path, classes: usize, per_class: usize, features: usize) -> Result<()> {
    let mut state = 0x9e37_79b9_u32;
    for class in 0..classes {
        let class_dir = dir.join(format!("class-{class}"));
        std::fs::create_dir_all(&class_dir).map_err(|e| io_error(&class_dir, e))?;
        for i in 0..per_class {
            let bytes: Vec<u8> = (0..features)
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    let jitter = (state as f32 / u32::MAX as f32) - 0.5;
                    (class as f32 + jitter).to_le_bytes()
                })
                .collect();
            let path = class_dir.join(format!("{i:05}.f32"));
            std::fs::write(&path, bytes).map_err(|e| io_error(&path, e))?;
        }
    }
    Ok(())
}

/// kiln's registries plus `files`.
pub fn registries() -> Registries {
    let mut r = Registries::default();
    r.data.register(data_entry::<FilesConfig>(
        "files",
        "one .f32 file per sample under DIR/<class>/ (an example of your own)",
        |cfg, context: &DataContext| {
            let all = SampleFiles::open(Path::new(&cfg.path), cfg.noise)?;
            let classes = all.classes();
            let (train, test) = random_split(
                Arc::new(all),
                cfg.test_fraction,
                context.seed,
                "files: test_fraction",
            )?;
            Ok(Splits {
                train: Arc::new(train),
                test: Arc::new(test),
                task: Task::Classify { classes },
                sampling: Sampling::Passes,
            })
        },
    ));
    r
}
