//! Plots: every kind decodes as a PNG of the requested size that is not blank, its SVG parses and
//! carries the title, heatmap cells have the colormap's colours, scatter labels are SVG titles.

use lantern::plot::{colormap, render, Annotation, Names, PlotKind, PlotSpec, XAt, XLine};
use polars::prelude::*;

fn base(kind: PlotKind) -> PlotSpec {
    PlotSpec {
        input: (),
        table: None,
        kind,
        x: None,
        y: None,
        value: None,
        column: None,
        group: None,
        color: None,
        label: None,
        error: None,
        band: None,
        x_labels: None,
        y_labels: None,
        left: None,
        right: None,
        count: None,
        bins: None,
        range: None,
        vmin: None,
        vmax: None,
        log_x: false,
        log_y: false,
        filter: Default::default(),
        title: Some(format!("A {kind:?} plot")),
        x_label: None,
        y_label: None,
        width: 640,
        height: 420,
        annotations: vec![],
        x_lines: vec![],
        legend: Default::default(),
    }
}

fn table() -> DataFrame {
    let n = 60;
    DataFrame::new_infer_height(vec![
        Column::new("x".into(), (0..n).map(|i| i as f64).collect::<Vec<_>>()),
        Column::new("y".into(), (0..n).map(|i| ((i as f64) / 7.0).sin()).collect::<Vec<_>>()),
        Column::new("lo".into(), (0..n).map(|i| ((i as f64) / 7.0).sin() - 0.3).collect::<Vec<_>>()),
        Column::new("hi".into(), (0..n).map(|i| ((i as f64) / 7.0).sin() + 0.3).collect::<Vec<_>>()),
        Column::new("cat".into(), (0..n).map(|i| ["a", "b", "c"][i % 3]).collect::<Vec<_>>()),
        Column::new("grp".into(), (0..n).map(|i| if i < 30 { "first" } else { "second" }).collect::<Vec<_>>()),
        Column::new("name".into(), (0..n).map(|i| format!("point {i}")).collect::<Vec<_>>()),
    ])
    .unwrap()
}

fn draw(spec: &PlotSpec, df: &DataFrame) -> (image::RgbImage, String) {
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("p.png"), dir.path().join("p.svg"));
    render(spec, df, &png, &svg).unwrap_or_else(|e| panic!("{:?}: {e:#}", spec.kind));
    (image::open(&png).unwrap().to_rgb8(), std::fs::read_to_string(&svg).unwrap())
}

fn variance(img: &image::RgbImage) -> f64 {
    let px: Vec<f64> = img.pixels().map(|p| p.0.iter().map(|&c| c as f64).sum::<f64>()).collect();
    let m = px.iter().sum::<f64>() / px.len() as f64;
    px.iter().map(|v| (v - m).powi(2)).sum::<f64>() / px.len() as f64
}

#[test]
fn every_kind_renders_png_and_svg() {
    let df = table();
    let mut kinds = Vec::new();
    let mut s = base(PlotKind::Line);
    s.x = Some("x".into());
    s.y = Some(Names::One("y".into()));
    s.group = Some("grp".into());
    s.band = Some(["lo".into(), "hi".into()]);
    kinds.push(s);
    let mut s = base(PlotKind::Scatter);
    s.x = Some("x".into());
    s.y = Some(Names::One("y".into()));
    s.color = Some("x".into());
    s.label = Some("name".into());
    s.annotations = vec![Annotation { x: 30.0, y: 0.5, text: "look here".into() }];
    kinds.push(s);
    let mut s = base(PlotKind::Heatmap);
    s.x = Some("x".into());
    s.y = Some(Names::One("cat".into()));
    s.value = Some("y".into());
    kinds.push(s);
    let mut s = base(PlotKind::Histogram);
    s.column = Some("y".into());
    s.bins = Some(12);
    s.group = Some("grp".into());
    kinds.push(s);
    let mut s = base(PlotKind::Bar);
    s.x = Some("cat".into());
    s.y = Some(Names::One("x".into()));
    s.group = Some("grp".into());
    kinds.push(s);
    let mut s = base(PlotKind::Box);
    s.x = Some("cat".into());
    s.y = Some(Names::One("y".into()));
    kinds.push(s);
    for s in kinds {
        let (img, svg) = draw(&s, &df);
        assert_eq!(img.dimensions(), (640, 420), "{:?}", s.kind);
        assert!(variance(&img) > 100.0, "{:?} looks blank", s.kind);
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{:?} SVG: {e}", s.kind));
        assert!(
            doc.descendants().any(|n| n.text().is_some_and(|t| t.contains(s.title.as_deref().unwrap()))),
            "{:?}: no title",
            s.kind
        );
        if s.kind == PlotKind::Line {
            // One shaded band per series.
            assert_eq!(doc.descendants().filter(|n| n.has_tag_name("polygon")).count(), 2, "bands");
        }
        if s.kind == PlotKind::Scatter {
            let titles: Vec<&str> =
                doc.descendants().filter(|n| n.has_tag_name("title")).filter_map(|n| n.text()).collect();
            assert!(
                titles.iter().any(|t| t.starts_with("point 17 (17,")),
                "labels: {:?}",
                &titles[..3.min(titles.len())]
            );
        }
    }
}

