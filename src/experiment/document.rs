//! The experiment document before it is decoded: the file's TOML tree with the files it includes
//! merged in, `--set` overrides applied and `matrix` entries expanded, every position a range of
//! the joined text of all its sources (so diagnostics point into the file, or the argument, that
//! holds the mistake).

use crate::spec::{Diagnostic, Sources};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeArray, DeTable, DeValue};

pub type Spanned<T> = serde_spanned::Spanned<T>;
type Key<'s> = Spanned<std::borrow::Cow<'s, str>>;

/// Sections whose entries are named tables (`[stages.NAME]`).
pub const ENTRY_SECTIONS: &[&str] = &["models", "datasets", "stages", "plots"];

/// The most entries one `matrix` may make.
pub const MAX_EXPANSIONS: usize = 4096;

/// The most bytes an experiment file (or a file it includes) may have.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The bytes of an experiment file: a regular file of at most `MAX_FILE_BYTES` (never a device such
/// as `/dev/zero`, a folder or a pipe, which would be read without end).
pub fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    // Looked at before opening: opening a named pipe waits for a writer.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => return Err("not a regular file".into()),
        Err(e) => return Err(format!("cannot read the file: {e}")),
        Ok(_) => {}
    }
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    // And again as opened (the path may have been replaced in between).
    match f.metadata() {
        Ok(m) if !m.is_file() => return Err("not a regular file".into()),
        Err(e) => return Err(format!("cannot read the file: {e}")),
        Ok(_) => {}
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {} MiB, the most an experiment file may be", MAX_FILE_BYTES >> 20));
    }
    Ok(bytes)
}

/// The sources of an experiment: the file, what it includes (transitively, in order), and one
/// source per `--set` argument; problems found while reading them.
pub fn read_sources(file: &Path, text: String, sets: &[String]) -> (Sources, Vec<Diagnostic>) {
    let mut sources = Sources::single(file, &text);
    let mut diags = Vec::new();
    let mut seen: BTreeSet<PathBuf> = file.canonicalize().into_iter().collect();
    let mut i = 0;
    while i < sources.parts.len() {
        let (name, base, len) = (sources.parts[i].name.clone(), sources.parts[i].base, sources.parts[i].len);
        let own = sources.text[base..base + len].to_string();
        let (root, _) = DeTable::parse_recoverable(&own);
        for (rel, span) in include_list(root.get_ref(), base, &mut diags) {
            let path = name.parent().unwrap_or(Path::new("")).join(&rel);
            let Ok(canonical) = path.canonicalize() else {
                diags.push(Diagnostic::at(span, format!("included file {} does not exist", path.display())));
                continue;
            };
            if !seen.insert(canonical) {
                diags.push(Diagnostic::at(span, format!("{} is included twice (or includes itself)", path.display())));
                continue;
            }
            match read_file(&path).map(String::from_utf8) {
                Ok(Ok(t)) => {
                    sources.push(&path, &t);
                }
                Ok(Err(_)) => diags.push(Diagnostic::at(span, format!("{} is not UTF-8", path.display()))),
                Err(e) => diags.push(Diagnostic::at(span, format!("{}: {e}", path.display()))),
            }
        }
        i += 1;
    }
    for arg in sets {
        sources.push(&PathBuf::from(format!("--set {arg}")), &set_text(arg));
    }
    (sources, diags)
}

/// The `include = ["a.toml", …]` of a file (at its top, or in its `[experiment]`): each path with
/// its position.
fn include_list(root: &DeTable, base: usize, diags: &mut Vec<Diagnostic>) -> Vec<(String, Range<usize>)> {
    let in_meta = root
        .iter()
        .find(|(k, _)| k.get_ref() == "experiment")
        .and_then(|(_, m)| m.get_ref().as_table())
        .and_then(|m| m.iter().find(|(k, _)| k.get_ref() == "include"));
    let Some((_, v)) = root.iter().find(|(k, _)| k.get_ref() == "include").or(in_meta) else { return vec![] };
    let shift = |r: Range<usize>| r.start + base..r.end + base;
    match v.get_ref() {
        DeValue::Array(a) => a
            .iter()
            .filter_map(|x| match x.get_ref() {
                DeValue::String(s) => Some((s.to_string(), shift(x.span()))),
                _ => {
                    diags.push(Diagnostic::at(shift(x.span()), "`include` lists file paths (strings)"));
                    None
                }
            })
            .collect(),
        _ => {
            diags.push(Diagnostic::at(
                shift(v.span()),
                "`include` must be a list of files: include = [\"common.toml\"]",
            ));
            vec![]
        }
    }
}

