//! Owns: reading a TOML file leniently. Keys the schema does not know are
//! collected (path, line, the nearest known field at that level) instead of
//! stopping the load: StageX's package.toml and pallet files gain and lose
//! fields between releases (`licenses` in place of `license`). Callers
//! report them as warnings, or as errors under `lint` / `build --strict`.
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// The field names a schema knows at a path (the path of the table that
/// holds the unknown key); empty when the level is not known.
pub type KnownFields = fn(&[Segment]) -> &'static [&'static str];

/// A key the schema does not know, in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownField {
    pub file: PathBuf,
    /// 1-based line of the key (0 when the parser gave no position).
    pub line: usize,
    /// Dotted path, `package.licenses` or `native.file[1].owner`.
    pub path: String,
    /// True for a whole table (`[maintainers]`), false for a value.
    pub is_table: bool,
    /// The known field at that level spelled most like it.
    pub suggestion: Option<&'static str>,
}

impl UnknownField {
    /// What is wrong, without the file and line: "unknown field
    /// `package.licenses` (did you mean `license`?)".
    pub fn message(&self) -> String {
        let what = if self.is_table { "table" } else { "field" };
        match self.suggestion {
            Some(known) => format!("unknown {what} `{}` (did you mean `{known}`?)", self.path),
            None => format!("unknown {what} `{}`", self.path),
        }
    }
}

impl fmt::Display for UnknownField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.file.display(),
            self.line,
            self.message()
        )
    }
}

/// Deserializes `text` as `T`, ignoring keys `T` does not know, and lists
/// those keys (in file order) with the line each is on.
pub fn from_str<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    known: KnownFields,
) -> Result<(T, Vec<UnknownField>), toml::de::Error> {
    let mut ignored: Vec<Vec<Segment>> = Vec::new();
    let deserializer = toml::de::Deserializer::parse(text)?;
    let value: T = serde_ignored::deserialize(deserializer, |path| {
        ignored.push(segments(&path));
    })?;
    if ignored.is_empty() {
        return Ok((value, Vec::new()));
    }
    // The text parsed once already, so this parse succeeds.
    let document = DeTable::parse(text)?;
    let mut fields: Vec<UnknownField> = ignored
        .into_iter()
        .map(|path| describe(file, text, document.get_ref(), &path, known))
        .collect();
    fields.sort_by_key(|f| f.line);
    Ok((value, fields))
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path;
    let mut out = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        Path::Seq { index, .. } => out.push(Segment::Index(*index)),
        Path::Map { key, .. } => out.push(Segment::Key(key.clone())),
        _ => {}
    }
    out
}

fn describe(
    file: &Path,
    text: &str,
    document: &DeTable<'_>,
    path: &[Segment],
    known: KnownFields,
) -> UnknownField {
    let found = walk(document, path);
    let name = match path.last() {
        Some(Segment::Key(k)) => k.as_str(),
        _ => "",
    };
    let parent = &path[..path.len().saturating_sub(1)];
    UnknownField {
        file: file.to_path_buf(),
        line: found
            .as_ref()
            .map_or(0, |(span, _)| line_of(text, span.start)),
        path: dotted(path),
        is_table: found.is_some_and(|(_, value)| value.get_ref().is_table()),
        suggestion: nearest(name, known(parent)),
    }
}

type Found<'a, 'i> = (Range<usize>, &'a Spanned<DeValue<'i>>);

/// The span of the key (or array element) at `path` and its value.
fn walk<'a, 'i>(document: &'a DeTable<'i>, path: &[Segment]) -> Option<Found<'a, 'i>> {
    let mut table = document;
    let mut array: Option<&[Spanned<DeValue<'i>>]> = None;
    let mut found = None;
    for segment in path {
        let (span, value) = match segment {
            Segment::Key(key) => table
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key.as_str())
                .map(|(k, v)| (k.span(), v))?,
            Segment::Index(i) => array?.get(*i).map(|v| (v.span(), v))?,
        };
        array = value.get_ref().as_array().map(|a| &**a);
        if let Some(t) = value.get_ref().as_table() {
            table = t;
        }
        found = Some((span, value));
    }
    found
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn dotted(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The known field closest to `name` by edit distance, when close enough
/// to be a likely misspelling (at most a third of the longer name, or a
/// plural / singular of it).
pub fn nearest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&name, k), *k))
        .filter(|(d, k)| *d > 0 && *d <= (name.len().max(k.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The serde field names of struct `T` (after renames).
pub fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    serde_aux::serde_introspection::serde_introspect::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Top {
        package: Inner,
        #[serde(default)]
        item: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        license: Option<String>,
    }

    fn known(path: &[Segment]) -> &'static [&'static str] {
        match path {
            [] => fields_of::<Top>(),
            [Segment::Key(k), ..] if k == "package" || k == "item" => fields_of::<Inner>(),
            _ => &[],
        }
    }

    #[test]
    fn unknown_keys_are_listed_with_line_and_suggestion() {
        let text = "[package]\nlicense = \"MIT\"\nlicenses = \"MIT\"\n\n[maintainers]\nx = 1\n\n[[item]]\n\n[[item]]\nlicence = 1\n";
        let (top, unknown): (Top, _) = from_str(Path::new("p.toml"), text, known).unwrap();
        assert_eq!(top.item.len(), 2);
        let lines: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "p.toml:3: unknown field `package.licenses` (did you mean `license`?)",
                "p.toml:5: unknown table `maintainers`",
                "p.toml:11: unknown field `item[1].licence` (did you mean `license`?)",
            ]
        );
    }

    #[test]
    fn far_names_get_no_suggestion() {
        assert_eq!(nearest("licenses", &["license", "name"]), Some("license"));
        assert_eq!(nearest("maintainer", &["license", "name"]), None);
        assert_eq!(nearest("nmae", &["name"]), Some("name"));
    }

    #[test]
    fn a_known_file_has_no_findings_and_errors_still_fail() {
        let (_, unknown): (Top, _) = from_str(Path::new("p.toml"), "[package]\n", known).unwrap();
        assert!(unknown.is_empty());
        assert!(from_str::<Top>(Path::new("p.toml"), "[package]\nlicense = 1\n", known).is_err());
    }
}
