//! Language modelling around the [`gpt`](crate::models::gpt) model, as
//! nanoGPT's scripts do it: [`prepare`] turns a text file into a
//! character-level token directory (`data/shakespeare_char/prepare.py`),
//! [`sample`] draws text from a trained model (`sample.py`), and
//! [`sample_checkpoint`] from a run's checkpoint (`kiln sample`).
//!
//! The pieces they share live with the data: the token files
//! ([`crate::data::tokens`]) and the vocabulary (`meta.pkl`,
//! [`crate::data::meta`]).
pub mod prepare;
pub mod sample;

pub use prepare::{prepare_text, PreparedText};
pub use sample::{sample, sample_checkpoint, CheckpointSamples, SampleConfig};
