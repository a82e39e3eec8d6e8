//! HTML pages lantern writes (self-contained: inline CSS, no network): the neuron viewer's pages,
//! readable tokens, inline SVG histograms, and the document shell the report shares.
//!
//! Pages are built with [maud](https://maud.lambda.xyz): its `html!` macro is checked at compile
//! time, escapes every interpolated value unless it is wrapped in `PreEscaped`, and builds pages
//! from plain Rust functions returning `Markup`, so a token span or a table is a function the
//! neuron page, the index and the report all call (askama, the other escape-by-default choice,
//! keeps templates in separate files bound to structs: more ceremony for pages made of small
//! reusable pieces computed in Rust).

pub mod histogram;
pub mod neuron;
pub mod tokens;

use maud::{html, Markup, PreEscaped, DOCTYPE};

/// A complete page: doctype, UTF-8, the title, inline `style`, then `body`.
pub fn document(title: &str, style: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(style)) }
            }
            body { (body) }
        }
    }
}

/// A small script that sorts a table when its header cell is clicked (numbers numerically, by a
/// cell's `data-v` when it has one), for tables with class `sortable`.
pub const SORT_SCRIPT: &str = "document.querySelectorAll('table.sortable th').forEach((th,i)=>th.addEventListener('click',()=>{const t=th.closest('table'),b=t.tBodies[0],rows=[...b.rows],asc=th.dataset.asc!=='1';t.querySelectorAll('th').forEach(h=>delete h.dataset.asc);th.dataset.asc=asc?'1':'0';const v=r=>{const c=r.cells[i];const s=c.dataset.v??c.textContent;const n=parseFloat(s);return isNaN(n)?s:n};rows.sort((x,y)=>{const a=v(x),c=v(y);const o=typeof a==='number'&&typeof c==='number'?a-c:String(a).localeCompare(String(c));return asc?o:-o});rows.forEach(r=>b.appendChild(r))}));";

/// 1234567 → "1,234,567".
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
