//! Project defaults from an optional `stagex.toml` at the repository root.
//! Every value here can be overridden by a command-line flag; a missing file
//! means all defaults. Unknown keys are an error (a typo must not silently
//! fall back to a default). Keys appear here with the command that reads
//! them; `[publish]` holds what only `stagex publish` reads.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

pub const SETTINGS_FILE: &str = "stagex.toml";

/// The tags StageX pushes: `<version>`, `sx<release>`, `latest` (the
/// default of `[publish] tags`; here so settings depend on nothing above).
pub const DEFAULT_TAGS: &[&str] = &["{version}", "sx{release}", "latest"];

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where package images come from by default (`stagex pallet --source`).
    pub source: String,
    /// Distinct trusted signers a release needs.
    pub threshold: usize,
    /// Directory of trusted OpenPGP certificates.
    pub keys: PathBuf,
    /// Where signatures are read from by `verify` (URL or directory).
    pub lookaside: String,
    /// Local signature tree `sign` writes into.
    pub signatures: PathBuf,
    /// Namespace in signed identities and lookaside paths (`stagex`).
    pub namespace: String,
    /// StageX packages tree.
    pub packages: PathBuf,
    /// Pallet definitions.
    pub pallets: PathBuf,
    /// Build outputs.
    pub out: PathBuf,
    /// The committed release digests (`<stage>.txt` files): written by
    /// `digests`, read by `preseed`, `build --deps-from`, `sign` and
    /// `publish`. `[publish] digests` is an older spelling of the same
    /// setting; `load` resolves the two into this one.
    pub digests: PathBuf,
    /// Release destinations (`stagex publish`).
    pub publish: PublishSettings,
    /// A containers-style certs.d directory (`<dir>/<host[:port]>/*.crt`)
    /// for every network call; `$STAGEX_CERTS_DIR` overrides it.
    pub certs_dir: Option<PathBuf>,
    /// Where `stagex keys refresh|add` fetch certificates, in order:
    /// `https://HOST` (VKS, then HKP), `hkps://HOST`, `wkd`.
    pub keyservers: Vec<String>,
    /// Pallet catalog for `stagex pallet` outside a StageX checkout: a
    /// checkout or a catalog directory (`catalog/<release>/`); default the
    /// built-in one.
    pub catalog: Option<PathBuf>,
}

/// `[publish]`: where a release goes. Registries and mirrors have no
/// default: a release must name them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PublishSettings {
    /// Registry namespaces, `HOST[:PORT]/NAMESPACE`; image `<stage>-<name>`
    /// goes to `HOST/NAMESPACE/<stage>-<name>`.
    pub registries: Vec<String>,
    /// Signature mirrors: `https://...` (WebDAV PUT), `file://DIR` or a directory.
    pub mirrors: Vec<String>,
    /// Tag templates; `{version}` and `{release}` are replaced.
    pub tags: Vec<String>,
    /// Images pushed at once.
    pub jobs: usize,
    /// The older spelling of the top-level `digests`, as written (read it
    /// through `Settings::digests`; `load` takes it into that).
    pub digests: Option<PathBuf>,
    /// The journal of pushed tags (saves requests on re-runs).
    pub journal: PathBuf,
}

impl Default for PublishSettings {
    fn default() -> Self {
        PublishSettings {
            registries: Vec::new(),
            mirrors: Vec::new(),
            tags: DEFAULT_TAGS.iter().map(|t| t.to_string()).collect(),
            jobs: 8,
            digests: None,
            journal: PathBuf::from(".stagex/publish-journal.json"),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            source: "docker.io/stagex".to_string(),
            threshold: 2,
            keys: PathBuf::from("keys"),
            lookaside: "signatures".to_string(),
            signatures: PathBuf::from("signatures"),
            namespace: "stagex".to_string(),
            packages: PathBuf::from("packages"),
            pallets: PathBuf::from("pallets"),
            out: PathBuf::from("out"),
            digests: PathBuf::from("digests"),
            publish: PublishSettings::default(),
            certs_dir: None,
            keyservers: Vec::new(),
            catalog: None,
        }
    }
}

