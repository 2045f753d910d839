//! Owns: reading a StageX pallet Containerfile
//! (`packages/pallet/<name>/Containerfile`) as a declarative `Pallet`,
//! the same value a `pallets/<name>.toml` gives. Pure: text in, pallet out.
//! Must not compose, resolve or run anything.
//!
//! Understood, instruction by instruction (read by `package::graph::
//! instructions`, the crate's one Containerfile reader: comments and blank
//! lines skipped, `\` continuations joined, heredoc bodies skipped):
//! - `FROM stagex/X [AS n]` -> base (`pallet-X` a pallet), `FROM scratch`;
//! - `COPY --from=stagex/Y . /` -> package Y;
//! - `COPY --from=stagex/Y /a /b` -> the single file /a of Y at /b;
//! - `ENV K=V ...` (and `ENV K V`), `ENTRYPOINT [..]`, `CMD [..]`,
//!   `WORKDIR`, `USER`;
//! - `RUN` made only of `mkdir -p DIR...`, `ln TARGET PATH`,
//!   `ln -s TARGET PATH` and `for x in a b; do ...; done` over those,
//!   joined by `&&` or `;`, where `$(uname -m)` becomes `{arch}`.
//!
//! Anything else is an error naming the file and line: the composition
//! runs no command, so it must know every file a line would create.
use anyhow::{anyhow, bail, Result};

use super::definition::{Base, FileCopy, Link, LinkKind, Pallet, ARCH_PLACEHOLDER};
use super::expr::ItemRef;
use crate::package::graph::{instructions, stagex_package_id, Instruction};

/// Parses the Containerfile of pallet `name` (`rust` for
/// `packages/pallet/rust/Containerfile`); `file` names it in errors.
pub fn parse(name: &str, file: &str, text: &str) -> Result<Pallet> {
    let mut pallet = Pallet {
        name: name.to_string(),
        description: None,
        base: Base::Scratch,
        packages: Vec::new(),
        copies: Vec::new(),
        env: Vec::new(),
        entrypoint: None,
        cmd: None,
        user: None,
        workdir: None,
        links: Vec::new(),
    };
    let mut seen_from = false;
    for Instruction {
        line,
        keyword,
        rest,
    } in instructions(text)
    {
        let at = || format!("{file}:{line}");
        let rest = rest.as_str();
        if !seen_from && keyword != "FROM" {
            bail!(
                "{}: {keyword} before FROM; a pallet Containerfile starts with FROM",
                at()
            );
        }
        let result = match keyword.as_str() {
            "FROM" if seen_from => Err(anyhow!(
                "a second FROM: a pallet is one stage (FROM, then COPY/ENV/RUN lines)"
            )),
            "FROM" => {
                seen_from = true;
                from(rest).map(|base| pallet.base = base)
            }
            "COPY" => copy(rest, &mut pallet),
            "ENV" => env(rest).map(|pairs| pallet.env.extend(pairs)),
            "ENTRYPOINT" => exec_form(rest).map(|v| {
                pallet.entrypoint = Some(v);
                pallet.cmd = None;
            }),
            "CMD" => exec_form(rest).map(|v| pallet.cmd = Some(v)),
            "WORKDIR" => {
                pallet.workdir = Some(rest.to_string());
                Ok(())
            }
            "USER" => {
                pallet.user = Some(rest.to_string());
                Ok(())
            }
            "RUN" => run(rest).map(|links| pallet.links.extend(links)),
            other => Err(anyhow!(
                "{other} is not supported in a pallet (FROM, COPY --from=stagex/..., ENV, ENTRYPOINT, CMD, WORKDIR, USER, and RUN with only mkdir -p / ln / ln -s are)"
            )),
        };
        result.map_err(|e| anyhow!("{}: {keyword} {rest}: {e:#}", at()))?;
    }
    if !seen_from {
        bail!("{file}: no FROM line");
    }
    Ok(pallet)
}

