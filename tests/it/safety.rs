//! The output folder's guarantees, through the real binary: names cannot escape it, `clean` and
//! `gc` delete only what they own (never a path read from a manifest), tampered entries are
//! recomputed, leftovers of killed runs are removed, user files are moved aside rather than
//! deleted, and two runs on one output folder compute each entry once.

use crate::common::{Ran, Workspace};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Two experiments that share the tokenization and the `acts` stage; `a` also has `only_a`.
fn experiment(name: &str, extra: bool) -> String {
    let mut s = format!(
        r#"[experiment]
name = "{name}"

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
"#
    );
    if extra {
        s += "\n[stages.only_a]\nkind = \"activations\"\nmodel = \"tiny\"\ndataset = \"en\"\nhooks = [\"blocks.0.mlp.hook_post\"]\n";
    }
    s
}

fn ok(o: Ran) -> String {
    assert_eq!(o.code, Some(0), "{}", o.text);
    o.text
}

/// Store entries by fingerprint.
fn entries(out: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for p in std::fs::read_dir(out.join(".lantern/store")).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(p.path()).unwrap().flatten() {
            v.push(e.file_name().to_string_lossy().to_string());
        }
    }
    v.sort();
    v
}

/// The store entry a view links to.
fn entry_of(view: &Path) -> PathBuf {
    view.canonicalize().unwrap()
}

fn set_manifest_field(entry: &Path, field: &str, value: serde_json::Value) {
    let p = entry.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    m[field] = value;
    std::fs::write(&p, serde_json::to_string(&m).unwrap()).unwrap();
}

#[test]
fn names_that_are_paths_are_refused_with_their_position() {
    let ws = Workspace::new();
    let good = experiment("a", false);
    for bad in ["..", "../escape", "/tmp/abs", "", ".", "a/b", ".hidden", "a\\\\b"] {
        let f = ws.file("e.toml", &good.replace("name = \"a\"", &format!("name = \"{bad}\"")));
        let o = ws.lantern(&["validate", f.to_str().unwrap()]);
        assert_eq!(o.code, Some(2), "name {bad:?}: {}", o.text);
        let t = o.text;
        assert!(t.contains("invalid experiment name") && t.contains("e.toml:2:8"), "name {bad:?}: {t}");
        let o = ws.lantern(&["run", f.to_str().unwrap(), "--out", "out/inner"]);
        assert_eq!(o.code, Some(2), "{}", o.text);
    }
    assert!(!ws.out().exists(), "nothing written");
    // Every other name is checked the same way.
    for (header, line) in [
        ("[models.tiny]", "[models.\"../m\"]"),
        ("[datasets.en]", "[datasets.\"/d\"]"),
        ("[stages.acts]", "[stages.\".s\"]"),
        ("[stages.acts]", "[stages.\"a/b\"]"),
    ] {
        let f = ws.file("e.toml", &good.replace(header, line));
        let o = ws.lantern(&["validate", f.to_str().unwrap()]);
        assert_eq!(o.code, Some(2), "{line}: {}", o.text);
        assert!(o.text.contains("invalid name"), "{line}: {}", o.text);
    }
}

#[test]
fn clean_removes_links_only_and_never_a_path_from_a_manifest() {
    let ws = Workspace::new();
    let f = ws.file("a.toml", &experiment("a", true));
    ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    let out = ws.out();
    let before = entries(&out);
    assert_eq!(before.len(), 3, "{before:?}");
    // Tampered manifests: one names a folder outside the output folder, one is not hex at all.
    let victim = ws.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("precious.txt"), "keep me").unwrap();
    set_manifest_field(&entry_of(&out.join("a/acts")), "fingerprint", "../../victim".into());
    set_manifest_field(&entry_of(&out.join("a/only_a")), "fingerprint", "x".into());
    std::fs::write(out.join("a/notes.txt"), "mine").unwrap();
    let said = ok(ws.lantern(&["clean", f.to_str().unwrap(), "--out", "out"]));
    assert!(said.contains("unlinked") && said.contains("kept"), "{said}");
    assert!(victim.join("precious.txt").exists(), "a path read from a manifest was deleted");
    assert_eq!(entries(&out), before, "clean deletes no store entry");
    assert!(std::fs::read_dir(out.join("a")).unwrap().flatten().all(|e| e.file_name() == "notes.txt"));
    // The tampered entries are recomputed, not trusted.
    let said = ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    assert_eq!(said.matches("artifact corrupt").count(), 2, "{said}");
    assert!(victim.join("precious.txt").exists());
}

