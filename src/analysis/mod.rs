//! Interpretability analyses on a loaded model, independent of the experiment engine: activation
//! patching, logit lens, direct effects, vocabulary projections.

pub mod baseline;
pub mod correlation;
pub mod effects;
pub mod features;
pub mod lens;
pub mod losses;
pub mod patching;
pub mod vocab;
pub mod weights;
