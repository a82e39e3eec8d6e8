//! Streaming reducers over activations: moments, histograms, top-k examples, per-token statistics,
//! feature separation (variance reduction).
//! Each accumulates batches in f64 (or exact counts) with memory independent of the number of tokens.

pub mod exact;
pub mod firing;
pub mod histogram;
pub mod labels;
pub mod moments;
pub mod neuron;
pub mod separation;
pub mod tokens;
pub mod topk;

pub use exact::Exact;
pub use histogram::{BinnedMoments, Histogram, HistogramSpec};
pub use moments::Moments;
pub use neuron::{NeuronStats, Position};
pub use tokens::TokenStats;
pub use topk::TopK;
