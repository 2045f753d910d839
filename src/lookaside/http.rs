//! The http(s):// lookaside: GET signature-1, -2, ... until the first 404.
//!
//! Owns: the ONE walker of an image's `signature-1..N` over http(s)
//! (`HttpLookaside::walk`, returning the store's one `Listing`), and what
//! one GET's `fetch::Answer` means at a place in that walk (`classify`: a
//! file, or how the list ends there). Each file is one `fetch::get`
//! (limits, soft 404s, conditional headers, the retry engine of
//! `crate::net` with this store's shared budget). Whether the store is
//! read or written decides only the 401 message (a reader's is
//! `location::ReaderUnauthorized`; a mirror's names its own credentials)
//! and the plain-http rule (a mirror writer on loopback only).
use std::sync::Arc;

use super::error::StoreError;
use super::fetch::{self, Answer, Credentials, ReadPolicy, Request, Validators};
use super::location::{self, CredentialSource, Location, LocationError};
use super::{max_signatures, signature_dir, End, Fetched, Listing, SignatureFile};
use crate::net::retry::Budget;
use crate::net::{NetConfig, NetError};
use crate::oci::digest::Digest;

/// A signature store over http(s): base URL, credentials, client, policy
/// and the retry budget every request to it shares.
#[derive(Clone)]
pub struct HttpLookaside {
    /// The URL without userinfo (printed in messages).
    base: String,
    /// The host (for the 401 message's `~/.netrc` line).
    host: String,
    auth: Option<Credentials>,
    role: Role,
    client: reqwest::Client,
    policy: ReadPolicy,
    budget: Arc<Budget>,
}

/// Read from (with where the credentials came from) or written to.
#[derive(Clone, Debug)]
enum Role {
    Reader(Option<CredentialSource>),
    Writer,
}

impl HttpLookaside {
    /// A store to read from with its own configuration (e.g. shorter
    /// timeouts): each attempt within its document deadline, the default
    /// retries.
    pub fn with_config(base: &str, config: NetConfig) -> Result<HttpLookaside, StoreError> {
        let policy = ReadPolicy {
            timeout: config.document,
            ..ReadPolicy::default()
        };
        let client = config.http_client().map_err(NetError::from)?;
        HttpLookaside::read_with(&Location::parse(base)?, client, policy)
    }

    /// A store to READ from at an http(s) location: credentials from the
    /// URL, else `~/.netrc` (`Location::reader_credentials_and_source`).
    pub fn reader(location: &Location, policy: ReadPolicy) -> Result<HttpLookaside, StoreError> {
        let client = crate::net::http_client().map_err(NetError::from)?;
        HttpLookaside::read_with(location, client, policy)
    }

    fn read_with(
        location: &Location,
        client: reqwest::Client,
        policy: ReadPolicy,
    ) -> Result<HttpLookaside, StoreError> {
        let (auth, from) = location.reader_credentials_and_source().unzip();
        HttpLookaside::at(location, Role::Reader(from), auth, client, policy)
    }

    /// A store to WRITE to (a mirror): credentials from the URL, the
    /// environment or `~/.netrc` (`Location::writer_credentials`); plain
    /// http is refused beyond loopback (passwords travel in clear).
    pub fn writer(location: &Location, policy: ReadPolicy) -> Result<HttpLookaside, StoreError> {
        if let Location::Http {
            https: false,
            host_port,
            ..
        } = location
        {
            if !crate::net::is_loopback(host_port) {
                return Err(LocationError {
                    location: location.describe(),
                    reason: "plain http is allowed on loopback only (credentials and signatures travel in clear): use https://".into(),
                }
                .into());
            }
        }
        let client = crate::net::http_client().map_err(NetError::from)?;
        let auth = location.writer_credentials();
        HttpLookaside::at(location, Role::Writer, auth, client, policy)
    }

