//! Reading documents from a dataset's source, streaming: JSONL line by line, text files, Parquet and
//! CSV columns (polars), Hugging Face hub datasets from the standard cache, inline prompts.
//! Errors name the file, the line and the fix.

use super::error::{json_kind, DataError};
use super::spec::{DatasetSpec, Format};
use crate::model::source::{hub_cache, hub_file, offline, placement_help, snapshot};
use crate::util::Cancel;
use anyhow::{anyhow, bail, Context, Result};
use hf_hub::{Repo, RepoType};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// One document and its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub text: String,
    pub label: String,
}

/// Whether reading goes on after a document.
#[derive(PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// The files a spec reads (hub files resolved in the cache, downloading when online).
/// Whether a `path` is a glob (several files, each document labelled by its file's stem).
pub fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

pub fn input_files(spec: &DatasetSpec, base: &Path) -> Result<Vec<PathBuf>> {
    if let Some(p) = &spec.path {
        if is_glob(p) {
            let pattern = base.join(p);
            let mut files: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
                .with_context(|| format!("bad glob {p}"))?
                .filter_map(|f| f.ok())
                .filter(|f| f.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                bail!(DataError::in_file(&pattern, "no data file matches"));
            }
            return Ok(files);
        }
        let path = base.join(p);
        if !path.is_file() {
            bail!(DataError::in_file(&path, "the data file does not exist"));
        }
        return Ok(vec![path]);
    }
    if let Some(repo) = &spec.hub {
        return hub_files_in(&hub_cache(), spec, repo, true);
    }
    Ok(vec![])
}

/// Files of a hub dataset in a cache: `files` glob, else the parquet/jsonl files of the split;
/// listed online (and downloaded) when the cache has no snapshot and `download` is true.
pub fn hub_files_in(cache: &hf_hub::Cache, spec: &DatasetSpec, repo_id: &str, download: bool) -> Result<Vec<PathBuf>> {
    let rev = spec.revision.clone().unwrap_or_else(|| "main".into());
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Dataset, rev);
    let wanted = |name: &str| -> bool {
        match &spec.files {
            Some(g) => glob::Pattern::new(g).is_ok_and(|p| p.matches(name)),
            None => {
                [".parquet", ".jsonl", ".json"].iter().any(|e| name.ends_with(e)) && name.contains(spec.split.as_str())
            }
        }
    };
    // A snapshot in the cache (`refs/<revision>` → `snapshots/<commit>/`): list its files (works
    // offline, whatever else the snapshot holds).
    let snap = snapshot(cache, &repo);
    let mut held = Vec::new();
    if let Some(root) = &snap {
        list(root, root, &mut held)?;
        let mut files: Vec<PathBuf> = held.iter().filter(|(rel, _)| wanted(rel)).map(|(_, p)| p.clone()).collect();
        files.sort();
        if !files.is_empty() {
            return Ok(files);
        }
    }
    let help =
        || placement_help(cache, repo_id, RepoType::Dataset, "its data files (e.g. data/train-00000-of-00001.parquet)");
    if !download || offline() {
        if let Some(root) = &snap {
            let mut names: Vec<&str> = held.iter().map(|(rel, _)| rel.as_str()).collect();
            names.sort();
            bail!(
                "dataset '{repo_id}': its cached snapshot {} holds no {} (it holds: {}); set `files` to a glob of the \
                 files to read",
                root.display(),
                match &spec.files {
                    Some(g) => format!("file matching `files = \"{g}\"`"),
                    None => format!("parquet or jsonl file of split '{}'", spec.split),
                },
                if names.is_empty() { "nothing".to_string() } else { names.join(", ") }
            );
        }
        bail!("dataset '{repo_id}' is not in the Hugging Face cache; {}", help());
    }
    // Online: ask the hub for the repository's files.
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone()).with_progress(true).build()?;
    let info = api.repo(repo.clone()).info().map_err(|e| {
        anyhow!("dataset '{repo_id}' is not in the Hugging Face cache and cannot be listed online ({e}); {}", help())
    })?;
    let mut files = Vec::new();
    for s in info.siblings.iter().filter(|s| wanted(&s.rfilename)) {
        files.push(hub_file(&repo, &s.rfilename, true)?.with_context(|| format!("cannot download {}", s.rfilename))?);
    }
    if files.is_empty() {
        bail!("dataset '{repo_id}' has no parquet or jsonl files for split '{}' (set `files` to a glob)", spec.split);
    }
    Ok(files)
}