#[test]
fn a_manifest_listing_no_files_is_not_trusted() {
    let ws = Workspace::new();
    ws.file("a.toml", &experiment("a", false));
    ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    set_manifest_field(&entry_of(&ws.out().join("a/acts")), "files", serde_json::json!([]));
    let said = ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    assert!(said.contains("artifact corrupt") && said.contains("is not in the manifest"), "{said}");
    assert!(said.contains("acts                     done"), "{said}");
}

#[test]
fn gc_deletes_only_what_no_experiment_links_to() {
    let ws = Workspace::new();
    ws.file("a.toml", &experiment("a", true));
    ws.file("b.toml", &experiment("b", false));
    ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    let said = ok(ws.lantern(&["run", "b.toml", "--out", "out"]));
    assert!(!said.contains("running ("), "b shares every stage with a: {said}");
    let out = ws.out();
    let only_a = entry_of(&out.join("a/only_a")).file_name().unwrap().to_string_lossy().to_string();
    ok(ws.lantern(&["clean", "a.toml", "--out", "out"]));
    assert_eq!(entries(&out).len(), 3);
    // Not on a terminal and without --yes: refuses, deletes nothing.
    let o = ws.lantern(&["gc", "--out", "out"]);
    assert_eq!(o.code, Some(2), "{}", o.text);
    assert!(o.text.contains("--yes"), "{}", o.text);
    let said = ok(ws.lantern(&["gc", "--out", "out", "--dry-run"]));
    assert!(said.contains("a/only_a (activations)") && said.contains("1 unlinked entries"), "{said}");
    assert_eq!(entries(&out).len(), 3, "a dry run deletes nothing");
    ok(ws.lantern(&["gc", "--out", "out", "--yes"]));
    let left = entries(&out);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&only_a));
    let said = ok(ws.lantern(&["run", "b.toml", "--out", "out"]));
    assert!(!said.contains("running (") && said.contains("0 computed, 2 cached"), "{said}");
    // While a run holds the output folder, gc refuses.
    let _run = lantern::store::lock::FileLock::acquire(&out.join(".lantern/lock"), lantern::store::lock::Mode::Shared)
        .unwrap();
    let o = ws.lantern(&["gc", "--out", "out", "--yes"]);
    assert_eq!(o.code, Some(1), "{}", o.text);
    assert!(o.text.contains("a lantern run is using"), "{}", o.text);
}

#[test]
fn leftovers_of_killed_runs_are_removed_and_live_ones_kept() {
    let ws = Workspace::new();
    ws.file("a.toml", &experiment("a", false));
    ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    let tmp = ws.out().join(".lantern/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let (dead, live) = ("1".repeat(64), "2".repeat(64));
    for fp in [&dead, &live] {
        std::fs::create_dir_all(tmp.join(format!("{fp}-4194000-17"))).unwrap();
        std::fs::write(tmp.join(format!("{fp}-4194000-17/part.bin")), "half").unwrap();
    }
    std::fs::write(tmp.join("README"), "not lantern's").unwrap();
    // A process still writing holds its entry's lock.
    let held = lantern::store::lock::FileLock::acquire(
        &ws.out().join(format!(".lantern/locks/{live}.lock")),
        lantern::store::lock::Mode::Exclusive,
    )
    .unwrap();
    let said = ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    assert!(said.contains("removed 1 temporary folders"), "{said}");
    assert!(!tmp.join(format!("{dead}-4194000-17")).exists());
    assert!(tmp.join(format!("{live}-4194000-17/part.bin")).exists());
    drop(held);
    let said = ok(ws.lantern(&["gc", "--out", "out", "--yes"]));
    assert!(said.contains("1 temporary folders"), "{said}");
    assert!(!tmp.join(format!("{live}-4194000-17")).exists());
    assert!(tmp.join("README").exists());
}

#[test]
fn a_folder_in_place_of_a_link_is_moved_aside() {
    let ws = Workspace::new();
    ws.file("a.toml", &experiment("a", false));
    ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    let view = ws.out().join("a/acts");
    std::fs::remove_file(&view).unwrap();
    std::fs::create_dir(&view).unwrap();
    std::fs::write(view.join("analysis.ipynb"), "my work").unwrap();
    let said = ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    assert!(said.contains("warning: acts") && said.contains("acts.replaced"), "{said}");
    assert!(std::fs::symlink_metadata(&view).unwrap().file_type().is_symlink());
    assert!(view.join("manifest.json").exists());
    assert_eq!(std::fs::read_to_string(ws.out().join("a/acts.replaced/analysis.ipynb")).unwrap(), "my work");
}

#[test]
fn every_artifact_is_written_with_the_same_mode() {
    let ws = Workspace::new();
    ws.file("a.toml", &experiment("a", false));
    ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    let mut seen = 0;
    let mut stack = vec![ws.out().join(".lantern/store")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                assert_eq!(md.permissions().mode() & 0o777, 0o644, "{}", e.path().display());
                seen += e.path().extension().is_some_and(|x| x == "safetensors") as usize;
            }
        }
    }
    assert!(seen >= 1, "a safetensors artifact was checked");
}

