//! Owns: the Authorization header a registry client last obtained for a
//! (repository, operation), reused while it is good: a bearer token for
//! `BEARER_LIFETIME` (below the 60 s the token spec gives a token that
//! states no `expires_in`), a basic or anonymous answer (no token service
//! on the registry) for `PLAIN_LIFETIME`, and then for every repository of
//! the registry (the probe's answer does not depend on the repository). A
//! request answered 401 drops the entry (`forget`), so the next one asks
//! again. Without this cache every request cost a `GET /v2/` probe (and a
//! token request) first.
//!
//! Must not: talk to the network or read credentials (the client does).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;

/// How long a bearer token is reused.
pub const BEARER_LIFETIME: Duration = Duration::from_secs(45);
/// How long "no token service here" (basic or anonymous) is believed.
pub const PLAIN_LIFETIME: Duration = Duration::from_secs(600);

/// What a registry asks for, per repository and operation.
#[derive(Default)]
pub struct Authorizations {
    entries: Mutex<HashMap<(String, bool), Entry>>,
}

struct Entry {
    value: Option<HeaderValue>,
    until: Instant,
}

/// The key of the registry-wide answer (not a repository name: those
/// cannot be empty).
const ANY_REPOSITORY: &str = "";

/// The header to send (`None`: send none).
pub type Header = Option<HeaderValue>;

impl Authorizations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, bool), Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached header for `repo` (`push`: push scope), if still good at
    /// `now`; else the registry-wide one when it has no token service.
    pub fn get(&self, repo: &str, push: bool, now: Instant) -> Option<Header> {
        let entries = self.lock();
        [
            (repo.to_string(), push),
            (ANY_REPOSITORY.to_string(), false),
        ]
        .iter()
        .find_map(|key| entries.get(key).filter(|e| e.until > now))
        .map(|e| e.value.clone())
    }

    /// Remembers `value`; `bearer` tokens expire sooner.
    pub fn put(&self, repo: &str, push: bool, value: Header, bearer: bool, now: Instant) {
        let (key, lifetime) = if bearer {
            ((repo.to_string(), push), BEARER_LIFETIME)
        } else {
            ((ANY_REPOSITORY.to_string(), false), PLAIN_LIFETIME)
        };
        self.lock().insert(
            key,
            Entry {
                value,
                until: now + lifetime,
            },
        );
    }

    /// Drops what is cached for `repo`, and the registry-wide answer (the
    /// registry answered 401: it may have started asking for tokens).
    pub fn forget(&self, repo: &str, push: bool) {
        let mut entries = self.lock();
        entries.remove(&(repo.to_string(), push));
        entries.remove(&(ANY_REPOSITORY.to_string(), false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_reused_until_they_expire_or_are_refused() {
        let cache = Authorizations::default();
        let t0 = Instant::now();
        let token = Some(HeaderValue::from_static("Bearer t"));
        assert_eq!(cache.get("ns/a", true, t0), None);
        cache.put("ns/a", true, token.clone(), true, t0);
        assert_eq!(cache.get("ns/a", true, t0), Some(token.clone()));
        // Scopes differ per repository and operation.
        assert_eq!(cache.get("ns/a", false, t0), None);
        assert_eq!(cache.get("ns/b", true, t0), None);
        assert_eq!(cache.get("ns/a", true, t0 + BEARER_LIFETIME), None);
        // No token service: one answer for every repository and scope.
        cache.put("ns/a", false, None, false, t0);
        assert_eq!(cache.get("ns/c", true, t0 + BEARER_LIFETIME), Some(None));
        assert_eq!(cache.get("ns/c", true, t0 + PLAIN_LIFETIME), None);
        cache.forget("ns/c", true);
        assert_eq!(cache.get("ns/a", false, t0), None);
    }
}
