//! Parsing an experiment file section by section, so that every syntax and type error of the file
//! is reported in one pass with its position.

use super::document::Matrices;
use super::file::{Experiment, ExperimentMeta};
use super::slurm::SlurmTable;
use crate::spec::{Diagnostic, Invalid, Sources, Sp};
use crate::stages::{StageSpec, STAGE_KINDS};
use crate::store::paths::name_problem;
use crate::util::did_you_mean;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use toml::de::{DeValue, ValueDeserializer};

type Spanned<T> = serde_spanned::Spanned<T>;

const SECTIONS: &[&str] = &["experiment", "include", "models", "datasets", "stages", "plots", "slurm"];

/// A toml error as a diagnostic, with "did you mean" for unknown fields and variants.
fn toml_diag(e: toml::de::Error, fallback: std::ops::Range<usize>) -> Diagnostic {
    let msg = e.message().trim().to_string();
    let span = e.span().unwrap_or(fallback);
    let help = unknown_name_hint(&msg);
    Diagnostic::at(span, msg).help(help)
}

/// toml/serde say "unknown field `x`, expected one of `a`, `b`": suggest the nearest.
fn unknown_name_hint(msg: &str) -> String {
    let ticks: Vec<&str> = msg.split('`').skip(1).step_by(2).collect();
    if (msg.starts_with("unknown field") || msg.starts_with("unknown variant")) && ticks.len() > 1 {
        return did_you_mean(ticks[0], ticks[1..].iter().copied()).trim_start_matches("; ").to_string();
    }
    String::new()
}

fn decode<T: DeserializeOwned>(v: Spanned<DeValue<'_>>) -> Result<Sp<T>, Diagnostic> {
    let span = v.span();
    T::deserialize(ValueDeserializer::from(v))
        .map(|value| Sp { value, span: span.clone() })
        .map_err(|e| toml_diag(e, span))
}

/// Each entry of a `[section.NAME]` table decoded on its own.
fn decode_entries<T>(
    v: Spanned<DeValue<'_>>,
    section: &str,
    matrices: &Matrices,
    diags: &mut Vec<Diagnostic>,
    undecoded: &mut BTreeSet<String>,
    f: impl Fn(&str, Spanned<DeValue<'_>>) -> Result<Sp<T>, Diagnostic>,
) -> BTreeMap<String, Sp<T>> {
    let span = v.span();
    let mut out = BTreeMap::new();
    let DeValue::Table(table) = v.into_inner() else {
        diags.push(Diagnostic::at(span, format!("`{section}` must be a table of named entries ([{section}.NAME])")));
        return out;
    };
    for (key, value) in table {
        let name = key.get_ref().to_string();
        let expansion = matrices.expanded.values().any(|names| names.contains(&name));
        if let Some(problem) = name_problem(&name).filter(|_| !expansion) {
            diags.push(Diagnostic::at(key.span(), format!("invalid name: {problem}")));
            continue;
        }
        match f(&name, value) {
            Ok(x) => {
                out.insert(name, x);
            }
            Err(d) => {
                diags.push(d);
                undecoded.insert(name);
            }
        }
    }
    out
}

/// A stage table: its `kind` chooses the type of the rest.
fn decode_stage(v: Spanned<DeValue<'_>>) -> Result<Sp<StageSpec>, Diagnostic> {
    let span = v.span();
    let DeValue::Table(mut table) = v.into_inner() else {
        return Err(Diagnostic::at(span, "a stage must be a table with a `kind`"));
    };
    let key = table.keys().find(|k| k.get_ref() == "kind").cloned();
    let Some(kind_value) = key.and_then(|k| table.remove(&k)) else {
        let kinds = STAGE_KINDS.join(", ");
        return Err(Diagnostic::at(span, "stage has no `kind`").help(format!("add kind = \"…\", one of: {kinds}")));
    };
    let kind_span = kind_value.span();
    let DeValue::String(kind) = kind_value.get_ref() else {
        return Err(Diagnostic::at(kind_span, "`kind` must be a string"));
    };
    let kind = kind.to_string();
    let rest = Spanned::new(span.clone(), DeValue::Table(table));
    StageSpec::decode(&kind, ValueDeserializer::from(rest)).map(|value| Sp { value, span: span.clone() }).map_err(|e| {
        match e {
            Some(e) => toml_diag(e, span.clone()),
            None => Diagnostic::at(kind_span, format!("unknown stage kind '{kind}'")).help(format!(
                "{}; kinds: {}",
                did_you_mean(&kind, STAGE_KINDS.iter().copied()).trim_start_matches("; "),
                STAGE_KINDS.join(", ")
            )),
        }
    })
}

/// Parse a file; every error found is returned at once.
pub fn parse_file(file: &Path) -> Result<Experiment, Invalid> {
    parse_with(file, &[])
}

/// Parse a file with `--set PATH=VALUE` overrides (TOML values; a bare word is a string).
pub fn parse_with(file: &Path, sets: &[String]) -> Result<Experiment, Invalid> {
    let bytes = match super::document::read_file(file) {
        Ok(b) => b,
        Err(e) => return Err(Invalid::of_file(file, "", vec![Diagnostic::global(e)])),
    };
    match decode_utf8(bytes) {
        Ok(text) => {
            let (sources, diags) = super::document::read_sources(file, text, sets);
            parse_sources(file, sources, diags)
        }
        Err((text, d)) => Err(Invalid::of_file(file, &text, vec![d])),
    }
}

/// The file's text, or (its lossy text, where and why it is not UTF-8).
fn decode_utf8(bytes: Vec<u8>) -> Result<String, (String, Diagnostic)> {
    let utf16 = bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]);
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bad = e.as_bytes()[at];
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let msg = if utf16 {
                "the file is UTF-16; experiment files are UTF-8".to_string()
            } else {
                format!("byte 0x{bad:02x} is not UTF-8; experiment files are UTF-8 (a Latin-1 or Windows-1252 file?)")
            };
            let d = Diagnostic::at(if utf16 { 0..0 } else { at..at + char::REPLACEMENT_CHARACTER.len_utf8() }, msg)
                .help("save the file as UTF-8 (e.g. `iconv -t UTF-8`)");
            Err((text, d))
        }
    }
}

