//! The one place that builds paths under the output folder: names checked against a safe
//! alphabet, store entries named by well-formed fingerprints, and every path proven to stay inside
//! the canonical output folder (no `..`, no symbolic link leading out).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// Hex digits of a fingerprint (a blake3 hash).
pub const FINGERPRINT_LEN: usize = 64;

/// lantern's own folder inside the output folder.
const INTERNAL: &str = ".lantern";

/// A store entry's name: exactly 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(String);

impl Fingerprint {
    /// A fingerprint read from anywhere (a manifest, a folder name): `None` unless well-formed.
    pub fn parse(s: &str) -> Option<Fingerprint> {
        let ok = s.len() == FINGERPRINT_LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Fingerprint(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The store's fan-out folder (the first two digits).
    fn prefix(&self) -> &str {
        &self.0[..2]
    }
}

impl From<blake3::Hash> for Fingerprint {
    fn from(h: blake3::Hash) -> Fingerprint {
        Fingerprint(h.to_hex().to_string())
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = String;
    fn try_from(s: String) -> Result<Fingerprint, String> {
        Fingerprint::parse(&s).ok_or_else(|| format!("'{s}' is not a fingerprint ({FINGERPRINT_LEN} hex digits)"))
    }
}

impl From<Fingerprint> for String {
    fn from(f: Fingerprint) -> String {
        f.0
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest name lantern writes a folder for.
const MAX_NAME: usize = 128;

/// What is wrong with a name written in an experiment file (experiment, model, dataset, stage,
/// plot), if anything: `[A-Za-z0-9_.-]`, not starting with `.`, at most 128 characters.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a name cannot be empty".into());
    }
    if name.starts_with('.') {
        return Some(format!("'{name}' starts with '.'; names start with a letter, digit, '_' or '-'"));
    }
    if name.len() > MAX_NAME {
        return Some(format!("the name has {} characters; at most {MAX_NAME}", name.len()));
    }
    let bad = name.chars().find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))?;
    Some(format!("'{}' may not appear in a name: use letters, digits, '_', '-' and '.'", bad.escape_default()))
}

/// Names lantern builds from checked names: `dataset@model`, `stage@shard-1-of-4`, `stage[a,b]`.
pub fn node_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 4 * MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '[' | ']' | ','))
}

/// The output folder, resolved once; every path under it comes from here.
#[derive(Clone, Debug)]
pub struct OutDir {
    root: PathBuf,
}

