//! What each `lantern` command does, with its exit code: 0 success, 1 runtime failure,
//! 2 invalid input (experiment file, missing model, a missing or malformed data file), 130
//! interrupted. The only code of the crate that prints.

mod cost;
mod inspect;
mod model;
mod run;
mod store;
mod submit;
pub mod terminal;

pub use inspect::{plan, show, status, status_all, ShowOptions};
pub use model::{hooks, trace, TraceInput};
pub use run::run;
pub use store::{clean, gc};
pub use submit::submit;

use anyhow::{Context, Result};
use candle_core::Device;
use lantern::exec::Session;
use lantern::experiment::file::DeviceSpec;
use lantern::experiment::Validated;
use lantern::spec::Invalid;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Failed,
    Invalid,
    Interrupted,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(match e {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Invalid => 2,
            Exit::Interrupted => 130,
        })
    }
}

/// `--shard i/n`.
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let err = || format!("'{s}': expected i/n, e.g. 3/8 (shard 3 of 8)");
    let (i, n) = s.split_once('/').ok_or_else(err)?;
    let (i, n) = (i.trim().parse().map_err(|_| err())?, n.trim().parse().map_err(|_| err())?);
    if i == 0 || i > n {
        return Err(format!("'{s}': the shard number must be between 1 and {n}"));
    }
    Ok((i, n))
}

/// Print a validation result: the warnings of a valid file, or every diagnostic of an invalid one.
fn report<T>(checked: Result<T, Invalid>, warnings: impl Fn(&T) -> &[String]) -> Option<T> {
    match checked {
        Ok(v) => {
            for w in warnings(&v) {
                eprintln!("warning: {w}");
            }
            Some(v)
        }
        Err(invalid) => {
            eprintln!("{invalid}");
            None
        }
    }
}

/// An experiment file with its `--set` overrides, against an output folder.
pub struct Target {
    pub file: PathBuf,
    pub sets: Vec<String>,
    pub out: PathBuf,
}

/// Open an experiment against an output folder, printing diagnostics; `None` means invalid input.
fn open(target: &Target) -> Result<Option<Session>> {
    let opened = lantern::experiment::load_with(&target.file, &target.sets)
        .map_err(anyhow::Error::from)
        .and_then(|v| Session::new(v, &target.out));
    match opened {
        Ok(s) => Ok(report(Ok(s), |s| &s.v.warnings)),
        Err(e) => match e.downcast::<Invalid>() {
            Ok(invalid) => Ok(report(Err::<Session, _>(invalid), |s| &s.v.warnings)),
            Err(e) => Err(e),
        },
    }
}

pub fn validate(file: &Path, sets: &[String]) -> Result<Exit> {
    Ok(match report(lantern::experiment::load_with(file, sets), |v| &v.warnings) {
        Some(v) => {
            let n = |k: usize, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
            eprintln!(
                "{}: valid ({}, {}, {}, {})",
                file.display(),
                n(v.exp.models.len(), "model"),
                n(v.exp.datasets.len(), "dataset"),
                n(v.exp.stages.len(), "stage"),
                n(v.exp.plots.len(), "plot")
            );
            Exit::Ok
        }
        None => Exit::Invalid,
    })
}

/// The device named in the experiment (`cpu` by default; validation checked the name).
fn device(v: &Validated) -> Result<Device> {
    match v.exp.meta.device() {
        Some(DeviceSpec::Cuda(ordinal)) => Device::new_cuda(ordinal)
            .context("CUDA is not available (build with --features cuda on a machine with a GPU)"),
        _ => Ok(Device::Cpu),
    }
}
