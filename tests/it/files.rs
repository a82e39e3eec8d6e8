//! Experiment files for real work: `--set` overrides, `include` of shared blocks, `matrix`
//! expansions with `{key}` and `name[*]`, and their errors at the right place.

use crate::common::Workspace;
use lantern::exec::Status;

const BASE: &str = r#"[experiment]
name = "files"

[models.tiny]
path = "model"

[datasets.en]
path = "data/english.jsonl"
context = 16
n_tokens = 512

[stages.acts]
kind = "activations"
model = "tiny"
dataset = "en"
hooks = ["blocks.1.mlp.hook_post"]
top_k = 5
"#;

fn computed(o: &lantern::exec::Outcome) -> Vec<String> {
    o.nodes.iter().filter(|n| n.status == Status::Computed).map(|n| n.name.clone()).collect()
}

#[test]
fn set_overrides_a_value_like_an_edit_of_the_file() {
    let ws = Workspace::new();
    let f = ws.file("e.toml", BASE);
    let v =
        lantern::experiment::load_with(&f, &["stages.acts.top_k=7".into(), "datasets.en.n_tokens=256".into()]).unwrap();
    let lantern::stages::StageSpec::Activations(a) = &v.exp.stages["acts"].value else { panic!("kind") };
    assert_eq!(a.top_k, 7);
    assert_eq!(v.exp.datasets["en"].value.n_tokens, Some(256));
    // A bare word is a string; a TOML list is a list.
    let v = lantern::experiment::load_with(&f, &["stages.acts.hooks=[\"post.0\", \"post.1\"]".into()]).unwrap();
    let lantern::stages::StageSpec::Activations(a) = &v.exp.stages["acts"].value else { panic!("kind") };
    assert_eq!(a.hooks.iter().map(|h| h.value.as_str()).collect::<Vec<_>>(), ["post.0", "post.1"]);
    // An override is a changed parameter: the same value written in the file is a cache hit.
    let r = ws.lantern(&["run", "e.toml", "--out", "out", "--set", "stages.acts.top_k=9"]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    ws.file("e.toml", &BASE.replace("top_k = 5", "top_k = 9"));
    assert!(computed(&ws.run(&f)).is_empty(), "the edited file reuses what --set computed");
    let r = ws.lantern(&["plan", "e.toml", "--out", "out", "--set", "stages.acts.top_k=5"]);
    assert!(r.text.contains("stale (changed: top_k)"), "{}", r.text);
}

#[test]
fn bad_overrides_point_at_the_argument() {
    let ws = Workspace::new();
    ws.file("e.toml", BASE);
    let r = ws.lantern(&["validate", "e.toml", "--set", "stages.act.top_k=7"]);
    assert_eq!(r.code, Some(2), "{}", r.text);
    assert!(r.text.contains("--set: no entry of [stages] 'act' to set"), "{}", r.text);
    assert!(r.text.contains("--> --set stages.act.top_k=7:1:8"), "{}", r.text);
    assert!(r.text.contains("did you mean 'acts'?"), "{}", r.text);
    let r = ws.lantern(&["validate", "e.toml", "--set", "stages.acts.top_k=[1]"]);
    assert_eq!(r.code, Some(2), "{}", r.text);
    assert!(
        r.text.contains("invalid type: sequence") && r.text.contains("--> --set stages.acts.top_k=[1]:1:19"),
        "{}",
        r.text
    );
    let r = ws.lantern(&["validate", "e.toml", "--set", "sections.x=1"]);
    assert!(r.text.contains("no section 'sections' to set"), "{}", r.text);
}

#[test]
fn included_files_share_blocks_and_report_their_own_errors() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("shared")).unwrap();
    // Paths in an included file are relative to that file.
    ws.file(
        "shared/common.toml",
        "[models.tiny]\npath = \"../model\"\n\n[datasets.en]\npath = \"../data/english.jsonl\"\ncontext = 16\nn_tokens = 512\n",
    );
    let main = "[experiment]\nname = \"inc\"\ninclude = [\"shared/common.toml\"]\n\n[stages.acts]\nkind = \"activations\"\nmodel = \"tiny\"\ndataset = \"en\"\nhooks = [\"blocks.1.mlp.hook_post\"]\n";
    let f = ws.file("inc.toml", main);
    let o = ws.run(&f);
    assert_eq!(computed(&o), ["en@tiny", "acts"]);
    // A name defined in both files.
    ws.file("inc.toml", &format!("{main}\n[datasets.en]\npath = \"data/german.jsonl\"\n"));
    let r = ws.lantern(&["validate", "inc.toml"]);
    assert_eq!(r.code, Some(2), "{}", r.text);
    assert!(r.text.contains("datasets.en is defined twice: here and at "), "{}", r.text);
    assert!(r.text.contains("inc.toml:11") && r.text.contains("common.toml:4:11"), "both places: {}", r.text);
    // An error inside the included file points into it.
    ws.file("shared/common.toml", "[models.tiny]\npath = \"../model\"\nprocessing = \"defualt\"\n\n[datasets.en]\npath = \"../data/english.jsonl\"\n");
    ws.file("inc.toml", main);
    let r = ws.lantern(&["validate", "inc.toml"]);
    assert!(r.text.contains("unknown processing 'defualt'") && r.text.contains("common.toml:3:14"), "{}", r.text);
    let r = ws.lantern(&["validate", "--set", "include=[]", "inc.toml"]);
    assert_eq!(r.code, Some(2), "{}", r.text);
    ws.file("inc.toml", &main.replace("shared/common.toml", "shared/missing.toml"));
    let r = ws.lantern(&["validate", "inc.toml"]);
    assert!(
        r.text.contains("included file") && r.text.contains("does not exist") && r.text.contains("inc.toml:3:12"),
        "{}",
        r.text
    );
}