fn stagex_item(image: &str) -> Result<ItemRef> {
    let id = stagex_package_id(image)
        .ok_or_else(|| anyhow!("{image:?} is not a stagex/<stage>-<name> image"))?;
    let rest = &image["stagex/".len()..];
    // Keep a pin (`:tag`, `@sha256:..`) written on the reference.
    let item: ItemRef = rest.parse()?;
    if item.name != id {
        bail!("{image:?}: cannot read the image name");
    }
    Ok(item)
}

fn from(rest: &str) -> Result<Base> {
    let words: Vec<&str> = rest
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    match words.as_slice() {
        [image] | [image, _, _] if words.len() == 1 || words[1].eq_ignore_ascii_case("as") => {
            if image.eq_ignore_ascii_case("scratch") {
                return Ok(Base::Scratch);
            }
            let item = stagex_item(image)?;
            Ok(match item.name.strip_prefix("pallet-") {
                Some(short) => {
                    if item.tag.is_some() || item.digest.is_some() {
                        bail!("a pallet base takes no tag or digest");
                    }
                    Base::Pallet(short.to_string())
                }
                None => Base::Image(item),
            })
        }
        _ => bail!("expected FROM stagex/<name> [AS <stage>] or FROM scratch"),
    }
}

fn copy(rest: &str, pallet: &mut Pallet) -> Result<()> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let Some(from) = words.first().and_then(|w| w.strip_prefix("--from=")) else {
        bail!("only COPY --from=stagex/<name> is supported (a pallet adds no local files)");
    };
    let item = stagex_item(from)?;
    match &words[1..] {
        [".", "/"] => pallet.packages.push(item),
        [source, dest] if source.starts_with('/') => {
            if item.name.starts_with("pallet-") {
                bail!("a single-file copy must come from a package image, not a pallet");
            }
            let copy = FileCopy::parse(&format!("{}:{source} -> {dest}", item_text(&item)))?;
            pallet.copies.push(copy);
        }
        _ => {
            bail!("expected COPY --from=stagex/<name> . / or COPY --from=stagex/<name> /file /dest")
        }
    }
    Ok(())
}

fn item_text(item: &ItemRef) -> String {
    let mut text = item.name.clone();
    if let Some(tag) = &item.tag {
        text.push(':');
        text.push_str(tag);
    }
    if let Some(digest) = &item.digest {
        text.push('@');
        text.push_str(&digest.to_string());
    }
    text
}

