//! Owns: the typed errors of the network layer, and the ONE place where
//! transport failures (reqwest, oci-client) and HTTP answers (status,
//! `Retry-After`, OCI error codes) are turned into them. Decisions (not
//! found? retry?) match on these variants, never on an error's text.
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::certs::CERTS_DIR_ENV;
use super::config::{NetConfig, CA_FILE_ENV, TIMEOUT_ENV};

/// The configuration could not be read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{TIMEOUT_ENV}={0:?}: expected a whole number of seconds, at least 1")]
    Timeout(String),
    #[error("reading {CA_FILE_ENV}={path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("{0}: not a PEM certificate bundle (a CA file for {CA_FILE_ENV} or a certs.d *.crt)")]
    CaNotPem(String),
    #[error("reading the certs.d directory {path}: {reason} (set {CERTS_DIR_ENV} or certs_dir in stagex.toml to an existing directory)")]
    CertsDir { path: String, reason: String },
    #[error("creating the HTTP client: {0}")]
    Client(String),
}

/// What went wrong talking to a registry (or any HTTP peer). `host` is the
/// peer, `what` the object asked for (`manifest HOST/REPO:TAG`, `blob
/// HOST/REPO/blobs/DIGEST`, `GET URL`).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: not found on {host}")]
    NotFound { host: String, what: String },
    #[error("{what}: {}", unauthorized_text(.host, .sent.as_deref()))]
    Unauthorized {
        host: String,
        what: String,
        /// Where the credentials the peer refused came from; None when
        /// none were sent.
        sent: Option<String>,
    },
    #[error("{what}: {host} denies access (HTTP 403): check the account's permissions")]
    Forbidden { host: String, what: String },
    #[error("{what}: {host} is rate limiting requests (HTTP 429){}", retry_hint(*.retry_after))]
    RateLimited {
        host: String,
        what: String,
        retry_after: Option<Duration>,
    },
    #[error("{what}: {host} sent bytes with digest {actual}, expected {expected}; nothing stored")]
    DigestMismatch {
        host: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: {detail} (from {host})")]
    TooLarge {
        host: String,
        what: String,
        limit: u64,
        detail: String,
    },
    #[error("{what}: {host} did not answer within {} s; raise {TIMEOUT_ENV} if it is only slow", .after.as_secs())]
    Timeout {
        host: String,
        what: String,
        after: Duration,
    },
    #[error(
        "{what}: {host} presented a certificate we do not trust ({detail}): give its CA as {fix}"
    )]
    Untrusted {
        host: String,
        what: String,
        detail: String,
        /// Where the CA could go.
        fix: String,
    },
    /// Nothing accepts connections at the address (TCP connection
    /// refused): the server is not running, or the port is wrong.
    #[error("{what}: {host} refused the connection")]
    Refused { host: String, what: String },
    #[error("{what}: cannot talk to {host}: {detail}")]
    Transport {
        host: String,
        what: String,
        detail: String,
    },
    #[error("{what}: {host} answered HTTP {status}{}", detail_suffix(.detail))]
    Server {
        host: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: {host} broke the protocol: {detail}")]
    Protocol {
        host: String,
        what: String,
        detail: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what}: {detail}")]
    Local { what: String, detail: String },
}

/// The registry boundary's error: the network layer's, by its usual name.
pub type RegistryError = NetError;

fn unauthorized_text(host: &str, sent: Option<&str>) -> String {
    match sent {
        None => format!(
            "{host} asks for credentials (HTTP 401): add them to $REGISTRY_AUTH_FILE or ~/.docker/config.json (or set $STAGEX_REGISTRY_USER and $STAGEX_REGISTRY_PASSWORD, which go only to the hosts in $STAGEX_REGISTRY_HOSTS, by default the registries of stagex.toml and --registry)"
        ),
        Some(source) => format!(
            "{host} refused the credentials from {source} (HTTP 401): renew them there (`docker login {host}`, the helper's store) or give others"
        ),
    }
}

impl NetError {
    /// This error, saying where the refused credentials came from when it
    /// is a 401 and `source` is known.
    pub fn with_credential_source(self, source: Option<&str>) -> NetError {
        match self {
            NetError::Unauthorized {
                host,
                what,
                sent: None,
            } => NetError::Unauthorized {
                host,
                what,
                sent: source.map(str::to_string),
            },
            other => other,
        }
    }
}

fn retry_hint(after: Option<Duration>) -> String {
    match after {
        Some(d) => format!(", retry after {} s", d.as_secs()),
        None => String::new(),
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// The error and its causes, joined (`a: b: c`).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        source = cause.source();
    }
    text
}