/// NaN and infinities anywhere in the file: lantern accepts finite numbers only (so that no two
/// different values can share a fingerprint).
fn non_finite(v: &Spanned<DeValue<'_>>, out: &mut Vec<Diagnostic>) {
    match v.get_ref() {
        DeValue::Float(f) if !f.as_str().parse::<f64>().is_ok_and(f64::is_finite) => out
            .push(Diagnostic::at(v.span(), format!("'{}' is not a finite number", f.as_str())).help(
                "lantern accepts finite numbers only: write the value itself (e.g. 1e30 for a very large bound)",
            )),
        DeValue::Array(a) => a.iter().for_each(|x| non_finite(x, out)),
        DeValue::Table(t) => t.values().for_each(|x| non_finite(x, out)),
        _ => {}
    }
}

/// Decode the merged document of `sources` section by section.
fn parse_sources(file: &Path, sources: Sources, mut diags: Vec<Diagnostic>) -> Result<Experiment, Invalid> {
    let (root, matrices) = super::document::merge(&sources, &mut diags);
    let invalid =
        |diagnostics: Vec<Diagnostic>, sources: Sources| Invalid { file: file.to_path_buf(), sources, diagnostics };
    if !diags.is_empty() {
        drop(root);
        return Err(invalid(diags, sources));
    }
    root.values().for_each(|v| non_finite(v, &mut diags));
    let mut meta: Option<Sp<ExperimentMeta>> = None;
    let (mut models, mut datasets, mut stages, mut plots) = Default::default();
    let mut undecoded = BTreeSet::new();
    let u = &mut undecoded;
    let mut slurm = SlurmTable::default();
    for (key, value) in root {
        match key.get_ref().as_ref() {
            "experiment" => match decode(value) {
                Ok(m) => meta = Some(m),
                Err(d) => diags.push(d),
            },
            "models" => models = decode_entries(value, "models", &matrices, &mut diags, u, |_, v| decode(v)),
            "datasets" => datasets = decode_entries(value, "datasets", &matrices, &mut diags, u, |_, v| decode(v)),
            "stages" => stages = decode_entries(value, "stages", &matrices, &mut diags, u, |_, v| decode_stage(v)),
            "plots" => plots = decode_entries(value, "plots", &matrices, &mut diags, u, |_, v| decode(v)),
            "slurm" => slurm = decode_slurm(value, &matrices, &mut diags),
            other => diags.push(Diagnostic::at(key.span(), format!("unknown section '{other}'")).help(format!(
                "sections: {}{}",
                SECTIONS.join(", "),
                did_you_mean(other, SECTIONS.iter().copied())
            ))),
        }
    }
    if meta.is_none() && diags.is_empty() {
        diags
            .push(Diagnostic::at(0..0, "missing [experiment] section").help("add:\n[experiment]\nname = \"my-study\""));
    }
    let Some(meta) = meta else { return Err(invalid(diags, sources)) };
    let exp = Experiment {
        file: file.to_path_buf(),
        sources,
        matrices,
        meta: meta.value,
        models,
        datasets,
        stages,
        plots,
        undecoded,
        slurm,
    };
    if diags.is_empty() {
        return Ok(exp);
    }
    // Every error in one round: what did decode is validated too (references to the entries that
    // did not are not reported).
    let sources = exp.sources.clone();
    if let Err(more) = super::validate::validate(exp) {
        diags.extend(more.diagnostics);
    }
    diags.sort_by_key(|d| d.span.as_ref().map(|s| s.start).unwrap_or(0));
    Err(invalid(diags, sources))
}

/// `[slurm]`: its `stages` table entry by entry, the other keys as the defaults.
fn decode_slurm(v: Spanned<DeValue<'_>>, matrices: &Matrices, diags: &mut Vec<Diagnostic>) -> SlurmTable {
    let span = v.span();
    let DeValue::Table(table) = v.into_inner() else {
        diags.push(Diagnostic::at(span, "`slurm` must be a table ([slurm])"));
        return SlurmTable::default();
    };
    let mut rest = toml::de::DeTable::new();
    let mut stages = BTreeMap::new();
    for (key, value) in table {
        if key.get_ref() == "stages" {
            stages = decode_entries(value, "slurm.stages", matrices, diags, &mut BTreeSet::new(), |_, v| decode(v));
        } else {
            rest.insert(key, value);
        }
    }
    let defaults = decode(Spanned::new(span.clone(), DeValue::Table(rest))).map(|d| d.value).unwrap_or_else(|d| {
        diags.push(d);
        Default::default()
    });
    SlurmTable { defaults, span, stages }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_hint_picks_nearest() {
        assert_eq!(
            unknown_name_hint("unknown field `hoks`, expected one of `model`, `hooks`"),
            "did you mean 'hooks'?"
        );
        assert_eq!(unknown_name_hint("invalid type: string"), "");
    }
}
