//! lantern: mechanistic-interpretability experiments on transformer language models, driven by
//! TOML experiment files: parse → validate → plan → execute (cached, resumable) → plots and report.
//!
//! # Layers
//! Modules are layered; a module imports only modules below it (a test enforces it), and a lower
//! layer that needs something from above is handed it (a trait object, a callback, a value):
//!
//! 1. `util`: suggestions, cancellation, the progress `Reporter` trait, process tuning
//! 2. `store`: the content-addressed artifact store, atomic writes, tables, digests
//! 3. `stats`: streaming reducers (moments, histograms, top-k, separation)
//! 4. `model`: the hooked transformer (configs, loading, processing, forward, hooks, interventions)
//! 5. `data`: dataset sources and tokenization
//! 6. `plot`, `pages`: PNG/SVG plots and HTML pages
//! 7. `analysis`, `train`: analyses on a loaded model; training small models
//! 8. `spec`: the experiment-file vocabulary (positions, references, diagnostics)
//! 9. `stages`: stage kinds behind one `Stage` trait, with the toolkit they share
//! 10. `plan`: the dependency graph of stages and plots, in run order
//! 11. `experiment`: experiment files (types, parsing, validation, the plan)
//! 12. `fingerprint`: what identifies each node's artifacts in the store
//! 13. `exec`: the executor and the `Session` API
//! 14. `report`: the HTML report of a run
//!
//! The `lantern` binary (`src/main.rs`, `src/cli/`) sits on top and is the only code that prints.
//!
//! # As a library
//! Load a model folder (Hugging Face layout), capture a hook and intervene, as with
//! TransformerLens's `run_with_cache` and hooks:
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use lantern::model::{Action, BlockSite, HookPoint, Intervention, Model, ModelFiles, Processing};
//!
//! # fn main() -> anyhow::Result<()> {
//! let files = ModelFiles::from_folder("tests/fixtures/gpt2-tiny".as_ref())?;
//! let model = Model::load(&files, Processing::DEFAULT, &Device::Cpu)?;
//! let tokens = Tensor::new(&[[1u32, 7, 42, 9, 3]], &Device::Cpu)?;
//! let post = HookPoint::parse("blocks.1.mlp.hook_post").expect("a TL hook name");
//! assert_eq!(post, HookPoint::Block(1, BlockSite::Post));
//!
//! // Logits and the captured activations [batch, pos, d_mlp].
//! let (logits, cache) = model.run_with_cache(&tokens, &[post], &[])?;
//! assert_eq!(cache[&post].dims(), &[1, 5, model.cfg.d_mlp]);
//!
//! // The same pass with neuron 3 of layer 1 zeroed at every position.
//! let zero = Intervention::new(post, Action::Zero).neurons(vec![3]);
//! let (ablated, cache) = model.run_with_cache(&tokens, &[post], &[zero])?;
//! assert_eq!(cache[&post].narrow(2, 3, 1)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
//! assert_ne!(logits.to_vec3::<f32>()?, ablated.to_vec3::<f32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! Experiment files run through an [`exec::Session`]; see `examples/run_experiment.rs`.

pub mod util;

pub mod store;

pub mod stats;

pub mod model;

pub mod data;

pub mod pages;
pub mod plot;

pub mod analysis;
pub mod train;

pub mod spec;

pub mod stages;

pub mod plan;

pub mod experiment;

pub mod fingerprint;

pub mod exec;

pub mod report;
