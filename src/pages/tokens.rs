//! Tokens as people can read them, the same on every page: bytes that are not UTF-8 (a byte-level
//! token holding part of a character) as `\xNN`, newline, tab and carriage return as `⏎`, `⇥`,
//! `␍`, other control characters as `\xNN`; the symbols greyed so they are not mistaken for text.

use maud::{html, Markup};

/// A run of a token's text: plain text, or a symbol standing for bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Symbol(String),
}

/// The pieces of a token's bytes.
pub fn pieces(bytes: &[u8]) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    let mut text = String::new();
    let symbol = |s: String, text: &mut String, out: &mut Vec<Piece>| {
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(text)));
        }
        out.push(Piece::Symbol(s));
    };
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => symbol("⏎".into(), &mut text, &mut out),
                '\t' => symbol("⇥".into(), &mut text, &mut out),
                '\r' => symbol("␍".into(), &mut text, &mut out),
                c if c.is_control() => {
                    let mut b = [0u8; 4];
                    let hex: String = c.encode_utf8(&mut b).bytes().map(|b| format!("\\x{b:02X}")).collect();
                    symbol(hex, &mut text, &mut out)
                }
                c => text.push(c),
            }
        }
        let bad: String = chunk.invalid().iter().map(|b| format!("\\x{b:02X}")).collect();
        if !bad.is_empty() {
            symbol(bad, &mut text, &mut out);
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    out
}

/// A token's bytes as one plain string (symbols inline), for attributes and sorting.
pub fn plain(bytes: &[u8]) -> String {
    pieces(bytes)
        .into_iter()
        .map(|p| match p {
            Piece::Text(s) | Piece::Symbol(s) => s,
        })
        .collect()
}

/// A token's bytes as markup: text as is, symbols in `<span class=sym>`.
pub fn render(bytes: &[u8]) -> Markup {
    html! {
        @for p in pieces(bytes) {
            @match p {
                Piece::Text(s) => (s),
                Piece::Symbol(s) => span.sym { (s) },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_whitespace_become_visible() {
        assert_eq!(plain(b"\xc3"), "\\xC3");
        assert_eq!(plain("ä".as_bytes()), "ä");
        assert_eq!(plain(b" a\nb\tc"), " a⏎b⇥c");
        assert_eq!(plain(b"\x01"), "\\x01");
        assert_eq!(render(b"<b>\n").into_string(), "&lt;b&gt;<span class=\"sym\">⏎</span>");
    }
}
