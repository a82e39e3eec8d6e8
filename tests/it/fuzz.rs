//! Fuzz corpora run through the real binary under a memory cap (`ulimit -v`): malformed experiment
//! files made deterministically from the shipped ones (deleted and repeated lines, wrong types,
//! typos, huge, negative and non-finite numbers, truncation, Latin-1 / UTF-16 / stray bytes, deep
//! nesting, path-like names) through `validate`, and malformed data files (JSONL, CSV, text)
//! through `run`. Each must exit 0 or 2 — never panic, abort or be killed — every exit 2 must point
//! at the file (FILE:LINE:COL for experiment files, FILE:LINE for a line of a data file), and
//! nothing may be written outside `--out`.

use crate::common::Workspace;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Virtual memory the binary may use (KiB): a validation that allocates by a number in the file
/// would exceed it.
const MEMORY_KB: u64 = 4 << 20;

/// The files the corpus mutates: every shipped experiment and a small one on a local model.
fn bases() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| (e.file_name().to_string_lossy().to_string(), std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    out.sort();
    out.push((
        "local.toml".into(),
        r#"[experiment]
name = "local"
seed = 3

[models.tiny]
path = "model"

[datasets.en]
path = "data/english.jsonl"
context = 16
n_tokens = 256
crop = [1, 12]

[stages.acts]
kind = "activations"
model = "tiny"
dataset = "en"
hooks = ["mlp.hook_post"]
top_k = 5
histogram = { start = -2.0, stop = 2.0, edges = 11 }

[stages.abl]
kind = "ablation"
model = "tiny"
dataset = "en"
interventions = [{ hook = "blocks.1.mlp.hook_post", neurons = [3], positions = [-1], zero = true }]

[stages.w]
kind = "weights"
model = "tiny"

[plots.k]
input = "acts"
table = "stats"
kind = "histogram"
column = "kurt"
"#
        .into(),
    ));
    out
}

/// Replacements of a value: wrong types, extremes, non-finite numbers, path-like names.
const VALUES: &[&str] = &[
    "\"x\"",
    "42",
    "-1",
    "0",
    "9223372036854775807",
    "18446744073709551615",
    "-9223372036854775808",
    "99999999999999999999",
    "1e308",
    "-1e-320",
    "nan",
    "inf",
    "-inf",
    "true",
    "[]",
    "[1, \"a\"]",
    "{ a = 1 }",
    "\"../escape\"",
    "\"/etc/passwd\"",
    "\"..\"",
    "\"\"",
    "\".hidden\"",
    "1979-05-27",
    "\"\\u0000\"",
];