/// A `--set PATH=VALUE` argument as TOML: the value as written when it is a TOML value, else as a
/// string (`--set stages.acts.model=lm_b`).
fn set_text(arg: &str) -> String {
    match arg.split_once('=') {
        Some((path, value)) if DeValue::parse(value.trim()).is_err() => {
            format!("{}={}", path.trim(), toml_string(value.trim()))
        }
        _ => arg.to_string(),
    }
}

fn toml_string(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// The document: every source parsed and merged (includes, then `--set`), then matrices
/// expanded. Syntax errors, conflicts and bad overrides are added to `diags`.
pub fn merge<'s>(sources: &'s Sources, diags: &mut Vec<Diagnostic>) -> (DeTable<'s>, Matrices) {
    let mut root = DeTable::new();
    for (i, part) in sources.parts.iter().enumerate() {
        let text = sources.text_of(part);
        let (tree, errors) = DeTable::parse_recoverable(text);
        let shift = |r: Range<usize>| r.start + part.base..r.end + part.base;
        for e in errors {
            let span = e.span().map(shift).unwrap_or(part.base..part.base);
            diags.push(Diagnostic::at(span, e.message().trim().to_string()));
        }
        let tree = shift_table(tree.into_inner(), part.base);
        let is_set = part.name.to_string_lossy().starts_with("--set ");
        if i == 0 {
            root = tree;
            remove_key(&mut root, "include");
        } else if is_set {
            apply_set(&mut root, tree, diags);
        } else {
            let moved = relocation(&sources.parts[0].name, &part.name);
            include(&mut root, tree, &part.name, moved.as_deref(), sources, diags);
        }
    }
    let matrices = expand_matrices(&mut root, diags);
    expand_all_refs(&mut root, &matrices, diags);
    (root, matrices)
}

fn remove_key<'s>(t: &mut DeTable<'s>, key: &str) -> Option<(Key<'s>, Spanned<DeValue<'s>>)> {
    let k = t.keys().find(|k| k.get_ref() == key)?.clone();
    t.remove_entry(&k)
}

fn get_mut<'a, 's>(t: &'a mut DeTable<'s>, key: &str) -> Option<&'a mut Spanned<DeValue<'s>>> {
    t.iter_mut().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

fn shift_value<'s>(v: Spanned<DeValue<'s>>, by: usize) -> Spanned<DeValue<'s>> {
    let span = v.span();
    let inner = match v.into_inner() {
        DeValue::Array(a) => {
            let mut out = DeArray::new();
            for x in a {
                out.push(shift_value(x, by));
            }
            DeValue::Array(out)
        }
        DeValue::Table(t) => DeValue::Table(shift_table(t, by)),
        other => other,
    };
    Spanned::new(span.start + by..span.end + by, inner)
}

fn shift_table(t: DeTable<'_>, by: usize) -> DeTable<'_> {
    t.into_iter()
        .map(|(k, v)| {
            let span = k.span();
            (Spanned::new(span.start + by..span.end + by, k.into_inner()), shift_value(v, by))
        })
        .collect()
}

/// "FILE:LINE" of a position, for messages that name a second place.
fn place(sources: &Sources, at: usize) -> String {
    match sources.local(&(at..at)) {
        Some((s, text, local)) => {
            format!("{}:{}", s.name.display(), text[..local.start.min(text.len())].matches('\n').count() + 1)
        }
        None => String::new(),
    }
}

/// Where an included file's folder is, relative to the experiment file's folder, when it differs.
fn relocation(main: &Path, included: &Path) -> Option<PathBuf> {
    let dir = |f: &Path| f.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).canonicalize().ok();
    let (from, to) = (dir(main)?, dir(included)?);
    if from == to {
        return None;
    }
    let (f, t): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut rel: PathBuf = std::iter::repeat_n("..", f.len() - common).collect();
    rel.extend(&t[common..]);
    Some(rel)
}

/// The fields of included entries that hold paths (relative to the file they are written in).
const PATH_FIELDS: &[(&str, &str)] = &[("models", "path"), ("datasets", "path"), ("stages", "tokenizer")];

