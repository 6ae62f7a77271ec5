//! The HParams plugin's summaries, as PyTorch's
//! `torch.utils.tensorboard.summary.hparams()` builds them.
//!
//! Three summaries, each a value with no data and the plugin's metadata:
//! - `_hparams_/experiment`: an `Experiment` listing every hyperparameter
//!   (name and type) and every metric (a scalar tag, group "");
//! - `_hparams_/session_start_info`: the hyperparameters' values;
//! - `_hparams_/session_end_info`: status `STATUS_SUCCESS`.
//!
//! `SummaryWriter::add_hparams` writes them, followed by each metric as a
//! scalar, into a sub-run of their own, which the HParams tab lists as one
//! session beside those of other runs.
//!
//! One deliberate difference: PyTorch tests `isinstance(v, (int, float))`
//! before `bool`, so a Python `True` becomes the number 1.0; kiln writes a
//! boolean as a boolean (`bool_value`, `DATA_TYPE_BOOL`), which the HParams
//! tab shows as `true`/`false`.
use super::proto::{
    hparams_plugin_data, summary, summary_metadata, value, DataType, Experiment, HParamInfo,
    HParamsPluginData, MetricInfo, MetricName, SessionEndInfo, SessionStartInfo, Status, Summary,
    SummaryMetadata, Value,
};
use crate::{Error, Result};
use prost::Message;
use std::collections::BTreeSet;

/// The plugin's name in `SummaryMetadata.plugin_data`.
pub const PLUGIN_NAME: &str = "hparams";
/// Tag of the experiment summary.
pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
/// Tag of the session-start summary.
pub const SESSION_START_INFO_TAG: &str = "_hparams_/session_start_info";
/// Tag of the session-end summary.
pub const SESSION_END_INFO_TAG: &str = "_hparams_/session_end_info";

/// A hyperparameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    /// A number (`DATA_TYPE_FLOAT64`).
    Number(f64),
    /// A string (`DATA_TYPE_STRING`).
    Text(String),
    /// A boolean (`DATA_TYPE_BOOL`).
    Bool(bool),
}

impl From<f64> for HParamValue {
    fn from(v: f64) -> Self {
        Self::Number(v)
    }
}

impl From<i64> for HParamValue {
    fn from(v: i64) -> Self {
        Self::Number(v as f64)
    }
}

impl From<bool> for HParamValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<&str> for HParamValue {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}

impl From<String> for HParamValue {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

/// The hyperparameters of a JSON object of flags (a run's `config.json`):
/// numbers, strings and booleans as themselves, nested objects flattened
/// with `/` between the keys (`{"data": {"seed": 1}}` → `data/seed`), arrays
/// as their JSON text, `null`s left out (as PyTorch leaves out `None`).
/// Names are in key order.
pub fn hparams_from_json(flags: &serde_json::Value) -> Result<Vec<(String, HParamValue)>> {
    let serde_json::Value::Object(map) = flags else {
        return Err(Error::InvalidArgument(format!(
            "hyperparameters must be a JSON object of flags, not {flags}"
        )));
    };
    let mut out = Vec::new();
    flatten("", map, &mut out);
    Ok(out)
}

fn flatten(
    prefix: &str,
    map: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, HParamValue)>,
) {
    use serde_json::Value as J;
    for (key, v) in map {
        let name = format!("{prefix}{key}");
        match v {
            J::Null => {}
            J::Bool(b) => out.push((name, HParamValue::Bool(*b))),
            J::Number(n) => out.push((name, HParamValue::Number(n.as_f64().unwrap_or(f64::NAN)))),
            J::String(s) => out.push((name, HParamValue::Text(s.clone()))),
            J::Array(_) => out.push((name, HParamValue::Text(v.to_string()))),
            J::Object(inner) => flatten(&format!("{name}/"), inner, out),
        }
    }
}

