//! The protobuf messages of TensorBoard event files, declared with `prost`'s
//! derive macros (no `.proto` files, no code generation at build time).
//!
//! Each message keeps the package, field names and field numbers of
//! TensorBoard's own `.proto` files (`tensorboard/compat/proto/event.proto`,
//! `summary.proto`, `tensor.proto`, `tensor_shape.proto`,
//! `tensorboard/plugins/hparams/{api,plugin_data}.proto`,
//! `tensorboard/plugins/text/plugin_data.proto` and
//! `google/protobuf/struct.proto`), but only the fields kiln writes or reads:
//! a decoder skips the others, so a file PyTorch wrote still decodes.
//! `tests/tensorboard.rs` checks the bytes against TensorBoard's Python
//! classes by reading kiln's files with them.
use std::collections::BTreeMap;

/// `tensorboard.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The global step the event belongs to.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What the event carries.
    #[prost(oneof = "event::What", tags = "3, 5, 7")]
    pub what: Option<event::What>,
}

/// Nested types of [`Event`].
pub mod event {
    /// `Event.what`: the payload of an event.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// The first event of every file: `"brain.Event:2"`.
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// Summary values (scalars, histograms, tensors, plugin metadata).
        #[prost(message, tag = "5")]
        Summary(super::Summary),
        /// A session marker; `START` makes readers drop later steps of older files.
        #[prost(message, tag = "7")]
        SessionLog(super::SessionLog),
    }
}

/// `tensorboard.SessionLog`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    /// A [`session_log::SessionStatus`] value.
    #[prost(enumeration = "session_log::SessionStatus", tag = "1")]
    pub status: i32,
    /// Path of the checkpoint, for `CHECKPOINT`.
    #[prost(string, tag = "2")]
    pub checkpoint_path: String,
    /// A free-form message.
    #[prost(string, tag = "3")]
    pub msg: String,
}

/// Nested types of [`SessionLog`].
pub mod session_log {
    /// `SessionLog.SessionStatus`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum SessionStatus {
        /// Not set.
        StatusUnspecified = 0,
        /// A (re)start: readers purge events of earlier files with `step >=`
        /// this event's step.
        Start = 1,
        /// The session stopped.
        Stop = 2,
        /// A checkpoint was written.
        Checkpoint = 3,
    }
}

/// `tensorboard.Summary`: a list of tagged values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<summary::Value>,
}

/// Nested types of [`Summary`].
pub mod summary {
    /// `Summary.Value`: one tagged value.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// The series the value belongs to (`train/loss`…).
        #[prost(string, tag = "1")]
        pub tag: String,
        /// Which plugin owns the series, and its plugin-specific metadata.
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<super::SummaryMetadata>,
        /// The value itself.
        #[prost(oneof = "value::Value", tags = "2, 5, 8")]
        pub value: Option<value::Value>,
    }

    /// Nested types of [`Value`].
    pub mod value {
        /// `Summary.Value.value`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// A scalar (single precision, as `SummaryWriter.add_scalar` writes it).
            #[prost(float, tag = "2")]
            SimpleValue(f32),
            /// A histogram.
            #[prost(message, tag = "5")]
            Histo(super::super::HistogramProto),
            /// A tensor (text and other plugin data).
            #[prost(message, tag = "8")]
            Tensor(super::super::TensorProto),
        }
    }
}

/// `tensorboard.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    /// The owning plugin.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<summary_metadata::PluginData>,
    /// A display name.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// A description.
    #[prost(string, tag = "3")]
    pub summary_description: String,
    /// `tensorboard.DataClass` (0 = unknown: the plugin decides).
    #[prost(int32, tag = "4")]
    pub data_class: i32,
}

/// Nested types of [`SummaryMetadata`].
pub mod summary_metadata {
    /// `SummaryMetadata.PluginData`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        /// `"text"`, `"hparams"`…
        #[prost(string, tag = "1")]
        pub plugin_name: String,
        /// The plugin's own serialized message.
        #[prost(bytes = "vec", tag = "2")]
        pub content: Vec<u8>,
    }
}

