//! Owns: sorting a registry operation's error into permanent, transient or
//! rate-limited for the retry engine, by the error's TYPE (oci-client,
//! reqwest and io errors found in the chain), never by its text.
//!
//! Must not: retry anything itself. When the typed `net::RegistryError`
//! lands, its `is_retryable()`/`retry_after()` replace the downcasts here.
use std::io::ErrorKind;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use super::retry::{Classify, Failure};

/// An error from a registry call (the client returns `anyhow::Error`).
#[derive(Debug)]
pub struct OpError(pub anyhow::Error);

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl From<anyhow::Error> for OpError {
    fn from(e: anyhow::Error) -> Self {
        OpError(e)
    }
}

impl Classify for OpError {
    fn failure(&self) -> Failure {
        for cause in self.0.chain() {
            if let Some(e) = cause.downcast_ref::<OciDistributionError>() {
                return of_oci(e);
            }
            if let Some(e) = cause.downcast_ref::<reqwest::Error>() {
                return of_reqwest(e);
            }
            if let Some(e) = cause.downcast_ref::<std::io::Error>() {
                return of_io(e);
            }
        }
        Failure::Permanent
    }
}

/// An HTTP status: 429 rate-limited, 408/5xx transient, others permanent.
pub fn of_status(code: u16) -> Failure {
    match code {
        429 => Failure::RateLimited { retry_after: None },
        408 | 500..=599 => Failure::Transient,
        _ => Failure::Permanent,
    }
}

fn of_oci(e: &OciDistributionError) -> Failure {
    match e {
        OciDistributionError::ServerError { code, .. } => of_status(*code),
        OciDistributionError::RegistryError { envelope, .. } => {
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests))
            {
                Failure::RateLimited { retry_after: None }
            } else {
                Failure::Permanent
            }
        }
        OciDistributionError::RequestError(r) => of_reqwest(r),
        OciDistributionError::IoError(io) => of_io(io),
        // A proxy or a dying server that answered without the headers the
        // protocol requires: worth another try.
        OciDistributionError::RegistryNoLocationError
        | OciDistributionError::RegistryNoDigestError => Failure::Transient,
        _ => Failure::Permanent,
    }
}

fn of_reqwest(e: &reqwest::Error) -> Failure {
    if let Some(status) = e.status() {
        return of_status(status.as_u16());
    }
    if e.is_builder() || e.is_redirect() || e.is_decode() {
        return Failure::Permanent;
    }
    // Connect, timeout, request and body errors: resets, refused
    // connections (a registry restarting), stalls.
    Failure::Transient
}

fn of_io(e: &std::io::Error) -> Failure {
    match e.kind() {
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::ConnectionRefused
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof
        | ErrorKind::TimedOut
        | ErrorKind::Interrupted => Failure::Transient,
        _ => Failure::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_type_through_context() {
        let server = |code| {
            OpError(
                anyhow::Error::from(OciDistributionError::ServerError {
                    code,
                    url: "u".into(),
                    message: "m".into(),
                })
                .context("uploading blob x"),
            )
        };
        assert_eq!(server(503).failure(), Failure::Transient);
        assert_eq!(
            server(429).failure(),
            Failure::RateLimited { retry_after: None }
        );
        assert_eq!(server(404).failure(), Failure::Permanent);
        let reset = OpError(
            anyhow::Error::from(std::io::Error::from(ErrorKind::ConnectionReset)).context("x"),
        );
        assert_eq!(reset.failure(), Failure::Transient);
        let local = OpError(anyhow::Error::from(std::io::Error::from(
            ErrorKind::NotFound,
        )));
        assert_eq!(local.failure(), Failure::Permanent);
        assert_eq!(
            OpError(anyhow::anyhow!("plain")).failure(),
            Failure::Permanent
        );
    }
}
