//! SVG post-processing: hover labels (`<title>`) on plotted points.

/// Escape text for XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Add an invisible circle with a `<title>` at each (x, y) pixel, so hovering shows the label.
pub fn add_tooltips(svg: &str, tips: &[(i32, i32, String)]) -> String {
    if tips.is_empty() {
        return svg.to_string();
    }
    let mut extra = String::from("<g class=\"labels\">\n");
    for (x, y, t) in tips {
        extra += &format!(
            "<circle cx=\"{x}\" cy=\"{y}\" r=\"5\" fill=\"transparent\"><title>{}</title></circle>\n",
            escape(t)
        );
    }
    extra += "</g>\n";
    match svg.rfind("</svg>") {
        Some(i) => format!("{}{}{}", &svg[..i], extra, &svg[i..]),
        None => svg.to_string() + &extra,
    }
}