#[test]
fn a_symlinked_experiment_folder_gets_working_links_or_a_clear_refusal() {
    let ws = Workspace::new();
    ws.file("a.toml", &experiment("a", false));
    let out = ws.out();
    std::fs::create_dir_all(out.join("real")).unwrap();
    std::os::unix::fs::symlink("real", out.join("a")).unwrap();
    ok(ws.lantern(&["run", "a.toml", "--out", "out"]));
    for view in ["acts", "en@tiny"] {
        assert!(out.join("a").join(view).join("manifest.json").exists(), "{view} dangles");
    }
    assert!(out.join("a/report.html").exists());
    // A link that leads out of the output folder is refused before anything runs.
    let elsewhere = ws.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    ws.file("b.toml", &experiment("b", false));
    std::os::unix::fs::symlink(&elsewhere, out.join("b")).unwrap();
    let o = ws.lantern(&["run", "b.toml", "--out", "out"]);
    assert_ne!(o.code, Some(0));
    assert!(o.text.contains("is a symbolic link to") && o.text.contains("inside its output folder"), "{}", o.text);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing written outside");
}

#[test]
fn two_runs_on_one_output_folder_compute_each_entry_once() {
    use std::io::{BufRead, BufReader};
    let ws = Workspace::new();
    ws.file(
        "c.toml",
        r#"[experiment]
name = "c"

[datasets.en]
path = "data/english.jsonl"
context = 32

[stages.lm]
kind = "train"
datasets = ["en"]
layers = 1
d_model = 32
heads = 2
context = 32
vocab_size = 300
steps = 80
batch_size = 8
"#,
    );
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_lantern"))
            .args(["run", "c.toml", "--out", "out"])
            .current_dir(ws.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The second run starts while the first is training: it waits, then takes the first's model.
    let mut first = spawn();
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    let mut first_said = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        first_said += &line;
        first_said += "\n";
        if line.contains("lm@0") && line.contains("running (train)") {
            break;
        }
    }
    let second = spawn();
    first_said += &lines.map(|l| l.unwrap() + "\n").collect::<String>();
    assert!(first.wait().unwrap().success(), "{first_said}");
    let second = second.wait_with_output().unwrap();
    let second_said = String::from_utf8_lossy(&second.stderr).to_string();
    assert!(second.status.success(), "{second_said}");
    assert!(second_said.contains("waiting for another lantern run"), "{second_said}");
    let trained = |s: &str| s.lines().filter(|l| l.contains("lm@0") && l.contains("running (train)")).count();
    assert_eq!(trained(&first_said) + trained(&second_said), 1, "{first_said}\n{second_said}");
    assert!(second_said.lines().any(|l| l.contains("lm@0") && l.ends_with("cached")), "{second_said}");
    let third = ok(ws.lantern(&["run", "c.toml", "--out", "out"]));
    assert!(third.contains("0 computed, 2 cached"), "{third}");
    assert!(std::fs::read_dir(ws.out().join(".lantern/tmp")).unwrap().next().is_none(), "no leftovers");
}
