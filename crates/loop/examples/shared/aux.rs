//! A network with a main and an auxiliary head, the data it needs and the
//! training step that combines both losses: what the `aux_loss` example
//! trains and kiln-loop's resume test interrupts.
use kiln_loop::data::{Dataset, Fields, Sample};
use kiln_loop::models::{Network, VarStoreModel};
use kiln_loop::{Batch, Model, Step, StepOutput};
use kiln_losses::{CrossEntropyLoss, Loss, MseLoss};
use kiln_tensor::init::linear;
use kiln_tensor::nn;
use kiln_tensor::rng::Generator;
use kiln_tensor::shared::SharedTensor;
use kiln_tensor::{Device, Kind, Tensor};

/// Points on two noisy rings with three fields: the point `xy`, its ring
/// `class` (0 inside, 1 outside) and its distance from the centre `radius`.
pub struct RingsWithRadius {
    xy: SharedTensor,
    class: SharedTensor,
    radius: SharedTensor,
}

impl RingsWithRadius {
    /// `n` points drawn from the global generator.
    pub fn new(n: i64) -> kiln_loop::Result<Self> {
        let options = (Kind::Float, Device::Cpu);
        let angle = Tensor::f_rand([n], options)?.f_mul_scalar(2.0 * std::f64::consts::PI)?;
        let class = Tensor::f_randint(2, [n], (Kind::Int64, Device::Cpu))?;
        let radius = class
            .f_to_kind(Kind::Float)?
            .f_mul_scalar(2.0)?
            .f_add_scalar(1.0)?
            .f_add(&Tensor::f_randn([n], options)?.f_mul_scalar(0.2)?)?;
        let xy = Tensor::f_stack(
            &[
                angle.f_cos()?.f_mul(&radius)?,
                angle.f_sin()?.f_mul(&radius)?,
            ],
            1,
        )?;
        Ok(Self {
            xy: SharedTensor::new(xy),
            class: SharedTensor::new(class),
            radius: SharedTensor::new(radius.f_unsqueeze(1)?),
        })
    }
}

impl Dataset for RingsWithRadius {
    fn len(&self) -> usize {
        self.class.size()[0] as usize
    }

    fn get(&self, index: usize, _rng: &mut Generator) -> kiln_loop::Result<Sample> {
        let i = index as i64;
        Ok(Sample::new()
            .with("xy", self.xy.f_get(i)?)
            .with("class", self.class.f_get(i)?)
            .with("radius", self.radius.f_get(i)?))
    }

    fn fields(&self) -> Fields {
        Fields {
            inputs: vec!["xy".into()],
            target: Some("class".into()),
        }
    }
}

/// A shared trunk with two heads: class logits and a radius estimate.
#[derive(Debug)]
pub struct TwoHeads {
    trunk: nn::Linear,
    classes: nn::Linear,
    radius: nn::Linear,
}

impl TwoHeads {
    /// Both heads' outputs.
    pub fn heads(&self, xy: &Tensor) -> kiln_loop::Result<(Tensor, Tensor)> {
        let h = xy
            .f_linear(&self.trunk.ws, self.trunk.bs.as_ref())?
            .f_tanh()?;
        Ok((
            h.f_linear(&self.classes.ws, self.classes.bs.as_ref())?,
            h.f_linear(&self.radius.ws, self.radius.bs.as_ref())?,
        ))
    }
}

impl Network for TwoHeads {
    /// The main head (what `kiln eval`-style code and the metrics see).
    fn forward_t(&self, xy: &Tensor, _train: bool) -> kiln_loop::Result<Tensor> {
        Ok(self.heads(xy)?.0)
    }
}

/// The two-headed network, initialised from the global generator.
pub fn two_heads(width: i64) -> kiln_loop::Result<VarStoreModel<TwoHeads>> {
    VarStoreModel::new(Device::Cpu, |root| {
        Ok(TwoHeads {
            trunk: linear(&(root / "trunk"), 2, width, true)?,
            classes: linear(&(root / "classes"), width, 2, true)?,
            radius: linear(&(root / "radius"), width, 1, true)?,
        })
    })
}

/// Cross-entropy on the class plus `weight` × MSE on the radius; the
/// auxiliary loss is reported as the metric `aux_loss`.
pub struct AuxStep {
    /// The auxiliary loss's weight in the total.
    pub weight: f64,
}

impl Step for AuxStep {
    fn forward(&self, model: &dyn Model, batch: &Batch) -> kiln_loop::Result<StepOutput> {
        let net = model
            .downcast_ref::<VarStoreModel<TwoHeads>>()
            .ok_or_else(|| kiln_loop::Error::InvalidArgument("AuxStep trains TwoHeads".into()))?
            .module();
        let (logits, radius) = net.heads(batch.input()?)?;
        let main = CrossEntropyLoss::default().forward(&logits, batch.targets()?)?;
        let aux = MseLoss::default().forward(&radius, batch.get("radius")?)?;
        let total = main.f_add(&aux.f_mul_scalar(self.weight)?)?;
        Ok(StepOutput::new(total)
            .output(logits)
            .metric("aux_loss", aux))
    }
}
