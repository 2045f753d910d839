//! Owns: the ONE error type of a signature store (`StoreError`), for
//! reading and writing alike, and how the retry engine of `crate::net`
//! sorts it (`Classify`: 5xx and transport failures are transient, a 429
//! is a rate limit, a refused connection is refused, the rest permanent).
//! Transport failures are the network layer's typed `NetError`, except a
//! per-request timeout, which says which deadline ran out.
use std::time::Duration;

use super::location::{LocationError, ReaderUnauthorized, PASSWORD_ENV, USER_ENV};
use crate::net::retry::{Classify, Failure};
use crate::net::{NetError, TIMEOUT_ENV};

/// Why a signature store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Invalid(#[from] LocationError),
    /// A READ answered 401 (where a reader takes credentials from).
    #[error(transparent)]
    ReaderUnauthorized(Box<ReaderUnauthorized>),
    /// A WRITE (a mirror) answered 401.
    #[error(
        "mirror {mirror} refused the request (HTTP 401) for {url}: give credentials in the URL \
         ({with_userinfo}/...), in {USER_ENV}/{PASSWORD_ENV}, or in ~/.netrc \
         (`machine HOST login USER password PASSWORD`)"
    )]
    Unauthorized {
        mirror: String,
        url: String,
        /// The mirror's URL with `USER:PASSWORD@` put in.
        with_userinfo: String,
    },
    #[error("{method} {url}: HTTP {status} (a signature store must answer 200 or 404, 201 to a PUT): check the mirror")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        /// `Retry-After` of a 429, in seconds.
        retry_after: Option<Duration>,
    },
    #[error(
        "GET {url}: an HTML page with status 200 where a signature or a 404 was expected \
         (\"soft 404\"): configure the mirror to answer 404 for missing files"
    )]
    SoftNotFound { url: String },
    #[error("GET {url}: larger than the 4 MiB signature limit ({size} bytes): remove it")]
    TooLarge { url: String, size: u64 },
    #[error(
        "{method} {url}: timed out after {} s (the server accepted the connection but stalled); \
         raise {TIMEOUT_ENV} if it is only slow",
        .after.as_secs()
    )]
    TimedOut {
        method: &'static str,
        url: String,
        after: Duration,
    },
    /// Any other transport failure (refused, reset, TLS, redirect loop).
    #[error(transparent)]
    Net(Box<NetError>),
    #[error(
        "PUT {url} answered {status}: the file existed and was REPLACED (another writer raced us \
         between HEAD and PUT): re-run `stagex sigs audit` on the mirror"
    )]
    Overwrote { url: String, status: u16 },
    #[error("{location}: the bytes read back differ from the bytes uploaded (a concurrent writer, or a rewriting proxy)")]
    ReadBackMismatch { location: String },
    #[error(
        "{location} already holds {cap} signatures, the cap ({}): readers ignore any more",
        super::MAX_SIGNATURES_ENV
    )]
    Full { location: String, cap: u32 },
    #[error(
        "refusing to prune {location}: no valid signature to keep, so every file would be \
         removed (a source that serves nothing valid must not empty a mirror)"
    )]
    NothingToKeep { location: String },
    /// A directory store's file system error (its text names the path).
    #[error("{0:#}")]
    Directory(anyhow::Error),
}

impl From<ReaderUnauthorized> for StoreError {
    fn from(e: ReaderUnauthorized) -> StoreError {
        StoreError::ReaderUnauthorized(Box::new(e))
    }
}

impl From<NetError> for StoreError {
    fn from(e: NetError) -> StoreError {
        StoreError::Net(Box::new(e))
    }
}

impl Classify for StoreError {
    fn failure(&self) -> Failure {
        match self {
            StoreError::Status {
                status: 429,
                retry_after,
                ..
            } => Failure::RateLimited {
                retry_after: *retry_after,
            },
            StoreError::Status { status, .. } if (500..=599).contains(status) => Failure::Transient,
            StoreError::TimedOut { .. } => Failure::Transient,
            StoreError::Net(e) => e.failure(),
            _ => Failure::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_answers_are_retried() {
        let status = |status| StoreError::Status {
            method: "GET",
            url: "u".into(),
            status,
            retry_after: None,
        };
        assert_eq!(status(500).failure(), Failure::Transient);
        assert_eq!(status(503).failure(), Failure::Transient);
        assert_eq!(
            status(429).failure(),
            Failure::RateLimited { retry_after: None }
        );
        for permanent in [401, 403, 404] {
            assert_eq!(status(permanent).failure(), Failure::Permanent);
        }
        let refused = StoreError::from(NetError::Refused {
            host: "h".into(),
            what: "w".into(),
        });
        assert_eq!(refused.failure(), Failure::Refused);
    }
}
