//! `OUT/<experiment>/report.html`: one self-contained file (inline CSS, plots embedded as base64
//! PNG, no network, so it opens from an e-mail attachment): a sticky table of contents, the
//! results first (the experiment's `highlights`, by default the last stage of each branch and its
//! plots), every plot, every table sorted by its stage's ranking with neuron ids linked to their
//! pages, the neuron viewers, stages computed by other experiments listed with a link, a summary
//! of each stage (cached or computed, time, sizes) and the experiment file.

mod pages;
mod tables;

use crate::exec::{NodeResult, Outcome, Status};
use crate::experiment::Validated;
use crate::pages::document;
use crate::plan::NodeKind;
use crate::store::OutDir;
use anyhow::Result;
use base64::Engine;
use maud::{html, Markup};
use pages::NeuronPages;
use std::collections::BTreeSet;
use std::path::Path;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;color:#1d232a}
.layout{display:grid;grid-template-columns:250px minmax(0,1fr)}@media(max-width:900px){.layout{grid-template-columns:minmax(0,1fr)}nav.toc{display:none}}
nav.toc{position:sticky;top:0;height:100vh;overflow-y:auto;background:#fff;border-right:1px solid #dde;padding:14px 10px;box-sizing:border-box;font-size:13px}
nav.toc ul{list-style:none;margin:0;padding-left:12px}nav.toc>ul{padding-left:0}nav.toc li{margin:2px 0}nav.toc a{color:#1d232a;text-decoration:none}
nav.toc a:hover{text-decoration:underline}nav.toc .sec{font-weight:600;margin-top:8px}main{padding:24px 32px;min-width:0;max-width:1400px}
a{color:#1a5fb4}h1{margin:0 0 4px}h2{margin-top:36px;border-bottom:1px solid #dde;padding-bottom:4px}h3{margin:26px 0 4px}h4{margin:14px 0 2px;font-size:14px}
.kind{font-weight:normal;color:#667;font-size:13px;margin-left:8px}.muted,.meta{color:#667}.meta{font-size:12px;margin:2px 0 6px}
table{border-collapse:collapse;font-size:13px;background:#fff}td,th{border:1px solid #dde;padding:3px 8px;text-align:left;white-space:nowrap}
th{background:#eef1f5}th.sorted{background:#dfe6f1}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:16px}
figure{margin:0;background:#fff;border:1px solid #dde;padding:8px}figure img{width:100%;height:auto}figcaption{font-size:13px}
pre{background:#fff;border:1px solid #dde;padding:12px;overflow:auto;font-size:12px}.ok{color:#186a3b}.bad{color:#a93226}
.scroll{overflow-x:auto;max-width:100%;margin-bottom:12px;border:1px solid #e6e8ec}.scroll table{border:none}
.neurons a{display:inline-block;margin:2px 8px 2px 0}:target{scroll-margin-top:12px}";

fn status(s: &Status) -> (&'static str, String) {
    match s {
        Status::Cached => ("ok", "cached".into()),
        Status::Computed => ("ok", "computed".into()),
        Status::Failed(e) => ("bad", format!("failed: {e}")),
        Status::Invalid(e) => ("bad", format!("invalid input data: {e}")),
        Status::Skipped(i) => ("bad", format!("skipped ({i} failed)")),
        Status::Pending => ("muted", "not reached".into()),
        Status::Planned(state) => ("muted", state.clone()),
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} kB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// What the report shows of a run, gathered from the plan, the outcome and the folder.
struct Contents<'a> {
    v: &'a Validated,
    dir: &'a Path,
    pages: NeuronPages,
    /// Plots with a PNG, in run order.
    plots: Vec<&'a NodeResult>,
    /// Stages of this experiment with their tables, in run order.
    stages: Vec<(&'a NodeResult, Vec<String>)>,
    /// Stages computed by another experiment: (node, experiment, link to its report).
    upstream: Vec<(&'a NodeResult, String, Option<String>)>,
    highlights: Vec<String>,
}

impl<'a> Contents<'a> {
    fn gather(v: &'a Validated, outcome: &'a Outcome, dirs: &OutDir, dir: &'a Path) -> Result<Contents<'a>> {
        let name = &v.exp.meta.name.value;
        let kind_of = |n: &str| v.plan.find(n).map(|ix| v.plan.graph[ix].kind.clone());
        let plots = outcome.nodes.iter().filter(|n| n.kind == "plot" && dir.join(&n.name).join("plot.png").exists());
        let mut stages = Vec::new();
        let mut upstream = Vec::new();
        for n in &outcome.nodes {
            if !matches!(kind_of(&n.name), Some(NodeKind::Stage(_))) {
                continue;
            }
            let owner = n.manifest.as_ref().map(|m| m.experiment.clone()).filter(|e| e != name);
            if let Some(other) = owner {
                let theirs = dirs.experiment(&other)?;
                if theirs.join(&n.name).symlink_metadata().is_ok() {
                    let href =
                        dirs.report(&other)?.exists().then(|| format!("../{other}/report.html#stage-{}", n.name));
                    upstream.push((n, other, href));
                    continue;
                }
            }
            stages.push((n, crate::store::table::tables_in(&dir.join(&n.name))));
        }
        let mut c = Contents {
            v,
            dir,
            pages: NeuronPages::find(v, dir),
            plots: plots.collect(),
            stages,
            upstream,
            highlights: v.exp.meta.highlights.iter().map(|h| h.value.clone()).collect(),
        };
        if c.highlights.is_empty() {
            c.highlights = c.default_highlights();
        }
        Ok(c)
    }

    /// The last stage of each branch (read by no other stage; training excluded) and its plots.
    fn default_highlights(&self) -> Vec<String> {
        let plan = &self.v.plan;
        let mut out = Vec::new();
        for (n, _) in &self.stages {
            let Some(ix) = plan.find(&n.name) else { continue };
            let read_by_stage = plan
                .graph
                .neighbors_directed(ix, petgraph::Direction::Outgoing)
                .any(|o| matches!(plan.graph[o].kind, NodeKind::Stage(_) | NodeKind::Part { .. }));
            if !read_by_stage && n.kind != "train" {
                out.push(n.name.clone());
            }
        }
        let plots: Vec<String> = self
            .plots
            .iter()
            .filter(|p| self.v.exp.plots.get(&p.name).is_some_and(|s| out.contains(&s.value.input.name().to_string())))
            .map(|p| p.name.clone())
            .collect();
        plots.into_iter().chain(out).collect()
    }

    fn is_plot(&self, name: &str) -> bool {
        self.plots.iter().any(|p| p.name == name)
    }

    fn figure(&self, p: &NodeResult) -> Markup {
        let png = std::fs::read(self.dir.join(&p.name).join("plot.png")).unwrap_or_default();
        let data = base64::engine::general_purpose::STANDARD.encode(png);
        let title = self.v.exp.plots.get(&p.name).and_then(|s| s.value.title.clone()).unwrap_or_default();
        html! {
            figure id={"plot-" (p.name)} {
                img src={"data:image/png;base64," (data)} alt=(if title.is_empty() { &p.name } else { &title });
                figcaption { b { (p.name) } " · " a href={(p.name) "/plot.svg"} { "SVG" } " · " a href={(p.name) "/plot.png"} { "PNG" } }
            }
        }
    }

    fn viewer_links(&self, stage: &str) -> Markup {
        let mut names: Vec<(usize, usize)> = std::fs::read_dir(self.dir.join(stage))
            .map(|rd| {
                rd.filter_map(|f| f.ok()?.file_name().to_str()?.strip_suffix(".html").and_then(pages::parse_id))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        html! {
            p { a href={(stage) "/index.html"} { "Index of the neuron pages" } " (" (names.len()) " neurons, sortable by the score that selected them)"
                @if self.dir.join(stage).join("texts.html").exists() { " · " a href={(stage) "/texts.html"} { "texts coloured by these neurons" } }
            }
            p.neurons { @for (l, n) in names { a href={(stage) "/L" (l) ".N" (n) ".html"} { "L" (l) ".N" (n) } } }
        }
    }

    fn stage(&self, n: &NodeResult, tables: &[String]) -> Markup {
        let spec = self.v.exp.stages.get(&n.name).map(|s| s.value.stage());
        let model = pages::model_of(self.v, &n.name);
        html! {
            h3 id={"stage-" (n.name)} { (n.name) span.kind { (n.kind) } }
            @if self.dir.join(&n.name).join("index.html").exists() { (self.viewer_links(&n.name)) }
            @for t in tables {
                h4 id={"table-" (n.name) "-" (t)} { (t) }
                (tables::render(&n.name, t, &self.dir.join(&n.name).join(format!("{t}.parquet")),
                    spec.and_then(|s| s.ranking(t)), model.as_deref(), &self.pages))
            }
        }
    }

    fn toc(&self) -> Markup {
        let hl: BTreeSet<&str> = self.highlights.iter().map(|s| s.as_str()).collect();
        let viewers: Vec<&str> = self
            .stages
            .iter()
            .filter(|(n, _)| self.dir.join(&n.name).join("index.html").exists())
            .map(|(n, _)| n.name.as_str())
            .collect();
        html! {
            nav.toc { ul {
                li.sec { a href="#top" { (self.v.exp.meta.name.value) } }
                li.sec { a href="#results" { "Results" } }
                ul { @for h in &self.highlights {
                    li { a href={"#" (if self.is_plot(h) { "plot-" } else { "stage-" }) (h)} { (h) } }
                } }
                @if !self.plots.is_empty() {
                    li.sec { a href="#plots" { "Plots" } }
                    ul { @for p in &self.plots { li { a href={"#plot-" (p.name)} { (p.name) } } } }
                }
                @if !viewers.is_empty() {
                    li.sec { a href="#viewers" { "Neuron pages" } }
                    ul { @for s in &viewers { li { a href={"#stage-" (s)} { (s) } } } }
                }
                li.sec { a href="#tables" { "Tables" } }
                ul { @for (n, tables) in self.stages.iter().filter(|(_, t)| !t.is_empty()) {
                    li { a href={"#stage-" (n.name)} { (n.name) } @if hl.contains(n.name.as_str()) { " ↑" }
                        ul { @for t in tables { li { a href={"#table-" (n.name) "-" (t)} { (t) } } } }
                    }
                } }
                @if !self.upstream.is_empty() { li.sec { a href="#upstream" { "From other experiments" } } }
                li.sec { a href="#stages" { "Stages" } }
                li.sec { a href="#file" { "Experiment file" } }
            } }
        }
    }

    fn body(&self, outcome: &Outcome) -> Markup {
        let meta = &self.v.exp.meta;
        let hl: BTreeSet<&str> = self.highlights.iter().map(|s| s.as_str()).collect();
        let find = |name: &str| self.stages.iter().find(|(n, _)| n.name == name);
        let viewers: Vec<&(&NodeResult, Vec<String>)> =
            self.stages.iter().filter(|(n, _)| self.dir.join(&n.name).join("index.html").exists()).collect();
        html! {
            div.layout {
                (self.toc())
                main {
                    h1 id="top" { (meta.name.value) }
                    @if !meta.description.is_empty() { p { (meta.description) } }
                    p.muted { (self.v.exp.file.display().to_string()) " · lantern " (env!("CARGO_PKG_VERSION")) }
                    h2 id="results" { "Results" }
                    @if meta.highlights.is_empty() {
                        p.muted { "The last stage of each branch and its plots (name others with " code { "[experiment] highlights = [...]" } ")." }
                    }
                    @let figures: Vec<&&NodeResult> = self.plots.iter().filter(|p| hl.contains(p.name.as_str())).collect();
                    @if !figures.is_empty() { div.grid { @for p in figures { (self.figure(p)) } } }
                    @for h in &self.highlights { @if let Some((n, t)) = find(h) { (self.stage(n, t)) } }
                    @if self.plots.iter().any(|p| !hl.contains(p.name.as_str())) {
                        h2 id="plots" { "Plots" }
                        div.grid { @for p in self.plots.iter().filter(|p| !hl.contains(p.name.as_str())) { (self.figure(p)) } }
                    } @else if !self.plots.is_empty() {
                        h2 id="plots" { "Plots" } p.muted { "All under Results." }
                    }
                    @if !viewers.is_empty() {
                        h2 id="viewers" { "Neuron pages" }
                        @for (n, t) in viewers.iter().filter(|(n, _)| !hl.contains(n.name.as_str())) { (self.stage(n, t)) }
                        @if viewers.iter().all(|(n, _)| hl.contains(n.name.as_str())) { p.muted { "All under Results." } }
                    }
                    h2 id="tables" { "Tables" }
                    p.muted { "The first " (tables::ROWS) " rows of each table, sorted by the column that ranks it where the stage declares one; the files hold every row." }
                    @for (n, t) in self.stages.iter().filter(|(n, t)| !t.is_empty() && !hl.contains(n.name.as_str())) {
                        @if !self.dir.join(&n.name).join("index.html").exists() { (self.stage(n, t)) }
                    }
                    @if !self.upstream.is_empty() {
                        h2 id="upstream" { "From other experiments" }
                        p.muted { "Stages this experiment shares with the experiments that computed them; their results are in those reports." }
                        ul { @for (n, exp, href) in &self.upstream {
                            li { b { (n.name) } " (" (n.kind) ") · computed by " @if let Some(h) = href { a href=(h) { (exp) } } @else { (exp) } }
                        } }
                    }
                    h2 id="stages" { "Stages" }
                    div.scroll { table {
                        thead { tr { th { "stage" } th { "kind" } th { "status" } th { "seconds" } th { "artifacts" } } }
                        tbody { @for n in &outcome.nodes {
                            @let (cls, st) = status(&n.status);
                            tr {
                                td { (n.name) } td { (n.kind) } td class=(cls) { (st) } td.num { (format!("{:.1}", n.seconds)) }
                                td { @if let Some(m) = &n.manifest { (m.files.len()) " files, " (human(m.bytes())) } }
                            }
                        } }
                    } }
                    h2 id="file" { "Experiment file" }
                    pre { (self.v.exp.sources.main_text()) }
                }
            }
        }
    }
}

/// Write the report of a run.
pub fn write_for(v: &Validated, outcome: &Outcome, dirs: &OutDir) -> Result<()> {
    let name = &v.exp.meta.name.value;
    let dir = dirs.experiment(name)?;
    let contents = Contents::gather(v, outcome, dirs, &dir)?;
    let page = document(&format!("{name} · lantern"), STYLE, contents.body(outcome));
    crate::store::atomic::write(&dirs.report(name)?, page.into_string().as_bytes())
}
