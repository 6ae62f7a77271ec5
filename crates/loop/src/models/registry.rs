//! Models by spec: `mlp:hidden=256;128,dropout=0.2`, `cnn:channels=16;32`,
//! `torchscript:model.pt`.
//!
//! The registry is kiln-tensor's [`Registry`], the one registry type of
//! kiln (losses, optimizers and schedulers use it too); `kiln models`
//! prints its [`describe`](Registry::describe). Each entry's options and
//! defaults come from its config's [`Options`] impl and `Default`
//! ([`model_entry`]). A builder gets what it needs to know about the data
//! ([`ModelData`]: the shape of one sample, the number of classes or
//! values, the training set for statistics, the device). A downstream crate
//! [`register`](Registry::register)s its own networks the same way.
use crate::data::{Dataset, Task};
use crate::models::cnn::{self, CnnConfig};
use crate::models::gpt::{Gpt, GptConfig};
use crate::models::mlp::{self, MlpConfig};
use crate::models::torchscript::TorchScriptModel;
use crate::models::Model;
use crate::{Error, Result};
use kiln_tensor::spec::{Entry, OptionInfo, OptionVisitor, Options, Registry, Spec};
use kiln_tensor::{Device, Kind, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

/// What a model builder knows about the data it will train on.
#[derive(Clone, Copy)]
pub struct ModelData<'a> {
    /// The training set.
    pub train: &'a dyn Dataset,
    /// Classes (class-index targets) or values per sample (regression).
    pub task: Task,
    /// Where the model goes.
    pub device: Device,
}

impl std::fmt::Debug for ModelData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelData")
            .field("train", &self.train.len())
            .field("task", &self.task)
            .field("device", &self.device)
            .finish()
    }
}

impl ModelData<'_> {
    /// The first training sample's model input, read with a generator of
    /// its own (a model's construction never moves the global generator).
    pub fn first_input(&self) -> Result<Tensor> {
        let sample = self
            .train
            .get(0, &mut kiln_tensor::rng::Generator::new(0)?)?;
        let fields = self.train.fields();
        let name = fields.inputs.first().ok_or_else(|| {
            Error::InvalidArgument("the training data names no model input".into())
        })?;
        Ok(sample.get(name)?.shallow_clone())
    }

    /// The shape of one sample as the model sees it (`[1, 28, 28]`).
    pub fn sample_shape(&self) -> Result<Vec<i64>> {
        Ok(self.first_input()?.size())
    }

    /// Values per sample (`784` for 28×28 images).
    pub fn features(&self) -> Result<i64> {
        Ok(self.sample_shape()?.iter().product())
    }

    /// The number of outputs per sample: classes, or regression values.
    pub fn outputs(&self) -> i64 {
        match self.task {
            Task::Classify { classes } => classes,
            Task::Regress { outputs } => outputs,
            Task::Binary => 1,
        }
    }

    /// The whole training set's first input as the model sees it, stacked
    /// (for statistics such as standardisation).
    pub fn train_inputs(&self) -> Result<Tensor> {
        let fields = self.train.fields();
        let name = fields.inputs.first().ok_or_else(|| {
            Error::InvalidArgument("the training data names no model input".into())
        })?;
        let indices: Vec<i64> = (0..self.train.len() as i64).collect();
        let mut rng = kiln_tensor::rng::Generator::new(0)?;
        let stacked = match self.train.get_batch(&indices, &mut rng)? {
            Some(stacked) => stacked,
            None => {
                let samples = (0..self.train.len())
                    .map(|i| self.train.get(i, &mut rng))
                    .collect::<Result<Vec<_>>>()?;
                let batch = crate::data::collate(samples, std::sync::Arc::new(fields.clone()))?;
                crate::data::Sample::new().with(name.clone(), batch.get(name)?.shallow_clone())
            }
        };
        Ok(stacked.get(name)?.shallow_clone())
    }
}