    fn at(
        location: &Location,
        role: Role,
        auth: Option<Credentials>,
        client: reqwest::Client,
        policy: ReadPolicy,
    ) -> Result<HttpLookaside, StoreError> {
        match location {
            Location::Http { base, host, .. } => Ok(HttpLookaside {
                base: base.clone(),
                host: host.clone(),
                auth,
                role,
                client,
                budget: Arc::new(policy.budget()),
                policy,
            }),
            Location::Directory(d) => Err(LocationError {
                location: d.display().to_string(),
                reason: "not an http(s):// URL".into(),
            }
            .into()),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn auth(&self) -> Option<&Credentials> {
        self.auth.as_ref()
    }

    pub(super) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub(super) fn policy(&self) -> &ReadPolicy {
        &self.policy
    }

    /// The error for a 401 to `url`: for a reader, what was sent and how a
    /// reader is given credentials; for a mirror, its own ways.
    pub fn unauthorized(&self, url: &str) -> StoreError {
        match &self.role {
            Role::Reader(from) => location::ReaderUnauthorized {
                url: url.to_string(),
                base: self.base.clone(),
                host: self.host.clone(),
                sent: from.clone().zip(self.auth.as_ref().map(|c| c.user.clone())),
                netrc_problem: from.is_none().then(location::netrc_problem).flatten(),
            }
            .into(),
            Role::Writer => StoreError::Unauthorized {
                mirror: self.base.clone(),
                url: url.to_string(),
                with_userinfo: location::with_placeholder_userinfo(&self.base),
            },
        }
    }

    /// The URL of `name` in an image's signature directory.
    pub fn url(&self, repository_path: &str, digest: &Digest, name: &str) -> String {
        format!(
            "{}/{}/{name}",
            self.base,
            signature_dir(repository_path, digest)
        )
    }

    /// One GET through the store's policy and budget (conditional when
    /// `known`).
    pub async fn get(&self, url: &str, known: Option<&Validators>) -> Result<Answer, StoreError> {
        let request = Request {
            client: &self.client,
            url,
            auth: self.auth.as_ref(),
            known,
            timeout: self.policy.timeout,
        };
        fetch::get(&request, &self.budget).await
    }

    /// What one GET's answer at `name` means to a walk: a file (a 304 is
    /// one only when validators were sent), or how the list ends there
    /// (`End::Missing` at a 404).
    fn classify(
        &self,
        name: String,
        url: String,
        answer: Result<Answer, StoreError>,
        known: Option<Validators>,
    ) -> Result<SignatureFile, End> {
        let file = |content, validators| SignatureFile {
            name: name.clone(),
            location: url.clone(),
            content,
            validators,
        };
        let failed = |error| End::Failed {
            name: Some(name.clone()),
            error,
        };
        match answer {
            Ok(Answer::Found { body, validators }) => Ok(file(Fetched::Blob(body), validators)),
            Ok(Answer::NotModified) => match known {
                Some(v) => Ok(file(Fetched::NotModified, v)),
                None => Err(failed(self.status(&url, 304))),
            },
            Ok(Answer::TooLarge(n)) => Ok(file(Fetched::TooLarge(n), Validators::default())),
            Ok(Answer::NotFound) => Err(End::Missing),
            Ok(Answer::SoftNotFound) => Err(End::SoftNotFound {
                name: name.clone(),
                location: url.clone(),
            }),
            Ok(Answer::Unauthorized) => Err(failed(self.unauthorized(&url))),
            Ok(Answer::Status(status)) => Err(failed(self.status(&url, status))),
            Err(error) => Err(failed(error)),
        }
    }

    fn status(&self, url: &str, status: u16) -> StoreError {
        StoreError::Status {
            method: "GET",
            url: url.to_string(),
            status,
            retry_after: None,
        }
    }

    /// One unconditional GET of `name` at `url`: the file, `None` at a 404,
    /// or the error a walk would end with there.
    pub async fn get_file(
        &self,
        url: &str,
        name: &str,
    ) -> Result<Option<SignatureFile>, StoreError> {
        let answer = self.get(url, None).await;
        match self.classify(name.to_string(), url.to_string(), answer, None) {
            Ok(file) => Ok(Some(file)),
            Err(End::Missing | End::Limit) => Ok(None),
            Err(End::SoftNotFound { location, .. }) => {
                Err(StoreError::SoftNotFound { url: location })
            }
            Err(End::Failed { error, .. }) => Err(error),
        }
    }

    /// Walks `signature-1..` of an image until the first 404, a stopping
    /// answer, a failure or the cap. `known[n-1]`, when given and not
    /// empty, makes the request for `signature-n` conditional; with
    /// `known`, the files it describes and the next number are asked at
    /// once (HTTP/2 multiplexes them) and the answers are still read in
    /// order, so the stop-at-404 rule holds. Beyond that, one by one.
    pub async fn walk(
        &self,
        repository_path: &str,
        digest: &Digest,
        known: &[Validators],
    ) -> Listing {
        let get = |n: u32| {
            let name = format!("signature-{n}");
            let url = self.url(repository_path, digest, &name);
            let validators = known.get(n as usize - 1).filter(|v| !v.is_empty()).cloned();
            async move {
                let answer = self.get(&url, validators.as_ref()).await;
                self.classify(name, url, answer, validators)
            }
        };
        let ahead = (known.len() as u32 + 1).min(max_signatures());
        let first = if known.is_empty() {
            Vec::new()
        } else {
            futures_util::future::join_all((1..=ahead).map(get)).await
        };
        let mut answers = first.into_iter();
        let mut files = Vec::new();
        for n in 1..=max_signatures() {
            let step = match answers.next() {
                Some(a) => a,
                None => get(n).await,
            };
            match step {
                Ok(file) => files.push(file),
                Err(end) => {
                    return Listing {
                        files,
                        end,
                        hidden: Vec::new(),
                    }
                }
            }
        }
        Listing {
            files,
            end: End::Limit,
            hidden: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_304_is_a_file_only_when_validators_were_sent() {
        let location = Location::parse("http://127.0.0.1:1/sigs").unwrap();
        let store = HttpLookaside::reader(&location, ReadPolicy::default()).unwrap();
        let classify =
            |answer, known| store.classify("signature-1".into(), "u".into(), Ok(answer), known);
        let etag = Validators {
            etag: Some("\"e\"".into()),
            last_modified: None,
        };
        let file = classify(Answer::NotModified, Some(etag.clone())).unwrap();
        assert_eq!(
            (file.content, file.validators),
            (Fetched::NotModified, etag)
        );
        let plain = classify(Answer::NotModified, None).unwrap_err();
        assert!(
            matches!(
                &plain,
                End::Failed {
                    error: StoreError::Status { status: 304, .. },
                    ..
                }
            ),
            "{plain:?}"
        );
        assert!(matches!(
            classify(Answer::NotFound, None),
            Err(End::Missing)
        ));
        let found = Answer::Found {
            body: b"sig".to_vec(),
            validators: Validators::default(),
        };
        assert_eq!(
            classify(found, None).unwrap().content,
            Fetched::Blob(b"sig".to_vec())
        );
        let refused = classify(Answer::Unauthorized, None).unwrap_err();
        assert!(
            matches!(
                &refused,
                End::Failed {
                    error: StoreError::ReaderUnauthorized(_),
                    ..
                }
            ),
            "{refused:?}"
        );
    }
}
