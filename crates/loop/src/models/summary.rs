//! Lightning's `ModelSummary` table (`max_depth=1`): one row per top-level
//! module, then the parameter totals and their size.
//!
//! ```text
//!   | Name              | Type       | Params | Mode
//! ---------------------------------------------------------
//! 0 | flatten           | Flatten    | 0      | train
//! 1 | linear_relu_stack | Sequential | 669 K  | train
//! ---------------------------------------------------------
//! 669 K     Trainable params
//! 0         Non-trainable params
//! 669 K     Total params
//! 2.678     Total estimated model params size (MB)
//! ```
//!
//! The rows are the model's [`Model::modules`] (its `named_children()` with
//! their types) when it names them; otherwise (TorchScript modules, a tch
//! model) the first component of the parameter names, of type `n/a`.
//! Parameters outside every row (a parameter of the root module) are
//! Lightning's `other params` row. A row counts the model's parameters under
//! its name, so a tied weight (nanoGPT's `lm_head.weight`, which is
//! `transformer.wte.weight`) counts once, where `named_parameters()` lists
//! it, and the rows add up to the total (Lightning counts it again in the
//! row of every module that holds it). Totals are `sum(p.numel())` over
//! `model.parameters()`, trainable ones those with `requires_grad`; the
//! size is 4 bytes per parameter (Lightning's 32 bits for every precision
//! kiln trains with: `32-true`, and the mixed ones it does not list). The
//! FLOPs column and the module-mode counts of newer Lightning versions are
//! left out: kiln counts neither.
use super::Model;
use crate::Result;
use std::fmt;

/// Lightning's name for the parameters outside every listed module.
const LEFTOVER_PARAMS_NAME: &str = "other params";
/// Lightning's placeholder where a column does not apply.
const NOT_APPLICABLE: &str = "n/a";

/// One row of the table: a top-level module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSummary {
    /// Its attribute name (`linear_relu_stack`).
    pub name: String,
    /// Its PyTorch type (`Sequential`), or `n/a` where unknown.
    pub kind: String,
    /// Its number of parameters.
    pub params: i64,
    /// `Some(true)` in training mode, `Some(false)` in eval mode; `None`
    /// for the leftover row.
    pub training: Option<bool>,
}

/// A model's summary: its rows and totals (`Display` writes Lightning's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// One per top-level module, in registration order (and Lightning's
    /// `other params` row last when some parameters are in none).
    pub layers: Vec<LayerSummary>,
    /// `sum(p.numel() for p in model.parameters())`.
    pub total_params: i64,
    /// The same over the parameters with `requires_grad`.
    pub trainable_params: i64,
}

impl ModelSummary {
    /// The summary of `model` as it is now (its mode, its frozen parameters).
    pub fn of(model: &dyn Model) -> Result<Self> {
        let params = model.parameters()?;
        let numel = |t: &kiln_tensor::Tensor| t.size().iter().product::<i64>();
        let total_params = params.iter().map(|p| numel(&p.tensor)).sum();
        let trainable_params = params
            .iter()
            .filter(|p| p.tensor.requires_grad())
            .map(|p| numel(&p.tensor))
            .sum();
        let mut modules = model.modules();
        if modules.is_empty() {
            for p in &params {
                if let Some((prefix, _)) = p.name.split_once('.') {
                    if !modules.iter().any(|(name, _)| name == prefix) {
                        modules.push((prefix.to_string(), NOT_APPLICABLE.to_string()));
                    }
                }
            }
        }
        let training = model.is_training();
        let mut layers: Vec<LayerSummary> = modules
            .into_iter()
            .map(|(name, kind)| {
                let prefix = format!("{name}.");
                let params = params
                    .iter()
                    .filter(|p| p.name.starts_with(&prefix))
                    .map(|p| numel(&p.tensor))
                    .sum();
                LayerSummary {
                    name,
                    kind,
                    params,
                    training: Some(training),
                }
            })
            .collect();
        let listed: i64 = layers.iter().map(|l| l.params).sum();
        if total_params > listed {
            layers.push(LayerSummary {
                name: LEFTOVER_PARAMS_NAME.to_string(),
                kind: NOT_APPLICABLE.to_string(),
                params: total_params - listed,
                training: None,
            });
        }
        Ok(Self {
            layers,
            total_params,
            trainable_params,
        })
    }

    /// Parameters without `requires_grad` (frozen).
    pub fn non_trainable_params(&self) -> i64 {
        self.total_params - self.trainable_params
    }

