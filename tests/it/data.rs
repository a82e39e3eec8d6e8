//! Datasets: TransformerLens chunking worked out by hand, document and prompt modes, masks and
//! crops, limits and shuffling, file formats, a hub dataset from a cache laid out like the real
//! one, and the errors for bad input.

use crate::common::fixture;
use lantern::data::{tokenize, DatasetSpec, Tokenized};
use lantern::model::Tokenizer;
use lantern::util::Cancel;
use std::path::Path;

fn gpt2() -> Tokenizer {
    Tokenizer::from_file(&fixture("gpt2-tokenizer/tokenizer.json"), 50256, 50256).unwrap()
}

fn spec(toml_text: &str) -> DatasetSpec {
    toml::from_str(toml_text).unwrap()
}

fn run(s: &DatasetSpec, base: &Path) -> anyhow::Result<Tokenized> {
    tokenize(s, base, &gpt2(), 1024, &mut |_, _| {}, &Cancel::new())
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn concat_follows_tokenize_and_concatenate_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    // 40 characters: TL splits the joined text into 20 chunks of (40 − 1) / 20 + 1 = 2 characters.
    write(dir.path(), "d.jsonl", "{\"text\": \"abcdefghijklmnopqrstuvwxyz0123456789ABCD\"}\n");
    let s = spec("path = \"d.jsonl\"\ncontext = 4");
    let t = run(&s, dir.path()).unwrap();
    let tok = gpt2();
    let chunks = [
        "ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr", "st", "uv", "wx", "yz", "01", "23", "45", "67", "89",
        "AB", "CD",
    ];
    let ids: Vec<u32> = chunks.iter().flat_map(|c| tok.encode(c, false).unwrap()).collect();
    // Rows of context − 1 = 3 tokens, BOS first, the remainder dropped.
    let n_rows = ids.len() / 3;
    assert_eq!(t.rows, n_rows);
    for r in 0..n_rows {
        assert_eq!(&t.tokens[r * 4..(r + 1) * 4], &[&[50256][..], &ids[r * 3..(r + 1) * 3]].concat()[..]);
    }
    // BOS positions belong to no document; the others to document 0.
    assert_eq!(t.doc[0], u32::MAX);
    assert_eq!(t.doc[1], 0);
}

#[test]
fn documents_are_joined_with_eos_within_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let long = "word ".repeat(30);
    write(dir.path(), "d.jsonl", &format!("{{\"text\": \"{long}\"}}\n{{\"text\": \"{long}\"}}\n"));
    let t = run(&spec("path = \"d.jsonl\"\ncontext = 8\nmask = [\"bos\", \"eos\"]"), dir.path()).unwrap();
    // "<|endoftext|>" between the two documents is split by the 20 character chunks or kept whole;
    // either way the second document's tokens follow the first's.
    let docs: Vec<u32> = t.doc.iter().copied().filter(|&d| d != u32::MAX).collect();
    assert!(docs.contains(&0) && docs.contains(&1));
    // Masked: every BOS (= EOS for GPT-2) position.
    for (i, &tk) in t.tokens.iter().enumerate() {
        if tk == 50256 {
            assert_eq!(t.valid[i], 0);
        }
    }
}

#[test]
fn document_mode_pads_and_masks_padding_and_crop() {
    let s: DatasetSpec =
        spec("prompts = [\"Hello world\", \"Hello\"]\nmode = \"document\"\ncontext = 16\ncrop = [1, 16]");
    let t = run(&s, Path::new(".")).unwrap();
    assert_eq!((t.rows, t.ctx), (2, 3));
    assert_eq!(t.tokens, vec![50256, 15496, 995, 50256, 15496, 50256]);
    // Position 0 cropped, padding of row 1 masked.
    assert_eq!(t.valid, vec![0, 1, 1, 0, 1, 0]);
}

