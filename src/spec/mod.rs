//! The vocabulary of experiment files that every stage shares: values that remember their position
//! in the file, typed references by name, the sources positions point into, rustc-style
//! diagnostics, and finding a field's position.

pub mod diag;
pub mod locate;
pub mod source;
pub mod span;

pub use diag::{Diagnostic, Invalid};
pub use source::{Source, Sources};
pub use span::{DatasetRef, ModelRef, Sp, StageRef};
