//! Pallet expressions: `a+b+c`, each item a pallet name (`rust`,
//! `pallet-rust`) or a package image name (`core-jq`), optionally pinned
//! with `:tag` and/or `@sha256:<hex>`. Pure parsing; what an item names is
//! decided later against the pallet catalog (`definition.rs`).
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::oci::digest::Digest;

/// One image reference inside a pallet: a name with an optional tag and
/// digest. A digest, when present, wins over the tag at resolution.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemRef {
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ItemRef {
    pub fn named(name: &str) -> ItemRef {
        ItemRef {
            name: name.to_string(),
            tag: None,
            digest: None,
        }
    }

    /// The tag to ask for when no digest is given (`latest` by default).
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

impl fmt::Display for ItemRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// True for a valid image name component: `[a-z0-9]` first, then
/// `[a-z0-9._-]`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// True for a valid OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl FromStr for ItemRef {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<ItemRef> {
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(Digest::parse(digest).with_context(|| {
                    format!("{text:?}: bad digest after '@' (expected sha256:<64 hex>)")
                })?),
            ),
            None => (text, None),
        };
        let (name, tag) = match rest.split_once(':') {
            Some((name, tag)) => (name, Some(tag)),
            None => (rest, None),
        };
        if !valid_name(name) {
            bail!(
                "{text:?}: bad name {name:?} (lowercase letters, digits, '.', '_', '-'; e.g. core-jq or rust)"
            );
        }
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                bail!("{text:?}: bad tag {tag:?} (letters, digits, '.', '_', '-', at most 128)");
            }
        }
        Ok(ItemRef {
            name: name.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

/// A parsed `a+b+c` expression, items in the order written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    pub items: Vec<ItemRef>,
}

impl FromStr for Expr {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Expr> {
        let text = text.trim();
        if text.is_empty() {
            bail!("empty pallet expression: give e.g. rust+clang or core-busybox+core-jq");
        }
        let items = text
            .split('+')
            .enumerate()
            .map(|(i, item)| {
                if item.trim().is_empty() {
                    bail!(
                        "pallet expression {text:?}: item {} is empty (stray '+')",
                        i + 1
                    );
                }
                item.trim()
                    .parse::<ItemRef>()
                    .with_context(|| format!("pallet expression {text:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Expr { items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_items_with_tags_and_digests() {
        let hex = "a".repeat(64);
        let expr: Expr = format!("rust+core-jq:1.7+core-busybox@sha256:{hex}+x:t@sha256:{hex}")
            .parse()
            .unwrap();
        assert_eq!(expr.items.len(), 4);
        assert_eq!(expr.items[0], ItemRef::named("rust"));
        assert_eq!(expr.items[1].tag.as_deref(), Some("1.7"));
        assert_eq!(expr.items[2].digest.as_ref().unwrap().hex(), hex);
        assert_eq!(expr.items[3].to_string(), format!("x:t@sha256:{hex}"));
        assert_eq!(expr.items[0].tag_or_latest(), "latest");
    }

    #[test]
    fn rejects_bad_expressions_with_clear_errors() {
        for (text, needle) in [
            ("", "empty"),
            ("rust++clang", "item 2 is empty"),
            ("Rust", "bad name"),
            ("rust:", "bad tag"),
            ("rust@sha256:zz", "bad digest"),
            ("rust+", "item 2 is empty"),
        ] {
            let error = format!("{:#}", text.parse::<Expr>().unwrap_err());
            assert!(error.contains(needle), "{text:?}: {error}");
        }
    }
}