impl OutDir {
    /// Create the output folder if needed and resolve it (symbolic links and `..` removed).
    pub fn create(out: &Path) -> Result<OutDir> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create the output folder {}", out.display()))?;
        let root = out.canonicalize().with_context(|| format!("cannot resolve {}", out.display()))?;
        Ok(OutDir { root })
    }

    /// The resolved output folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `OUT/.lantern/store`, holding one folder per fingerprint.
    pub fn store(&self) -> Result<PathBuf> {
        self.under(&[INTERNAL, "store"])
    }

    /// `OUT/.lantern/store/<first two digits>/<fingerprint>`.
    pub fn entry(&self, fp: &Fingerprint) -> Result<PathBuf> {
        self.under(&[INTERNAL, "store", fp.prefix(), fp.as_str()])
    }

    /// `OUT/.lantern/tmp`, where entries are written before they move into the store.
    pub fn tmp(&self) -> Result<PathBuf> {
        self.under(&[INTERNAL, "tmp"])
    }

    /// A fresh temporary folder name for an entry of this process: `<fp>-<pid>-<nonce>`.
    pub fn new_tmp(&self, fp: &Fingerprint) -> Result<PathBuf> {
        let nonce =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        self.under(&[INTERNAL, "tmp", &format!("{fp}-{}-{nonce}", std::process::id())])
    }

    /// The fingerprint a temporary folder name was made for (see `new_tmp`), if it is one.
    pub fn tmp_fingerprint(name: &str) -> Option<Fingerprint> {
        let (fp, rest) = name.split_at_checked(FINGERPRINT_LEN)?;
        let mut rest = rest.strip_prefix('-')?.split('-');
        let numbers = rest.next()?.parse::<u32>().is_ok() && rest.next()?.parse::<u128>().is_ok();
        (numbers && rest.next().is_none()).then_some(())?;
        Fingerprint::parse(fp)
    }

    /// A temporary entry folder by name (as listed in `tmp()`), when the name is one lantern makes.
    pub fn tmp_entry(&self, name: &str) -> Result<PathBuf> {
        if Self::tmp_fingerprint(name).is_none() {
            bail!("'{name}' is not a temporary entry folder");
        }
        self.under(&[INTERNAL, "tmp", name])
    }

    /// The lock file of an entry (held while it is computed).
    pub fn entry_lock(&self, fp: &Fingerprint) -> Result<PathBuf> {
        self.under(&[INTERNAL, "locks", &format!("{fp}.lock")])
    }

    /// The folder of entry lock files.
    pub fn locks(&self) -> Result<PathBuf> {
        self.under(&[INTERNAL, "locks"])
    }

    /// The lock every run holds shared and `gc` holds exclusively.
    pub fn out_lock(&self) -> Result<PathBuf> {
        self.under(&[INTERNAL, "lock"])
    }

    /// What lantern measured of this machine (its matmul rate, for cost estimates).
    pub fn machine(&self) -> Result<PathBuf> {
        self.under(&[INTERNAL, "machine.json"])
    }

    /// The memo of file digests.
    pub fn digests(&self) -> Result<PathBuf> {
        self.under(&[INTERNAL, "digests.json"])
    }

    /// `OUT/<experiment>`: the experiment's folder of views and its report. A symbolic link is
    /// followed only when it leads to a folder inside the output folder.
    pub fn experiment(&self, name: &str) -> Result<PathBuf> {
        if let Some(p) = name_problem(name) {
            bail!("experiment name '{name}': {p}");
        }
        let path = self.under(&[name])?;
        self.resolve_link(&path)
    }

    /// `OUT/.lantern/slurm/<experiment>`: the jobs `lantern run --executor slurm` submitted for an
    /// experiment (`jobs.json`) and their logs.
    pub fn slurm(&self, experiment: &str) -> Result<PathBuf> {
        if let Some(p) = name_problem(experiment) {
            bail!("experiment name '{experiment}': {p}");
        }
        self.under(&[INTERNAL, "slurm", experiment])
    }

    /// `OUT/<experiment>/<node>`: the view (a link to the node's store entry).
    pub fn view(&self, experiment: &str, node: &str) -> Result<PathBuf> {
        if !node_name_ok(node) {
            bail!("'{node}' cannot name a file in the output folder");
        }
        Ok(self.experiment(experiment)?.join(node))
    }

    /// `OUT/<experiment>/report.html`.
    pub fn report(&self, experiment: &str) -> Result<PathBuf> {
        Ok(self.experiment(experiment)?.join("report.html"))
    }

    /// The entry a view link leads to, when it leads to one (its fingerprint), without trusting
    /// anything but the link's target inside the store.
    pub fn linked_entry(&self, link: &Path) -> Option<Fingerprint> {
        let target = link.canonicalize().ok()?;
        let store = self.store().ok()?;
        let rel = target.strip_prefix(&store).ok()?;
        let parts: Vec<&str> = rel.iter().map(|c| c.to_str()).collect::<Option<_>>()?;
        let [prefix, name] = parts[..] else { return None };
        Fingerprint::parse(name).filter(|fp| fp.prefix() == prefix)
    }

    /// `root/a/b/…` after checking each part is one plain name and that no existing folder on the
    /// way is a symbolic link leading out of the output folder (links are resolved, so that
    /// relative links made between two returned paths are right). The last part is not followed:
    /// it is what gets written, replaced or deleted.
    fn under(&self, parts: &[&str]) -> Result<PathBuf> {
        let mut cur = self.root.clone();
        for (i, part) in parts.iter().enumerate() {
            let mut comps = Path::new(part).components();
            if !matches!((comps.next(), comps.next()), (Some(Component::Normal(c)), None) if c == *part) {
                bail!("'{part}' is not a plain file name");
            }
            cur.push(part);
            if i + 1 < parts.len() {
                cur = self.resolve_link(&cur)?;
            }
        }
        Ok(cur)
    }

    /// A path under the root with a symbolic link at its end resolved, when that link leads to a
    /// folder inside the output folder (outside lantern's own); an error otherwise.
    fn resolve_link(&self, path: &Path) -> Result<PathBuf> {
        match std::fs::symlink_metadata(path) {
            Ok(md) if md.file_type().is_symlink() => {}
            _ => return Ok(path.to_path_buf()),
        }
        let target = path.canonicalize().with_context(|| {
            format!("{} is a symbolic link to a missing folder (remove it, or create the folder)", path.display())
        })?;
        let internal = self.root.join(INTERNAL);
        let inside = target.starts_with(&self.root) && target != self.root;
        let into_internal = target.starts_with(&internal) && !path.starts_with(&internal);
        if !inside || into_internal || !target.is_dir() {
            bail!(
                "{} is a symbolic link to {}: lantern follows links only to folders inside its output folder {} \
                 (outside .lantern); remove the link, or point it at such a folder",
                path.display(),
                target.display(),
                self.root.display()
            );
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_exactly_64_lowercase_hex_digits() {
        let good = "0123456789abcdef".repeat(4);
        assert!(Fingerprint::parse(&good).is_some());
        for bad in
            ["", "x", "../../victim", &good[..63], &format!("{good}0"), &good.to_uppercase(), &good.replace('0', "/")]
        {
            assert!(Fingerprint::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn names_are_restricted_and_generated_names_accepted() {
        for ok in ["quickstart", "study-v1.2", "a_b", "0"] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for bad in ["", ".", "..", "../escape", "/abs", ".hidden", "a/b", "a\\b", "a b", "é", "a\0b"] {
            assert!(name_problem(bad).is_some(), "{bad}");
        }
        for ok in ["en@tiny", "train@3", "corr@shard-1-of-4", "acts[lm_a,en]"] {
            assert!(node_name_ok(ok), "{ok}");
        }
        for bad in ["", "..", "a/b", ".x.link-1"] {
            assert!(!node_name_ok(bad), "{bad}");
        }
    }

    #[test]
    fn temporary_folders_name_their_fingerprint() {
        let fp = "ab".repeat(32);
        assert_eq!(OutDir::tmp_fingerprint(&format!("{fp}-123-456")).map(|f| f.0), Some(fp.clone()));
        assert_eq!(OutDir::tmp_fingerprint(&format!("{fp}-123")), None);
        assert_eq!(OutDir::tmp_fingerprint(&format!("{fp}-x-1")), None);
        assert_eq!(OutDir::tmp_fingerprint("short-1-2"), None);
    }

    #[test]
    fn paths_stay_inside_the_output_folder() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutDir::create(&dir.path().join("out")).unwrap();
        assert!(out.experiment("..").is_err());
        assert!(out.experiment("").is_err());
        assert!(out.view("e", "../x").is_err());
        assert!(out.under(&["a/b"]).is_err());
        assert!(out.under(&[".."]).is_err());
        // A link out of the output folder is refused; one to a folder inside it is followed.
        std::os::unix::fs::symlink(dir.path(), out.root().join("away")).unwrap();
        assert!(out.experiment("away").is_err());
        std::fs::create_dir(out.root().join("real")).unwrap();
        std::os::unix::fs::symlink(out.root().join("real"), out.root().join("alias")).unwrap();
        assert_eq!(out.experiment("alias").unwrap(), out.root().join("real"));
        // Nor may lantern's own folders lead out.
        std::fs::create_dir(out.root().join(".lantern")).unwrap();
        std::os::unix::fs::symlink(dir.path(), out.root().join(".lantern/store")).unwrap();
        assert!(out.entry(&Fingerprint::parse(&"a".repeat(64)).unwrap()).is_err());
    }
}