#[test]
fn newline_mask_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..50).map(|i| format!("{{\"text\": \"line {i} has\\nsome words in it here\"}}\n")).collect();
    write(dir.path(), "d.jsonl", &lines);
    let t = run(&spec("path = \"d.jsonl\"\ncontext = 8\nmask = [\"newline\"]\nn_tokens = 24"), dir.path()).unwrap();
    assert_eq!(t.rows, 3);
    let nl = gpt2().single_token("\n").unwrap();
    for (i, &tk) in t.tokens.iter().enumerate() {
        assert_eq!(t.valid[i] == 0, tk == nl, "position {i}");
    }
    let t =
        run(&spec("path = \"d.jsonl\"\ncontext = 8\nmode = \"document\"\nmax_docs = 5\nmin_chars = 10"), dir.path())
            .unwrap();
    assert_eq!(t.rows, 5);
    let err = run(&spec("path = \"d.jsonl\"\ncontext = 8\nmin_chars = 1000"), dir.path()).unwrap_err().to_string();
    assert!(err.contains("min_chars"), "{err}");
}

#[test]
fn shuffling_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..200).map(|i| format!("{{\"text\": \"document number {i} with a few words\"}}\n")).collect();
    write(dir.path(), "d.jsonl", &lines);
    let a = run(&spec("path = \"d.jsonl\"\ncontext = 8\nshuffle_seed = 1"), dir.path()).unwrap();
    let b = run(&spec("path = \"d.jsonl\"\ncontext = 8\nshuffle_seed = 1"), dir.path()).unwrap();
    let c = run(&spec("path = \"d.jsonl\"\ncontext = 8\nshuffle_seed = 2"), dir.path()).unwrap();
    let plain = run(&spec("path = \"d.jsonl\"\ncontext = 8"), dir.path()).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_ne!(a.tokens, c.tokens);
    let mut x = a.tokens.chunks(8).map(|r| r.to_vec()).collect::<Vec<_>>();
    let mut y = plain.tokens.chunks(8).map(|r| r.to_vec()).collect::<Vec<_>>();
    x.sort();
    y.sort();
    assert_eq!(x, y, "shuffling permutes rows");
}

#[test]
fn golden_tokenization_cases_match() {
    let text = std::fs::read_to_string(fixture("gpt2-tokenizer/golden_tokenization.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases =
        v.get("cases").and_then(|c| c.as_array()).cloned().unwrap_or_else(|| v.as_array().cloned().unwrap_or_default());
    assert!(cases.len() >= 10);
    let tok = gpt2();
    for c in cases {
        let t = c["text"].as_str().unwrap();
        let ids: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(t, false).unwrap(), ids, "{t:?}");
        // The golden token strings are the vocabulary's (byte-level, 'Ġ' for a space) …
        let want: Vec<String> =
            c["tokens"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        let vocab: Vec<String> = ids.iter().map(|&i| tok.inner().id_to_token(i).unwrap()).collect();
        assert_eq!(vocab, want, "{t:?}");
        // … and TL's `to_str_tokens` decodes each one (a space for 'Ġ').
        if t == " an" {
            assert_eq!(tok.str_tokens(&ids), vec![" an"]);
        }
    }
}

#[test]
fn parquet_csv_and_text_sources() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("body".into(), vec!["Hello world", "Good morning"]),
        Column::new("lang".into(), vec!["en", "en2"]),
    ])
    .unwrap();
    lantern::store::table::write(&dir.path().join("d.parquet"), &mut df).unwrap();
    lantern::store::table::write_csv(&dir.path().join("d.csv"), &mut df).unwrap();
    write(dir.path(), "d.txt", "Hello world\n\nGood morning\n");
    for (file, extra) in [
        ("d.parquet", "field = \"body\"\nlabel_field = \"lang\""),
        ("d.csv", "field = \"body\"\nlabel_field = \"lang\""),
        ("d.txt", "lines = true"),
    ] {
        let t = run(&spec(&format!("path = \"{file}\"\nmode = \"document\"\n{extra}")), dir.path()).unwrap();
        assert_eq!(t.rows, 2, "{file}");
        assert_eq!(&t.tokens[..3], &[50256, 15496, 995], "{file}");
        if file != "d.txt" {
            assert_eq!(t.doc_labels, vec!["en", "en2"], "{file}");
        }
    }
    let err = run(&spec("path = \"d.parquet\"\nfield = \"text\""), dir.path()).unwrap_err().to_string();
    assert!(err.contains("no column 'text'") && err.contains("body"), "{err}");
}

