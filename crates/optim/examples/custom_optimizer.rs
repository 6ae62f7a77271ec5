//! A downstream optimizer: Lion (Chen et al., 2023), written against
//! kiln-optim's public API, training a linear regression.
//!
//! Only the update rule and the hyperparameter table are written here; the
//! generic [`kiln_optim::Grouped`] adaptor turns it into a full [`Optimizer`] (param
//! groups, named state, state dicts, `zero_grad`, hyperparameter access for
//! schedulers), and the registry makes it available by spec string, with its
//! options and defaults (from the table and `Default`) in `describe()`.
//!
//! ```text
//! cargo run -p kiln-optim --example custom_optimizer
//! ```
use kiln_optim::{optimizers, rule_entry, NamedParameter, Optimizer, ParamState, Result, Rule};
use kiln_tensor::{ops, tch, Device, Kind, Reduction, Tensor};

/// Lion's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct LionConfig {
    lr: f64,
    betas: (f64, f64),
    weight_decay: f64,
}

impl Default for LionConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            betas: (0.9, 0.99),
            weight_decay: 0.0,
        }
    }
}

impl Rule for LionConfig {
    const NAME: &'static str = "lion";
    kiln_optim::hyperparameter_table! {
        lr: f64 = "learning rate",
        betas: (f64, f64) = "interpolation factors of the update and of the momentum",
        weight_decay: f64 = "decoupled weight decay",
    }

    fn validate(&self) -> Result<()> {
        if self.lr.is_nan() || self.lr < 0.0 {
            return Err(kiln_optim::Error::InvalidHyperparameter(format!(
                "Invalid learning rate: {}",
                self.lr
            )));
        }
        Ok(())
    }

    /// c = β1 m + (1 − β1) g;  θ ← θ (1 − γλ) − γ sign(c);  m ← β2 m + (1 − β2) g
    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let m = state.buffer_or_init("exp_avg", || Ok(param.f_zeros_like()?))?;
        state.step += 1.0;
        let c = m.f_lerp(grad, 1.0 - self.betas.0)?;
        let _ = param
            .shallow_clone()
            .f_mul_scalar_(1.0 - self.lr * self.weight_decay)?;
        ops::add_(param, &c.f_sign()?, -self.lr)?;
        let _ = m.shallow_clone().f_lerp_(grad, 1.0 - self.betas.1)?;
        Ok(())
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    tch::manual_seed(0);
    let opts = (Kind::Float, Device::Cpu);
    // y = x · [2, −3, 0.5] + 1 + noise
    let x = Tensor::f_randn([256, 3], opts)?;
    let true_w = Tensor::from_slice(&[2.0f32, -3.0, 0.5]);
    let y = x
        .f_matmul(&true_w)?
        .f_add_scalar(1.0)?
        .f_add(&Tensor::f_randn([256], opts)?.f_mul_scalar(0.05)?)?;

    let w = Tensor::f_zeros([3], opts)?.set_requires_grad(true);
    let b = Tensor::f_zeros([1], opts)?.set_requires_grad(true);
    let params = vec![
        NamedParameter {
            name: "linear.weight".into(),
            tensor: w.shallow_clone(),
        },
        NamedParameter {
            name: "linear.bias".into(),
            tensor: b.shallow_clone(),
        },
    ];

    // Register it next to the built-in optimizers and build it from a spec.
    let mut registry = optimizers();
    registry
        .register(rule_entry::<LionConfig>("Lion: sign of an interpolated momentum").alias("Lion"));
    let spec = "Lion:lr=0.01,betas=0.9;0.9";
    println!("{spec} resolves to {}", registry.resolve(&spec.parse()?)?);
    let mut opt: Box<dyn Optimizer> = registry.build(spec, params)?;

    let mut first = None;
    let mut last = 0.0;
    for step in 1..=400 {
        opt.zero_grad()?;
        let pred = x.f_matmul(&w)?.f_add(&b)?;
        let loss = pred.f_mse_loss(&y, Reduction::Mean)?;
        loss.f_backward()?;
        opt.step()?;
        last = loss.f_double_value(&[])?;
        first.get_or_insert(last);
        if step % 40 == 0 || step == 1 {
            println!("step {step:3}  loss {last:.6}");
        }
        if step == 300 {
            // What an LR scheduler does: lower the learning rate of group 0.
            opt.set_lr(0, 0.001)?;
        }
    }
    let w: Vec<f32> = Vec::try_from(&w)?;
    let b: Vec<f32> = Vec::try_from(&b)?;
    println!("learned w = {w:?}, b = {b:?} (true: [2, -3, 0.5], 1)");
    if let Some(first) = first {
        if last >= first {
            return Err("the loss did not go down".into());
        }
    }
    Ok(())
}
