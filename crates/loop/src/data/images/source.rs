//! `--data images:DIR[,test=DIR,test_fraction=F]`: an image folder as a
//! run's data, as `torchvision.datasets.ImageFolder(DIR, transform=...)`
//! gives it to a `DataLoader`.
//!
//! Each sample is the image decoded as `ImageFolder`'s default loader
//! decodes it, through the run's transform [`Pipeline`] (`--transform` for
//! training, `--test-transform` for evaluation; at least the
//! `ToDtype(torch.float32, scale=True)` torchvision's canonical pipeline
//! ends with), and its class index. The transforms draw from the generator
//! the loader passes in: the worker's, as in PyTorch.
//!
//! Without `test=DIR`, a seeded `test_fraction` of the folder is held out
//! for testing, split as `--data tensors:` splits its samples
//! ([`test_split`]); the held-out images go through the test transforms.
use super::folder::ImageFolder;
use super::transforms::Pipeline;
use crate::data::batch::{INPUTS, TARGETS};
use crate::data::source::{check_fraction, DataContext, Sampling, Splits, Task};
use crate::data::tabular::test_split;
use crate::data::{Dataset, Sample, Subset};
use crate::{Error, Result};
use kiln_tensor::rng::Generator;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Device, Kind, Tensor};
use std::path::Path;
use std::sync::Arc;

/// `images:DIR[,test=DIR,test_fraction=F]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagesConfig {
    /// The training folder (one sub-directory per class).
    pub path: String,
    /// A test folder with the same classes; without it a share of the
    /// training folder is held out.
    pub test: Option<String>,
    /// The share held out for testing when there is no test folder.
    pub test_fraction: f64,
}

impl Default for ImagesConfig {
    /// 20 % held out for testing, as `tensors:`.
    fn default() -> Self {
        Self {
            path: String::new(),
            test: None,
            test_fraction: 0.2,
        }
    }
}

impl Options for ImagesConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "path",
                "the training folder, one sub-directory per class (images:DIR for short)",
            )
            .required(),
            &mut self.path,
        )?;
        v.option(
            OptionInfo::new(
                "test",
                "a test folder with the same classes (default: hold out test_fraction)",
            ),
            &mut self.test,
        )?;
        v.option(
            OptionInfo::new(
                "test_fraction",
                "share held out for testing without a test folder (split with the run's seed)",
            ),
            &mut self.test_fraction,
        )
    }
}

/// The images of an [`ImageFolder`] through a transform [`Pipeline`]:
/// `ImageFolder(root, transform=v2.Compose([v2.ToImage(), ...]))`.
/// Samples are the fields `inputs` (the transformed image) and `targets`
/// (the class index, int64).
#[derive(Debug, Clone)]
pub struct ImageDataset {
    folder: Arc<ImageFolder>,
    pipeline: Arc<Pipeline>,
    flag: &'static str,
}

impl ImageDataset {
    /// The images of `folder` through `pipeline`; `flag` names the
    /// pipeline's flag in errors (`--transform`).
    pub fn new(folder: Arc<ImageFolder>, pipeline: Arc<Pipeline>, flag: &'static str) -> Self {
        Self {
            folder,
            pipeline,
            flag,
        }
    }

    /// The folder read.
    pub fn folder(&self) -> &ImageFolder {
        &self.folder
    }
}

impl Dataset for ImageDataset {
    fn len(&self) -> usize {
        self.folder.len()
    }

    /// The image decoded and transformed, and its class. A file that cannot
    /// be decoded, or a transform that does not fit it, is an error naming
    /// the file (and the flag of the transform).
    fn get(&self, index: usize, rng: &mut Generator) -> Result<Sample> {
        let (image, class) = self.folder.load(index)?;
        let path = &self.folder.samples()[index].0;
        let input = self.pipeline.apply(image, rng).map_err(|e| Error::Data {
            path: path.clone(),
            message: format!("{} {e}", self.flag),
        })?;
        let target = Tensor::f_scalar_tensor(class, (Kind::Int64, Device::Cpu))?;
        Ok(Sample::new().with(INPUTS, input).with(TARGETS, target))
    }

    fn describe(&self, index: usize) -> String {
        self.folder.samples().get(index).map_or_else(
            || format!("image {index}"),
            |(p, _)| p.display().to_string(),
        )
    }
}

/// Loads `cfg`'s folders into train and test sets with the transforms of
/// `context`; `context.seed` splits off the test set when there is no test
/// folder.
pub fn load(cfg: &ImagesConfig, context: &DataContext) -> Result<Splits> {
    check_fraction("--data images: test_fraction", cfg.test_fraction)?;
    let root = Path::new(&cfg.path);
    let folder = Arc::new(ImageFolder::scan(root)?);
    let classes = folder.classes().len() as i64;
    let train_set = |folder: Arc<ImageFolder>| {
        ImageDataset::new(folder, context.transforms.clone(), "--transform")
    };
    let test_set = |folder: Arc<ImageFolder>| {
        ImageDataset::new(folder, context.test_transforms.clone(), "--test-transform")
    };
    let (train, test): (Arc<dyn Dataset>, Arc<dyn Dataset>) = match &cfg.test {
        Some(test_root) => {
            let test_root = Path::new(test_root);
            let test = ImageFolder::scan(test_root)?;
            if test.classes() != folder.classes() {
                return Err(Error::Data {
                    path: test_root.to_path_buf(),
                    message: format!(
                        "the test folder's classes ({}) are not the training folder's ({}, in {}): their labels would not match",
                        test.classes().join(", "),
                        folder.classes().join(", "),
                        root.display()
                    ),
                });
            }
            (
                Arc::new(train_set(folder)),
                Arc::new(test_set(Arc::new(test))),
            )
        }
        None => {
            let (test_ids, train_ids) =
                test_split(folder.len(), cfg.test_fraction, context.seed, "images").map_err(
                    |e| Error::Data {
                        path: root.to_path_buf(),
                        message: e.to_string(),
                    },
                )?;
            let ids = |v: Vec<usize>| v.into_iter().map(|i| i as i64).collect::<Vec<_>>();
            (
                Arc::new(Subset::new(
                    Arc::new(train_set(folder.clone())),
                    ids(train_ids),
                )?),
                Arc::new(Subset::new(Arc::new(test_set(folder)), ids(test_ids))?),
            )
        }
    };
    Ok(Splits {
        train,
        test,
        task: Task::Classify { classes },
        sampling: Sampling::Passes,
    })
}