impl Settings {
    /// Loads `<root>/stagex.toml` if present; relative paths in it are
    /// resolved against `root`.
    pub fn load(root: &Path) -> Result<Settings> {
        let path = root.join(SETTINGS_FILE);
        let mut settings = if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut settings: Settings = toml::from_str(&text)
                .with_context(|| format!("{}: invalid settings", path.display()))?;
            let older = settings.publish.digests.take();
            settings.digests = one_digests_dir(settings.digests, older, &path)?;
            settings
        } else {
            Settings::default()
        };
        for dir in [
            &mut settings.keys,
            &mut settings.signatures,
            &mut settings.packages,
            &mut settings.pallets,
            &mut settings.out,
            &mut settings.digests,
            &mut settings.publish.journal,
        ] {
            if dir.is_relative() {
                *dir = root.join(&*dir);
            }
        }
        if let Some(dir) = settings.certs_dir.as_mut().filter(|d| d.is_relative()) {
            *dir = root.join(&*dir);
        }
        if let Some(dir) = settings.catalog.as_mut().filter(|d| d.is_relative()) {
            *dir = root.join(&*dir);
        }
        if !settings.lookaside.contains("://") && Path::new(&settings.lookaside).is_relative() {
            settings.lookaside = root.join(&settings.lookaside).display().to_string();
        }
        for mirror in &mut settings.publish.mirrors {
            if !mirror.contains("://") && Path::new(mirror.as_str()).is_relative() {
                *mirror = root.join(mirror.as_str()).display().to_string();
            }
        }
        Ok(settings)
    }
}

/// The one digests directory `stagex.toml` names (not yet rooted): the
/// top-level `digests` (the default when absent), or the older
/// `[publish] digests`; naming two different directories is an error (a
/// top-level value equal to the default counts as unset).
fn one_digests_dir(top: PathBuf, older: Option<PathBuf>, path: &Path) -> Result<PathBuf> {
    let default = Settings::default().digests;
    match older {
        None => Ok(top),
        Some(older) if top == default || top == older => Ok(older),
        Some(older) => bail!(
            "{}: `digests = {:?}` and `[publish] digests = {:?}` name two digests directories; keep only the top-level `digests`",
            path.display(),
            top.display().to_string(),
            older.display().to_string()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_defaults_rooted_at_root() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert_eq!(s.threshold, 2);
        assert_eq!(s.keys, dir.path().join("keys"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), "treshold = 3\n").unwrap();
        let err = format!("{:#}", Settings::load(dir.path()).unwrap_err());
        assert!(
            err.contains("stagex.toml") && err.contains("treshold"),
            "{err}"
        );
        std::fs::write(dir.path().join(SETTINGS_FILE), "threshold = 3\n").unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap().threshold, 3);
    }

    #[test]
    fn publish_section_reads_destinations_and_roots_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            "[publish]\nregistries = [\"127.0.0.1:5000/stagex\"]\nmirrors = [\"mirror\", \"https://m.example/sigs\"]\njobs = 3\n",
        )
        .unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert_eq!(s.publish.registries, vec!["127.0.0.1:5000/stagex"]);
        assert_eq!(
            s.publish.mirrors,
            vec![
                dir.path().join("mirror").display().to_string(),
                "https://m.example/sigs".to_string()
            ]
        );
        assert_eq!(s.publish.jobs, 3);
        assert_eq!(s.publish.tags, vec!["{version}", "sx{release}", "latest"]);
        assert_eq!(s.digests, dir.path().join("digests"));
        assert_eq!(s.certs_dir, None);
        std::fs::write(dir.path().join(SETTINGS_FILE), "certs_dir = \"certs.d\"\n").unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert_eq!(s.certs_dir, Some(dir.path().join("certs.d")));
        std::fs::write(dir.path().join(SETTINGS_FILE), "[publish]\nregistry = []\n").unwrap();
        assert!(Settings::load(dir.path()).is_err());
    }

    #[test]
    fn digests_is_one_setting_under_either_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(SETTINGS_FILE);
        std::fs::write(&file, "digests = \"release\"\n").unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert_eq!(s.digests, dir.path().join("release"));
        std::fs::write(&file, "[publish]\ndigests = \"old\"\n").unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert_eq!(s.digests, dir.path().join("old"));
        assert_eq!(s.publish.digests, None, "taken into the one setting");
        std::fs::write(&file, "digests = \"a\"\n[publish]\ndigests = \"b\"\n").unwrap();
        let err = format!("{:#}", Settings::load(dir.path()).unwrap_err());
        assert!(
            err.contains("stagex.toml") && err.contains("two digests"),
            "{err}"
        );
    }
}