#[test]
fn heatmap_cells_have_the_colormap_colours() {
    // A 2 × 2 grid with fixed limits: −1 (blue), 0 (white), 0.5, 1 (red).
    let df = DataFrame::new_infer_height(vec![
        Column::new("x".into(), vec![0u32, 1, 0, 1]),
        Column::new("y".into(), vec![0u32, 0, 1, 1]),
        Column::new("v".into(), vec![-1.0f64, 0.0, 0.5, 1.0]),
    ])
    .unwrap();
    let mut s = base(PlotKind::Heatmap);
    s.x = Some("x".into());
    s.y = Some(Names::One("y".into()));
    s.value = Some("v".into());
    s.vmin = Some(-1.0);
    s.vmax = Some(1.0);
    let (img, _) = draw(&s, &df);
    // Find each expected colour's pixels: the four cells must all be present.
    for v in [-1.0, 0.5, 1.0] {
        let c = colormap::diverging(v);
        let n = img
            .pixels()
            .filter(|p| {
                (p.0[0] as i32 - c.0 as i32).abs() <= 2
                    && (p.0[1] as i32 - c.1 as i32).abs() <= 2
                    && (p.0[2] as i32 - c.2 as i32).abs() <= 2
            })
            .count();
        assert!(n > 2000, "value {v}: colour {c:?} covers only {n} pixels");
    }
    assert_eq!(colormap::diverging(0.0), plotters::style::RGBColor(255, 255, 255));
}

#[test]
fn a_missing_column_names_the_nearest() {
    let mut s = base(PlotKind::Line);
    s.x = Some("xx".into());
    s.y = Some(Names::One("y".into()));
    let dir = tempfile::tempdir().unwrap();
    let e = render(&s, &table(), &dir.path().join("a.png"), &dir.path().join("a.svg")).unwrap_err().to_string();
    assert!(e.contains("no column 'xx'") && e.contains("did you mean 'x'"), "{e}");
    let mut s = base(PlotKind::Heatmap);
    s.x = Some("x".into());
    let e = render(&s, &table(), &dir.path().join("a.png"), &dir.path().join("a.svg")).unwrap_err().to_string();
    assert!(e.contains("needs y, value"), "{e}");
}

