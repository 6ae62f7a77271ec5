//! nanoGPT's `GPT` (karpathy/nanoGPT, `model.py`): a decoder-only
//! transformer over token ids, with nanoGPT's numbers for the same seed.
//!
//! - **Names.** The state dict is nanoGPT's: `transformer.wte.weight`,
//!   `transformer.wpe.weight`, `transformer.h.{i}.ln_1.{weight,bias}`,
//!   `….attn.c_attn.*`, `….attn.c_proj.*`, `….ln_2.*`, `….mlp.c_fc.*`,
//!   `….mlp.c_proj.*`, `transformer.ln_f.*`, `lm_head.weight` (the biases
//!   only with `bias=true`), so a kiln checkpoint's weights load into
//!   nanoGPT's `GPT` with `load_state_dict`, and back.
//! - **Weight tying.** `lm_head.weight` *is* `transformer.wte.weight`: one
//!   tensor, listed once by [`Model::parameters`] (as `named_parameters()`
//!   lists it) and under both keys by [`Model::state_dict`] (as
//!   `state_dict()` does). Its gradient is the sum of both uses.
//! - **Initialisation**, drawn from the global generator in `GPT.__init__`'s
//!   order: each submodule's default at construction (`nn.Embedding`'s
//!   `normal_(0, 1)` for `wte` and `wpe`; `nn.Linear`'s kaiming-uniform
//!   weight and uniform bias for `c_attn`, `c_proj`, `c_fc`, `c_proj` of
//!   each block in turn; `lm_head`'s kaiming-uniform weight), then
//!   `self.apply(_init_weights)` in `apply`'s post-order (`wte`, `wpe`,
//!   each block's four linears: `normal_(0, 0.02)` weights, zero biases;
//!   `lm_head`, i.e. the tied weight again), then `normal_(0,
//!   0.02/sqrt(2·n_layer))` on every `c_proj.weight` in `named_parameters()`
//!   order. Every draw is libtorch's own kernel on a tensor of the same
//!   size, so the values and the generator's state afterwards are
//!   PyTorch's.
//! - **Forward**, op for op: `F.embedding` of the ids and of
//!   `arange(0, T)`, their sum, `F.dropout`; per block `x + attn(ln_1(x))`,
//!   `x + mlp(ln_2(x))` with `F.layer_norm(eps=1e-5)`,
//!   `scaled_dot_product_attention(q, k, v, is_causal=True,
//!   dropout_p=dropout if training else 0)`, exact GELU and `F.dropout` on
//!   the global generator; `ln_f`; `lm_head` (`F.linear` without bias).
//!   [`Model::forward`] returns the logits of every position `[B, T, V]`
//!   (nanoGPT's forward with targets); [`Gpt::last_logits`] computes only
//!   the last position as nanoGPT's inference path does
//!   (`lm_head(x[:, [-1], :])`, a matrix product of another shape, which
//!   may round differently from slicing the full logits).
//! - **Gradient checkpointing** ([`Gpt::set_gradient_checkpointing`]):
//!   each block under `torch.utils.checkpoint(block, x,
//!   use_reentrant=False)`, recomputed in backward with the forward's
//!   generator state: the same numbers, less memory.
//! - [`Gpt::generate`] is `GPT.generate`: crop to `block_size`, last
//!   logits / temperature, `torch.topk` masking with `-inf`, softmax,
//!   `torch.multinomial`, under no_grad.
use crate::models::Model;
use crate::{Error, Result};
use kiln_tensor::init::{linear, linear_weight_bound, uniform_};
use kiln_tensor::nn::{self, Init, VarStore};
use kiln_tensor::params::NamedParameter;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options, Spec};
use kiln_tensor::{Device, Kind, Tensor};

/// nanoGPT's `GPTConfig`; `Default` is its defaults (GPT-2 small with
/// GPT-2's vocabulary padded to 50304). A spec sets `n_layer`, `n_head`,
/// `n_embd`, `dropout` and `bias`; `vocab_size` and `block_size` come from
/// the data.
#[derive(Debug, Clone, PartialEq)]
pub struct GptConfig {
    /// The longest sequence (positions of `wpe`).
    pub block_size: i64,
    /// Token ids are `0..vocab_size` (rows of `wte`, outputs of `lm_head`).
    pub vocab_size: i64,
    /// Transformer blocks.
    pub n_layer: i64,
    /// Attention heads per block (`n_embd` must be a multiple).
    pub n_head: i64,
    /// Width of the residual stream.
    pub n_embd: i64,
    /// Dropout probability of the embeddings, attention and residual paths.
    pub dropout: f64,
    /// Biases in the linears and layer norms (GPT-2's); `false` is a bit
    /// better and faster, says nanoGPT.
    pub bias: bool,
}

