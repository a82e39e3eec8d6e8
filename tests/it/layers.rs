//! The layer order written at the top of `src/lib.rs` holds: no module names a module of its own
//! layer or above (every `crate::x` path in its files is checked), and every module has a layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Module → layer number, from the `//! N. \`a\`, \`b\`: …` lines of src/lib.rs.
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("//! ")) {
        let Some((n, rest)) = line.split_once(". ") else { continue };
        let Ok(n) = n.trim().parse::<usize>() else { continue };
        let names = rest.split(':').next().unwrap_or("");
        for m in names.split('`').skip(1).step_by(2) {
            out.insert(m.to_string(), n);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code without comments and string literals (blanked, so byte offsets and lines stay).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let (mut i, mut in_str) = (0, false);
    while i < b.len() {
        if in_str {
            if b[i] == b'\\' {
                out[i] = b' ';
                i += 1;
                if i < b.len() && b[i] != b'\n' {
                    out[i] = b' ';
                }
            } else if b[i] == b'"' {
                in_str = false;
            } else if b[i] != b'\n' {
                out[i] = b' ';
            }
        } else if b[i] == b'"' {
            in_str = true;
        } else if b[i] == b'\''
            && (b.get(i + 2) == Some(&b'\'') || (b.get(i + 1) == Some(&b'\\') && b.get(i + 3) == Some(&b'\'')))
        {
            // A char literal ('"', '\'').
            let len = if b[i + 1] == b'\\' { 4 } else { 3 };
            out[i..i + len].fill(b' ');
            i += len;
            continue;
        } else if b[i] == b'r' && (b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"')) {
            // A raw string: r#"…"#.
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) == Some(&b'"') {
                let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                let body = i + 2 + hashes;
                let end =
                    b[body..].windows(close.len()).position(|w| w == close.as_slice()).map(|p| body + p + close.len());
                let end = end.unwrap_or(b.len());
                for (k, c) in out[i..end].iter_mut().enumerate() {
                    if b[i + k] != b'\n' {
                        *c = b' ';
                    }
                }
                i = end;
                continue;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out[i] = b' ';
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The modules `crate::x` paths name, with their byte offsets; `crate::{a, b::c}` names each.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && (code.as_bytes()[i - 1].is_ascii_alphanumeric() || code.as_bytes()[i - 1] == b'_') {
            continue;
        }
        let rest = &code[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0, 0);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        let item = group[start..j].trim_start();
                        out.push((i + 8 + j - item.len(), ident(item)));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let item = group[start..j].trim_start();
                        out.push((i + 8 + j - item.len(), ident(item)));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push((i, ident(rest)));
        }
    }
    out.retain(|(_, m)| !m.is_empty());
    out
}

/// `file:line: module a (layer n) imports b (layer m)` for every import that does not point down.
fn violations(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let rank = layers(&lib);
    let mut out = Vec::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let m = line.trim_end_matches(';');
        if !rank.contains_key(m) {
            out.push(format!("src/lib.rs: module `{m}` is in no layer of the list at the top of src/lib.rs"));
        }
    }
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        // The binary (main.rs, cli/) sits above every layer.
        let Some(&own) = rank.get(&top) else { continue };
        let code = code_only(&std::fs::read_to_string(&f).unwrap());
        for (at, m) in crate_paths(&code) {
            match rank.get(&m) {
                Some(&r) if m != top && r >= own => out.push(format!(
                    "src/{}:{}: `{top}` (layer {own}) imports `{m}` (layer {r}): imports must point to a lower layer",
                    rel.display(),
                    code[..at].matches('\n').count() + 1
                )),
                _ => {}
            }
        }
    }
    out
}

#[test]
fn imports_point_down_the_layer_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(bad.is_empty(), "{} imports break the layer order:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn a_planted_back_edge_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(
        src.join("lib.rs"),
        "//! 1. `util`: helpers\n//! 2. `model`, `data`: things\n//! 3. `exec`: runs\npub mod util;\npub mod model;\npub mod data;\npub mod exec;\npub mod stray;\n",
    )
    .unwrap();
    std::fs::create_dir(src.join("model")).unwrap();
    std::fs::write(src.join("util.rs"), "use crate::model::X; // a back-edge\n").unwrap();
    std::fs::write(src.join("model/mod.rs"), "use crate::util::Y;\nfn f() { crate::data::z(); }\n").unwrap();
    std::fs::write(
        src.join("data.rs"),
        "// crate::exec in a comment\nconst S: &str = \"crate::exec\";\nuse crate::{\n    util::Y,\n    exec::{Run, Stop},\n};\n",
    )
    .unwrap();
    std::fs::write(src.join("exec.rs"), "use crate::{model, util};\n").unwrap();
    let bad = violations(src);
    assert_eq!(bad.len(), 4, "{bad:#?}");
    assert!(bad[0].contains("module `stray` is in no layer"), "{bad:#?}");
    assert!(bad[1].starts_with("src/data.rs:5: `data` (layer 2) imports `exec` (layer 3)"), "{bad:#?}");
    assert!(bad[2].starts_with("src/model/mod.rs:2: `model` (layer 2) imports `data` (layer 2)"), "{bad:#?}");
    assert!(bad[3].starts_with("src/util.rs:1: `util` (layer 1) imports `model` (layer 2)"), "{bad:#?}");
}
