//! Finding where a field is written inside a table's span, for errors about fields whose values
//! do not carry their own position.

use std::ops::Range;

/// The span of `field = …`'s value inside `table` (a `[header]` table extends to the next header);
/// the table's span when the field is not written there.
pub fn field_span(text: &str, table: &Range<usize>, field: &str) -> Range<usize> {
    let start = table.start.min(text.len());
    let rest = &text[start..];
    let header = rest.starts_with('[');
    let end =
        if header { rest.find("\n[").map(|i| start + i).unwrap_or(text.len()) } else { table.end.min(text.len()) };
    let body = &text[start..end.max(start)];
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        for (i, _) in line.match_indices(field) {
            let before = &line[..i];
            let after = line[i + field.len()..].trim_start();
            let key_start = before.is_empty() || before.ends_with(|c: char| c.is_whitespace() || c == '{' || c == ',');
            if key_start && after.starts_with('=') {
                let value = after[1..].trim_start();
                let vstart = table.start + offset + (line.len() - value.len());
                let vlen = value.trim_end().split([',', '}', '#']).next().unwrap_or("").trim_end().len().max(1);
                return vstart..vstart + vlen;
            }
        }
        offset += line.len();
    }
    table.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_value_of_a_field() {
        let text = "[datasets.de]\npath = \"data/x.jsonl\"\ncontext = 256\n";
        let s = field_span(text, &(0..text.len()), "path");
        assert_eq!(&text[s], "\"data/x.jsonl\"");
        let s = field_span(text, &(0..text.len()), "context");
        assert_eq!(&text[s], "256");
        // A header table's span may cover the header only: the search runs to the next header.
        let text = "[datasets.de]\npath = \"a\"\n[datasets.en]\npath = \"b\"\n";
        let s = field_span(text, &(0..13), "path");
        assert_eq!(&text[s], "\"a\"");
    }
}
