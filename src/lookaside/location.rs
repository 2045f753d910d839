//! Owns: the ONE parser of a signature store location, shared by every
//! reader (`stagex verify`'s lookaside, `sigs sync`/`audit` sources) and
//! writer (mirrors of `sigs sync` and `publish`): `https://...`,
//! `http://...`, `file:///dir` or a plain directory path; for http(s) the
//! URL's userinfo is split off into `Credentials` (sent as headers, never
//! printed), and the other sources of credentials (`STAGEX_MIRROR_USER`/
//! `STAGEX_MIRROR_PASSWORD` for mirrors written to, `~/.netrc`) are looked
//! up here too (the netrc file parsed by the `netrc` crate), as is the one
//! message for a 401 to a READ (`ReaderUnauthorized`: where a reader takes
//! credentials from).
//!
//! Must not: open connections or touch the store (callers do), or decide
//! which transports a caller accepts beyond the scheme (the loopback-only
//! rule for plain-http writers is the mirror's).
use std::path::{Path, PathBuf};

use super::fetch::Credentials;

/// Environment variables holding the WebDAV user and password of a mirror.
pub const USER_ENV: &str = "STAGEX_MIRROR_USER";
pub const PASSWORD_ENV: &str = "STAGEX_MIRROR_PASSWORD";

/// A location that is not a signature store (the text is shown without
/// its password).
#[derive(Debug, thiserror::Error)]
#[error("signature store {location:?}: {reason}")]
pub struct LocationError {
    pub location: String,
    pub reason: String,
}

/// Where a signature store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `file:///dir` or a plain path.
    Directory(PathBuf),
    /// `http(s)://...`: `base` has no userinfo and no trailing slash.
    Http {
        base: String,
        /// The host (for `~/.netrc`).
        host: String,
        /// `host[:port]` as typed (for the loopback rule).
        host_port: String,
        https: bool,
        /// From the URL's userinfo, percent-decoded.
        credentials: Option<Credentials>,
    },
}

impl Location {
    /// Parses `text`; any other scheme is refused.
    pub fn parse(text: &str) -> Result<Location, LocationError> {
        let invalid = |reason: String| LocationError {
            location: redact(text),
            reason,
        };
        if text.starts_with("http://") || text.starts_with("https://") {
            let mut url =
                reqwest::Url::parse(text).map_err(|e| invalid(format!("not a valid URL: {e}")))?;
            let credentials = (!url.username().is_empty()).then(|| Credentials {
                user: percent_decode(url.username()),
                password: percent_decode(url.password().unwrap_or_default()),
            });
            let _ = url.set_username("");
            let _ = url.set_password(None);
            let host = url.host_str().unwrap_or_default().to_string();
            let host_port = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            Ok(Location::Http {
                base: url.as_str().trim_end_matches('/').to_string(),
                host,
                host_port,
                https: url.scheme() == "https",
                credentials,
            })
        } else if let Some(path) = text.strip_prefix("file://") {
            Ok(Location::Directory(PathBuf::from(path)))
        } else if text.contains("://") {
            Err(invalid(
                "unsupported scheme: use https://, http://, file:// or a directory".into(),
            ))
        } else {
            Ok(Location::Directory(PathBuf::from(text)))
        }
    }

    /// Where the store is, for messages (never with credentials).
    pub fn describe(&self) -> String {
        match self {
            Location::Directory(d) => d.display().to_string(),
            Location::Http { base, .. } => base.clone(),
        }
    }

    /// The directory of a directory store.
    pub fn directory(&self) -> Option<&Path> {
        match self {
            Location::Directory(d) => Some(d),
            Location::Http { .. } => None,
        }
    }

    /// The credentials to READ with, and where they came from (for a 401
    /// message): those in the URL, else the host's `~/.netrc` entry (never
    /// the mirror's environment credentials: they belong to the mirror
    /// written to, not to any source).
    pub fn reader_credentials_and_source(&self) -> Option<(Credentials, CredentialSource)> {
        match self {
            Location::Http {
                credentials, host, ..
            } => match credentials {
                Some(c) => Some((c.clone(), CredentialSource::Url)),
                None => {
                    let path = netrc_path()?;
                    let c = credentials_from_netrc_at(&path, host)?;
                    Some((c, CredentialSource::Netrc(path)))
                }
            },
            Location::Directory(_) => None,
        }
    }