/// OCI error codes that mean "no such manifest/blob/repository".
const NOT_FOUND_CODES: &[&str] = &[
    "MANIFEST_UNKNOWN",
    "BLOB_UNKNOWN",
    "NAME_UNKNOWN",
    "NOT_FOUND",
];

impl NetError {
    /// The peer, when the error came from one.
    pub fn host(&self) -> Option<&str> {
        match self {
            NetError::NotFound { host, .. }
            | NetError::Unauthorized { host, .. }
            | NetError::Forbidden { host, .. }
            | NetError::RateLimited { host, .. }
            | NetError::DigestMismatch { host, .. }
            | NetError::TooLarge { host, .. }
            | NetError::Timeout { host, .. }
            | NetError::Untrusted { host, .. }
            | NetError::Refused { host, .. }
            | NetError::Transport { host, .. }
            | NetError::Server { host, .. }
            | NetError::Protocol { host, .. } => Some(host),
            NetError::Config(_) | NetError::Local { .. } => None,
        }
    }

    /// The peer says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, NetError::NotFound { .. })
    }

    /// Worth trying again later: rate limits, timeouts, broken connections
    /// and server-side (5xx, 408) failures. Wrong bytes, missing objects and
    /// refused credentials are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            NetError::RateLimited { .. }
            | NetError::Timeout { .. }
            | NetError::Refused { .. }
            | NetError::Transport { .. } => true,
            NetError::Server { status, .. } => *status >= 500 || *status == 408,
            _ => false,
        }
    }

    /// How long the peer asked us to wait (`Retry-After`, in seconds).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            NetError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A reqwest failure (no HTTP answer): timeout (of the connect or the
    /// idle limit of `config`) or transport.
    pub fn from_reqwest(
        host: &str,
        what: &str,
        error: &reqwest::Error,
        config: &NetConfig,
    ) -> NetError {
        if error.is_timeout() {
            return NetError::Timeout {
                host: host.to_string(),
                what: what.to_string(),
                after: if error.is_connect() {
                    config.connect
                } else {
                    config.idle
                },
            };
        }
        if error.is_connect() && connection_refused(error) {
            return NetError::Refused {
                host: host.to_string(),
                what: what.to_string(),
            };
        }
        if let Some(reason) = untrusted_certificate(error) {
            return NetError::Untrusted {
                host: host.to_string(),
                what: what.to_string(),
                detail: reason,
                fix: ca_fix(host, config),
            };
        }
        NetError::Transport {
            host: host.to_string(),
            what: what.to_string(),
            detail: chain(error),
        }
    }

    /// An elapsed total deadline.
    pub fn deadline(host: &str, what: &str, after: Duration) -> NetError {
        NetError::Timeout {
            host: host.to_string(),
            what: what.to_string(),
            after,
        }
    }

    /// A non-success HTTP answer: classified by status, then by the OCI
    /// error codes of its body (`{"errors":[{"code":..}]}`).
    pub fn from_status(
        host: &str,
        what: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> NetError {
        let codes = oci_codes(body);
        let by_code = |code: &str| codes.iter().any(|(c, _)| c == code);
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let detail = codes
            .iter()
            .map(|(c, m)| {
                if m.is_empty() {
                    c.clone()
                } else {
                    format!("{c}: {m}")
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        classify(host, what, status.as_u16(), retry_after, &detail, |c| {
            by_code(c)
        })
    }

    /// An oci-client failure (token exchange, chunked upload).
    pub fn from_oci(
        host: &str,
        what: &str,
        error: oci_client::errors::OciDistributionError,
        config: &NetConfig,
    ) -> NetError {
        use oci_client::errors::OciDistributionError as E;
        match error {
            E::RequestError(e) => NetError::from_reqwest(host, what, &e, config),
            E::ServerError { code, message, .. } => {
                let detail = message.chars().take(200).collect::<String>();
                classify(host, what, code, None, detail.trim(), |_| false)
            }
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => NetError::Unauthorized {
                host: host.to_string(),
                what: what.to_string(),
                sent: None,
            },
            E::RegistryError { envelope, .. } => {
                let codes: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| {
                        serde_json::to_value(&e.code)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    })
                    .collect();
                // oci-client keeps the codes of a 4xx answer, not its status.
                classify(host, what, 400, None, &codes.join("; "), |c| {
                    codes.iter().any(|k| k == c)
                })
            }
            E::IoError(e) => NetError::Local {
                what: what.to_string(),
                detail: e.to_string(),
            },
            other => NetError::Protocol {
                host: host.to_string(),
                what: what.to_string(),
                detail: chain(&other),
            },
        }
    }
}

/// The connect failed because the peer refused it (nothing listens):
/// an `io::Error` of kind `ConnectionRefused` in the source chain.
pub fn connection_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The reason when `error` comes from a server certificate rustls refused
/// (unknown issuer, expired, wrong name, ...).
fn untrusted_certificate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(rustls::Error::InvalidCertificate(reason)) = error.downcast_ref::<rustls::Error>() {
        return Some(format!("{reason:?}"));
    }
    // An io::Error hides the error it wraps from `source()` (and the TLS
    // connector wraps one io::Error in another).
    let wrapped = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| untrusted_certificate(inner));
    wrapped.or_else(|| error.source().and_then(untrusted_certificate))
}