/// One malformed file from a base text (bytes: some are not UTF-8).
fn mutate(text: &str, rng: &mut ChaCha8Rng, kind: usize) -> Vec<u8> {
    let lines: Vec<&str> = text.lines().collect();
    let pick = |rng: &mut ChaCha8Rng| rng.random_range(0..lines.len());
    let with_line = |i: usize, new: String| {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        l[i] = new;
        (l.join("\n") + "\n").into_bytes()
    };
    // A line with a value (`key = value`), for value edits.
    let valued = |rng: &mut ChaCha8Rng| {
        let with: Vec<usize> =
            (0..lines.len()).filter(|&i| lines[i].contains(" = ") && !lines[i].starts_with('#')).collect();
        with[rng.random_range(0..with.len())]
    };
    match kind {
        0 => {
            let i = pick(rng);
            let mut l = lines.clone();
            l.remove(i);
            (l.join("\n") + "\n").into_bytes()
        }
        1 => {
            let i = pick(rng);
            let mut l = lines.clone();
            l.insert(i, lines[i]);
            (l.join("\n") + "\n").into_bytes()
        }
        2 => {
            let i = valued(rng);
            let key = lines[i].split(" = ").next().unwrap_or("");
            with_line(i, format!("{key} = {}", VALUES[rng.random_range(0..VALUES.len())]))
        }
        3 => {
            // A typo in a key: a letter dropped or two swapped.
            let i = valued(rng);
            let (key, value) = lines[i].split_once(" = ").unwrap();
            let mut k: Vec<char> = key.chars().collect();
            if k.len() > 2 {
                let j = rng.random_range(0..k.len() - 1);
                if rng.random_bool(0.5) {
                    k.swap(j, j + 1);
                } else {
                    k.remove(j);
                }
            }
            with_line(i, format!("{} = {value}", k.into_iter().collect::<String>()))
        }
        4 => {
            // A section's name made path-like.
            let headers: Vec<usize> =
                (0..lines.len()).filter(|&i| lines[i].starts_with("[") && lines[i].contains('.')).collect();
            let i = headers[rng.random_range(0..headers.len())];
            let section = lines[i].trim_matches(['[', ']']).split('.').next().unwrap_or("stages").to_string();
            let name =
                ["\"../x\"", "\"/abs\"", "\".\"", "\"a/b\"", "\"..\\\\x\"", "\"\"", "\" \""][rng.random_range(0..7)];
            with_line(i, format!("[{section}.{name}]"))
        }
        5 => {
            // Truncated at a random byte (possibly inside a character).
            let b = text.as_bytes();
            b[..rng.random_range(0..b.len())].to_vec()
        }
        6 => {
            // Latin-1 or stray bytes inside the file.
            let mut b = text.as_bytes().to_vec();
            let at = rng.random_range(0..b.len());
            let bytes: &[u8] = [&[0xe9u8][..], &[0xff, 0xfe], &[0xc3], &[0x80, 0x80], &[0x00]][rng.random_range(0..5)];
            b.splice(at..at, bytes.iter().copied());
            b
        }
        7 => {
            // UTF-16, with or without a byte-order mark.
            let mut b: Vec<u8> = if rng.random_bool(0.5) { vec![0xff, 0xfe] } else { vec![] };
            b.extend(text.encode_utf16().flat_map(|u| u.to_le_bytes()));
            b
        }
        8 => {
            // Deep nesting of arrays or inline tables, in a stage or at the top.
            let depth = [64, 1000, 20_000][rng.random_range(0..3)];
            let value = if rng.random_bool(0.5) {
                "[".repeat(depth) + &"]".repeat(depth)
            } else {
                "{ a = ".repeat(depth) + "1" + &" }".repeat(depth)
            };
            let i = valued(rng);
            let key = lines[i].split(" = ").next().unwrap_or("x");
            with_line(i, format!("{key} = {value}"))
        }
        9 => {
            // Random bytes flipped.
            let mut b = text.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
            }
            b
        }
        10 => {
            // A number made huge, negative or non-finite wherever numbers are.
            let i = (0..lines.len())
                .filter(|&i| {
                    lines[i].split(" = ").nth(1).is_some_and(|v| v.trim().starts_with(|c: char| c.is_ascii_digit()))
                })
                .collect::<Vec<_>>();
            let i = if i.is_empty() { valued(rng) } else { i[rng.random_range(0..i.len())] };
            let key = lines[i].split(" = ").next().unwrap_or("x");
            let v = ["9223372036854775807", "4294967296", "100000", "-5", "nan", "+inf", "1e30", "0"]
                [rng.random_range(0..8)];
            with_line(i, format!("{key} = {v}"))
        }
        11 => {
            // Duplicated tables and keys, a stray header, a very long line.
            let i = pick(rng);
            let extra = ["[experiment]", "[stages]", "[[stages.x]]", "name = \"again\"", "x = \"very long string\""]
                [rng.random_range(0..5)];
            let extra =
                if extra.starts_with("x =") { format!("x = \"{}\"", "y".repeat(200_000)) } else { extra.to_string() };
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            l.insert(i, extra);
            (l.join("\n") + "\n").into_bytes()
        }
        12 => {
            // An include of something that is not an experiment file (or not a file at all).
            let what = [
                "\"/dev/zero\"",
                "\"/dev/urandom\"",
                "\"../../../../../etc/passwd\"",
                "\"missing.toml\"",
                "\".\"",
                "\"latin1.toml\"",
                "42",
                "[\"a\", 1]",
            ][rng.random_range(0..8)];
            (format!("include = [{what}]\n") + text).into_bytes()
        }
        13 => {
            // A matrix on a stage: path-like, mixed, empty or huge axes.
            let headers: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("[stages.")).collect();
            let i = headers[rng.random_range(0..headers.len())];
            let many = (0..3000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
            let axes = [
                "k = [\"../x\", \"a/b\"]".to_string(),
                "k = [1, \"a\", 2.5, true]".to_string(),
                "k = []".to_string(),
                format!("a = [{many}], b = [{many}]"),
                "seed = [1, 2], batch_size = [0, -1]".to_string(),
                "k = [{ a = 1 }]".to_string(),
            ][rng.random_range(0..6)]
            .clone();
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            l.insert(i + 1, format!("matrix = {{ {axes} }}"));
            (l.join("\n") + "\n").into_bytes()
        }
        _ => unreachable!(),
    }
}