/// Builds a model from a resolved spec (canonical keys, every option present).
pub type ModelBuild = dyn Fn(&mut Spec, &ModelData<'_>) -> Result<Box<dyn Model>> + Send + Sync;

/// A registered model: name, aliases, summary, options, builder.
pub type ModelEntry = Entry<ModelBuild>;

/// Models by spec: a [`Registry`] of [`ModelEntry`] (which it derefs to,
/// for `register`, `describe`, `names`…) plus [`ModelRegistry::build`].
/// [`models`] holds the built-in ones.
#[derive(Debug, Clone)]
pub struct ModelRegistry(Registry<ModelBuild>);

impl Default for ModelRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for ModelRegistry {
    type Target = Registry<ModelBuild>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ModelRegistry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self(Registry::new("model", "Models"))
    }

    /// Parses a model spec. An entry whose first option is `path` takes the
    /// file first without its key: `torchscript:model.pt` is
    /// `torchscript:path=model.pt`.
    pub fn parse(&self, text: &str) -> kiln_tensor::Result<Spec> {
        crate::data::source::parse_path_first(&self.0, text)
    }

    /// `text` resolved: the canonical name and every option's effective
    /// value ([`Registry::resolve`]), a `path` made absolute (so a run
    /// resumes from any working directory).
    pub fn resolve_text(&self, text: &str) -> kiln_tensor::Result<String> {
        let mut spec = self.resolve(&self.parse(text)?)?;
        crate::data::source::absolute_paths(&mut spec, &["path"])?;
        Ok(spec.to_string())
    }

    /// Builds the model `spec` names for `data`. Unknown names and options
    /// and bad values are [`Error::Tensor`] errors before any builder runs;
    /// then what the builder refuses (a network that does not fit the data,
    /// a file that is not a module).
    pub fn build(&self, spec: &str, data: &ModelData<'_>) -> Result<Box<dyn Model>> {
        let (entry, mut spec) = self.0.prepare(&self.parse(spec)?)?;
        (entry.build)(&mut spec, data)
    }
}

/// An entry for a model made from a config `C` by `make`: its options and
/// their defaults are what `C::default()` visits, and its builder reads the
/// spec into `C::default()`.
pub fn model_entry<C>(
    name: &str,
    summary: &str,
    make: impl Fn(C, &ModelData<'_>) -> Result<Box<dyn Model>> + Send + Sync + 'static,
) -> ModelEntry
where
    C: Options + Default + 'static,
{
    let build: Arc<ModelBuild> = Arc::new(move |spec: &mut Spec, data: &ModelData<'_>| {
        let mut cfg = C::default();
        spec.apply(&mut cfg)?;
        make(cfg, data)
    });
    Entry::new(name, summary, build).options_of(&mut C::default())
}

/// `torchscript`'s options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TorchScriptConfig {
    /// The file `torch.jit.save` wrote.
    pub path: String,
    /// The part of a tuple, list or dict result to train on: a position
    /// (`0`) or a key (`logits`); none: the result, a tensor.
    pub output: Option<String>,
}

impl Options for TorchScriptConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "path",
                "the file torch.jit.save wrote (torchscript:PATH for short)",
            )
            .required(),
            &mut self.path,
        )?;
        v.option(
            OptionInfo::new(
                "output",
                "for a forward returning a tuple, list or dict: the element (0, 1…) or key (logits) to train on",
            ),
            &mut self.output,
        )
    }
}

/// The model a run trains when `--model` is not given: the quickstart MLP
/// for class labels, a standardising `mlp:hidden=64;64` for regression.
pub fn default_spec(task: Task) -> &'static str {
    match task {
        Task::Classify { .. } | Task::Binary => "mlp",
        Task::Regress { .. } => "mlp:hidden=64;64,standardize=true",
    }
}

/// Layers that multiply their inputs (`mlp`, `cnn`) need floating-point
/// ones; integer inputs are kept as they are stored, for models that embed
/// them (`gpt`), so an integer file reaches `model` as integers.
fn float_inputs(data: &ModelData<'_>, model: &str) -> Result<()> {
    let kind = data.first_input()?.kind();
    if matches!(
        kind,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    ) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "--model {model} needs floating-point inputs, but the data's are {} (integer inputs are kept as they are for models that embed them, such as gpt); store them as float32 (or uint8 images, which are scaled to [0, 1])",
        format!("{kind:?}").to_lowercase()
    )))
}