/// Rewrite the relative paths of an included entry so that they hold from the experiment's folder.
fn relocate(section: &str, entry: &mut Spanned<DeValue<'_>>, by: &Path) {
    let Some(DeValue::Table(t)) = Some(entry.get_mut()) else { return };
    let rewrite = |v: &mut Spanned<DeValue<'_>>| {
        if let DeValue::String(s) = v.get_mut() {
            if Path::new(s.as_ref()).is_relative() {
                *s = std::borrow::Cow::Owned(by.join(s.as_ref()).to_string_lossy().into_owned());
            }
        }
    };
    for (k, v) in t.iter_mut() {
        let field = k.get_ref().as_ref();
        if PATH_FIELDS.contains(&(section, field)) {
            rewrite(v);
        }
        // explain's `labels = [{ path, column }]`.
        if section == "stages" && field == "labels" {
            if let DeValue::Array(a) = v.get_mut() {
                for l in a.iter_mut() {
                    if let DeValue::Table(lt) = l.get_mut() {
                        lt.iter_mut().filter(|(k, _)| k.get_ref() == "path").for_each(|(_, p)| rewrite(p));
                    }
                }
            }
        }
    }
}

/// Merge an included file's sections into the document; a name defined twice is an error.
/// `moved` is the included file's folder relative to the experiment's, when they differ.
fn include<'s>(
    root: &mut DeTable<'s>,
    tree: DeTable<'s>,
    file: &Path,
    moved: Option<&Path>,
    sources: &Sources,
    diags: &mut Vec<Diagnostic>,
) {
    for (key, value) in tree {
        let name = key.get_ref().to_string();
        if name == "include" {
            continue;
        }
        if name == "experiment" {
            diags.push(Diagnostic::at(key.span(), format!("{} has an [experiment] section", file.display())).help(
                "included files hold models, datasets, stages and plots; the experiment is the including file's",
            ));
            continue;
        }
        let Some(existing) = get_mut(root, &name) else {
            let mut value = value;
            if let (Some(by), DeValue::Table(entries)) = (moved, value.get_mut()) {
                entries.iter_mut().for_each(|(_, e)| relocate(&name, e, by));
            }
            root.insert(key, value);
            continue;
        };
        let (DeValue::Table(have), DeValue::Table(add)) = (existing.get_mut(), value.into_inner()) else {
            diags.push(Diagnostic::at(key.span(), format!("`{name}` is set both here and in the including file")));
            continue;
        };
        for (k, mut v) in add {
            if let Some(by) = moved {
                relocate(&name, &mut v, by);
            }
            match have.keys().find(|h| h.get_ref() == k.get_ref()) {
                Some(first) => diags.push(Diagnostic::at(
                    k.span(),
                    format!(
                        "{name}.{} is defined twice: here and at {}",
                        k.get_ref(),
                        place(sources, first.span().start)
                    ),
                )),
                None => {
                    have.insert(k, v);
                }
            }
        }
    }
}

/// Apply one `--set`: its value replaces (or adds) a field of an existing table; it may not create
/// a model, dataset, stage or plot, nor a section.
fn apply_set<'s>(root: &mut DeTable<'s>, set: DeTable<'s>, diags: &mut Vec<Diagnostic>) {
    fn walk<'s>(at: &mut DeTable<'s>, set: DeTable<'s>, depth: usize, path: &str, diags: &mut Vec<Diagnostic>) {
        for (k, v) in set {
            let name = k.get_ref().to_string();
            let here = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
            let creates_entry = depth == 0 || (depth == 1 && ENTRY_SECTIONS.contains(&path));
            match (get_mut(at, &name), v.get_ref().is_table()) {
                (Some(existing), true) if existing.get_ref().is_table() => {
                    let DeValue::Table(inner) = v.into_inner() else { unreachable!("checked is_table") };
                    let DeValue::Table(have) = existing.get_mut() else { unreachable!("checked is_table") };
                    walk(have, inner, depth + 1, &here, diags);
                }
                (Some(existing), _) => *existing = v,
                (None, _) if creates_entry => {
                    let names: Vec<String> = at.keys().map(|k| k.get_ref().to_string()).collect();
                    let what = if depth == 0 { "section".to_string() } else { format!("entry of [{path}]") };
                    diags.push(
                        Diagnostic::at(k.span(), format!("--set: no {what} '{name}' to set")).help(
                            crate::util::did_you_mean(&name, names.iter().map(|s| s.as_str()))
                                .trim_start_matches("; ")
                                .to_string(),
                        ),
                    );
                }
                (None, _) => {
                    at.insert(k, v);
                }
            }
        }
    }
    walk(root, set, 0, "", diags);
}