const KINDS: usize = 14;

/// Whether an error message points at FILE:LINE:COL of the file.
fn has_position(err: &str, file: &str) -> bool {
    fn number(s: &str) -> Option<&str> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (n > 0).then(|| &s[n..])
    }
    err.match_indices(file).any(|(i, _)| {
        let rest = &err[i + file.len()..];
        rest.strip_prefix(':').and_then(number).and_then(|r| r.strip_prefix(':')).and_then(number).is_some()
    })
}

/// Run the binary with arguments in a folder under the memory cap: (exit code, stderr).
fn capped(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let cmd = format!("ulimit -v {MEMORY_KB}; exec \"$0\" \"$@\"");
    let o = Command::new("sh")
        .args(["-c", &cmd, env!("CARGO_BIN_EXE_lantern")])
        .args(args)
        .current_dir(dir)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
}

/// `f` on every case, two processes at a time, results in case order.
fn in_parallel<T: Sync, R: Send>(cases: &[T], f: impl Fn(usize, &T) -> R + Sync) -> Vec<R> {
    let mut out: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let f = &f;
                s.spawn(move || (w..cases.len()).step_by(2).map(|i| (i, f(i, &cases[i]))).collect::<Vec<_>>())
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Every file and folder under `dir` except `skip` (relative paths, sorted).
fn listing(dir: &Path, skip: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            if rel == Path::new(skip) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

#[test]
fn malformed_experiment_files_are_rejected_cleanly_under_a_memory_cap() {
    let ws = Workspace::new();
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut cases: Vec<(PathBuf, String)> = Vec::new();
    for (name, text) in bases() {
        for n in 0..24 {
            let bytes = mutate(&text, &mut rng, n % KINDS);
            let file = ws.path().join(format!("f{:03}-{}", cases.len(), name));
            std::fs::write(&file, bytes).unwrap();
            cases.push((file, format!("{name} mutation {}", n % KINDS)));
        }
    }
    assert!(cases.len() >= 200, "{} cases", cases.len());
    std::fs::write(ws.path().join("latin1.toml"), b"# caf\xe9\n").unwrap();
    let before = listing(ws.path(), "out");
    let results = in_parallel(&cases, |_, (file, _)| capped(ws.path(), &["validate", file.to_str().unwrap()]));
    assert_eq!(listing(ws.path(), "out"), before, "validate wrote files");
    let mut bad = Vec::new();
    let mut invalid = 0;
    for ((file, what), (code, err)) in cases.iter().zip(results) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        // Every error is followed by the place it is about: in this file, or in a file it includes.
        let lines: Vec<&str> = err.lines().collect();
        let located = (0..lines.len()).filter(|&i| lines[i].starts_with("error:")).all(|i| {
            lines.get(i + 1).and_then(|l| l.trim_start().strip_prefix("--> ")).is_some_and(|place| {
                place.rsplitn(3, ':').take(2).all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        });
        match code {
            Some(0) => {}
            Some(2) if located && err.lines().any(|l| l.starts_with("error:")) => invalid += 1,
            Some(2) => bad.push(format!(
                "{name} ({what}): exit 2 with an error not at FILE:LINE:COL:\n{}",
                &err[..err.len().min(2000)]
            )),
            other => bad.push(format!("{name} ({what}): exit {other:?}:\n{}", &err[..err.len().min(2000)])),
        }
    }
    assert!(bad.is_empty(), "{} of {} cases:\n{}", bad.len(), cases.len(), bad.join("\n---\n"));
    assert!(invalid > cases.len() / 2, "most mutations are invalid ({invalid} of {})", cases.len());
}

/// One malformed data file from the lines of a valid one (`csv`: quote fields as CSV does).
fn mutate_data(lines: &[String], rng: &mut ChaCha8Rng, kind: usize) -> Vec<u8> {
    let mut l: Vec<Vec<u8>> = lines.iter().map(|s| s.clone().into_bytes()).collect();
    let at = rng.random_range(1..l.len());
    match kind {
        // Latin-1 or a stray continuation byte inside a line.
        0 => {
            let i = rng.random_range(0..l[at].len());
            l[at].insert(i, [0xe9u8, 0x80, 0xff][rng.random_range(0..3)]);
        }
        // A line cut short (an unterminated string or quote).
        1 => {
            let n = rng.random_range(1..l[at].len());
            l[at].truncate(n);
        }
        // A line that is something else: a number, null, an array, an object without the text, NUL bytes.
        2 => {
            let other: [&[u8]; 7] =
                [b"42", b"null", b"[\"text\"]", b"{\"body\": \"x\"}", b"{\"text\": 42}", b"{\"text\": [1]}", b"\0\0\0"];
            l[at] = other[rng.random_range(0..other.len())].to_vec();
        }
        // Random bytes flipped.
        3 => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..l[at].len());
                l[at][i] = rng.random();
            }
        }
        // An extra field or a stray separator.
        4 => {
            let extra: [&[u8]; 3] = [b",extra", b"\"", b"}"];
            l[at].extend_from_slice(extra[rng.random_range(0..extra.len())]);
        }
        // Nothing but blank lines, or an empty file.
        5 => return if rng.random_bool(0.5) { vec![] } else { b"\n\n  \n".to_vec() },
        // UTF-16.
        6 => {
            let text = lines.join("\n");
            return [0xff, 0xfe].into_iter().chain(text.encode_utf16().flat_map(|u| u.to_le_bytes())).collect();
        }
        // Deep nesting in the text field.
        7 => l[at] = format!("{{\"text\": {}{}}}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        _ => unreachable!(),
    }
    l.into_iter()
        .flat_map(|mut b| {
            b.push(b'\n');
            b
        })
        .collect()
}

#[test]
fn malformed_data_files_are_invalid_input_under_a_memory_cap() {
    let ws = Workspace::new();
    let text = std::fs::read_to_string(ws.path().join("data/english.jsonl")).unwrap();
    let jsonl: Vec<String> = text.lines().take(40).map(str::to_string).collect();
    let docs: Vec<String> = jsonl
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    let csv: Vec<String> = std::iter::once("text,source".to_string())
        .chain(docs.iter().map(|d| format!("\"{}\",fortunes", d.replace('"', "\"\"").replace('\n', " "))))
        .collect();
    let txt: Vec<String> = docs.iter().map(|d| d.replace('\n', " ")).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut cases: Vec<(String, String)> = Vec::new();
    for (ext, lines) in [("jsonl", &jsonl), ("csv", &csv), ("txt", &txt)] {
        for n in 0..24 {
            let name = format!("d{:03}.{ext}", cases.len());
            std::fs::write(ws.path().join(&name), mutate_data(lines, &mut rng, n % 8)).unwrap();
            let experiment = format!(
                "[experiment]\nname = \"e{:03}\"\n[models.tiny]\npath = \"model\"\n[datasets.d]\npath = \"{name}\"\n\
                 context = 8\n[stages.acts]\nkind = \"activations\"\nmodel = \"tiny\"\ndataset = \"d\"\n\
                 hooks = [\"post.0\"]\n",
                cases.len()
            );
            std::fs::write(ws.path().join(format!("{name}.toml")), experiment).unwrap();
            cases.push((name, format!("{ext} mutation {}", n % 8)));
        }
    }
    let before = listing(ws.path(), "out");
    let results =
        in_parallel(&cases, |_, (name, _)| capped(ws.path(), &["run", &format!("{name}.toml"), "--out", "out"]));
    assert_eq!(listing(ws.path(), "out"), before, "files written outside --out");
    let mut bad = Vec::new();
    let mut invalid = 0;
    for ((name, what), (code, err)) in cases.iter().zip(results) {
        // The file, then its line (or what is wrong with the whole file).
        let located = err.contains(&format!("invalid input data: {name}:"));
        match code {
            Some(0) => {}
            Some(2) if located => invalid += 1,
            Some(2) => bad.push(format!("{name} ({what}): exit 2 without the file:\n{err}")),
            other => bad.push(format!("{name} ({what}): exit {other:?}:\n{}", &err[..err.len().min(2000)])),
        }
    }
    assert!(bad.is_empty(), "{} of {} cases:\n{}", bad.len(), cases.len(), bad.join("\n---\n"));
    assert!(invalid > cases.len() / 2, "most mutations are invalid ({invalid} of {})", cases.len());
}

/// A matrix's combinations are counted before any is made: 1000³ is refused at its position, under
/// the memory cap, at once.
#[test]
fn a_huge_matrix_is_refused_under_a_memory_cap() {
    let ws = Workspace::new();
    let values = (0..1000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let f = ws.file(
        "m.toml",
        &format!(
            "[experiment]\nname = \"m\"\n[models.tiny]\npath = \"model\"\n[stages.w]\nkind = \"weights\"\n\
             model = \"tiny\"\nmatrix = {{ a = [{values}], b = [{values}], c = [{values}] }}\n"
        ),
    );
    let (code, err) = capped(ws.path(), &["validate", f.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the matrix of w makes 1000000000 combinations; at most 4096"), "{err}");
    assert!(has_position(&err, "m.toml"), "{err}");
}

/// A device or a huge file named as the experiment file, or included by one, is refused without
/// being read to the end.
#[test]
fn files_without_end_are_not_read() {
    let ws = Workspace::new();
    let (code, err) = capped(ws.path(), &["validate", "/dev/zero"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/dev/zero: not a regular file"), "{err}");
    // A named pipe with no writer: refused, not waited on (killed after 30 s if it waits).
    let pipe = ws.path().join("pipe.toml");
    let c = std::ffi::CString::new(pipe.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path it is given.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let o = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_lantern"))
        .arg("validate")
        .arg(&pipe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("pipe.toml: not a regular file"), "{err}");
    std::fs::write(ws.path().join("big.toml"), vec![b'#'; 17 << 20]).unwrap();
    for include in ["/dev/zero", "big.toml"] {
        let f = ws.file("i.toml", &format!("include = [\"{include}\"]\n[experiment]\nname = \"i\"\n"));
        let (code, err) = capped(ws.path(), &["validate", f.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{err}");
        assert!(has_position(&err, "i.toml") && err.contains(&format!("{include}: ")), "{err}");
    }
}

/// What the corpus found, kept as plain cases: each must be refused at its position, not panic.
#[test]
fn what_the_corpus_found_stays_fixed() {
    let ws = Workspace::new();
    let head = "[experiment]\nname = \"u\"\n[models.tiny]\npath = \"model\"\n[datasets.d]\npath = \"data/english.jsonl\"\n\
                context = 16\nn_tokens = 256\n[stages.w]\nkind = \"weights\"\nmodel = \"tiny\"\n\
                [stages.c]\nkind = \"correlation\"\na = \"tiny\"\nb = \"tiny\"\ndataset = \"d\"\nbaseline = \"rotation\"\n";
    // A universal stage whose correlations are no correlation stages (a matrix key mistyped
    // upstream) and whose baselines are: checked against the first baseline, not `corr[0]`.
    let cases = [
        (
            "[stages.u]\nkind = \"universal\"\ncorrelations = [\"w\"]\nbaselines = [\"c\"]\n",
            "universal reads correlation stages",
        ),
        // Shards are plan nodes: a huge count is refused before the plan is built with it.
        (
            "[stages.a]\nkind = \"activations\"\nmodel = \"tiny\"\ndataset = \"d\"\nshards = 9223372036854775807\n",
            "shards = 9223372036854775807 is more than the most shards a stage may have (1024)",
        ),
    ];
    for (stage, want) in cases {
        let f = ws.file("u.toml", &format!("{head}{stage}"));
        let (code, err) = capped(ws.path(), &["validate", f.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(want) && has_position(&err, "u.toml"), "{err}");
    }
}