fn plugin_value(tag: &str, data: hparams_plugin_data::Data) -> summary::Value {
    let content = HParamsPluginData {
        version: 0,
        data: Some(data),
    };
    summary::Value {
        tag: tag.to_string(),
        metadata: Some(SummaryMetadata {
            plugin_data: Some(summary_metadata::PluginData {
                plugin_name: PLUGIN_NAME.to_string(),
                content: content.encode_to_vec(),
            }),
            ..Default::default()
        }),
        value: None,
    }
}

/// The experiment, session-start and session-end summaries for
/// `hparams` and the names of `metrics` (see the module docs).
///
/// Names must be unique and non-empty.
pub fn hparams_summaries(
    hparams: &[(String, HParamValue)],
    metrics: &[&str],
) -> Result<[Summary; 3]> {
    check_unique("hyperparameter", hparams.iter().map(|(k, _)| k.as_str()))?;
    check_unique("metric", metrics.iter().copied())?;
    let mut start = SessionStartInfo::default();
    let mut infos = Vec::with_capacity(hparams.len());
    for (name, v) in hparams {
        let (kind, data_type) = match v {
            HParamValue::Number(x) => (value::Kind::NumberValue(*x), DataType::Float64),
            HParamValue::Text(s) => (value::Kind::StringValue(s.clone()), DataType::String),
            HParamValue::Bool(b) => (value::Kind::BoolValue(*b), DataType::Bool),
        };
        start
            .hparams
            .insert(name.clone(), Value { kind: Some(kind) });
        infos.push(HParamInfo {
            name: name.clone(),
            r#type: data_type as i32,
        });
    }
    let experiment = Experiment {
        hparam_infos: infos,
        metric_infos: metrics
            .iter()
            .map(|tag| MetricInfo {
                name: Some(MetricName {
                    group: String::new(),
                    tag: tag.to_string(),
                }),
            })
            .collect(),
    };
    let end = SessionEndInfo {
        status: Status::Success as i32,
        end_time_secs: 0.0,
    };
    let one = |v| Summary { value: vec![v] };
    Ok([
        one(plugin_value(
            EXPERIMENT_TAG,
            hparams_plugin_data::Data::Experiment(experiment),
        )),
        one(plugin_value(
            SESSION_START_INFO_TAG,
            hparams_plugin_data::Data::SessionStartInfo(start),
        )),
        one(plugin_value(
            SESSION_END_INFO_TAG,
            hparams_plugin_data::Data::SessionEndInfo(end),
        )),
    ])
}

fn check_unique<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = BTreeSet::new();
    for name in names {
        if name.is_empty() {
            return Err(Error::InvalidArgument(format!("empty {what} name")));
        }
        if !seen.insert(name) {
            return Err(Error::InvalidArgument(format!(
                "{what} {name:?} is given twice"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_flags_flatten_and_keep_types() -> Result<()> {
        let flags = serde_json::json!({
            "lr": 0.001, "epochs": 5, "optimizer": "sgd", "no_shuffle": false,
            "seed": null, "top": [1, 5], "data": {"kind": "csv", "fraction": 0.2}
        });
        let hp = hparams_from_json(&flags)?;
        let expected: Vec<(String, HParamValue)> = vec![
            ("data/fraction".into(), 0.2.into()),
            ("data/kind".into(), "csv".into()),
            ("epochs".into(), 5i64.into()),
            ("lr".into(), 0.001.into()),
            ("no_shuffle".into(), false.into()),
            ("optimizer".into(), "sgd".into()),
            ("top".into(), "[1,5]".into()),
        ];
        assert_eq!(hp, expected);
        assert!(hparams_from_json(&serde_json::json!([1])).is_err());
        Ok(())
    }

    #[test]
    fn duplicate_or_empty_names_are_refused() {
        let a = ("a".to_string(), HParamValue::Number(1.0));
        assert!(hparams_summaries(&[a.clone(), a.clone()], &[]).is_err());
        assert!(hparams_summaries(std::slice::from_ref(&a), &["m", "m"]).is_err());
        assert!(hparams_summaries(&[a], &[""]).is_err());
    }
}
