//! Parsing an experiment file section by section, so that every syntax and type error of the file
//! is reported in one pass with its position.

use super::diag::{Diagnostic, Invalid};
use super::file::{Experiment, ExperimentMeta};
use super::span::Sp;
use crate::stages::{StageSpec, STAGE_KINDS};
use crate::util::did_you_mean;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;
use toml::de::{DeTable, DeValue, ValueDeserializer};

type Spanned<T> = serde_spanned::Spanned<T>;

const SECTIONS: &[&str] = &["experiment", "models", "datasets", "stages", "plots"];

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
    diags: &mut Vec<Diagnostic>,
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
        if !valid_name(&name) {
            diags.push(Diagnostic::at(key.span(), format!("invalid name '{name}': use letters, digits, '_' and '-'")));
            continue;
        }
        match f(&name, value) {
            Ok(x) => {
                out.insert(name, x);
            }
            Err(d) => diags.push(d),
        }
    }
    out
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
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
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            return Err(Invalid {
                file: file.to_path_buf(),
                text: String::new(),
                diagnostics: vec![Diagnostic::global(format!("cannot read the file: {e}"))],
            })
        }
    };
    parse_str(file, text)
}

pub fn parse_str(file: &Path, text: String) -> Result<Experiment, Invalid> {
    let invalid = |diagnostics: Vec<Diagnostic>, text: &str| Invalid {
        file: file.to_path_buf(),
        text: text.to_string(),
        diagnostics,
    };
    let (root, errors) = DeTable::parse_recoverable(&text);
    if !errors.is_empty() {
        let diags = errors.into_iter().map(|e| toml_diag(e, 0..0)).collect();
        return Err(invalid(diags, &text));
    }
    let mut diags = Vec::new();
    let mut meta: Option<Sp<ExperimentMeta>> = None;
    let (mut models, mut datasets, mut stages, mut plots) = Default::default();
    for (key, value) in root.into_inner() {
        match key.get_ref().as_ref() {
            "experiment" => match decode(value) {
                Ok(m) => meta = Some(m),
                Err(d) => diags.push(d),
            },
            "models" => models = decode_entries(value, "models", &mut diags, |_, v| decode(v)),
            "datasets" => datasets = decode_entries(value, "datasets", &mut diags, |_, v| decode(v)),
            "stages" => stages = decode_entries(value, "stages", &mut diags, |_, v| decode_stage(v)),
            "plots" => plots = decode_entries(value, "plots", &mut diags, |_, v| decode(v)),
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
    if !diags.is_empty() {
        return Err(invalid(diags, &text));
    }
    let meta = meta.expect("checked above").value;
    Ok(Experiment { file: file.to_path_buf(), text, meta, models, datasets, stages, plots })
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
