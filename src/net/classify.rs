//! Owns: sorting a registry operation's error into permanent, transient or
//! rate-limited for the retry engine, from the network layer's TYPED error
//! (`is_retryable`, `RateLimited { retry_after }`), never from its text.
//!
//! Must not: retry anything itself.
use super::retry::{Classify, Failure};
use crate::net::RegistryError;

impl Classify for RegistryError {
    fn failure(&self) -> Failure {
        match self {
            RegistryError::RateLimited { retry_after, .. } => Failure::RateLimited {
                retry_after: *retry_after,
            },
            RegistryError::Refused { .. } => Failure::Refused,
            e if e.is_retryable() => Failure::Transient,
            _ => Failure::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn server(status: u16) -> RegistryError {
        RegistryError::Server {
            host: "h".into(),
            what: "w".into(),
            status,
            detail: String::new(),
        }
    }

    #[test]
    fn classifies_by_type() {
        assert_eq!(server(503).failure(), Failure::Transient);
        assert_eq!(server(400).failure(), Failure::Permanent);
        let limited = RegistryError::RateLimited {
            host: "h".into(),
            what: "w".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            limited.failure(),
            Failure::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let reset = RegistryError::Transport {
            host: "h".into(),
            what: "w".into(),
            detail: "connection reset".into(),
        };
        assert_eq!(reset.failure(), Failure::Transient);
        let refused = RegistryError::Refused {
            host: "h".into(),
            what: "w".into(),
        };
        assert_eq!(refused.failure(), Failure::Refused);
        let missing = RegistryError::NotFound {
            host: "h".into(),
            what: "w".into(),
        };
        assert_eq!(missing.failure(), Failure::Permanent);
    }
}