/// `ENV K=V K2="v 2"` or the legacy `ENV K value with spaces`.
fn env(rest: &str) -> Result<Vec<(String, String)>> {
    let words = shell_words(rest)?;
    let Some(first) = words.first() else {
        bail!("ENV needs NAME=value");
    };
    if !first.contains('=') {
        let (name, value) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| anyhow!("expected ENV NAME=value"))?;
        return Ok(vec![(name.to_string(), value.trim().to_string())]);
    }
    words
        .iter()
        .map(|w| {
            let (name, value) = w
                .split_once('=')
                .ok_or_else(|| anyhow!("{w:?}: expected NAME=value"))?;
            if name.is_empty() {
                bail!("{w:?}: expected NAME=value");
            }
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

/// Splits on unquoted whitespace; double or single quotes group and are
/// removed (`$` is kept for the env expansion at composition).
fn shell_words(text: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => word.extend(chars.next()),
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                word.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unterminated quote");
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `["/usr/bin/cargo"]` (the exec form; the shell form would need a shell).
fn exec_form(rest: &str) -> Result<Vec<String>> {
    serde_json::from_str(rest).map_err(|_| {
        anyhow!(
            "expected the JSON exec form, e.g. [\"/usr/bin/cargo\"] (the shell form needs a shell)"
        )
    })
}

/// The links a `RUN` line makes; an error for anything else.
fn run(rest: &str) -> Result<Vec<Link>> {
    if rest.starts_with('[') || rest.starts_with("--") || rest.contains("<<") {
        bail!("only a plain RUN line of mkdir -p / ln / ln -s commands is supported");
    }
    let text = rest.replace("$(uname -m)", ARCH_PLACEHOLDER);
    if text.contains("$(") || text.contains('`') || text.contains('|') || text.contains('>') {
        bail!("command substitution, pipes and redirections are not supported");
    }
    let mut links = Vec::new();
    let commands = split_commands(&text);
    let mut i = 0;
    while i < commands.len() {
        let words = shell_words(&commands[i])?;
        if words.first().map(String::as_str) == Some("for") {
            // for VAR in a b c; do CMD; ...; done
            let var = match words.as_slice() {
                [_, var, kw, ..] if kw == "in" => var.clone(),
                _ => bail!("expected `for NAME in WORDS; do ...; done`"),
            };
            let values = words[3..].to_vec();
            let body_start = i + 1;
            let end = commands[body_start..]
                .iter()
                .position(|c| c.trim() == "done")
                .map(|p| body_start + p)
                .ok_or_else(|| anyhow!("`for` without `done`"))?;
            let mut body: Vec<String> = commands[body_start..end].to_vec();
            match body.first_mut().map(|b| b.trim_start().strip_prefix("do ")) {
                Some(Some(first)) => body[0] = first.to_string(),
                _ => bail!("expected `do` after `for {var} in ...;`"),
            }
            for value in &values {
                for command in &body {
                    let command = substitute(command, &var, value);
                    links.extend(command_links(&shell_words(&command)?)?);
                }
            }
            i = end + 1;
        } else {
            links.extend(command_links(&words)?);
            i += 1;
        }
    }
    Ok(links)
}

/// Splits a command line on `;` and `&&` (quotes are not expected here).
fn split_commands(text: &str) -> Vec<String> {
    text.split(';')
        .flat_map(|part| part.split("&&"))
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

fn substitute(command: &str, var: &str, value: &str) -> String {
    command
        .replace(&format!("${{{var}}}"), value)
        .replace(&format!("${var}"), value)
}

/// `mkdir -p D...`, `ln T P`, `ln -s T P` as links.
fn command_links(words: &[String]) -> Result<Vec<Link>> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    if words.iter().any(|w| w.contains('$')) {
        bail!("only $(uname -m) and the loop variable may be expanded");
    }
    let link = |kind, path: &str, target: Option<&str>| Link {
        kind,
        path: path.to_string(),
        target: target.map(str::to_string),
    };
    match words.as_slice() {
        ["mkdir", "-p", dirs @ ..] if !dirs.is_empty() => {
            Ok(dirs.iter().map(|d| link(LinkKind::Dir, d, None)).collect())
        }
        ["ln", "-s", target, path] | ["ln", "-sf", target, path] => {
            Ok(vec![link(LinkKind::Symlink, path, Some(target))])
        }
        ["ln", target, path] if !target.starts_with('-') => {
            Ok(vec![link(LinkKind::Hardlink, path, Some(target))])
        }
        _ => bail!(
            "`{}` is not mkdir -p DIR, ln TARGET PATH or ln -s TARGET PATH",
            words.join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_and_uname_become_arch_links() {
        let p = parse(
            "rust",
            "rust/Containerfile",
            "FROM stagex/pallet-clang\nCOPY --from=stagex/core-rust . /\n# c\n\
             RUN mkdir -p /a/$(uname -m)/b\n\
             RUN for bin in x y; do ln /bin/$bin /a/$(uname -m)/b/$bin; done\n\
             RUN ln -s ../lib /usr/lib64 && ln /bin/a /bin/b\n\
             ENTRYPOINT [\"/usr/bin/cargo\"]\n",
        )
        .unwrap();
        assert_eq!(p.base, Base::Pallet("clang".into()));
        assert_eq!(p.packages, [ItemRef::named("core-rust")]);
        let got: Vec<(LinkKind, &str, Option<&str>)> = p
            .links
            .iter()
            .map(|l| (l.kind, l.path.as_str(), l.target.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (LinkKind::Dir, "/a/{arch}/b", None),
                (LinkKind::Hardlink, "/a/{arch}/b/x", Some("/bin/x")),
                (LinkKind::Hardlink, "/a/{arch}/b/y", Some("/bin/y")),
                (LinkKind::Symlink, "/usr/lib64", Some("../lib")),
                (LinkKind::Hardlink, "/bin/b", Some("/bin/a")),
            ]
        );
        assert_eq!(p.entrypoint, Some(vec!["/usr/bin/cargo".to_string()]));
    }

    #[test]
    fn env_copy_and_config() {
        let p = parse(
            "go",
            "go/Containerfile",
            "FROM stagex/core-profile\nCOPY --from=stagex/core-bash /bin/bash /bin/sh\n\
             ENV LDFLAGS=\"-w -s -buildid=\"\nENV A=1 B=${A}\nENV OLD some value\n\
             WORKDIR /home/user\nUSER 1000:1000\n",
        )
        .unwrap();
        assert_eq!(p.base, Base::Image(ItemRef::named("core-profile")));
        assert_eq!(p.copies[0].source, "/bin/bash");
        assert_eq!(p.copies[0].path, "/bin/sh");
        assert_eq!(
            p.env,
            [
                ("LDFLAGS".into(), "-w -s -buildid=".into()),
                ("A".into(), "1".into()),
                ("B".into(), "${A}".into()),
                ("OLD".into(), "some value".into())
            ]
        );
        assert_eq!(p.workdir.as_deref(), Some("/home/user"));
        assert_eq!(p.user.as_deref(), Some("1000:1000"));
    }

    #[test]
    fn heredoc_bodies_are_not_read_as_instructions() {
        let text = "FROM stagex/core-busybox\n\
                    COPY --from=stagex/core-make . /\n\
                    RUN <<EOF\n\
                    FROM stagex/core-evil\n\
                    COPY --from=stagex/core-evil . /\n\
                    EOF\n\
                    COPY <<-END /etc/motd\n\
                    \tENV HIDDEN=1\n\
                    \tEND\n\
                    ENV A=1\n";
        let read: Vec<(usize, String, String)> = instructions(text)
            .into_iter()
            .map(|i| (i.line, i.keyword, i.rest))
            .collect();
        let want = [
            (1, "FROM", "stagex/core-busybox"),
            (2, "COPY", "--from=stagex/core-make . /"),
            (3, "RUN", "<<EOF"),
            (7, "COPY", "<<-END /etc/motd"),
            (10, "ENV", "A=1"),
        ]
        .map(|(l, k, r)| (l, k.to_string(), r.to_string()));
        assert_eq!(read, want);
        // The composer refuses the heredoc RUN itself, at its own line; the
        // body's FROM is never seen as a second FROM.
        let err = format!("{:#}", parse("x", "x/Containerfile", text).unwrap_err());
        assert!(err.contains("x/Containerfile:3: RUN <<EOF"), "{err}");
        assert!(
            !err.contains("second FROM") && !err.contains("core-evil"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_lines_are_refused_with_file_and_line() {
        let cases = [
            ("FROM scratch\n\nRUN apk add curl\n", ":3:", "not mkdir -p"),
            (
                "FROM scratch\nRUN rm -rf /tmp && ln /a /b\n",
                ":2:",
                "rm -rf",
            ),
            (
                "FROM scratch\nCOPY hello /hello\n",
                ":2:",
                "COPY --from=stagex",
            ),
            ("FROM scratch\nADD x /x\n", ":2:", "ADD is not supported"),
            ("FROM scratch\nRUN ln /a $(cat /f)\n", ":2:", "substitution"),
            ("FROM scratch\nFROM scratch\n", ":2:", "second FROM"),
            ("FROM scratch\nENTRYPOINT cargo build\n", ":2:", "exec form"),
            ("ENV A=1\nFROM scratch\n", ":1:", "before FROM"),
        ];
        for (text, line, why) in cases {
            let err = format!(
                "{:#}",
                parse("x", "packages/pallet/x/Containerfile", text).unwrap_err()
            );
            assert!(
                err.contains(&format!("packages/pallet/x/Containerfile{line}")),
                "{text:?}: {err}"
            );
            assert!(err.contains(why), "{text:?}: expected {why:?} in {err}");
        }
    }
}