#[test]
fn long_bar_labels_are_written_whole_and_vertically_and_dense_scatters_stay_small() {
    let names: Vec<String> = (0..20).map(|i| format!("L0.{i} token: a rather long feature name")).collect();
    let df = DataFrame::new_infer_height(vec![
        Column::new("name".into(), names.clone()),
        Column::new("vr".into(), (0..20).map(|i| 1.0 - i as f64 / 40.0).collect::<Vec<_>>()),
    ])
    .unwrap();
    let mut s = base(PlotKind::Bar);
    s.x = Some("name".into());
    s.y = Some(Names::One("vr".into()));
    s.height = 800;
    let (img, svg) = draw(&s, &df);
    assert!(variance(&img) > 100.0);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<roxmltree::Node> = doc.descendants().filter(|n| n.has_tag_name("text")).collect();
    let label = texts.iter().find(|n| n.text().map(str::trim) == Some(names[7].as_str())).unwrap_or_else(|| {
        panic!("'{}' not written whole: {:?}", names[7], texts.iter().filter_map(|t| t.text()).collect::<Vec<_>>())
    });
    assert!(label.attribute("transform").is_some_and(|t| t.contains("rotate")), "long labels are vertical");
    // Box plots lay out their categories the same way.
    let mut b = s.clone();
    b.kind = PlotKind::Box;
    let (_, svg) = draw(&b, &df);
    assert!(svg.contains(names[7].as_str()) && svg.contains("rotate("), "box labels written whole, vertically");
    // With less room they are cut, visibly.
    s.height = 420;
    let (_, svg) = draw(&s, &df);
    let cut = svg.split("</text>").filter_map(|t| t.rsplit('>').next()).map(str::trim).find(|t| t.starts_with("L0.7 "));
    assert!(cut.is_some_and(|t| t.ends_with('…') && t.len() > 12), "cut labels end in an ellipsis: {cut:?}");
    // 200,000 points on 640 × 420 pixels: one circle per occupied pixel, not per point.
    let n = 200_000;
    let df = DataFrame::new_infer_height(vec![
        Column::new("x".into(), (0..n).map(|i| ((i * 7919) % 1000) as f64).collect::<Vec<_>>()),
        Column::new("y".into(), (0..n).map(|i| ((i * 104_729) % 997) as f64).collect::<Vec<_>>()),
    ])
    .unwrap();
    let mut s = base(PlotKind::Scatter);
    s.x = Some("x".into());
    s.y = Some(Names::One("y".into()));
    let (_, svg) = draw(&s, &df);
    let circles = svg.matches("<circle").count();
    assert!(circles < 640 * 420 / 2 && circles > 1000, "{circles} circles");
}

#[test]
fn integer_colours_with_few_values_get_a_legend_and_titles_wrap() {
    let n = 40;
    let df = DataFrame::new_infer_height(vec![
        Column::new("x".into(), (0..n).map(|i| i as f64).collect::<Vec<_>>()),
        Column::new("y".into(), (0..n).map(|i| (i * i) as f64).collect::<Vec<_>>()),
        Column::new("layer".into(), (0..n).map(|i| (i % 2) as u32).collect::<Vec<_>>()),
    ])
    .unwrap();
    let mut s = base(PlotKind::Scatter);
    s.x = Some("x".into());
    s.y = Some(Names::One("y".into()));
    s.color = Some("layer".into());
    s.width = 420;
    let title = "The share of the most common language among each neuron's top examples against its entropy";
    s.title = Some(title.into());
    let (_, svg) = draw(&s, &df);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<&str> =
        doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).map(str::trim).collect();
    assert!(texts.contains(&"layer=0") && texts.contains(&"layer=1"), "a legend, not a colour bar: {texts:?}");
    // The title is wrapped onto lines, whole.
    let words: Vec<&str> = texts.iter().filter(|t| title.contains(**t) && t.contains(' ')).copied().collect();
    assert!(words.len() >= 2 && words.join(" ") == title, "title lines {words:?}");
    // Text is drawn as the embedded font's glyphs too (no system font needed).
    assert!(svg.contains("<defs>") && svg.contains("<use href=\"#g"));
    // An explicit legend names the values.
    s.legend = [("0".to_string(), "first layer".to_string())].into_iter().collect();
    let (_, svg) = draw(&s, &df);
    assert!(svg.contains("first layer") && svg.contains("layer=1"));
}

#[test]
fn histogram_lines_stand_at_numbers_or_a_column_value_and_are_named_in_the_legend() {
    let mut df = table();
    df.with_column(Column::new("thr".into(), vec![0.123456f64; df.height()])).unwrap();
    let mut s = base(PlotKind::Histogram);
    s.column = Some("y".into());
    s.x_lines = vec![
        XLine { x: XAt::Value(2.5), label: "fixed at 2.5".into() },
        XLine { x: XAt::Column("thr".into()), label: "from the table ({thr})".into() },
    ];
    let (img, svg) = draw(&s, &df);
    assert!(variance(&img) > 100.0);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    for want in ["fixed at 2.5", "from the table (0.123)"] {
        assert!(texts.iter().any(|t| t.contains(want)), "no legend entry {want:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("p.png"), dir.path().join("p.svg"));
    s.x_lines[1].x = XAt::Column("x".into());
    let e = render(&s, &df, &png, &svg).unwrap_err().to_string();
    assert!(e.contains("holds several values"), "{e}");
    s.kind = PlotKind::Bar;
    (s.x, s.y) = (Some("cat".into()), Some(Names::One("x".into())));
    let e = render(&s, &df, &png, &svg).unwrap_err().to_string();
    assert!(e.contains("does not draw `x_lines`"), "{e}");
}
