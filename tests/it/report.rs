//! The report and the neuron pages: every link and anchor resolves, images are inlined, neuron ids
//! link to their pages, dataset text and tokens are escaped on every page, byte tokens are readable,
//! examples are not repeated and the histogram is labelled.

use crate::common::Workspace;
use std::collections::BTreeSet;
use std::path::Path;

const XSS: &str = r#"<script>alert(1)</script> "><img src=x> ☃"#;

/// The values of `attr="…"` in `html`.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

/// Every `href` of a page in `dir` resolves (a file, or an id of the page for `#…`) and no `src`
/// is a relative path (images are inlined); returns the number of links.
pub fn check_links(html: &str, dir: &Path) -> usize {
    let ids: BTreeSet<&str> = attribute_values(html, "id").into_iter().collect();
    let hrefs = attribute_values(html, "href");
    for h in &hrefs {
        match h.split_once('#') {
            Some(("", id)) => assert!(ids.contains(id), "no anchor #{id}"),
            Some((file, _)) => assert!(dir.join(file).exists(), "link to missing {file}"),
            None => assert!(dir.join(h).exists(), "link to missing {h}"),
        }
    }
    for s in attribute_values(html, "src") {
        assert!(s.starts_with("data:"), "relative src {s}");
    }
    hrefs.len()
}

fn experiment(ws: &Workspace) -> std::path::PathBuf {
    // German documents, each with a script tag, an attribute breaker and a character no merge of
    // the tiny BPE covers (three byte tokens).
    let german = std::fs::read_to_string(ws.path().join("data/german.jsonl")).unwrap();
    let docs: String = german
        .lines()
        .take(40)
        .map(|l| {
            let text: String = serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().into();
            let mixed: String = text.split(". ").take(6).map(|s| format!("{s}. {XSS} ")).collect::<String>();
            serde_json::json!({ "text": mixed }).to_string() + "\n"
        })
        .collect();
    std::fs::write(ws.path().join("xss.jsonl"), docs).unwrap();
    let exp = format!(
        r#"
[experiment]
name = "rep"
description = {xss:?}
highlights = ["german", "scatter", "pages"]

[models.tiny]
path = "model"

[datasets.en]
path = "data/english.jsonl"
context = 32
n_tokens = 2048

[datasets.de]
path = "xss.jsonl"
context = 32
n_tokens = 2048

[stages.acts_en]
kind = "activations"
model = "tiny"
dataset = "en"
hooks = ["mlp.hook_post"]

[stages.acts_de]
kind = "activations"
model = "tiny"
dataset = "de"
hooks = ["mlp.hook_post"]

[stages.german]
kind = "contrast"
a = "acts_en"
b = "acts_de"

[stages.w]
kind = "weights"
model = "tiny"

[stages.pages]
kind = "viewer"
model = "tiny"
activations = "acts_de"
top = {{ from = "german", table = "contrast", n = 4 }}
related = ["w"]
texts = [{xss:?}]

[plots.scatter]
input = "german"
table = "contrast"
kind = "scatter"
x = "mean_acts_en"
y = "mean_acts_de"
color = "layer"

[plots.hist]
input = "german"
table = "histograms"
kind = "histogram"
left = "left"
right = "right"
count = "density"
group = "dataset"
filter = {{ rank = 0 }}
title = "{{neuron}} on both"
legend = {{ acts_en = "English", acts_de = "German" }}
"#,
        xss = XSS
    );
    ws.file("rep.toml", &exp)
}

