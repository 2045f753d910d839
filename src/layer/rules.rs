//! Owns: the ONE rule set that decides whether a layer entry may be applied
//! onto a tree. The index (layer alone), extraction (the target directory
//! on disk), squashing (the merged tree so far) and pallet composition (the
//! packages below) all ask `check_entry` / `check_parents`, each through its
//! own `TreeView` of "what is at this path now", so a layer that one of them
//! refuses the others refuse too, for the same reason and in the same words.
//!
//! The rules (paths with `..`, NUL or non-UTF-8 bytes never get this far:
//! the tar walk in `entries` refuses them):
//! - no absolute entry path (`/etc/passwd`): a layer names paths relative
//!   to the root it is applied onto;
//! - nothing is written through a symlink: every proper parent of an entry
//!   (and, for an opaque marker, its directory) must be a directory or not
//!   exist yet. `evil -> /tmp` then `evil/x` is refused, whatever the link
//!   points to (a layer that replaces a symlink by a directory first emits
//!   the directory entry, which replaces the link);
//! - a hard link's target is a relative path (never `/etc/passwd`), is not
//!   reached through a symlink, and names a regular file already present
//!   (not missing, not a directory, symlink or device);
//! - device nodes and fifos are "special files": refused unless the caller
//!   allows them (`SpecialFiles::Allow`).
//!
//! Pure logic: no I/O; a view may do I/O behind the trait (extraction's
//! `lstat`).
use serde::{Deserialize, Serialize};

use super::entries::{EntryInfo, EntryType};

/// What a view knows about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Directory,
    /// A regular file (a hard link to one counts as one).
    File,
    Symlink {
        target: String,
    },
    /// Anything else (a device node, a fifo, a socket).
    Other,
}

/// "What is at this path now" in the tree an entry is applied onto.
pub trait TreeView {
    /// The node at a normalized relative path, `None` when nothing is there.
    fn node(&self, path: &str) -> Option<Node>;
}

/// Whether device nodes and fifos may be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialFiles {
    Refuse,
    Allow,
}

/// Why an entry may not be applied. The entry's path is the `Finding`'s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case", tag = "rule")]
pub enum Violation {
    #[error("absolute path {raw:?}: layer paths are relative to the root they are applied onto")]
    AbsolutePath { raw: String },
    #[error("its parent /{parent} is a symlink (-> {target}): writing through a symlink could escape the root")]
    ThroughSymlink { parent: String, target: String },
    #[error("its parent /{parent} is not a directory")]
    ParentNotDirectory { parent: String },
    #[error("hard link to the absolute path {target:?}: hard-link targets must be relative")]
    HardLinkAbsolute { target: String },
    #[error(
        "hard link to {target}: the target is reached through the symlink /{parent} (-> {link})"
    )]
    HardLinkThroughSymlink {
        target: String,
        parent: String,
        link: String,
    },
    #[error("hard link to {target}: the target does not exist (yet)")]
    HardLinkMissing { target: String },
    #[error("hard link to {target}: the target is a directory")]
    HardLinkToDirectory { target: String },
    #[error("hard link to {target}: the target is not a regular file")]
    HardLinkToNonFile { target: String },
    #[error("{kind} (a special file): refused unless special files are allowed (stagex pallet --allow-special-files)")]
    SpecialFile { kind: String },
}

impl Violation {
    /// True for the one violation a caller may choose to allow.
    pub fn is_special_file(&self) -> bool {
        matches!(self, Violation::SpecialFile { .. })
    }
}

/// A violation at an entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("layer entry /{path}: {violation}")]
pub struct Finding {
    /// Normalized path of the entry.
    pub path: String,
    pub violation: Violation,
}

/// Checks one entry against `view` (the tree as it is before the entry).
pub fn check_entry(
    info: &EntryInfo,
    view: &dyn TreeView,
    special: SpecialFiles,
) -> Result<(), Finding> {
    let found = |violation| Finding {
        path: info.path.clone(),
        violation,
    };
    if info.raw_path.starts_with('/') {
        return Err(found(Violation::AbsolutePath {
            raw: info.raw_path.clone(),
        }));
    }
    check_parents(&info.path, view).map_err(found)?;
    match info.kind {
        EntryType::OpaqueWhiteout if !info.path.is_empty() => {
            check_is_directory_or_absent(&info.path, view).map_err(found)
        }
        EntryType::HardLink => check_hard_link(info, view).map_err(found),
        EntryType::CharDevice | EntryType::BlockDevice | EntryType::Fifo
            if special == SpecialFiles::Refuse =>
        {
            Err(found(Violation::SpecialFile {
                kind: special_kind_name(info.kind).to_string(),
            }))
        }
        _ => Ok(()),
    }
}

/// Every proper parent of `path` must be a directory of `view`, or absent.
pub fn check_parents(path: &str, view: &dyn TreeView) -> Result<(), Violation> {
    for (i, _) in path.match_indices('/') {
        check_is_directory_or_absent(&path[..i], view)?;
    }
    Ok(())
}

fn check_is_directory_or_absent(path: &str, view: &dyn TreeView) -> Result<(), Violation> {
    match view.node(path) {
        None | Some(Node::Directory) => Ok(()),
        Some(Node::Symlink { target }) => Err(Violation::ThroughSymlink {
            parent: path.to_string(),
            target,
        }),
        Some(_) => Err(Violation::ParentNotDirectory {
            parent: path.to_string(),
        }),
    }
}

