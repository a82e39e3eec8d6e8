//! lantern: mechanistic-interpretability experiments on transformer language models, driven by
//! TOML experiment files (see README.md and DESIGN in the repository).

pub mod model;
pub mod util;