    /// The credentials to WRITE with: those in the URL, else
    /// `STAGEX_MIRROR_USER`/`STAGEX_MIRROR_PASSWORD`, else `~/.netrc`.
    pub fn writer_credentials(&self) -> Option<Credentials> {
        match self {
            Location::Http {
                credentials, host, ..
            } => credentials
                .clone()
                .or_else(credentials_from_env)
                .or_else(|| credentials_from_netrc(host)),
            Location::Directory(_) => None,
        }
    }
}

/// Where a reader's credentials came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// The URL's `user:password@`.
    Url,
    /// A netrc file (`$NETRC`, else `~/.netrc`).
    Netrc(PathBuf),
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::Url => write!(f, "the URL's user:password@"),
            CredentialSource::Netrc(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A store READ from answered 401. Readers take credentials from the URL's
/// userinfo or a netrc file only (`Location::reader_credentials_and_source`),
/// so the message says exactly that (the store's own base URL, scheme and
/// port included, with `USER:PASSWORD@` put in), and when credentials were
/// sent, that they were refused and where they came from (the user, never
/// the password).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "GET {url}: HTTP 401 Unauthorized: {}; a reader takes credentials only from the URL \
     ({}/...) or from a `machine {host} login USER password PASSWORD` \
     line in ~/.netrc (or the file $NETRC names){}",
    sent_text(.sent),
    with_placeholder_userinfo(.base),
    .netrc_problem.as_deref().map(|p| format!(" ({p}: fix that file)")).unwrap_or_default()
)]
pub struct ReaderUnauthorized {
    /// The URL asked (without credentials).
    pub url: String,
    /// The store's base URL (scheme, host, port, path; no userinfo): the
    /// message shows it with `USER:PASSWORD@` put in.
    pub base: String,
    /// The host alone (the netrc `machine` line).
    pub host: String,
    /// Where the credentials sent came from, and their user.
    pub sent: Option<(CredentialSource, String)>,
    /// Why the netrc file gave nothing, when it exists but cannot be
    /// parsed (`netrc_problem`).
    pub netrc_problem: Option<String>,
}

/// `base` (`scheme://host[:port]/path`) with `USER:PASSWORD@` after the
/// scheme: what a user types to give a reader or a mirror credentials.
pub(crate) fn with_placeholder_userinfo(base: &str) -> String {
    match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://USER:PASSWORD@{rest}"),
        None => format!("USER:PASSWORD@{base}"),
    }
}

fn sent_text(sent: &Option<(CredentialSource, String)>) -> String {
    match sent {
        None => "the store wants credentials and none were sent".into(),
        Some((from, user)) => {
            format!("the store refused the credentials of user {user:?} from {from}: correct them")
        }
    }
}

/// `location` with any password replaced (for messages).
pub fn redact(location: &str) -> String {
    match reqwest::Url::parse(location) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(_) => location.to_string(),
        // Unparsable: hide any userinfo by hand (the text goes in errors).
        Err(_) => match location.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => location.to_string(),
            },
            None => location.to_string(),
        },
    }
}

/// A URL's user or password as typed (the URL keeps them percent-encoded).
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn credentials_from_env() -> Option<Credentials> {
    let user = std::env::var(USER_ENV).ok().filter(|u| !u.is_empty())?;
    Some(Credentials {
        user,
        password: std::env::var(PASSWORD_ENV).unwrap_or_default(),
    })
}

/// `$NETRC`, else `~/.netrc`.
fn netrc_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NETRC") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".netrc"))
}

fn credentials_from_netrc(host: &str) -> Option<Credentials> {
    credentials_from_netrc_at(&netrc_path()?, host)
}

/// `PATH: could not be parsed (REASON)` when the netrc file exists but
/// cannot be parsed: it then gives no credentials at all, and a 401 says
/// why rather than only "none were sent".
pub fn netrc_problem() -> Option<String> {
    let path = netrc_path()?;
    let text = std::fs::read_to_string(&path).ok()?;
    netrc_parse_problem(&path, &text)
}

fn netrc_parse_problem(path: &Path, text: &str) -> Option<String> {
    let error = text.parse::<netrc::Netrc>().err()?;
    Some(format!(
        "{} could not be parsed ({error}), so it gave no credentials",
        path.display()
    ))
}

fn credentials_from_netrc_at(path: &Path, host: &str) -> Option<Credentials> {
    let text = std::fs::read_to_string(path).ok()?;
    netrc_lookup(&text, host)
}