fn check_hard_link(info: &EntryInfo, view: &dyn TreeView) -> Result<(), Violation> {
    let raw = info.raw_link_target.as_deref().unwrap_or_default();
    if raw.starts_with('/') {
        return Err(Violation::HardLinkAbsolute {
            target: raw.to_string(),
        });
    }
    let target = info.link_target.as_deref().unwrap_or_default();
    check_parents(target, view).map_err(|v| match v {
        Violation::ThroughSymlink {
            parent,
            target: link,
        } => Violation::HardLinkThroughSymlink {
            target: target.to_string(),
            parent,
            link,
        },
        _ => Violation::HardLinkMissing {
            target: target.to_string(),
        },
    })?;
    let target = target.to_string();
    match view.node(&target) {
        Some(Node::File) => Ok(()),
        None => Err(Violation::HardLinkMissing { target }),
        Some(Node::Directory) => Err(Violation::HardLinkToDirectory { target }),
        Some(_) => Err(Violation::HardLinkToNonFile { target }),
    }
}

fn special_kind_name(kind: EntryType) -> &'static str {
    match kind {
        EntryType::CharDevice => "character device",
        EntryType::BlockDevice => "block device",
        _ => "fifo",
    }
}

/// The node an entry leaves at its path once applied (`None` for
/// whiteouts, which remove).
pub fn node_of(info: &EntryInfo) -> Option<Node> {
    match info.kind {
        EntryType::Directory => Some(Node::Directory),
        EntryType::File | EntryType::HardLink => Some(Node::File),
        EntryType::Symlink => Some(Node::Symlink {
            target: info.link_target.clone().unwrap_or_default(),
        }),
        EntryType::CharDevice | EntryType::BlockDevice | EntryType::Fifo => Some(Node::Other),
        EntryType::Whiteout | EntryType::OpaqueWhiteout => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Map(BTreeMap<String, Node>);

    impl TreeView for Map {
        fn node(&self, path: &str) -> Option<Node> {
            self.0.get(path).cloned()
        }
    }

    fn info(raw: &str, kind: EntryType, link: Option<&str>) -> EntryInfo {
        EntryInfo {
            raw_path: raw.into(),
            path: raw.trim_start_matches('/').into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            size: 0,
            link_target: link.map(|l| l.trim_start_matches('/').to_string()),
            raw_link_target: link.map(str::to_string),
            device: None,
        }
    }

    fn view() -> Map {
        Map(BTreeMap::from([
            ("d".to_string(), Node::Directory),
            ("d/f".to_string(), Node::File),
            (
                "evil".to_string(),
                Node::Symlink {
                    target: "/tmp".into(),
                },
            ),
            ("fifo".to_string(), Node::Other),
        ]))
    }

    fn violation(e: &EntryInfo, special: SpecialFiles) -> Option<Violation> {
        check_entry(e, &view(), special).err().map(|f| f.violation)
    }

    #[test]
    fn each_rule_names_its_reason() {
        use EntryType::*;
        let refuse = SpecialFiles::Refuse;
        assert_eq!(violation(&info("d/g", File, None), refuse), None);
        assert_eq!(violation(&info("d/h", HardLink, Some("d/f")), refuse), None);
        assert!(matches!(
            violation(&info("/etc/passwd", File, None), refuse),
            Some(Violation::AbsolutePath { .. })
        ));
        assert!(matches!(
            violation(&info("evil/x", File, None), refuse),
            Some(Violation::ThroughSymlink { parent, .. }) if parent == "evil"
        ));
        assert!(matches!(
            violation(&info("d/f/x", Directory, None), refuse),
            Some(Violation::ParentNotDirectory { .. })
        ));
        assert!(matches!(
            violation(&info("h", HardLink, Some("/etc/passwd")), refuse),
            Some(Violation::HardLinkAbsolute { .. })
        ));
        assert!(matches!(
            violation(&info("h", HardLink, Some("evil/passwd")), refuse),
            Some(Violation::HardLinkThroughSymlink { .. })
        ));
        assert!(matches!(
            violation(&info("h", HardLink, Some("nothing")), refuse),
            Some(Violation::HardLinkMissing { .. })
        ));
        assert!(matches!(
            violation(&info("h", HardLink, Some("d")), refuse),
            Some(Violation::HardLinkToDirectory { .. })
        ));
        assert!(matches!(
            violation(&info("h", HardLink, Some("fifo")), refuse),
            Some(Violation::HardLinkToNonFile { .. })
        ));
        assert!(matches!(
            violation(&info("evil", OpaqueWhiteout, None), refuse),
            Some(Violation::ThroughSymlink { .. })
        ));
        let fifo = info("p", Fifo, None);
        assert!(violation(&fifo, refuse).is_some_and(|v| v.is_special_file()));
        assert_eq!(violation(&fifo, SpecialFiles::Allow), None);
    }

    #[test]
    fn findings_round_trip_as_json_and_read_in_words() {
        let finding = check_entry(
            &info("evil/x", EntryType::File, None),
            &view(),
            SpecialFiles::Refuse,
        )
        .unwrap_err();
        let text = finding.to_string();
        assert!(
            text.contains("/evil/x") && text.contains("symlink (-> /tmp)"),
            "{text}"
        );
        let json = serde_json::to_string(&finding).unwrap();
        assert!(json.contains("\"rule\":\"through-symlink\""), "{json}");
        assert_eq!(serde_json::from_str::<Finding>(&json).unwrap(), finding);
    }
}