/// The expansions of every entry that had a `matrix`, by section and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matrices {
    /// (section, name) → the names of its expansions, in order.
    pub expanded: BTreeMap<(String, String), Vec<String>>,
}

impl Matrices {
    /// The expansions of a name in any section.
    pub fn of(&self, name: &str) -> Option<&Vec<String>> {
        self.expanded.iter().find(|((_, n), _)| n == name).map(|(_, v)| v)
    }
}

/// A matrix axis: its key and values (with their positions).
struct Axis<'s> {
    key: String,
    values: Vec<Spanned<DeValue<'s>>>,
}

/// The text of a scalar for names and interpolation (`lm_a`, `3`, `0.5`, `true`).
fn scalar_text(v: &DeValue) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => Some(i.as_str().to_string()),
        DeValue::Float(f) => Some(f.as_str().to_string()),
        DeValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `x[*]`: the name whose expansions it stands for.
fn all_of(s: &str) -> Option<&str> {
    s.strip_suffix("[*]")
}

/// Expand every `matrix` entry into one entry per combination of its axes, named
/// `name[v1,v2,…]` (values in the order the keys are written). In the entry, a string that is
/// exactly `"{key}"` becomes the value itself, `{key}` inside a string its text; a key used nowhere
/// sets the field of its name.
fn expand_matrices(root: &mut DeTable<'_>, diags: &mut Vec<Diagnostic>) -> Matrices {
    let mut out = Matrices::default();
    // Entries whose axes name other matrices (`x[*]`) expand after those.
    let mut pending: Vec<(String, String)> = Vec::new();
    for section in ENTRY_SECTIONS {
        let Some(DeValue::Table(entries)) = get_mut(root, section).map(|v| v.get_mut()) else { continue };
        for (name, v) in entries.iter() {
            // A `matrix` table expands the entry (correlation's own `matrix = "f16"` is a string).
            let expands = v.get_ref().as_table().and_then(|t| t.iter().find(|(k, _)| k.get_ref() == "matrix"));
            if expands.is_some_and(|(_, m)| m.get_ref().is_table()) {
                pending.push((section.to_string(), name.get_ref().to_string()));
            }
        }
    }
    while !pending.is_empty() {
        let waiting: BTreeSet<String> = pending.iter().map(|(_, n)| n.clone()).collect();
        let mut still = Vec::new();
        for (section, name) in std::mem::take(&mut pending) {
            let Some(DeValue::Table(entries)) = get_mut(root, &section).map(|v| v.get_mut()) else { continue };
            let refs = entries
                .iter()
                .find(|(k, _)| k.get_ref() == &name)
                .and_then(|(_, v)| v.get_ref().as_table())
                .and_then(|t| t.iter().find(|(k, _)| k.get_ref() == "matrix"))
                .map(|(_, m)| matrix_refs(m.get_ref()))
                .unwrap_or_default();
            if refs.iter().any(|r| out.of(r).is_none() && waiting.contains(r)) {
                still.push((section, name));
                continue;
            }
            let names = expand_entry(entries, &name, &out, diags);
            out.expanded.insert((section, name), names);
        }
        if still.len() == waiting.len() {
            for (section, name) in &still {
                diags.push(Diagnostic::global(format!(
                    "{section}.{name}: its matrix names matrices that name it (a cycle)"
                )));
            }
            break;
        }
        pending = still;
    }
    out
}

/// The `x[*]` names of a matrix's axes.
fn matrix_refs(m: &DeValue) -> Vec<String> {
    let Some(t) = m.as_table() else { return vec![] };
    t.values()
        .filter_map(|v| v.get_ref().as_array())
        .flat_map(|a| a.iter().filter_map(|x| x.get_ref().as_str().and_then(all_of).map(str::to_string)))
        .collect()
}