impl Default for GptConfig {
    fn default() -> Self {
        Self {
            block_size: 1024,
            vocab_size: 50304,
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            dropout: 0.0,
            bias: true,
        }
    }
}

impl Options for GptConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("n_layer", "transformer blocks"),
            &mut self.n_layer,
        )?;
        v.option(
            OptionInfo::new("n_head", "attention heads (n_embd must be a multiple)"),
            &mut self.n_head,
        )?;
        v.option(
            OptionInfo::new("n_embd", "width of the residual stream"),
            &mut self.n_embd,
        )?;
        v.option(
            OptionInfo::new(
                "dropout",
                "dropout of the embeddings, attention and residual paths",
            ),
            &mut self.dropout,
        )?;
        v.option(
            OptionInfo::new("bias", "biases in the Linears and LayerNorms"),
            &mut self.bias,
        )
    }
}

impl GptConfig {
    /// The configuration a `gpt:…` spec (as a run's `config.json` records
    /// it) names for tokens `0..vocab_size` and windows of `block_size`:
    /// what `kiln sample` rebuilds a trained model from.
    pub fn from_spec(spec: &str, vocab_size: i64, block_size: i64) -> Result<Self> {
        let mut spec: Spec = spec.parse()?;
        if !spec.name.eq_ignore_ascii_case("gpt") {
            return Err(Error::Usage(format!(
                "the model is '{}', not gpt: only gpt models are sampled from",
                spec.name
            )));
        }
        let mut cfg = Self {
            vocab_size,
            block_size,
            ..Self::default()
        };
        spec.apply(&mut cfg)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Refuses a configuration nanoGPT cannot build (or builds into
    /// nonsense), in one line naming the options.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Usage(format!("--model gpt: {m}")));
        for (name, v) in [
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
            ("vocab_size", self.vocab_size),
            ("block_size", self.block_size),
        ] {
            if v < 1 {
                return bad(format!("{name} must be at least 1, got {v}"));
            }
        }
        if self.n_embd % self.n_head != 0 {
            return bad(format!(
                "n_embd ({}) must be a multiple of n_head ({}): each head gets n_embd / n_head dimensions",
                self.n_embd, self.n_head
            ));
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return bad(format!(
                "dropout probability has to be between 0 and 1, but got {}",
                self.dropout
            ));
        }
        Ok(())
    }
}

/// nanoGPT's `LayerNorm` (optional bias): `F.layer_norm(x, [n], w, b, 1e-5)`.
#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl LayerNorm {
    /// `weight = ones(n)`, `bias = zeros(n)`: no draw.
    fn new(path: &nn::Path<'_>, n: i64, bias: bool) -> Result<Self> {
        let weight = path.f_var("weight", &[n], Init::Const(1.0))?;
        let bias = if bias {
            Some(path.f_var("bias", &[n], Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.weight.size();
        Ok(x.f_layer_norm(n, Some(&self.weight), self.bias.as_ref(), 1e-5, true)?)
    }
}

/// `F.linear(x, w, b)`.
fn apply_linear(layer: &nn::Linear, x: &Tensor) -> Result<Tensor> {
    Ok(x.f_linear(&layer.ws, layer.bs.as_ref())?)
}

/// One transformer block: `CausalSelfAttention` and `MLP` behind layer norms.
#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    c_attn: nn::Linear,
    attn_proj: nn::Linear,
    ln_2: LayerNorm,
    c_fc: nn::Linear,
    mlp_proj: nn::Linear,
}

impl LayerNorm {
    fn shallow_clone(&self) -> Self {
        Self {
            weight: self.weight.shallow_clone(),
            bias: self.bias.as_ref().map(Tensor::shallow_clone),
        }
    }
}

fn linear_handle(layer: &nn::Linear) -> nn::Linear {
    nn::Linear {
        ws: layer.ws.shallow_clone(),
        bs: layer.bs.as_ref().map(Tensor::shallow_clone),
    }
}

impl Block {
    /// The same block: handles sharing the parameters (and their gradients).
    fn shallow_clone(&self) -> Self {
        Self {
            ln_1: self.ln_1.shallow_clone(),
            c_attn: linear_handle(&self.c_attn),
            attn_proj: linear_handle(&self.attn_proj),
            ln_2: self.ln_2.shallow_clone(),
            c_fc: linear_handle(&self.c_fc),
            mlp_proj: linear_handle(&self.mlp_proj),
        }
    }

    /// `torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)`:
    /// the block's activations are not kept but recomputed in backward,
    /// with the generator's state of this forward (same dropout masks).
    fn forward_checkpointed(&self, x: &Tensor, cfg: &GptConfig, train: bool) -> Result<Tensor> {
        let block = self.shallow_clone();
        let cfg = cfg.clone();
        let out = kiln_tensor::autograd::checkpoint(
            move |xs: &[Tensor]| {
                let x = xs.first().ok_or_else(|| {
                    kiln_tensor::Error::InvalidArgument("a block takes one input".into())
                })?;
                match block.forward(x, &cfg, train) {
                    Ok(y) => Ok(vec![y]),
                    Err(Error::Tensor(e)) => Err(e),
                    Err(other) => Err(kiln_tensor::Error::Torch(other.to_string())),
                }
            },
            &[x],
        )?;
        out.into_iter()
            .next()
            .ok_or_else(|| Error::Model("a checkpointed block returned nothing".into()))
    }

    /// The block's modules in `Block.__init__`'s order, each with its
    /// default initialisation.
    fn new(path: &nn::Path<'_>, cfg: &GptConfig) -> Result<Self> {
        let c = cfg.n_embd;
        let ln_1 = LayerNorm::new(&(path / "ln_1"), c, cfg.bias)?;
        let attn = path / "attn";
        let c_attn = linear(&(&attn / "c_attn"), c, 3 * c, cfg.bias)?;
        let attn_proj = linear(&(&attn / "c_proj"), c, c, cfg.bias)?;
        let ln_2 = LayerNorm::new(&(path / "ln_2"), c, cfg.bias)?;
        let mlp = path / "mlp";
        let c_fc = linear(&(&mlp / "c_fc"), c, 4 * c, cfg.bias)?;
        let mlp_proj = linear(&(&mlp / "c_proj"), 4 * c, c, cfg.bias)?;
        Ok(Self {
            ln_1,
            c_attn,
            attn_proj,
            ln_2,
            c_fc,
            mlp_proj,
        })
    }

    /// The linears in `apply`'s order (attention's, then the MLP's).
    fn linears(&self) -> [&nn::Linear; 4] {
        [&self.c_attn, &self.attn_proj, &self.c_fc, &self.mlp_proj]
    }

    /// `CausalSelfAttention.forward`.
    fn attention(&self, x: &Tensor, cfg: &GptConfig, train: bool) -> Result<Tensor> {
        let size = x.size();
        let [b, t, c] = size[..] else {
            return Err(Error::Model(format!(
                "attention expects [B, T, C], got {size:?}"
            )));
        };
        let hs = c / cfg.n_head;
        let qkv = apply_linear(&self.c_attn, x)?.f_split(cfg.n_embd, 2)?;
        let [q, k, v] = &qkv[..] else {
            return Err(Error::Model("c_attn did not split into q, k, v".into()));
        };
        let heads = |t_: &Tensor| -> Result<Tensor> {
            Ok(t_.f_view([b, t, cfg.n_head, hs])?.f_transpose(1, 2)?)
        };
        // nanoGPT's order: k, q, v (views only; no value depends on it).
        let k = heads(k)?;
        let q = heads(q)?;
        let v = heads(v)?;
        let dropout_p = if train { cfg.dropout } else { 0.0 };
        let y = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            dropout_p,
            true,
            None::<f64>,
            false,
        )?;
        let y = y.f_transpose(1, 2)?.f_contiguous()?.f_view([b, t, c])?;
        Ok(apply_linear(&self.attn_proj, &y)?.f_dropout(cfg.dropout, train)?)
    }

    /// `MLP.forward`: `c_fc`, exact GELU, `c_proj`, dropout.
    fn mlp(&self, x: &Tensor, cfg: &GptConfig, train: bool) -> Result<Tensor> {
        let h = apply_linear(&self.c_fc, x)?.f_gelu("none")?;
        Ok(apply_linear(&self.mlp_proj, &h)?.f_dropout(cfg.dropout, train)?)
    }

    /// `Block.forward`.
    fn forward(&self, x: &Tensor, cfg: &GptConfig, train: bool) -> Result<Tensor> {
        let x = x.f_add(&self.attention(&self.ln_1.forward(x)?, cfg, train)?)?;
        Ok(x.f_add(&self.mlp(&self.ln_2.forward(&x)?, cfg, train)?)?)
    }
}

/// nanoGPT's `GPT`; build it with [`Gpt::new`].
#[derive(Debug)]
pub struct Gpt {
    cfg: GptConfig,
    vs: VarStore,
    /// `transformer.wte.weight`, which is also `lm_head.weight`.
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    training: bool,
    /// Each block under `torch.utils.checkpoint` (`--gradient-checkpointing`).
    checkpointing: bool,
}

/// `torch.nn.init.normal_(tensor, mean, std)`, outside autograd.
fn normal_(tensor: &Tensor, mean: f64, std: f64) -> Result<()> {
    let mut t = tensor.shallow_clone();
    let _ = kiln_tensor::tch::no_grad(|| t.f_normal_(mean, std))?;
    Ok(())
}

/// `torch.nn.init.zeros_(tensor)`.
fn zeros_(tensor: &Tensor) -> Result<()> {
    let mut t = tensor.shallow_clone();
    let _ = kiln_tensor::tch::no_grad(|| t.f_zero_())?;
    Ok(())
}

impl Gpt {
    /// `GPT(config).to(device)`: the parameters are created and drawn on
    /// the CPU from the global generator in `GPT.__init__`'s order (see the
    /// module docs), then moved to `device`; training mode. A bad config is
    /// refused ([`GptConfig::check`]) before anything is drawn.
    pub fn new(cfg: &GptConfig, device: Device) -> Result<Self> {
        cfg.check()?;
        let mut vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let transformer = &root / "transformer";
        let (v, c) = (cfg.vocab_size, cfg.n_embd);
        // Construction: each submodule's reset_parameters().
        let wte = (&transformer / "wte").f_var("weight", &[v, c], Init::Const(0.0))?;
        normal_(&wte, 0.0, 1.0)?;
        let wpe = (&transformer / "wpe").f_var("weight", &[cfg.block_size, c], Init::Const(0.0))?;
        normal_(&wpe, 0.0, 1.0)?;
        let h = &transformer / "h";
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::new(&(&h / i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::new(&(&transformer / "ln_f"), c, cfg.bias)?;
        // lm_head = nn.Linear(n_embd, vocab_size, bias=False) draws its own
        // weight, which the tying then replaces by wte's tensor: the draw is
        // made (same size, same generator) on the one tensor both share.
        let mut tied = wte.shallow_clone();
        uniform_(&mut tied, linear_weight_bound(c))?;
        // self.apply(_init_weights): children before parents, in order.
        normal_(&wte, 0.0, 0.02)?;
        normal_(&wpe, 0.0, 0.02)?;
        for block in &blocks {
            for layer in block.linears() {
                normal_(&layer.ws, 0.0, 0.02)?;
                if let Some(b) = &layer.bs {
                    zeros_(b)?;
                }
            }
        }
        // lm_head last: the tied weight again.
        normal_(&wte, 0.0, 0.02)?;
        // The scaled residual projections, in named_parameters() order.
        let std = 0.02 / ((2 * cfg.n_layer) as f64).sqrt();
        for block in &blocks {
            normal_(&block.attn_proj.ws, 0.0, std)?;
            normal_(&block.mlp_proj.ws, 0.0, std)?;
        }
        if device != Device::Cpu {
            vs.set_device(device);
        }
        Ok(Self {
            cfg: cfg.clone(),
            vs,
            wte,
            wpe,
            blocks,
            ln_f,
            training: true,
            checkpointing: false,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// `--gradient-checkpointing`: each block runs under
    /// `torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)`
    /// ([`kiln_tensor::autograd::checkpoint`]): its activations are
    /// recomputed in backward instead of kept, with the generator's state
    /// of the forward, so the numbers (dropout masks, gradients, the
    /// generator's state after the step) are those without it; less memory,
    /// about one more forward pass of time.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// Whether the blocks are checkpointed.
    pub fn gradient_checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// nanoGPT's `get_num_params(non_embedding)`: parameters counted once
    /// (the tied weight once), less the position embeddings when
    /// `non_embedding` (nanoGPT prints this count in millions).
    pub fn num_params(&self, non_embedding: bool) -> i64 {
        let all: i64 = self
            .vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        if non_embedding {
            all - self.wpe.numel() as i64
        } else {
            all
        }
    }

    /// The residual stream after `ln_f`, `[B, T, C]`.
    fn hidden(&self, idx: &Tensor) -> Result<Tensor> {
        let size = idx.size();
        let [_, t] = size[..] else {
            return Err(Error::Model(format!(
                "gpt takes token ids [B, T], got a tensor of shape {size:?}"
            )));
        };
        if t > self.cfg.block_size {
            return Err(Error::Model(format!(
                "Cannot forward sequence of length {t}, block size is only {}",
                self.cfg.block_size
            )));
        }
        let device = idx.device();
        let pos = Tensor::f_arange_start(0, t, (Kind::Int64, device))?;
        let tok_emb = Tensor::f_embedding(&self.wte, idx, -1, false, false)?;
        let pos_emb = Tensor::f_embedding(&self.wpe, &pos, -1, false, false)?;
        let mut x = tok_emb
            .f_add(&pos_emb)?
            .f_dropout(self.cfg.dropout, self.training)?;
        for block in &self.blocks {
            x = if self.checkpointing {
                block.forward_checkpointed(&x, &self.cfg, self.training)?
            } else {
                block.forward(&x, &self.cfg, self.training)?
            };
        }
        self.ln_f.forward(&x)
    }

    /// The logits of the last position only, `[B, 1, V]`, computed as
    /// nanoGPT's forward without targets does: `lm_head(x[:, [-1], :])`.
    pub fn last_logits(&self, idx: &Tensor) -> Result<Tensor> {
        let x = self.hidden(idx)?;
        let last = Tensor::from_slice(&[-1i64]).f_to(x.device())?;
        let x = x.f_index(&[None, Some(last)])?;
        Ok(x.f_linear(&self.wte, None::<&Tensor>)?)
    }

    /// `GPT.generate(idx, max_new_tokens, temperature, top_k)` under
    /// no_grad, in the current mode (nanoGPT's `sample.py` calls it in eval
    /// mode): `max_new_tokens` times, the context cropped to its last
    /// `block_size` ids, the last position's logits divided by
    /// `temperature`, all but the `min(top_k, V)` largest set to `-inf`,
    /// softmax, one `torch.multinomial` draw appended. Returns `[B, T +
    /// max_new_tokens]`.
    pub fn generate(
        &self,
        idx: &Tensor,
        max_new_tokens: i64,
        temperature: f64,
        top_k: Option<i64>,
    ) -> Result<Tensor> {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(Error::Usage(format!(
                "temperature must be a positive number, got {temperature}"
            )));
        }
        if let Some(k) = top_k.filter(|&k| k < 1) {
            return Err(Error::Usage(format!(
                "top_k must be at least 1 (or none), got {k}"
            )));
        }
        kiln_tensor::tch::no_grad(|| {
            let mut idx = idx.shallow_clone();
            let block = self.cfg.block_size;
            let last = Tensor::from_slice(&[-1i64]).f_to(idx.device())?;
            for _ in 0..max_new_tokens {
                let t = idx.size().get(1).copied().unwrap_or(0);
                let cond = if t <= block {
                    idx.shallow_clone()
                } else {
                    idx.f_narrow(1, t - block, block)?
                };
                let logits = self.last_logits(&cond)?;
                let mut logits = logits.f_select(1, -1)?.f_div_scalar(temperature)?;
                if let Some(k) = top_k {
                    let k = k.min(self.cfg.vocab_size);
                    let (values, _) = logits.f_topk(k, -1, true, true)?;
                    let kth = values.f_index(&[None, Some(&last)])?;
                    let below = logits.f_lt_tensor(&kth)?;
                    logits = logits.f_masked_fill(&below, f64::NEG_INFINITY)?;
                }
                let probs = logits.f_softmax(-1, None::<Kind>)?;
                let next = probs.f_multinomial(1, false)?;
                idx = Tensor::f_cat(&[&idx, &next], 1)?;
            }
            Ok(idx)
        })
    }
}

impl Model for Gpt {
    /// nanoGPT's forward with targets: the logits of every position,
    /// `[B, T, vocab_size]`, for token ids `[B, T]` (`T <= block_size`).
    fn forward(&self, inputs: &Tensor) -> Result<Tensor> {
        let x = self.hidden(inputs)?;
        Ok(x.f_linear(&self.wte, None::<&Tensor>)?)
    }

    fn set_training(&mut self, training: bool) -> Result<()> {
        self.training = training;
        Ok(())
    }

    fn is_training(&self) -> bool {
        self.training
    }

    /// `named_parameters()`: the tied weight once, as
    /// `transformer.wte.weight`.
    fn parameters(&self) -> Result<Vec<NamedParameter>> {
        Ok(kiln_tensor::params::named_parameters(&self.vs)?)
    }

    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    fn device(&self) -> Device {
        self.vs.device()
    }

    fn set_gradient_checkpointing(&mut self, on: bool) -> Result<()> {
        Gpt::set_gradient_checkpointing(self, on);
        Ok(())
    }

    /// nanoGPT's loss: `F.cross_entropy(logits.view(-1, V),
    /// targets.view(-1), ignore_index=-1)`.
    fn default_loss(&self) -> Option<&str> {
        Some("cross-entropy:ignore_index=-1")
    }

    /// nanoGPT's `GPT`: `transformer` (a `ModuleDict`) and `lm_head`.
    fn modules(&self) -> Vec<(String, String)> {
        vec![
            ("transformer".into(), "ModuleDict".into()),
            ("lm_head".into(), "Linear".into()),
        ]
    }

    /// `state_dict()`: the parameters, then `lm_head.weight` (the tied
    /// tensor again), as PyTorch lists them.
    fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = self
            .parameters()?
            .into_iter()
            .map(|p| (p.name, p.tensor))
            .collect();
        out.push(("lm_head.weight".into(), self.wte.shallow_clone()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> GptConfig {
        GptConfig {
            block_size: 8,
            vocab_size: 11,
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            dropout: 0.0,
            bias: false,
        }
    }

    #[test]
    fn names_tying_and_shapes() -> Result<()> {
        let model = Gpt::new(&small(), Device::Cpu)?;
        let names: Vec<String> = model.parameters()?.into_iter().map(|p| p.name).collect();
        assert_eq!(
            names.first().map(String::as_str),
            Some("transformer.wte.weight")
        );
        assert_eq!(names.iter().filter(|n| n.contains("lm_head")).count(), 0);
        assert!(names.contains(&"transformer.h.1.mlp.c_proj.weight".to_string()));
        assert!(!names.iter().any(|n| n.ends_with(".bias")));
        let sd = model.state_dict()?;
        let (last, tied) = sd
            .last()
            .map(|(n, t)| (n.clone(), t.data_ptr()))
            .unwrap_or_default();
        assert_eq!(last, "lm_head.weight");
        assert_eq!(tied, model.wte.data_ptr());
        let idx = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([2, 3]);
        assert_eq!(model.forward(&idx)?.size(), vec![2, 3, 11]);
        assert_eq!(model.last_logits(&idx)?.size(), vec![2, 1, 11]);
        let long = Tensor::zeros([1, 9], (Kind::Int64, Device::Cpu));
        let err = model
            .forward(&long)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("Cannot forward sequence of length 9, block size is only 8"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn config_from_a_recorded_spec() -> Result<()> {
        let cfg = GptConfig::from_spec(
            "gpt:n_layer=2,n_head=2,n_embd=8,dropout=0.1,bias=false",
            11,
            8,
        )?;
        assert_eq!(
            cfg,
            GptConfig {
                dropout: 0.1,
                ..small()
            }
        );
        assert!(GptConfig::from_spec("mlp", 11, 8).is_err());
        assert!(GptConfig::from_spec("gpt:n_embd=9", 11, 8).is_err());
        Ok(())
    }

    #[test]
    fn bad_configs_are_refused_in_one_line() {
        let err = |cfg: GptConfig| {
            Gpt::new(&cfg, Device::Cpu)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let m = err(GptConfig {
            n_embd: 10,
            n_head: 4,
            ..small()
        });
        assert!(
            m.contains("n_embd (10) must be a multiple of n_head (4)"),
            "{m}"
        );
        let m = err(GptConfig {
            dropout: 1.5,
            ..small()
        });
        assert!(m.contains("between 0 and 1"), "{m}");
        let m = err(GptConfig {
            n_layer: 0,
            ..small()
        });
        assert!(m.contains("n_layer must be at least 1"), "{m}");
        assert!(!m.contains('\n'));
    }
}
