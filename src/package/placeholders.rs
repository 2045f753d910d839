//! The `{placeholder}` language of `file` and `mirrors` templates in
//! package.toml: which names exist, what each derives from a version, and
//! expansion. Pure: no I/O, no knowledge of where templates come from.
use anyhow::{bail, Result};

/// Names allowed in a `file` template.
pub const FILE_PLACEHOLDERS: &[&str] = &[
    "version",
    "version_major",
    "version_major_minor",
    "version_dash",
    "version_under",
    "version_strip_suffix",
    "format",
];

/// Where a template is used: `{file}` is only allowed in mirrors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateKind {
    File,
    Mirror,
}

impl TemplateKind {
    fn allows(self, name: &str) -> bool {
        FILE_PLACEHOLDERS.contains(&name) || (self == TemplateKind::Mirror && name == "file")
    }
}

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Brace(char),
    Name(&'a str),
}

/// Splits a template into text and `{name}` pieces. `{{` and `}}` are
/// literal braces (as in Python's str.format, which StageX used).
fn parse(template: &str) -> Result<Vec<Piece<'_>>> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let next = rest.find(['{', '}']).unwrap_or(rest.len());
        if next > 0 {
            pieces.push(Piece::Text(&rest[..next]));
            rest = &rest[next..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("{{") {
            pieces.push(Piece::Brace('{'));
            rest = after;
        } else if let Some(after) = rest.strip_prefix("}}") {
            pieces.push(Piece::Brace('}'));
            rest = after;
        } else if rest.starts_with('}') {
            bail!("unmatched `}}` in {template:?} (write `}}}}` for a literal brace)");
        } else {
            let Some(end) = rest.find('}') else {
                bail!("unclosed `{{` in {template:?}");
            };
            pieces.push(Piece::Name(&rest[1..end]));
            rest = &rest[end + 1..];
        }
    }
    Ok(pieces)
}

/// The placeholder names a template uses, in order.
pub fn names(template: &str) -> Result<Vec<&str>> {
    Ok(parse(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Name(n) => Some(n),
            _ => None,
        })
        .collect())
}

/// Checks a template's syntax and that every placeholder is known for its
/// kind. The error says which name is wrong and which are allowed.
pub fn validate(template: &str, kind: TemplateKind) -> Result<()> {
    for name in names(template)? {
        if !kind.allows(name) {
            let mut allowed: Vec<&str> = FILE_PLACEHOLDERS.to_vec();
            if kind == TemplateKind::Mirror {
                allowed.push("file");
            }
            bail!(
                "unknown placeholder {{{name}}} in {template:?}; expected one of {}",
                allowed
                    .iter()
                    .map(|n| format!("{{{n}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

/// The values placeholders expand to, for one source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vars {
    pub version: Option<String>,
    pub format: Option<String>,
    pub file: Option<String>,
}

/// `X.Y.Z` -> `X`.
pub fn version_major(version: &str) -> String {
    version.split('.').next().unwrap_or_default().to_string()
}

/// `X.Y.Z` -> `X.Y` (a version without a dot stays as it is).
pub fn version_major_minor(version: &str) -> String {
    version.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
}

/// `X.Y.Z` -> `X-Y-Z`.
pub fn version_dash(version: &str) -> String {
    version.replace('.', "-")
}

/// `X.Y.Z` -> `X_Y_Z`.
pub fn version_under(version: &str) -> String {
    version.replace('.', "_")
}

/// `X.Y.Z-rc.1` -> `X.Y.Z`: everything before the first `-`, as StageX's
/// common.py (so `1.2+b` stays `1.2+b`).
pub fn version_strip_suffix(version: &str) -> String {
    version.split('-').next().unwrap_or_default().to_string()
}

impl Vars {
    fn value(&self, name: &str) -> Result<String> {
        let version = || {
            self.version.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{{{name}}} needs a version, but neither the source nor the package sets `version`"
                )
            })
        };
        Ok(match name {
            "version" => version()?.to_string(),
            "version_major" => version_major(version()?),
            "version_major_minor" => version_major_minor(version()?),
            "version_dash" => version_dash(version()?),
            "version_under" => version_under(version()?),
            "version_strip_suffix" => version_strip_suffix(version()?),
            "format" => self.format.clone().ok_or_else(|| {
                anyhow::anyhow!("{{format}} is used but the source sets no `format`")
            })?,
            "file" => self
                .file
                .clone()
                .ok_or_else(|| anyhow::anyhow!("{{file}} is not known here"))?,
            other => bail!("unknown placeholder {{{other}}}"),
        })
    }

    /// Expands every placeholder of `template` (validated for `kind`).
    pub fn expand(&self, template: &str, kind: TemplateKind) -> Result<String> {
        validate(template, kind)?;
        expand_with(template, |n| self.value(n))
    }
}

/// Expands `template` with `value` giving each placeholder's text (the
/// caller decides which names exist and what they mean).
pub fn expand_with(
    template: &str,
    mut value: impl FnMut(&str) -> Result<String>,
) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Brace(c) => out.push(c),
            Piece::Name(n) => out.push_str(&value(n)?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &str) -> Vars {
        Vars {
            version: Some(v.to_string()),
            format: Some("tar.xz".to_string()),
            file: Some("x-1.tar.xz".to_string()),
        }
    }

    #[test]
    fn version_transforms() {
        assert_eq!(version_major("1.37.0"), "1");
        assert_eq!(version_major_minor("1.37.0"), "1.37");
        assert_eq!(version_major_minor("7"), "7");
        assert_eq!(version_dash("1.37.0"), "1-37-0");
        assert_eq!(version_under("1.37.0"), "1_37_0");
        assert_eq!(version_strip_suffix("1.2.3-rc.1"), "1.2.3");
        assert_eq!(version_strip_suffix("1.2.3"), "1.2.3");
        assert_eq!(version_strip_suffix("1.2.3+b1-x"), "1.2.3+b1");
    }

    #[test]
    fn expands_every_placeholder() {
        let v = vars("3.2.1-rc.1");
        let t = "{version}|{version_major}|{version_major_minor}|{version_dash}|{version_under}|{version_strip_suffix}|{format}|{file}|{{x}}";
        assert_eq!(
            v.expand(t, TemplateKind::Mirror).unwrap(),
            "3.2.1-rc.1|3|3.2|3-2-1-rc-1|3_2_1-rc_1|3.2.1|tar.xz|x-1.tar.xz|{x}"
        );
    }

    #[test]
    fn rejects_unknown_and_misplaced_placeholders() {
        let err = validate("a-{versoin}.tar", TemplateKind::File).unwrap_err();
        assert!(err.to_string().contains("{versoin}"), "{err}");
        assert!(validate("{file}", TemplateKind::File).is_err());
        assert!(validate("{file}", TemplateKind::Mirror).is_ok());
        assert!(validate("a{version", TemplateKind::File).is_err());
        assert!(validate("a}b", TemplateKind::File).is_err());
    }

    #[test]
    fn missing_values_are_named() {
        let v = Vars::default();
        let err = v.expand("{version}", TemplateKind::File).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        let err = vars("1").expand("{format}", TemplateKind::File);
        assert!(err.is_ok());
    }
}
