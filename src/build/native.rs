//! Native packages: turning a `[native]` declaration (directories, files,
//! symlinks, hard links, image config) into a `FileTree` and a run config.
//! Pure apart from naming files that live beside package.toml (their bytes
//! are read later, by the layer writer). Modes and owners come only from the
//! declaration, never from the disk, so umask and checkout owner do not
//! change the layer.
use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};

use crate::layer::tree::{FileSource, FileTree, TreeEntry};
use crate::oci::RunConfig;
use crate::package::load::normalize_image_path;
use crate::package::model::{NativeConfig, NativeSpec, Package};

/// The file tree a native package declares.
pub fn file_tree(package: &Package, native: &NativeSpec) -> Result<FileTree> {
    let file = package.toml_path.display();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |kind: &str, i: usize, path: &str| -> Result<String> {
        let normalized = normalize_image_path(path).with_context(|| {
            format!("{file}: native.{kind}[{i}].path = {path:?} is not a path inside the image")
        })?;
        let here = format!("native.{kind}[{i}]");
        if let Some(other) = seen.insert(normalized.clone(), here.clone()) {
            bail!("{file}: {here} and {other} both declare {normalized}; expected each path once");
        }
        Ok(normalized)
    };
    let mut tree = FileTree::new();
    // Directories first, shallowest first, so declared modes and owners
    // replace the 0755 root-owned parents that deeper inserts create.
    let mut dirs: Vec<(usize, &crate::package::model::DirSpec)> =
        native.dirs.iter().enumerate().collect();
    dirs.sort_by_key(|(_, d)| d.path.matches('/').count());
    for (i, d) in dirs {
        let path = claim("dir", i, &d.path)?;
        let mut entry = TreeEntry::dir(d.mode);
        entry.uid = d.uid;
        entry.gid = d.gid;
        insert(&mut tree, &path, entry, &format!("{file}: native.dir[{i}]"))?;
    }
    for (i, f) in native.files.iter().enumerate() {
        let path = claim("file", i, &f.path)?;
        let source = match (&f.content, &f.source) {
            (Some(text), None) => FileSource::Bytes(text.as_bytes().to_vec()),
            (None, Some(rel)) => FileSource::Path(package.dir.join(rel)),
            _ => bail!("{file}: native.file[{i}]: expected exactly one of `content` or `source`"),
        };
        let mut entry = TreeEntry::file(source, f.mode);
        entry.uid = f.uid;
        entry.gid = f.gid;
        insert(
            &mut tree,
            &path,
            entry,
            &format!("{file}: native.file[{i}]"),
        )?;
    }
    for (i, s) in native.symlinks.iter().enumerate() {
        let path = claim("symlink", i, &s.path)?;
        let mut entry = TreeEntry::symlink(s.target.clone());
        entry.uid = s.uid;
        entry.gid = s.gid;
        insert(
            &mut tree,
            &path,
            entry,
            &format!("{file}: native.symlink[{i}]"),
        )?;
    }
    for (i, h) in native.hardlinks.iter().enumerate() {
        let path = claim("hardlink", i, &h.path)?;
        let target = normalize_image_path(&h.target).unwrap_or_default();
        let mode = match tree.get(&target) {
            Some(t) => t.mode,
            None => bail!("{file}: native.hardlink[{i}].target = {:?}: expected a file declared in native.file", h.target),
        };
        insert(
            &mut tree,
            &path,
            TreeEntry::hard_link(target, mode),
            &format!("{file}: native.hardlink[{i}]"),
        )?;
    }
    tree.validate()
        .with_context(|| format!("{file}: native tree"))?;
    Ok(tree)
}

fn insert(tree: &mut FileTree, path: &str, entry: TreeEntry, what: &str) -> Result<()> {
    tree.insert(path, entry).with_context(|| what.to_string())
}