#[test]
fn a_matrix_expands_into_named_stages() {
    let ws = Workspace::new();
    let text = r#"[experiment]
name = "mx"

[models.tiny]
path = "model"

[datasets.text]
matrix = { lang = ["english", "german"] }
path = "data/{lang}.jsonl"
context = 16
n_tokens = 512

[stages.acts]
kind = "activations"
matrix = { dataset = ["text[english]", "text[german]"], layer = [0, 1] }
model = "tiny"
hooks = ["blocks.{layer}.mlp.hook_post"]

[stages.contrast]
kind = "contrast"
matrix = { layer = [0, 1] }
a = "acts[text[english],{layer}]"
b = "acts[text[german],{layer}]"

[plots.d]
matrix = { input = ["contrast[*]"] }
table = "contrast"
kind = "histogram"
column = "d"
"#;
    let f = ws.file("mx.toml", text);
    let v = lantern::experiment::load(&f).unwrap();
    let stages: Vec<&String> = v.exp.stages.keys().collect();
    assert_eq!(
        stages,
        [
            "acts[text[english],0]",
            "acts[text[english],1]",
            "acts[text[german],0]",
            "acts[text[german],1]",
            "contrast[0]",
            "contrast[1]"
        ]
    );
    assert_eq!(v.exp.datasets.keys().collect::<Vec<_>>(), ["text[english]", "text[german]"]);
    assert_eq!(v.exp.plots.keys().collect::<Vec<_>>(), ["d[contrast[0]]", "d[contrast[1]]"]);
    assert_eq!(v.exp.datasets["text[german]"].value.path.as_deref(), Some("data/german.jsonl"));
    let lantern::stages::StageSpec::Activations(a) = &v.exp.stages["acts[text[german],1]"].value else { panic!() };
    assert_eq!(a.hooks[0].value, "blocks.1.mlp.hook_post");
    assert_eq!(a.dataset.name(), "text[german]");
    let o = ws.run(&f);
    assert!(!o.failed(), "{:?}", o.nodes);
    assert!(ws.out().join("mx/d[contrast[1]]/plot.png").exists());
}

#[test]
fn matrix_mistakes_are_located() {
    let ws = Workspace::new();
    let with = |stage: &str| format!("{BASE}\n{stage}");
    let cases = [
        (
            "[stages.m]\nkind = \"activations\"\nmatrix = { model = [\"tiny\"] }\nmodel = \"tiny\"\ndataset = \"en\"\n",
            "`model` is set by the matrix of m",
        ),
        ("[stages.m]\nkind = \"contrast\"\na = \"acts[*]\"\nb = \"acts\"\n", "'acts' has no matrix"),
        ("[stages.m]\nkind = \"activations\"\nmatrix = { dataset = [] }\nmodel = \"tiny\"\n", "has an empty axis"),
        (
            "[stages.m]\nkind = \"activations\"\nmatrix = { dataset = [\"data/x\"] }\nmodel = \"tiny\"\n",
            "'data/x' cannot be part of a name",
        ),
    ];
    for (stage, want) in cases {
        ws.file("bad.toml", &with(stage));
        let r = ws.lantern(&["validate", "bad.toml"]);
        assert_eq!(r.code, Some(2), "{stage}: {}", r.text);
        assert!(r.text.contains(want) && r.text.contains("bad.toml:"), "{stage}: expected '{want}' in {}", r.text);
    }
}