/// Expand one entry in place; returns the names of its expansions.
fn expand_entry<'s>(
    entries: &mut DeTable<'s>,
    name: &str,
    done: &Matrices,
    diags: &mut Vec<Diagnostic>,
) -> Vec<String> {
    let Some((key, entry)) = remove_key(entries, name) else { return vec![] };
    let entry_span = entry.span();
    let DeValue::Table(mut table) = entry.into_inner() else { return vec![] };
    let Some((mkey, matrix)) = remove_key(&mut table, "matrix") else { return vec![] };
    let axes = match axes(matrix, done) {
        Ok(a) => a,
        Err(d) => {
            diags.push(d);
            return vec![];
        }
    };
    let used: BTreeSet<String> = axes.iter().filter(|a| mentions(&table, &a.key)).map(|a| a.key.clone()).collect();
    for a in axes.iter().filter(|a| !used.contains(&a.key)) {
        if let Some(k) = table.keys().find(|k| k.get_ref() == a.key.as_str()) {
            diags.push(
                Diagnostic::at(k.span(), format!("`{}` is set by the matrix of {name}", a.key))
                    .help(format!("remove this field, or write {{{}}} in it to use the matrix value", a.key)),
            );
        }
    }
    let mut names = Vec::new();
    let mut index = vec![0usize; axes.len()];
    if axes.iter().any(|a| a.values.is_empty()) {
        diags.push(Diagnostic::at(mkey.span(), format!("the matrix of {name} has an empty axis")));
        return vec![];
    }
    // Counted before anything is expanded: the product of the axes' lengths can be astronomical.
    let combinations = axes.iter().fold(1u128, |n, a| n.saturating_mul(a.values.len() as u128));
    if combinations > MAX_EXPANSIONS as u128 {
        diags.push(
            Diagnostic::at(
                mkey.span(),
                format!("the matrix of {name} makes {combinations} combinations; at most {MAX_EXPANSIONS}"),
            )
            .help("split the experiment, or use fewer values per axis"),
        );
        return vec![];
    }
    loop {
        let chosen: Vec<(&str, &Spanned<DeValue<'s>>)> =
            axes.iter().zip(&index).map(|(a, &i)| (a.key.as_str(), &a.values[i])).collect();
        let label: Vec<String> = chosen.iter().map(|(_, v)| scalar_text(v.get_ref()).unwrap_or_default()).collect();
        let expanded = format!("{name}[{}]", label.join(","));
        let mut t = substitute_table(table.clone(), &chosen);
        for (k, v) in &chosen {
            if !used.contains(*k) && !t.keys().any(|x| x.get_ref() == *k) {
                t.insert(Spanned::new(v.span(), std::borrow::Cow::Owned(k.to_string())), (*v).clone());
            }
        }
        if entries.keys().any(|k| k.get_ref() == expanded.as_str()) {
            diags.push(Diagnostic::at(
                key.span(),
                format!("the matrix of {name} makes '{expanded}', which is defined already"),
            ));
        } else {
            entries.insert(
                Spanned::new(key.span(), std::borrow::Cow::Owned(expanded.clone())),
                Spanned::new(entry_span.clone(), DeValue::Table(t)),
            );
            names.push(expanded);
        }
        // The next combination, last axis fastest.
        let mut d = axes.len();
        loop {
            if d == 0 {
                return names;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < axes[d].values.len() {
                break;
            }
            index[d] = 0;
        }
    }
}

/// The axes of a `matrix = { key = [values], … }` in the order written; `x[*]` values expanded.
fn axes<'s>(matrix: Spanned<DeValue<'s>>, done: &Matrices) -> Result<Vec<Axis<'s>>, Diagnostic> {
    let span = matrix.span();
    let DeValue::Table(t) = matrix.into_inner() else {
        return Err(Diagnostic::at(span, "`matrix` is a table of lists: matrix = { model = [\"a\", \"b\"] }"));
    };
    let mut axes: Vec<(usize, Axis)> = Vec::new();
    for (k, v) in t {
        let vspan = v.span();
        let DeValue::Array(a) = v.into_inner() else {
            return Err(Diagnostic::at(vspan, format!("matrix axis `{}` must be a list of values", k.get_ref())));
        };
        let mut values = Vec::new();
        for x in a {
            match x.get_ref() {
                DeValue::String(s) if all_of(s).is_some() => {
                    let base = all_of(s).unwrap_or_default();
                    let Some(names) = done.of(base) else {
                        return Err(Diagnostic::at(
                            x.span(),
                            format!("'{base}' has no matrix: `{s}` stands for a matrix's expansions"),
                        ));
                    };
                    values.extend(
                        names
                            .iter()
                            .map(|n| Spanned::new(x.span(), DeValue::String(std::borrow::Cow::Owned(n.clone())))),
                    );
                }
                v if scalar_text(v).is_some_and(|t| crate::store::paths::node_name_ok(&t)) => values.push(x),
                v if scalar_text(v).is_some() => {
                    return Err(Diagnostic::at(
                        x.span(),
                        format!("'{}' cannot be part of a name", scalar_text(v).unwrap_or_default()),
                    )
                    .help(format!(
                        "matrix values name the expansions (letters, digits, '_', '-', '.'); use a variable instead: \
                         matrix = {{ lang = [\"english\", \"german\"] }} with `{} = \"…{{lang}}…\"`",
                        k.get_ref()
                    )))
                }
                _ => return Err(Diagnostic::at(x.span(), "matrix values are strings, numbers or booleans")),
            }
        }
        axes.push((k.span().start, Axis { key: k.get_ref().to_string(), values }));
    }
    axes.sort_by_key(|(at, _)| *at);
    Ok(axes.into_iter().map(|(_, a)| a).collect())
}

