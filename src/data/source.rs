//! Reading documents from a dataset's source, streaming: JSONL line by line, text files, Parquet and
//! CSV columns (polars), Hugging Face hub datasets from the standard cache, inline prompts.
//! Errors name the file, the line and the fix.

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
                bail!("no data file matches {}", pattern.display());
            }
            return Ok(files);
        }
        let path = base.join(p);
        if !path.is_file() {
            bail!("data file {} does not exist", path.display());
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
                Format::Parquet | Format::Csv => self.table(&file, format, &label, f)?,
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
            let line = std::str::from_utf8(&buf).map_err(|e| {
                anyhow!("{}:{line_no}: invalid UTF-8 at byte {} of the line", file.display(), e.valid_up_to() + 1)
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| anyhow!("{}:{line_no}:{}: invalid JSON: {e}", file.display(), e.column()))?;
            let Some(text) = v.get(&spec.field).and_then(|t| t.as_str()) else {
                let fields: Vec<&String> = v.as_object().map(|o| o.keys().collect()).unwrap_or_default();
                bail!(
                    "{}:{line_no}: no text field '{}' (the line has: {}); set `field` to the field holding the text",
                    file.display(),
                    spec.field,
                    fields.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                );
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
            let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
            anyhow!("{}:{line}: invalid UTF-8", file.display())
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

    fn table(
        &mut self,
        file: &Path,
        format: Format,
        label: &str,
        f: &mut dyn FnMut(Doc) -> Result<Flow>,
    ) -> Result<Flow> {
        use polars::prelude::*;
        // Only the text and label columns are read (a Pile file's other columns may be of any type).
        let wanted: Vec<String> = std::iter::once(&self.spec.field)
            .chain(self.spec.label_field.as_ref())
            .map(|c| c.split('.').next().unwrap_or(c).to_string())
            .collect();
        let df = match format {
            Format::Parquet => crate::store::table::read_columns(file, &wanted)?,
            _ => CsvReadOptions::default()
                .with_has_header(true)
                .try_into_reader_with_file_path(Some(file.to_path_buf()))
                .and_then(|r| r.finish())
                .with_context(|| format!("cannot read CSV {}", file.display()))?,
        };
        let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        let column = |name: &str| -> Result<Vec<Option<String>>> {
            let c = crate::store::table::column(&df, name).map_err(|_| {
                anyhow!(
                    "{}: no column '{name}' (columns: {}){}",
                    file.display(),
                    names.join(", "),
                    crate::util::did_you_mean(name, names.iter().map(|s| s.as_str()))
                )
            })?;
            let c = c.cast(&DataType::String)?;
            Ok(c.str()?.into_iter().map(|s| s.map(str::to_string)).collect())
        };
        let texts = column(&self.spec.field)?;
        let labels = match &self.spec.label_field {
            Some(lf) => column(lf)?,
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
}