/// `tensorboard.HistogramProto`: bucket `i` counts the values in
/// `(bucket_limit[i-1], bucket_limit[i]]` (right edges only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramProto {
    /// Smallest value.
    #[prost(double, tag = "1")]
    pub min: f64,
    /// Largest value.
    #[prost(double, tag = "2")]
    pub max: f64,
    /// Number of values.
    #[prost(double, tag = "3")]
    pub num: f64,
    /// Sum of the values.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// Sum of their squares.
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// Right edge of each bucket.
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    /// Count of each bucket.
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// `tensorboard.TensorProto`, reduced to what string tensors need.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// `tensorboard.DataType`; [`DT_STRING`] for text.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// The shape.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// Elements of a `DT_STRING` tensor.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorboard.DataType.DT_STRING`.
pub const DT_STRING: i32 = 7;

/// `tensorboard.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// The dimensions, outermost first.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<tensor_shape_proto::Dim>,
}

/// Nested types of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// `TensorShapeProto.Dim`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        /// Extent of the dimension.
        #[prost(int64, tag = "1")]
        pub size: i64,
    }
}

/// `tensorboard.TextPluginData` (the text plugin's metadata content).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TextPluginData {
    /// Always 0.
    #[prost(int32, tag = "1")]
    pub version: i32,
}

/// `tensorboard.hparams.HParamsPluginData`: the content of every HParams
/// plugin summary.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    /// `PLUGIN_DATA_VERSION`, 0.
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// Which of the three summaries this is.
    #[prost(oneof = "hparams_plugin_data::Data", tags = "2, 3, 4")]
    pub data: Option<hparams_plugin_data::Data>,
}

/// Nested types of [`HParamsPluginData`].
pub mod hparams_plugin_data {
    /// `HParamsPluginData.data`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        /// The hyperparameters and metrics to show as columns.
        #[prost(message, tag = "2")]
        Experiment(super::Experiment),
        /// One session's hyperparameter values.
        #[prost(message, tag = "3")]
        SessionStartInfo(super::SessionStartInfo),
        /// How the session ended.
        #[prost(message, tag = "4")]
        SessionEndInfo(super::SessionEndInfo),
    }
}

/// `tensorboard.hparams.Experiment`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Experiment {
    /// The hyperparameters.
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    /// The metrics.
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
}

/// `tensorboard.hparams.HParamInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamInfo {
    /// The hyperparameter's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// A [`DataType`] value.
    #[prost(enumeration = "DataType", tag = "4")]
    pub r#type: i32,
}

/// `tensorboard.hparams.DataType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DataType {
    /// Not set.
    Unset = 0,
    /// A string.
    String = 1,
    /// A boolean.
    Bool = 2,
    /// A number.
    Float64 = 3,
}

/// `tensorboard.hparams.MetricInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricInfo {
    /// The scalar series the metric is read from.
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
}

/// `tensorboard.hparams.MetricName`: a scalar tag in a (sub-)run.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricName {
    /// Sub-directory of the session's run the scalar lives in ("" = the run itself).
    #[prost(string, tag = "1")]
    pub group: String,
    /// The scalar's tag.
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// `tensorboard.hparams.SessionStartInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    /// Hyperparameter values by name (sorted, so files are reproducible).
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, Value>,
    /// Start time, seconds since the Unix epoch (0: unset).
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `tensorboard.hparams.SessionEndInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionEndInfo {
    /// A [`Status`] value.
    #[prost(enumeration = "Status", tag = "1")]
    pub status: i32,
    /// End time, seconds since the Unix epoch (0: unset).
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// `tensorboard.hparams.Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    /// Unknown.
    Unknown = 0,
    /// Finished successfully.
    Success = 1,
    /// Failed.
    Failure = 2,
    /// Still running.
    Running = 3,
}

/// `google.protobuf.Value`, without its `struct_value` and `list_value` kinds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    /// The value.
    #[prost(oneof = "value::Kind", tags = "2, 3, 4")]
    pub kind: Option<value::Kind>,
}

/// Nested types of [`Value`].
pub mod value {
    /// `google.protobuf.Value.kind`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// A number.
        #[prost(double, tag = "2")]
        NumberValue(f64),
        /// A string.
        #[prost(string, tag = "3")]
        StringValue(String),
        /// A boolean.
        #[prost(bool, tag = "4")]
        BoolValue(bool),
    }
}