#[test]
fn report_and_pages_link_escape_and_read_well() {
    let ws = Workspace::new();
    let f = experiment(&ws);
    let o = ws.run(&f);
    assert!(!o.failed(), "{:?}", o.nodes.iter().map(|n| (&n.name, &n.status)).collect::<Vec<_>>());
    let v = lantern::experiment::load(&f).unwrap();
    let dirs = lantern::store::OutDir::create(&ws.out()).unwrap();
    lantern::report::write_for(&v, &o, &dirs).unwrap();
    let out = ws.out().join("rep");
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();

    // Links and anchors resolve; images are inlined; the table of contents reaches every section.
    assert!(check_links(&report, &out) > 20);
    assert!(report.contains("src=\"data:image/png;base64,"), "plots are inlined");
    for id in [
        "results",
        "plots",
        "tables",
        "stages",
        "file",
        "plot-scatter",
        "plot-hist",
        "stage-german",
        "table-german-contrast",
    ] {
        assert!(report.contains(&format!("href=\"#{id}\"")), "the contents lack #{id}");
    }
    // Results come first: the contrast table before the activations tables; sorted by d.
    let at = |s: &str| report.find(s).unwrap_or_else(|| panic!("no {s}"));
    assert!(at("id=\"table-german-contrast\"") < at("id=\"table-acts_en-stats\""));
    assert!(report.contains("sorted by d, largest first"));
    assert!(report.contains("href=\"german/contrast.csv\"") && report.contains("href=\"acts_en/examples.csv\""));

    // Every neuron id with a page is a link wherever the report shows it.
    let pages: Vec<String> = std::fs::read_dir(out.join("pages"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".html").map(String::from))
        .filter(|n| n.starts_with('L'))
        .collect();
    assert_eq!(pages.len(), 4);
    for p in &pages {
        let shown = report.matches(&format!(">{p}<")).count();
        let linked = report.matches(&format!("pages/{p}.html\">{p}<")).count();
        assert!(shown > 0 && shown == linked, "{p}: shown {shown} times, linked {linked}");
    }

    // Text and tokens are escaped on every page; byte tokens are shown as bytes.
    let mut htmls = vec![("report.html".to_string(), report.clone())];
    for e in std::fs::read_dir(out.join("pages")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "html") {
            htmls.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
        }
    }
    assert_eq!(htmls.len(), 1 + 4 + 2, "report, neuron pages, index, texts");
    for (name, html) in &htmls {
        assert!(!html.contains("<script>alert") && !html.contains("<img src=x"), "{name} is not escaped");
        // (The report's tables show token strings as the artifacts store them, TransformerLens's
        // to_str_tokens: a byte token is U+FFFD there.)
        assert!(name == "report.html" || !html.contains('\u{FFFD}'), "{name} shows a replacement character");
    }
    assert!(report.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the description is shown escaped");
    let texts = std::fs::read_to_string(out.join("pages/texts.html")).unwrap();
    assert!(texts.contains("&lt;") && texts.contains("&quot;"), "tokens are shown escaped");
    assert!(texts.contains("\\xE2"), "byte tokens are shown as \\xNN");
    assert!(htmls.iter().filter(|(n, _)| n.contains("/L")).any(|(_, h)| h.contains("&lt;")), "examples show the text");

    for p in &pages {
        let page = std::fs::read_to_string(out.join(format!("pages/{p}.html"))).unwrap();
        // The histogram has labelled axes and tidy ticks.
        assert!(page.contains("activation (mlp.hook_post)</text>") && page.contains("positions (of the first"));
        let svg = &page[page.find("<svg").unwrap()..page.find("</svg>").unwrap()];
        for t in svg.split("</text>").filter_map(|s| s.rsplit('>').next()).filter(|t| t.parse::<f64>().is_ok()) {
            assert!(t.split('.').nth(1).is_none_or(|d| d.len() <= 3), "{p}: tick {t}");
        }
        // No example is shown twice (the same window of tokens).
        let examples: Vec<&str> = page
            .split("<div class=\"ex\">")
            .skip(1)
            .map(|e| {
                let e = &e[..e.find("</div>").unwrap()];
                &e[e.find("</span>").unwrap()..]
            })
            .collect();
        assert!(examples.len() > 10, "{p}: {} examples", examples.len());
        assert_eq!(examples.iter().collect::<BTreeSet<_>>().len(), examples.len(), "{p} repeats an example");
        assert!(page.contains("Activations in ("), "{p}: examples sampled below the top");
        assert!(page.contains("similar output weights (w)"), "{p}: related neurons");
    }
    // The index shows the score that selected each neuron and sorts.
    let index = std::fs::read_to_string(out.join("pages/index.html")).unwrap();
    assert!(index.contains("<th>d</th>") && index.contains("table class=\"sortable\""));

    // The plot title names the neuron; its legend says what the groups are.
    let hist = std::fs::read_to_string(out.join("hist/plot.svg")).unwrap();
    assert!(hist.contains("German") && hist.contains("English") && !hist.contains("acts_en"));
    let title = hist.split("</text>").find(|t| t.contains(" on both")).unwrap();
    let id = title.rsplit('>').next().unwrap().trim().strip_suffix(" on both").unwrap();
    assert!(id.starts_with('L') && id.contains(".N"), "title names the neuron: {id}");
}