fn list(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            list(root, &p, out)?;
        } else {
            out.push((p.strip_prefix(root)?.to_string_lossy().replace('\\', "/"), p));
        }
    }
    Ok(())
}

/// Reads documents and reports progress in bytes.
pub struct Reader<'a> {
    pub spec: &'a DatasetSpec,
    pub cancel: &'a Cancel,
    pub progress: &'a mut dyn FnMut(u64, u64),
}

impl Reader<'_> {
    /// Call `f` for every document of the source, in order, until it says stop.
    pub fn read(&mut self, base: &Path, f: &mut dyn FnMut(Doc) -> Result<Flow>) -> Result<()> {
        let spec = self.spec;
        let label = spec.label.clone().unwrap_or_default();
        if let Some(prompts) = &spec.prompts {
            for p in prompts {
                if f(Doc { text: p.clone(), label: label.clone() })? == Flow::Stop {
                    break;
                }
            }
            return Ok(());
        }
        if let Some(pairs) = &spec.pairs {
            for p in pairs {
                if f(Doc { text: p.clean.clone(), label: label.clone() })? == Flow::Stop {
                    break;
                }
            }
            return Ok(());
        }
        let files = input_files(spec, base)?;
        let by_file = files.len() > 1 && spec.label.is_none() && spec.label_field.is_none();
        for file in files {
            let label = if by_file {
                file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
            } else {
                label.clone()
            };
            let format = spec.format(&file).with_context(|| {
                format!(
                    "{}: unknown file type; set format = \"jsonl\" | \"text\" | \"parquet\" | \"csv\"",
                    file.display()
                )
            })?;
            let flow = match format {
                Format::Jsonl => self.jsonl(&file, &label, f)?,
                Format::Text => self.text(&file, &label, f)?,
                Format::Parquet => self.parquet(&file, &label, f)?,
                Format::Csv => self.csv(&file, &label, f)?,
            };
            if flow == Flow::Stop {
                break;
            }
        }
        Ok(())
    }

    fn jsonl(&mut self, file: &Path, label: &str, f: &mut dyn FnMut(Doc) -> Result<Flow>) -> Result<Flow> {
        let spec = self.spec;
        let total = std::fs::metadata(file)?.len();
        let mut r =
            BufReader::new(std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?);
        let (mut buf, mut done, mut line_no) = (Vec::new(), 0u64, 0usize);
        loop {
            buf.clear();
            let n = r.read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Ok(Flow::Continue);
            }
            line_no += 1;
            done += n as u64;
            if line_no % 1000 == 0 {
                (self.progress)(done, total);
                self.cancel.check()?;
            }
            let line_no = line_no as u64;
            let line = std::str::from_utf8(&buf).map_err(|e| {
                let at = e.valid_up_to();
                DataError::at(file, line_no, at as u64 + 1, format!("byte 0x{:02x} is not UTF-8", buf[at]))
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                let msg = e.to_string();
                let msg = msg.rsplit_once(" at line ").map_or(msg.as_str(), |(m, _)| m).to_string();
                DataError::at(file, line_no, e.column().max(1) as u64, format!("not JSON ({msg})"))
            })?;
            let Some(object) = v.as_object() else {
                bail!(DataError::at_line(
                    file,
                    line_no,
                    format!("the line is {}, expected a JSON object", json_kind(&v))
                ));
            };
            let text = match object.get(&spec.field) {
                Some(serde_json::Value::String(t)) => t,
                Some(other) => bail!(DataError::at_line(
                    file,
                    line_no,
                    format!("'{}' is {}, expected a string", spec.field, json_kind(other))
                )),
                None => {
                    let fields: Vec<&str> = object.keys().map(|s| s.as_str()).collect();
                    bail!(DataError::at_line(
                        file,
                        line_no,
                        format!(
                            "no field '{}' (the line has: {}){}; set `field` to the field holding the text",
                            spec.field,
                            if fields.is_empty() { "no fields".to_string() } else { fields.join(", ") },
                            crate::util::did_you_mean(&spec.field, fields.iter().copied())
                        )
                    ))
                }
            };
            let label = match &spec.label_field {
                // `meta.pile_set_name` reads a nested field.
                Some(lf) => v
                    .get(lf)
                    .or_else(|| v.pointer(&format!("/{}", lf.replace('.', "/"))))
                    .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
                    .unwrap_or_default(),
                None => label.to_string(),
            };
            if f(Doc { text: text.to_string(), label })? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
    }

    fn text(&mut self, file: &Path, label: &str, f: &mut dyn FnMut(Doc) -> Result<Flow>) -> Result<Flow> {
        let mut bytes = Vec::new();
        std::fs::File::open(file)
            .with_context(|| format!("cannot open {}", file.display()))?
            .read_to_end(&mut bytes)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let (bytes, at) = (e.as_bytes(), e.utf8_error().valid_up_to());
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            let column = at - bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
            DataError::at(file, line, column as u64, format!("byte 0x{:02x} is not UTF-8", bytes[at]))
        })?;
        let doc = |t: &str| Doc { text: t.to_string(), label: label.to_string() };
        if !self.spec.lines {
            return f(doc(&text));
        }
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            if f(doc(l))? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// Parquet columns (polars reads only the text and label columns).
    fn parquet(&mut self, file: &Path, label: &str, f: &mut dyn FnMut(Doc) -> Result<Flow>) -> Result<Flow> {
        use polars::prelude::*;
        let wanted: Vec<String> = std::iter::once(&self.spec.field)
            .chain(self.spec.label_field.as_ref())
            .map(|c| c.split('.').next().unwrap_or(c).to_string())
            .collect();
        let df = crate::store::table::read_columns(file, &wanted)
            .map_err(|e| DataError::in_file(file, format!("not a readable Parquet file: {e:#}")))?;
        let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        let column = |name: &str| -> Result<Column> {
            crate::store::table::column(&df, name).map_err(|_| missing_column(file, name, &names).into())
        };
        let strings = |c: Column| -> Result<Vec<Option<String>>> {
            let name = c.name().to_string();
            let c = c.cast(&DataType::String).map_err(|e| {
                DataError::in_file(file, format!("column '{name}' ({}) cannot be read as text: {e}", c.dtype()))
            })?;
            Ok(c.str()?.into_iter().map(|s| s.map(str::to_string)).collect())
        };
        let texts = column(&self.spec.field)?;
        if texts.dtype() != &DataType::String {
            bail!(DataError::in_file(
                file,
                format!("column '{}' holds {}, expected strings", self.spec.field, texts.dtype())
            ));
        }
        let texts = strings(texts)?;
        let labels = match &self.spec.label_field {
            Some(lf) => strings(column(lf)?)?,
            None => vec![Some(label.to_string()); texts.len()],
        };
        for (i, (t, l)) in texts.into_iter().zip(labels).enumerate() {
            if i % 1000 == 0 {
                self.cancel.check()?;
            }
            let Some(t) = t else { continue };
            if f(Doc { text: t, label: l.unwrap_or_default() })? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// A CSV file with a header row; every problem is reported at its line.
    fn csv(&mut self, file: &Path, label: &str, f: &mut dyn FnMut(Doc) -> Result<Flow>) -> Result<Flow> {
        let mut r = csv::Reader::from_path(file).map_err(|e| csv_error(file, e))?;
        let header: Vec<String> = r.headers().map_err(|e| csv_error(file, e))?.iter().map(str::to_string).collect();
        let index =
            |name: &str| header.iter().position(|h| h == name).ok_or_else(|| missing_column(file, name, &header));
        let text_at = index(&self.spec.field)?;
        let label_at = self.spec.label_field.as_deref().map(index).transpose()?;
        for (i, record) in r.records().enumerate() {
            if i % 1000 == 0 {
                self.cancel.check()?;
            }
            let record = record.map_err(|e| csv_error(file, e))?;
            let text = record.get(text_at).unwrap_or_default();
            if text.is_empty() {
                continue;
            }
            let label = label_at.map_or(label, |at| record.get(at).unwrap_or_default());
            if f(Doc { text: text.to_string(), label: label.to_string() })? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }
}

/// "no column 'x' (columns: …); did you mean …"
fn missing_column(file: &Path, name: &str, names: &[String]) -> DataError {
    DataError::in_file(
        file,
        format!(
            "no column '{name}' (columns: {}){}",
            names.join(", "),
            crate::util::did_you_mean(name, names.iter().map(|s| s.as_str()))
        ),
    )
}

/// A CSV reading error at its line.
fn csv_error(file: &Path, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("field {} is not UTF-8", err.field() + 1),
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("{len} fields where the header has {expected_len}")
        }
        csv::ErrorKind::Io(io) => format!("cannot read: {io}"),
        _ => format!("not CSV: {e}"),
    };
    match line {
        Some(l) => DataError::at_line(file, l, message),
        None => DataError::in_file(file, message),
    }
}