#[test]
fn a_hub_dataset_is_read_from_the_cache() {
    use polars::prelude::*;
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("datasets--org--tiny-text");
    let commit = "abcdefabcdefabcdefabcdefabcdefabcdefabcd";
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(snap.join("data")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    std::fs::write(snap.join("README.md"), "tiny").unwrap();
    let mut df =
        DataFrame::new_infer_height(vec![Column::new("text".into(), vec!["Hello world", "Good morning"])]).unwrap();
    lantern::store::table::write(&snap.join("data/train-00000-of-00001.parquet"), &mut df).unwrap();
    let s = spec("hub = \"org/tiny-text\"\nmode = \"document\"");
    let files = lantern::data::source::hub_files_in(
        &hf_hub::Cache::new(cache.path().to_path_buf()),
        &s,
        "org/tiny-text",
        false,
    )
    .unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("data/train-00000-of-00001.parquet"));
    let missing =
        lantern::data::source::hub_files_in(&hf_hub::Cache::new(cache.path().to_path_buf()), &s, "org/absent", false)
            .unwrap_err()
            .to_string();
    assert!(missing.contains("org/absent") && missing.contains("datasets--org--absent"), "{missing}");
}

#[test]
fn bad_input_names_the_file_the_line_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "json.jsonl", "{\"text\": \"ok\"}\n{\"text\": broken}\n");
    let e = run(&spec("path = \"json.jsonl\"\ncontext = 4"), dir.path()).unwrap_err().to_string();
    assert!(e.contains("json.jsonl:2:") && e.contains("not JSON"), "{e}");
    write(dir.path(), "field.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"x\", \"id\": 3}\n");
    let e = run(&spec("path = \"field.jsonl\"\ncontext = 4"), dir.path()).unwrap_err().to_string();
    assert!(e.contains("field.jsonl:2") && e.contains("no field 'text'") && e.contains("body, id"), "{e}");
    std::fs::write(dir.path().join("utf.jsonl"), b"{\"text\": \"ok\"}\n{\"text\": \"\xff\"}\n").unwrap();
    let e = run(&spec("path = \"utf.jsonl\"\ncontext = 4"), dir.path()).unwrap_err().to_string();
    assert!(e.contains("utf.jsonl:2") && e.contains("is not UTF-8"), "{e}");
    let e = run(&spec("path = \"absent.jsonl\""), dir.path()).unwrap_err().to_string();
    assert!(e.contains("absent.jsonl") && e.contains("does not exist"), "{e}");
    let e = run(&spec("pairs = [{ clean = \"I ate an apple\", corrupted = \"I ate a watermelonish\", answer = \" x\", wrong = \" y\" }]"), Path::new(".")).unwrap_err().to_string();
    assert!(e.contains("pair 0") && e.contains("different lengths"), "{e}");
    let e = run(&spec("pairs = [{ clean = \"I ate an apple\", corrupted = \"I ate a pear\", answer = \" apple tree\", wrong = \" y\" }]"), Path::new(".")).unwrap_err().to_string();
    assert!(e.contains("' apple tree' is 2 tokens"), "{e}");
    let e = tokenize(
        &spec("path = \"json.jsonl\"\ncontext = 2048"),
        dir.path(),
        &gpt2(),
        1024,
        &mut |_, _| {},
        &Cancel::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("longer than the model's context"), "{e}");
    let checks = lantern::data::check(&spec("path = \"a.jsonl\"\nprompts = [\"x\"]"), dir.path());
    assert!(checks.iter().any(|c| c.1.contains("exactly one of")), "{checks:?}");
}