    /// Lightning's estimate of the parameters' size: 32 bits each, in MB (10^6 bytes).
    pub fn model_size_mb(&self) -> f64 {
        self.total_params as f64 * (32.0 / 8.0 * 1e-6)
    }
}

impl fmt::Display for ModelSummary {
    /// Lightning's `_format_summary_table`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leftover = |l: &LayerSummary| l.training.is_none();
        let columns: [(&str, Vec<String>); 5] = [
            (
                " ",
                self.layers
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        if leftover(l) {
                            " ".into()
                        } else {
                            i.to_string()
                        }
                    })
                    .collect(),
            ),
            ("Name", self.layers.iter().map(|l| l.name.clone()).collect()),
            ("Type", self.layers.iter().map(|l| l.kind.clone()).collect()),
            (
                "Params",
                self.layers
                    .iter()
                    .map(|l| human_readable_count(l.params))
                    .collect(),
            ),
            (
                "Mode",
                self.layers
                    .iter()
                    .map(|l| match l.training {
                        Some(true) => "train".into(),
                        Some(false) => "eval".into(),
                        None => NOT_APPLICABLE.into(),
                    })
                    .collect(),
            ),
        ];
        let widths: Vec<usize> = columns
            .iter()
            .map(|(header, cells)| {
                cells
                    .iter()
                    .map(|c| c.chars().count())
                    .chain([header.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        // Lightning counts one more column than there are (`1 + len(cols)`).
        let total_width = widths.iter().sum::<usize>() + 3 * (columns.len() + 1);
        let row = |cells: Vec<&str>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let divider = "-".repeat(total_width);
        writeln!(f, "{}", row(columns.iter().map(|(h, _)| *h).collect()))?;
        write!(f, "{divider}")?;
        for i in 0..self.layers.len() {
            write!(
                f,
                "\n{}",
                row(columns.iter().map(|(_, c)| c[i].as_str()).collect())
            )?;
        }
        write!(f, "\n{divider}")?;
        let footer = [
            (
                human_readable_count(self.trainable_params),
                "Trainable params",
            ),
            (
                human_readable_count(self.non_trainable_params()),
                "Non-trainable params",
            ),
            (human_readable_count(self.total_params), "Total params"),
            (
                with_thousands(&format!("{:.3}", self.model_size_mb())),
                "Total estimated model params size (MB)",
            ),
        ];
        for (value, what) in footer {
            write!(f, "\n{value:<10}{what}")?;
        }
        Ok(())
    }
}

/// Lightning's `get_human_readable_count`: `123  `, `1.2 K`, `2.0 M`,
/// `400 T`, `5,000 T`.
pub fn human_readable_count(number: i64) -> String {
    const LABELS: [&str; 5] = [" ", "K", "M", "B", "T"];
    // 10 ** shift for shift = 0, -3, -6…, as Python's float powers.
    const SCALES: [f64; 5] = [1.0, 1e-3, 1e-6, 1e-9, 1e-12];
    let number = number.max(0);
    let digits = if number > 0 {
        number.ilog10() as usize + 1
    } else {
        1
    };
    let groups = digits.div_ceil(3).min(LABELS.len());
    let index = groups - 1;
    if index == 0 {
        return format!("{} {}", with_thousands(&number.to_string()), LABELS[0]);
    }
    let scaled = number as f64 * SCALES[index];
    if scaled >= 100.0 {
        format!(
            "{} {}",
            with_thousands(&(scaled.trunc() as i64).to_string()),
            LABELS[index]
        )
    } else {
        format!(
            "{} {}",
            with_thousands(&format!("{scaled:.1}")),
            LABELS[index]
        )
    }
}

/// Python's `,` format option: commas between groups of three digits of
/// the integer part (`1234.5` → `1,234.5`).
fn with_thousands(number: &str) -> String {
    let (int, rest) = match number.find('.') {
        Some(dot) => number.split_at(dot),
        None => (number, ""),
    };
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_lightning_writes_them() {
        // The examples of Lightning's get_human_readable_count docstring.
        for (n, text) in [
            (0, "0  "),
            (123, "123  "),
            (1234, "1.2 K"),
            (2_000_000, "2.0 M"),
            (3_000_000_000, "3.0 B"),
            (400_000_000_000_000, "400 T"),
            (5_000_000_000_000_000, "5,000 T"),
            (669_706, "669 K"),
            (1_500, "1.5 K"),
        ] {
            assert_eq!(human_readable_count(n), text, "{n}");
        }
        assert_eq!(with_thousands("1234567.125"), "1,234,567.125");
    }
}
