//! HTML pages lantern writes (self-contained: inline CSS, no network): the neuron viewer's pages, and
//! the escaping every page uses.

pub mod neuron;

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