#[test]
fn pile_style_nested_labels_from_jsonl_and_parquet_struct_columns() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.jsonl", "{\"text\": \"A first document about code.\", \"meta\": {\"pile_set_name\": \"Github\"}}\n{\"text\": \"A second one, from the web.\", \"meta\": {\"pile_set_name\": \"Pile-CC\"}}\n");
    // The Pile's parquet files hold `meta` as a struct column, which is never read as text.
    let subset = Series::new("pile_set_name".into(), ["Github", "Pile-CC"]);
    let meta = StructChunked::from_series("meta".into(), 2, [subset].iter()).unwrap().into_series();
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("text".into(), ["A first document about code.", "A second one, from the web."]),
        meta.into_column(),
    ])
    .unwrap();
    lantern::store::table::write(&dir.path().join("p.parquet"), &mut df).unwrap();
    for file in ["p.jsonl", "p.parquet"] {
        let t =
            run(&spec(&format!("path = \"{file}\"\ncontext = 8\nlabel_field = \"meta.pile_set_name\"")), dir.path())
                .unwrap();
        assert_eq!(t.doc_labels, vec!["Github".to_string(), "Pile-CC".to_string()], "{file}");
    }
    // Without a label field the struct column is simply not read.
    assert!(run(&spec("path = \"p.parquet\"\ncontext = 8"), dir.path()).is_ok());
}

#[test]
fn a_hub_dataset_is_found_through_refs_whatever_its_snapshot_holds() {
    // A cache filled file by file (`hf_hub_download` of the Parquet alone) has no README.md or
    // .gitattributes: the snapshot is found through refs/main, or by a commit as the revision.
    let hub = crate::hub::HubCache::new();
    hub.pile("NeelNanda/pile-10k", 3);
    let cache = hf_hub::Cache::new(hub.path().to_path_buf());
    let snap = hub.repo_dir(crate::hub::Kind::Dataset, "NeelNanda/pile-10k").join("snapshots");
    let held: Vec<_> = std::fs::read_dir(snap.read_dir().unwrap().next().unwrap().unwrap().path()).unwrap().collect();
    assert_eq!(held.len(), 1, "only data/");
    let s = spec("hub = \"NeelNanda/pile-10k\"\nlabel_field = \"meta.pile_set_name\"");
    let files = lantern::data::source::hub_files_in(&cache, &s, "NeelNanda/pile-10k", false).unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("data/train-00000-of-00001.parquet"), "{files:?}");
    let commit = crate::hub::HubCache::commit("NeelNanda/pile-10k");
    let pinned = spec(&format!("hub = \"NeelNanda/pile-10k\"\nrevision = \"{commit}\""));
    assert_eq!(lantern::data::source::hub_files_in(&cache, &pinned, "NeelNanda/pile-10k", false).unwrap(), files);
    // A snapshot without the split's files says what it holds.
    let test_split = spec("hub = \"NeelNanda/pile-10k\"\nsplit = \"test\"");
    let e = lantern::data::source::hub_files_in(&cache, &test_split, "NeelNanda/pile-10k", false).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("split 'test'") && e.contains("data/train-00000-of-00001.parquet"), "{e}");
    // The symlinked blob reads as the Parquet it is, its nested subset column as labels.
    let read = spec(&format!("path = \"{}\"\nlabel_field = \"meta.pile_set_name\"", files[0].display()));
    let t = run(&read, Path::new("/")).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(t.doc_labels[..2], ["Pile-CC".to_string(), "Github".to_string()]);
}

/// `lantern run` on an experiment file in a workspace: (exit code, stderr).
fn lantern_run(ws: &crate::common::Workspace, experiment: &str) -> (Option<i32>, String) {
    let f = ws.file("e.toml", experiment);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(["run", f.to_str().unwrap(), "--out", ws.out().to_str().unwrap()])
        .output()
        .unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
}

/// Bytes of a Parquet file holding one table.
fn parquet_bytes(df: &mut polars::prelude::DataFrame) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    lantern::store::table::write(&dir.path().join("t.parquet"), df).unwrap();
    std::fs::read(dir.path().join("t.parquet")).unwrap()
}