/// Applies `[native.config]` over a (base) run config, like the matching
/// Containerfile instructions would.
pub fn apply_config(run: &mut RunConfig, config: &NativeConfig) {
    if let Some(user) = &config.user {
        run.user = Some(user.clone());
    }
    if let Some(entrypoint) = &config.entrypoint {
        run.entrypoint = Some(entrypoint.clone());
        // As in Dockerfiles: a new ENTRYPOINT resets an inherited CMD.
        if config.cmd.is_none() {
            run.cmd = None;
        }
    }
    if let Some(cmd) = &config.cmd {
        run.cmd = Some(cmd.clone());
    }
    for entry in &config.env {
        if let Some((name, value)) = entry.split_once('=') {
            let value = expand_env(value, run);
            run.set_env_var(name, &value);
        }
    }
    if let Some(dir) = &config.workdir {
        run.working_dir = Some(dir.clone());
    }
    if let Some(shell) = &config.shell {
        run.shell = Some(shell.clone());
    }
    if !config.labels.is_empty() {
        let labels = run.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(config.labels.clone());
    }
}

/// `${NAME}` / `$NAME` from the environment set so far (as ENV does).
fn expand_env(value: &str, run: &RunConfig) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(run.env_var(name).unwrap_or_default());
            rest = &after[consumed..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tree::EntryKind;
    use crate::package::load::parse_package;
    use std::path::Path;

    fn package(text: &str) -> Package {
        parse_package(
            Path::new("/nonexistent/core/t/package.toml"),
            text,
            "core",
            "t",
        )
        .unwrap()
    }

    fn native_spec(package: &Package) -> &NativeSpec {
        match &package.recipe {
            Some(crate::package::model::Recipe::Native(spec)) => spec,
            other => panic!("a [native] package, not {other:?}"),
        }
    }

    #[test]
    fn declared_entries_become_a_tree_with_declared_modes_and_owners() {
        let p = package(
            r#"
[package]
name = "t"
[native]
[[native.dir]]
path = "home/user"
uid = 1000
gid = 1000
[[native.dir]]
path = "/tmp"
mode = "1777"
[[native.dir]]
path = "home"
mode = 0o700
[[native.file]]
path = "etc/passwd"
content = "root:x:0:0::/root:/bin/sh\n"
[[native.hardlink]]
path = "etc/passwd-"
target = "etc/passwd"
[[native.symlink]]
path = "bin"
target = "usr/bin"
"#,
        );
        let tree = file_tree(&p, native_spec(&p)).unwrap();
        let paths: Vec<&str> = tree.entries().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin",
                "etc",
                "etc/passwd",
                "etc/passwd-",
                "home",
                "home/user",
                "tmp"
            ]
        );
        assert_eq!(tree.get("tmp").unwrap().mode, 0o1777);
        assert_eq!(tree.get("home").unwrap().mode, 0o700);
        let user = tree.get("home/user").unwrap();
        assert_eq!((user.mode, user.uid, user.gid), (0o755, 1000, 1000));
        assert_eq!(tree.get("etc/passwd").unwrap().mode, 0o644);
        assert!(
            matches!(&tree.get("bin").unwrap().kind, EntryKind::Symlink { target } if target == "usr/bin")
        );
    }

    #[test]
    fn duplicates_are_rejected_naming_both() {
        let p = package("[package]\nname = \"t\"\n[[native.dir]]\npath = \"a\"\n[[native.symlink]]\npath = \"/a/\"\ntarget = \"b\"\n");
        let err = format!("{:#}", file_tree(&p, native_spec(&p)).unwrap_err());
        assert!(
            err.contains("native.symlink[0]") && err.contains("native.dir[0]"),
            "{err}"
        );
    }

    #[test]
    fn config_applies_in_order_with_env_expansion() {
        let mut run = RunConfig::default();
        run.set_env_var("PATH", "/bin");
        run.cmd = Some(vec!["old".into()]);
        let config = NativeConfig {
            user: Some("1000:1000".into()),
            entrypoint: Some(vec!["/bin/sh".into()]),
            env: vec!["GOPATH=/go".into(), "PATH=${GOPATH}/bin:$PATH".into()],
            shell: Some(vec!["/bin/sh".into(), "-l".into(), "-c".into()]),
            ..NativeConfig::default()
        };
        apply_config(&mut run, &config);
        assert_eq!(run.env_var("PATH"), Some("/go/bin:/bin"));
        assert_eq!(run.cmd, None);
        assert_eq!(run.user.as_deref(), Some("1000:1000"));
        assert_eq!(run.shell.as_ref().unwrap().len(), 3);
    }
}
