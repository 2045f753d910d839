//! Owns: ONE GET of one lookaside file over http(s), with the lookaside
//! rules (4 MiB cap, a real 404 ends the list, an HTML 200 is a "soft 404",
//! any other status is reported, never read as "no more signatures"),
//! optional conditional headers (If-None-Match / If-Modified-Since), basic
//! auth, a per-request timeout, and retries with backoff for transient
//! failures (transport errors, 5xx, 429).
//!
//! It returns what the server said as data (`Outcome`); deciding what that
//! means for a sync, an audit or an upload is the caller's job. No UI.
use std::time::Duration;

use futures_util::StreamExt;

use super::{looks_like_html, MAX_SIGNATURE_BYTES};

/// What a server told us about a file, to ask again cheaply next time.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// HTTP basic credentials (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.user)
    }
}

/// The answer to one GET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with a signature-sized, non-HTML body.
    Found {
        body: Vec<u8>,
        validators: Validators,
    },
    /// 304: the file is what the validators describe.
    NotModified,
    /// 404: no such file (the end of the list).
    NotFound,
    /// A body over 4 MiB (bytes announced or read so far).
    TooLarge(u64),
    /// 200 with an HTML page: a mirror answering "soft 404s".
    SoftNotFound,
    /// 401: credentials missing or refused.
    Unauthorized,
    /// Any other status (403 from a bucket without listing, 5xx after
    /// the retries, ...).
    Status(u16),
}

/// A transport failure after every retry (timeout, connection refused or
/// reset, TLS, too many redirects), with the URL it concerns.
#[derive(Debug, thiserror::Error)]
#[error("GET {url}: {message}")]
pub struct FetchError {
    pub url: String,
    pub message: String,
}

/// How hard to try.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Whole-request limit (connect, headers and body) for one attempt.
    pub timeout: Duration,
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled after every failed attempt.
    pub backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            // The process-wide document deadline (`STAGEX_TIMEOUT`), as for
            // every other small download; an invalid variable is reported
            // by the first request that reads it, so fall back here.
            timeout: crate::net::config()
                .map(|c| c.document)
                .unwrap_or(Duration::from_secs(60)),
            attempts: 3,
            backoff: Duration::from_millis(250),
        }
    }
}

/// GETs `url`, retrying transient failures (transport errors, 429, 5xx)
/// with exponential backoff. The last status is returned as
/// `Outcome::Status` when retries run out.
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&Credentials>,
    known: Option<&Validators>,
    policy: &Policy,
) -> Result<Outcome, FetchError> {
    let mut delay = policy.backoff;
    let attempts = policy.attempts.max(1);
    for attempt in 1..=attempts {
        let last = attempt == attempts;
        match get_once(client, url, auth, known, policy.timeout).await {
            Ok(Outcome::Status(s)) if !last && transient(s) => {}
            Err(_) if !last => {}
            other => return other,
        }
        // Backoff between attempts (not a synchronization sleep).
        tokio::time::sleep(delay).await;
        delay = delay.saturating_mul(2);
    }
    unreachable!("the last attempt always returns")
}

/// Statuses worth asking again.
fn transient(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

async fn get_once(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&Credentials>,
    known: Option<&Validators>,
    timeout: Duration,
) -> Result<Outcome, FetchError> {
    let error = |e: reqwest::Error| FetchError {
        url: url.to_string(),
        message: describe(&e),
    };
    let mut request = client.get(url).timeout(timeout);
    if let Some(c) = auth {
        request = request.basic_auth(&c.user, Some(&c.password));
    }
    if let Some(v) = known {
        if let Some(etag) = &v.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = &v.last_modified {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
        }
    }
    let response = request.send().await.map_err(error)?;
    let status = response.status().as_u16();
    match status {
        200 => {}
        304 => return Ok(Outcome::NotModified),
        404 => return Ok(Outcome::NotFound),
        401 => return Ok(Outcome::Unauthorized),
        other => return Ok(Outcome::Status(other)),
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header(reqwest::header::CONTENT_TYPE);
    let validators = Validators {
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
    };
    if let Some(length) = response.content_length() {
        if length > MAX_SIGNATURE_BYTES {
            return Ok(Outcome::TooLarge(length));
        }
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(error)?);
        if body.len() as u64 > MAX_SIGNATURE_BYTES {
            return Ok(Outcome::TooLarge(body.len() as u64));
        }
    }
    if looks_like_html(content_type.as_deref(), &body) {
        return Ok(Outcome::SoftNotFound);
    }
    Ok(Outcome::Found { body, validators })
}

/// A transport error in words a mirror operator can act on.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out (the server accepted the connection but stalled)"
    } else if e.is_redirect() {
        "too many redirects (a redirect loop on the server)"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_statuses_are_retried_only() {
        assert!(transient(500) && transient(503) && transient(429));
        assert!(!transient(403) && !transient(404) && !transient(401));
        let c = Credentials {
            user: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