/// Whether any string of the table mentions `{key}`.
fn mentions(t: &DeTable, key: &str) -> bool {
    let pat = format!("{{{key}}}");
    fn any(v: &DeValue, pat: &str) -> bool {
        match v {
            DeValue::String(s) => s.contains(pat),
            DeValue::Array(a) => a.iter().any(|x| any(x.get_ref(), pat)),
            DeValue::Table(t) => t.values().any(|x| any(x.get_ref(), pat)),
            _ => false,
        }
    }
    t.values().any(|v| any(v.get_ref(), &pat))
}

fn substitute_table<'s>(t: DeTable<'s>, chosen: &[(&str, &Spanned<DeValue<'s>>)]) -> DeTable<'s> {
    t.into_iter().map(|(k, v)| (k, substitute(v, chosen))).collect()
}

/// `"{key}"` → the value itself; `{key}` inside a string → the value's text.
fn substitute<'s>(v: Spanned<DeValue<'s>>, chosen: &[(&str, &Spanned<DeValue<'s>>)]) -> Spanned<DeValue<'s>> {
    let span = v.span();
    match v.into_inner() {
        DeValue::String(s) => {
            if let Some((_, value)) = chosen.iter().find(|(k, _)| s == format!("{{{k}}}")) {
                return Spanned::new(span, value.get_ref().clone());
            }
            let mut out = s.to_string();
            for (k, value) in chosen {
                out = out.replace(&format!("{{{k}}}"), &scalar_text(value.get_ref()).unwrap_or_default());
            }
            Spanned::new(span, DeValue::String(std::borrow::Cow::Owned(out)))
        }
        DeValue::Array(a) => {
            let mut out = DeArray::new();
            for x in a {
                out.push(substitute(x, chosen));
            }
            Spanned::new(span, DeValue::Array(out))
        }
        DeValue::Table(t) => Spanned::new(span, DeValue::Table(substitute_table(t, chosen))),
        other => Spanned::new(span, other),
    }
}

/// In every list of the document, `x[*]` becomes the names of `x`'s expansions; anywhere else it
/// is an error (one name is expected there).
fn expand_all_refs(root: &mut DeTable<'_>, m: &Matrices, diags: &mut Vec<Diagnostic>) {
    fn value<'s>(v: &mut Spanned<DeValue<'s>>, m: &Matrices, diags: &mut Vec<Diagnostic>) {
        let span = v.span();
        match v.get_mut() {
            DeValue::Array(a) => {
                let items: Vec<Spanned<DeValue<'s>>> = std::mem::replace(a, DeArray::new()).into_iter().collect();
                let mut out = DeArray::new();
                for mut x in items {
                    let all = x.get_ref().as_str().and_then(all_of).map(str::to_string);
                    match all.as_deref().map(|b| (b, m.of(b))) {
                        Some((_, Some(names))) => {
                            for n in names {
                                out.push(Spanned::new(x.span(), DeValue::String(std::borrow::Cow::Owned(n.clone()))));
                            }
                        }
                        Some((b, None)) => {
                            diags.push(Diagnostic::at(
                                x.span(),
                                format!("'{b}' has no matrix: `{b}[*]` stands for a matrix's expansions"),
                            ));
                        }
                        None => {
                            value(&mut x, m, diags);
                            out.push(x);
                        }
                    }
                }
                *a = out;
            }
            DeValue::Table(t) => t.iter_mut().for_each(|(_, x)| value(x, m, diags)),
            DeValue::String(s) => {
                if let Some(b) = all_of(s) {
                    let names = m.of(b).map(|n| n.join(", ")).unwrap_or_default();
                    diags.push(
                        Diagnostic::at(span, format!("`{s}` stands for several entries, and one is expected here"))
                            .help(if names.is_empty() {
                                format!("'{b}' has no matrix")
                            } else {
                                format!("name one of {names}")
                            }),
                    );
                }
            }
            _ => {}
        }
    }
    for (_, v) in root.iter_mut() {
        value(v, m, diags);
    }
}
