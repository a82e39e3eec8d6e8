//! `OUT/<experiment>/report.html`: one self-contained page (inline CSS, no network) with every plot,
//! the first rows of each table, links to viewer pages, the experiment file and a per-stage summary.

use crate::exec::{Outcome, Status};
use crate::experiment::Validated;
use crate::pages::esc;
use crate::store::OutDir;
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;color:#1d232a}
main{max-width:1200px;margin:0 auto;padding:24px}h1{margin:0 0 4px}h2{margin-top:36px;border-bottom:1px solid #dde;padding-bottom:4px}
.muted{color:#667}table{border-collapse:collapse;font-size:13px;background:#fff}td,th{border:1px solid #dde;padding:3px 8px;text-align:left}
th{background:#eef1f5}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:16px}
figure{margin:0;background:#fff;border:1px solid #dde;padding:8px}figure img{width:100%}figcaption{font-size:13px}
pre{background:#fff;border:1px solid #dde;padding:12px;overflow:auto;font-size:12px}.ok{color:#186a3b}.bad{color:#a93226}
.scroll{overflow-x:auto;margin-bottom:12px}";

fn status(s: &Status) -> (&'static str, String) {
    match s {
        Status::Cached => ("ok", "cached".into()),
        Status::Computed => ("ok", "computed".into()),
        Status::Failed(e) => ("bad", format!("failed: {e}")),
        Status::Skipped(i) => ("bad", format!("skipped ({i} failed)")),
        Status::Pending => ("muted", "not run".into()),
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

/// The first `n` rows of a Parquet table as an HTML table.
fn table_head(path: &Path, n: usize) -> String {
    let Ok(df) = crate::store::table::read(path) else { return "<p class=muted>(unreadable)</p>".into() };
    let head = df.head(Some(n));
    let mut s = format!(
        "<div class=scroll><table><tr>{}</tr>",
        head.get_column_names().iter().map(|c| format!("<th>{}</th>", esc(c))).collect::<String>()
    );
    for i in 0..head.height() {
        s += "<tr>";
        for c in head.columns() {
            let v = c.get(i).map(|v| v.to_string()).unwrap_or_default();
            let _ = write!(s, "<td>{}</td>", esc(v.trim_matches('"')));
        }
        s += "</tr>";
    }
    let _ = write!(s, "</table></div><p class=muted>{} rows × {} columns</p>", df.height(), df.width());
    s
}

/// Write the report of a run.
pub fn write_for(v: &Validated, outcome: &Outcome, dirs: &OutDir) -> Result<()> {
    let name = &v.exp.meta.name.value;
    let dir = dirs.experiment(name)?;
    let mut h = format!("<!doctype html><html><head><meta charset=utf-8><title>{0} · lantern</title><style>{STYLE}</style></head><body><main><h1>{0}</h1>", esc(name));
    if !v.exp.meta.description.is_empty() {
        let _ = write!(h, "<p>{}</p>", esc(&v.exp.meta.description));
    }
    let _ = write!(
        h,
        "<p class=muted>{} · lantern {}</p>",
        esc(&v.exp.file.display().to_string()),
        env!("CARGO_PKG_VERSION")
    );
    let plots: Vec<_> =
        outcome.nodes.iter().filter(|n| n.kind == "plot" && dir.join(&n.name).join("plot.png").exists()).collect();
    if !plots.is_empty() {
        h += "<h2>Plots</h2><div class=grid>";
        for p in plots {
            let _ = write!(h, "<figure><img src=\"{0}/plot.png\" alt=\"{0}\"><figcaption>{0} · <a href=\"{0}/plot.svg\">SVG</a></figcaption></figure>", esc(&p.name));
        }
        h += "</div>";
    }
    let mut viewers = String::new();
    let mut tables = String::new();
    for n in outcome.nodes.iter().filter(|n| n.kind != "plot") {
        let sdir = dir.join(&n.name);
        if sdir.join("index.html").exists() {
            let _ = write!(viewers, "<li><a href=\"{0}/index.html\">{0}</a></li>", esc(&n.name));
        }
        for t in crate::store::table::tables_in(&sdir) {
            let file = format!("{}/{t}.parquet", n.name);
            let csv = if sdir.join(format!("{t}.csv")).exists() {
                format!(" · <a href=\"{}/{t}.csv\">CSV</a>", esc(&n.name))
            } else {
                String::new()
            };
            let _ = write!(
                tables,
                "<h3>{} · {}</h3><p><a href=\"{}\">{t}.parquet</a>{csv}</p>{}",
                esc(&n.name),
                esc(&t),
                esc(&file),
                table_head(&sdir.join(format!("{t}.parquet")), 10)
            );
        }
    }
    if !viewers.is_empty() {
        let _ = write!(h, "<h2>Neuron viewers</h2><ul>{viewers}</ul>");
    }
    if !tables.is_empty() {
        let _ = write!(h, "<h2>Tables</h2>{tables}");
    }
    h += "<h2>Stages</h2><table><tr><th>stage</th><th>kind</th><th>status</th><th>seconds</th><th>artifacts</th></tr>";
    for n in &outcome.nodes {
        let (cls, st) = status(&n.status);
        let size =
            n.manifest.as_ref().map(|m| format!("{} files, {}", m.files.len(), human(m.bytes()))).unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class={cls}>{}</td><td>{:.1}</td><td>{size}</td></tr>",
            esc(&n.name),
            esc(&n.kind),
            esc(&st),
            n.seconds
        );
    }
    h += "</table>";
    let _ = writeln!(h, "<h2>Experiment file</h2><pre>{}</pre></main></body></html>", esc(&v.exp.text));
    crate::store::atomic::write(&dirs.report(name)?, h.as_bytes())
}