/// Where the CA of `host` can be given, naming the certs.d in use.
fn ca_fix(host: &str, config: &NetConfig) -> String {
    let certs_d = match &config.certs {
        Some(certs) => format!("{}/{host}/ca.crt", certs.path.display()),
        None => format!(
            "DIR/{host}/ca.crt with {CERTS_DIR_ENV}=DIR (or certs_dir = \"DIR\" in stagex.toml)"
        ),
    };
    format!("{certs_d}, or in the PEM bundle {CA_FILE_ENV} names")
}

/// Status first; OCI codes refine a generic 4xx.
fn classify(
    host: &str,
    what: &str,
    status: u16,
    retry_after: Option<Duration>,
    detail: &str,
    has_code: impl Fn(&str) -> bool,
) -> NetError {
    let (host, what) = (host.to_string(), what.to_string());
    let client_error = (400..500).contains(&status);
    if status == 404 || (client_error && NOT_FOUND_CODES.iter().any(|c| has_code(c))) {
        NetError::NotFound { host, what }
    } else if status == 401 || (client_error && has_code("UNAUTHORIZED")) {
        NetError::Unauthorized {
            host,
            what,
            sent: None,
        }
    } else if status == 403 || (client_error && has_code("DENIED")) {
        NetError::Forbidden { host, what }
    } else if status == 429 || (client_error && has_code("TOOMANYREQUESTS")) {
        NetError::RateLimited {
            host,
            what,
            retry_after,
        }
    } else {
        NetError::Server {
            host,
            what,
            status,
            detail: detail.to_string(),
        }
    }
}

/// True when an OCI error body carries `code` (`DIGEST_INVALID`).
pub fn has_oci_code(body: &[u8], code: &str) -> bool {
    oci_codes(body).iter().any(|(c, _)| c == code)
}

/// `(code, message)` of an OCI error body; empty when it is not one.
fn oci_codes(body: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_slice::<Envelope>(body)
        .map(|e| e.errors.into_iter().map(|e| (e.code, e.message)).collect())
        .unwrap_or_default()
}

/// `Retry-After` in delta-seconds (an HTTP-date is not honoured: None).
pub fn parse_retry_after(text: &str) -> Option<Duration> {
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, headers: &[(&str, &str)], body: &str) -> NetError {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        NetError::from_status(
            "h:1",
            "manifest h:1/a/b:1.404",
            StatusCode::from_u16(code).unwrap(),
            &map,
            body.as_bytes(),
        )
    }

    #[test]
    fn classified_by_status_and_codes_never_by_text() {
        assert!(status(404, &[], "").is_not_found());
        assert!(status(400, &[], r#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#).is_not_found());
        // The URL holds "404"; a 500 stays a server error.
        let e = status(500, &[], "404 404");
        assert!(!e.is_not_found() && e.is_retryable(), "{e:?}");
        assert!(matches!(e, NetError::Server { status: 500, .. }));
        assert!(matches!(
            status(401, &[], ""),
            NetError::Unauthorized { .. }
        ));
        assert!(matches!(status(403, &[], ""), NetError::Forbidden { .. }));
        assert!(matches!(
            status(400, &[], r#"{"errors":[{"code":"DENIED"}]}"#),
            NetError::Forbidden { .. }
        ));
        let limited = status(429, &[("retry-after", "7")], "");
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        assert!(limited.to_string().contains("retry after 7 s"), "{limited}");
        assert_eq!(
            status(429, &[("retry-after", "Wed, 21 Oct 2015")], "").retry_after(),
            None
        );
        assert!(!status(400, &[], "").is_retryable());
        assert!(status(503, &[], "").is_retryable());
    }

    #[test]
    fn messages_name_host_and_object() {
        let e = NetError::deadline(
            "127.0.0.1:9",
            "manifest 127.0.0.1:9/x:1",
            Duration::from_secs(2),
        );
        let text = e.to_string();
        assert!(
            text.contains("127.0.0.1:9") && text.contains("within 2 s"),
            "{text}"
        );
        assert!(text.contains(TIMEOUT_ENV), "{text}");
        assert!(e.is_retryable());
    }
}