/// `gpt`'s sizes from the data: token data presents itself as class
/// indices (`Task::Classify { classes: vocab_size }`) over samples of
/// `[block_size]` token ids.
fn gpt_from_data(mut cfg: GptConfig, data: &ModelData<'_>) -> Result<Box<dyn Model>> {
    let shape = data.sample_shape()?;
    let (Task::Classify { classes }, &[block_size]) = (data.task, &shape[..]) else {
        return Err(Error::Usage(format!(
            "--model gpt trains on token ids (--data tokens:DIR): samples of [block_size] ids with class-index targets, but this data has samples of shape {shape:?} and {}",
            match data.task {
                Task::Classify { .. } => "class targets",
                Task::Regress { .. } => "regression targets",
                Task::Binary => "binary targets",
            }
        )));
    };
    cfg.vocab_size = classes;
    cfg.block_size = block_size;
    Ok(Box::new(Gpt::new(&cfg, data.device)?))
}

/// The built-in models: `mlp`, `cnn`, `gpt`, `torchscript`.
pub fn models() -> ModelRegistry {
    let mut r = ModelRegistry::new();
    r.register(
        model_entry::<MlpConfig>(
            "mlp",
            "Flatten, then Linear + activation (+ Dropout) per hidden layer, Linear; default: the PyTorch quickstart's NeuralNetwork",
            |cfg, data| {
                float_inputs(data, "mlp")?;
                let standardize = if cfg.standardize {
                    Some(data.train_inputs()?.f_flatten(1, -1)?)
                } else {
                    None
                };
                let model = mlp::build(
                    &cfg,
                    data.features()?,
                    data.outputs(),
                    standardize.as_ref(),
                    data.device,
                )?;
                Ok(Box::new(model))
            },
        )
        .alias("NeuralNetwork"),
    );
    r.register(
        model_entry::<CnnConfig>(
            "cnn",
            "PyTorch's MNIST example Net: Conv2d + ReLU per channels entry, max_pool2d, Dropout, fc1 + ReLU, Dropout, fc2, log_softmax; trains with nll unless --loss says otherwise",
            |cfg, data| {
                let Task::Classify { classes } = data.task else {
                    return Err(Error::Usage(format!(
                        "--model cnn classifies (it ends in log_softmax), but this data has {}; use --model mlp",
                        if data.task == Task::Binary { "binary targets scored by one logit" } else { "regression targets" }
                    )));
                };
                float_inputs(data, "cnn")?;
                Ok(Box::new(cnn::build(&cfg, &data.sample_shape()?, classes, data.device)?))
            },
        )
        .alias("Net"),
    );
    r.register(
        model_entry::<GptConfig>(
            "gpt",
            "nanoGPT's GPT (model.py): token and position embeddings, n_layer pre-norm blocks of causal self-attention and a GELU MLP, lm_head tied to the token embedding; vocab_size and block_size from the data",
            gpt_from_data,
        )
        .alias("GPT"),
    );
    r.register(
        model_entry::<TorchScriptConfig>(
            "torchscript",
            "a module saved with torch.jit.save(torch.jit.script(model)) (or trace): its forward, parameters and buffers, trained by kiln",
            |cfg, data| {
                let output = cfg.output.as_deref().unwrap_or("").parse().unwrap_or_default();
                Ok(Box::new(
                    TorchScriptModel::load(&PathBuf::from(cfg.path), data.device)?
                        .with_output(output),
                ))
            },
        )
        .aliases(&["TorchScript", "jit"]),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_resolve_with_defaults_and_paths_first() -> Result<()> {
        let r = models();
        assert_eq!(
            r.resolve_text("mlp")?,
            "mlp:hidden=512;512,activation=relu,dropout=0.0,standardize=false"
        );
        assert_eq!(
            r.resolve_text("Net:dropout1=0.1")?,
            "cnn:channels=32;64,kernel_size=3,pool=2,hidden=128,dropout1=0.1,dropout2=0.5"
        );
        assert_eq!(
            r.resolve_text("torchscript:/tmp/m.pt")?,
            "torchscript:path=/tmp/m.pt,output=none"
        );
        assert_eq!(
            r.resolve_text("jit:path=/tmp/m.pt,output=logits")?,
            "torchscript:path=/tmp/m.pt,output=logits"
        );
        let err = |t: &str| {
            r.resolve_text(t)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            err("cnn:chanels=8").contains("did you mean channels"),
            "{}",
            err("cnn:chanels=8")
        );
        assert!(
            err("resnet").starts_with("unknown model 'resnet'"),
            "{}",
            err("resnet")
        );
        assert!(
            err("torchscript").contains("option path is required"),
            "{}",
            err("torchscript")
        );
        assert!(
            err("mlp:activation=elu").contains("activation"),
            "{}",
            err("mlp:activation=elu")
        );
        Ok(())
    }
}