/// A bad data file is invalid input: `lantern run` exits 2, naming the file, the line (and column
/// where known) and what it found — JSONL, CSV, text and Parquet alike.
#[test]
fn bad_data_files_are_invalid_input_with_their_line() {
    use polars::prelude::*;
    let ws = crate::common::Workspace::new();
    let ints = parquet_bytes(&mut df!("text" => [1i64, 2]).unwrap());
    let cases: Vec<(&str, &[u8], &str)> = vec![
        (
            "bad.jsonl",
            b"{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": \"\xe9t\xe9\"}\n",
            "bad.jsonl:3:11: byte 0xe9 is not UTF-8",
        ),
        ("bad.jsonl", b"{\"text\": \"ok\"}\nnot json\n", "bad.jsonl:2:2: not JSON (expected ident)"),
        ("bad.jsonl", b"{\"text\": \"ok\"}\n{\"body\": \"x\"}\n", "bad.jsonl:2: no field 'text' (the line has: body)"),
        ("bad.jsonl", b"{\"text\": 42}\n", "bad.jsonl:1: 'text' is a number, expected a string"),
        ("bad.jsonl", b"{\"text\": null}\n", "bad.jsonl:1: 'text' is null, expected a string"),
        ("bad.jsonl", b"[\"text\"]\n", "bad.jsonl:1: the line is an array, expected a JSON object"),
        ("bad.csv", b"text,label\nok,a\nbroken,a,extra\n", "bad.csv:3: 3 fields where the header has 2"),
        ("bad.csv", b"text\nok\n\xe9t\xe9\n", "bad.csv:3: field 1 is not UTF-8"),
        ("bad.csv", b"body\nok\n", "bad.csv: no column 'text' (columns: body)"),
        ("bad.txt", b"one line\nthe caf\xe9\n", "bad.txt:2:8: byte 0xe9 is not UTF-8"),
        ("bad.parquet", &ints, "bad.parquet: column 'text' holds i64, expected strings"),
        ("bad.parquet", b"PAR1 not really", "bad.parquet: not a readable Parquet file"),
    ];
    for (name, bytes, want) in cases {
        std::fs::write(ws.path().join(name), bytes).unwrap();
        let (code, err) = lantern_run(
            &ws,
            &format!(
                "[experiment]\nname = \"e\"\n[models.tiny]\npath = \"model\"\n[datasets.d]\npath = \"{name}\"\ncontext = 8\n\
                 [stages.acts]\nkind = \"activations\"\nmodel = \"tiny\"\ndataset = \"d\"\nhooks = [\"post.0\"]\n"
            ),
        );
        assert_eq!(code, Some(2), "{want}: {err}");
        assert!(err.contains(want) && err.contains("invalid input data"), "{want}: {err}");
    }
}

/// Per-position labels of `explain` and a `train` tokenizer file are input data too: exit 2 with
/// the file and what is wrong; the stages that did not need them finish.
#[test]
fn bad_labels_and_tokenizer_files_are_invalid_input() {
    use polars::prelude::*;
    let ws = crate::common::Workspace::new();
    let mut df = df!("row" => [0i64, 5000], "position" => [0i64, 1], "tag" => ["a", "b"]).unwrap();
    lantern::store::table::write(&ws.path().join("tags.parquet"), &mut df).unwrap();
    std::fs::write(ws.path().join("tok.json"), "{\"not\": \"a tokenizer\"}").unwrap();
    let (code, err) = lantern_run(
        &ws,
        "[experiment]\nname = \"e\"\n[models.tiny]\npath = \"model\"\n[datasets.d]\npath = \"data/english.jsonl\"\n\
         context = 8\nn_tokens = 256\n[stages.x]\nkind = \"explain\"\nmodel = \"tiny\"\ndataset = \"d\"\n\
         hooks = [\"post.0\"]\nfeatures = [\"position\"]\nlabels = [{ path = \"tags.parquet\", column = \"tag\" }]\n\
         [stages.lm]\nkind = \"train\"\ndatasets = [\"d\"]\ntokenizer = \"tok.json\"\nlayers = 1\nd_model = 16\n\
         heads = 2\ncontext = 8\nsteps = 2\nbatch_size = 2\n[stages.w]\nkind = \"weights\"\nmodel = \"tiny\"\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "tags.parquet: labels: record 2: row 5000, position 1 is outside the dataset (32 rows of 8 positions)"
        ),
        "{err}"
    );
    assert!(err.contains("tok.json: not a tokenizer"), "{err}");
    assert!(err.contains("2 computed") && err.contains("2 failed"), "{err}");
}
