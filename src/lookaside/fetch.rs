//! Owns: ONE GET of one lookaside file over http(s), with the lookaside
//! rules (4 MiB cap, a 404 is "no such file", an HTML 200 is a "soft 404",
//! any other status is reported, never read as "no more signatures"),
//! optional conditional headers (If-None-Match / If-Modified-Since), basic
//! auth and a per-request timeout. Transient failures (transport errors,
//! 5xx, 429 with its Retry-After) are retried by the project's one retry
//! engine (`crate::net::retry`, with the store's shared `Budget`); transport
//! errors are the network layer's (`crate::net::NetError`).
//!
//! It returns what the server said as data (`Answer`); deciding what that
//! means for a walk, an audit or an upload is the caller's job. No UI.
use std::time::Duration;

use futures_util::StreamExt;

use super::error::StoreError;
use super::{looks_like_html, MAX_SIGNATURE_BYTES};
use crate::net::retry::{retry_async, Budget};
use crate::net::NetError;

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

/// The answer to one GET: the one type every reader of a GET matches on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
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

/// Longest `Retry-After` a signature store may ask for (the registry
/// engine's default, 10 min, fits a resumable push, not a verify).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Longest backoff chosen between two tries of one signature GET.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How hard to try.
#[derive(Clone, Copy, Debug)]
pub struct ReadPolicy {
    /// Whole-request limit (connect, headers and body) for one attempt.
    pub timeout: Duration,
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled after every failed attempt.
    pub backoff: Duration,
}

impl Default for ReadPolicy {
    fn default() -> Self {
        ReadPolicy {
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

impl ReadPolicy {
    /// The retry engine's budget for one store under this policy. A
    /// signature read is small and a verify waits on it: a server asking
    /// for a longer pause than `MAX_RETRY_AFTER` (or the request timeout,
    /// when shorter) fails the read instead of stalling every image, and
    /// no backoff of our own grows past `MAX_BACKOFF`.
    pub fn budget(&self) -> Budget {
        Budget::new(crate::net::retry::Policy {
            max_attempts: self.attempts.max(1),
            base: self.backoff,
            refused_base: self.backoff,
            max_delay: MAX_BACKOFF,
            max_retry_after: MAX_RETRY_AFTER.min(self.timeout),
            ..crate::net::retry::Policy::default()
        })
    }
}

/// One request of a store: where, as whom, and under which limits.
pub struct Request<'a> {
    pub client: &'a reqwest::Client,
    pub url: &'a str,
    pub auth: Option<&'a Credentials>,
    pub known: Option<&'a Validators>,
    pub timeout: Duration,
}

/// GETs `url`, retrying transient failures through `budget`. A transient
/// status that outlives the retries is returned as `Answer::Status`.
pub async fn get(request: &Request<'_>, budget: &Budget) -> Result<Answer, StoreError> {
    match retry_async(budget, || get_once(request)).await {
        Ok(answer) => Ok(answer),
        Err(exhausted) => match exhausted.error {
            StoreError::Status { status, .. } => Ok(Answer::Status(status)),
            error => Err(error),
        },
    }
}

/// One attempt; a transient status is an error, for the retry engine.
async fn get_once(request: &Request<'_>) -> Result<Answer, StoreError> {
    let mut builder = request.client.get(request.url).timeout(request.timeout);
    if let Some(c) = request.auth {
        builder = builder.basic_auth(&c.user, Some(&c.password));
    }
    if let Some(v) = request.known {
        if let Some(etag) = &v.etag {
            builder = builder.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = &v.last_modified {
            builder = builder.header(reqwest::header::IF_MODIFIED_SINCE, date);
        }
    }
    let error = |e| transport("GET", request.url, request.timeout, e);
    let response = builder.send().await.map_err(error)?;
    let status = response.status().as_u16();
    match status {
        200 => {}
        304 => return Ok(Answer::NotModified),
        404 => return Ok(Answer::NotFound),
        401 => return Ok(Answer::Unauthorized),
        429 | 500..=599 => {
            return Err(StoreError::Status {
                method: "GET",
                url: request.url.to_string(),
                status,
                retry_after: response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::net::error::parse_retry_after),
            })
        }
        other => return Ok(Answer::Status(other)),
    }
    read_body(response, request).await
}

/// The body of a 200, within the signature limit.
async fn read_body(
    response: reqwest::Response,
    request: &Request<'_>,
) -> Result<Answer, StoreError> {
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
            return Ok(Answer::TooLarge(length));
        }
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport("GET", request.url, request.timeout, e))?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_SIGNATURE_BYTES {
            return Ok(Answer::TooLarge(body.len() as u64));
        }
    }
    if looks_like_html(content_type.as_deref(), &body) {
        return Ok(Answer::SoftNotFound);
    }
    Ok(Answer::Found { body, validators })
}

/// A transport failure of `method url` as the store's error: the
/// request's own deadline, else the network layer's typed error.
pub fn transport(
    method: &'static str,
    url: &str,
    timeout: Duration,
    error: reqwest::Error,
) -> StoreError {
    if error.is_timeout() {
        return StoreError::TimedOut {
            method,
            url: url.to_string(),
            after: timeout,
        };
    }
    let host = crate::net::host_of(url);
    let what = format!("{method} {url}");
    match crate::net::config() {
        Ok(config) => NetError::from_reqwest(host, &what, &error, config).into(),
        Err(e) => NetError::Config(e).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_never_printed() {
        let c = Credentials {
            user: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
        let budget = ReadPolicy::default().budget();
        assert_eq!(budget.policy().max_attempts, 3);
    }

    #[test]
    fn a_store_that_asks_for_a_long_pause_fails_the_read_instead_of_stalling_it() {
        use crate::net::retry::{Decision, Failure, GiveUp};
        let budget = ReadPolicy::default().budget();
        let ask = |secs| Failure::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
        };
        let now = std::time::Instant::now();
        assert!(matches!(
            budget.on_failure(ask(600), 1, now, 0.5),
            Decision::GiveUp(GiveUp::RetryAfterTooLong(_))
        ));
        assert!(matches!(
            budget.on_failure(ask(2), 1, now, 0.5),
            Decision::Retry(_)
        ));
        assert!(budget.policy().max_delay <= MAX_BACKOFF);
    }
}