/// The `machine HOST` entry of a netrc text (else `default`), parsed by
/// the `netrc` crate (comments, quoted tokens, `macdef` blocks); a text it
/// cannot parse gives no credentials, as a missing file does.
pub fn netrc_lookup(text: &str, host: &str) -> Option<Credentials> {
    let parsed: netrc::Netrc = text.parse().ok()?;
    let entry = parsed
        .hosts
        .get(host)
        .or_else(|| parsed.hosts.get("default"))?;
    Some(Credentials {
        user: entry.login.clone(),
        password: entry.password.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_location_parses_one_way() {
        assert_eq!(
            Location::parse("file:///srv/sigs").unwrap(),
            Location::Directory("/srv/sigs".into())
        );
        assert_eq!(
            Location::parse("out/sigs").unwrap().directory(),
            Some(Path::new("out/sigs"))
        );
        let Location::Http {
            base,
            host,
            host_port,
            https,
            credentials,
        } = Location::parse("https://u:p%40ss@127.0.0.1:8443/sigs/").unwrap()
        else {
            panic!("not http");
        };
        assert_eq!(base, "https://127.0.0.1:8443/sigs");
        assert_eq!(
            (host.as_str(), host_port.as_str()),
            ("127.0.0.1", "127.0.0.1:8443")
        );
        assert!(https);
        let c = credentials.unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u", "p@ss"));
        let err = Location::parse("ftp://u:secret@x/y")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unsupported scheme") && !err.contains("secret"),
            "{err}"
        );
        let err = Location::parse("http://u:secret@[::1/")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a valid URL") && !err.contains("secret"),
            "{err}"
        );
    }

    #[test]
    fn a_netrc_that_cannot_be_parsed_is_named_in_the_401() {
        let path = Path::new("/home/u/.netrc");
        let good = "machine 127.0.0.1 login u password p\n";
        assert_eq!(netrc_parse_problem(path, good), None);
        let bad = "machine 127.0.0.1 login u password p\nmachine x login y frobnicate z\n";
        let problem = netrc_parse_problem(path, bad).expect("a parse problem");
        assert!(
            problem.starts_with("/home/u/.netrc could not be parsed"),
            "{problem}"
        );
        let message = ReaderUnauthorized {
            url: "http://127.0.0.1:1/s/x/signature-1".into(),
            base: "http://127.0.0.1:1/s".into(),
            host: "127.0.0.1".into(),
            sent: None,
            netrc_problem: Some(problem),
        }
        .to_string();
        assert!(
            message.contains("none were sent")
                && message.contains("could not be parsed")
                && message.contains("fix that file"),
            "{message}"
        );
    }

    #[test]
    fn a_reader_401_says_where_credentials_come_from_and_never_the_secret() {
        let url = "http://127.0.0.1:8443/sigs/x/signature-1";
        let none = ReaderUnauthorized {
            url: url.into(),
            base: "http://127.0.0.1:8443/sigs".into(),
            host: "127.0.0.1".into(),
            sent: None,
            netrc_problem: None,
        }
        .to_string();
        assert!(
            none.contains(url)
                && none.contains("none were sent")
                && none.contains("(http://USER:PASSWORD@127.0.0.1:8443/sigs/...)")
                && none.contains("machine 127.0.0.1 login USER password PASSWORD")
                && none.contains("$NETRC"),
            "{none}"
        );
        let location = Location::parse("https://u:s3cret@127.0.0.1:8443/sigs").unwrap();
        let (c, from) = location.reader_credentials_and_source().unwrap();
        assert_eq!(from, CredentialSource::Url);
        let refused = ReaderUnauthorized {
            url: url.into(),
            base: "http://127.0.0.1:8443/sigs".into(),
            host: "127.0.0.1".into(),
            sent: Some((from, c.user)),
            netrc_problem: None,
        }
        .to_string();
        assert!(
            refused.contains("refused") && refused.contains("\"u\"") && refused.contains("URL"),
            "{refused}"
        );
        assert!(!refused.contains("s3cret"), "{refused}");
    }

    #[test]
    fn netrc_picks_the_machine_then_default() {
        let text = "machine other login a password b\n\
                    machine 127.0.0.1 login mirror password s3cret\n\
                    default login anon password x\n";
        let c = netrc_lookup(text, "127.0.0.1").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("mirror", "s3cret"));
        assert_eq!(netrc_lookup(text, "elsewhere").unwrap().user, "anon");
        assert!(netrc_lookup("machine a login b password c", "z").is_none());
        // What a hand-written split on whitespace got wrong: comments and
        // quoted passwords.
        let text = "# mirror\nmachine h login \"u\" password \"p w\"\n";
        let c = netrc_lookup(text, "h").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u", "p w"));
    }
}
