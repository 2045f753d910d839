//! The http(s):// lookaside: GET signature-1, -2, ... until the first 404.
//!
//! Owns: the ONE walker of an image's `signature-1..N` over http(s)
//! (`HttpLookaside::walk`), used by `stagex verify`'s lookaside read
//! (`read`), the `sigs sync`/`audit` source listing (`sigs::source`) and
//! the mirror writer's listing (`lookaside::mirror`). Each file is one
//! `lookaside::fetch::get` (limits, soft 404s, conditional headers, and the
//! bounded retry with backoff of the store's `Policy`); the walk returns
//! what every file said and how the list ended, as data: what a 401, a
//! soft 404 or a 5xx means is each caller's decision. The client, its
//! timeouts, the private CA (`STAGEX_CA_FILE`) and the runtime are the
//! shared ones of `crate::net`.
use anyhow::{bail, Result};
use futures_util::StreamExt;

use super::fetch::{self, Credentials, FetchError, Outcome, Policy, Validators};
use super::location::{Location, LocationError};
use super::{signature_dir, Fetched, SignatureFile, SignatureSet, MAX_SIGNATURES};
use crate::net::{self, NetConfig};
use crate::oci::digest::Digest;

/// Images fetched at once by `read_many`.
const CONCURRENT_IMAGES: usize = 16;

/// A signature store over http(s): base URL, credentials, client, policy.
#[derive(Clone)]
pub struct HttpLookaside {
    /// The URL without userinfo (printed in messages).
    base: String,
    auth: Option<Credentials>,
    client: reqwest::Client,
    policy: Policy,
}

/// One file the walk read (`Found`, `NotModified` or `TooLarge`), or the
/// answer that stopped it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walked {
    /// `signature-N`.
    pub name: String,
    pub url: String,
    pub outcome: Outcome,
}

/// How a walk ended.
#[derive(Debug)]
pub enum WalkEnd {
    /// The first 404: the normal end.
    Missing,
    /// 128 files read: readers stop there.
    Limit,
    /// A soft 404, a 401 or another status (after the policy's retries).
    Stopped(Walked),
    /// A transport failure (after the policy's retries).
    Failed(FetchError),
}

/// Every file of one image in order, and how the list ended.
#[derive(Debug)]
pub struct Walk {
    pub files: Vec<Walked>,
    pub end: WalkEnd,
}

impl HttpLookaside {
    /// A store to READ from (credentials from the URL, else `~/.netrc`),
    /// on the process-wide client, retrying transient failures as every
    /// lookaside read does (`Policy::default()`).
    pub fn new(base: &str) -> Result<HttpLookaside> {
        HttpLookaside::reader(base, net::http_client()?, Policy::default())
    }

    /// A store with its own configuration (e.g. shorter timeouts): each
    /// attempt within its document deadline, the default retries.
    pub fn with_config(base: &str, config: NetConfig) -> Result<HttpLookaside> {
        let policy = Policy {
            timeout: config.document,
            ..Policy::default()
        };
        HttpLookaside::reader(base, config.http_client()?, policy)
    }

    /// A store to read from with the given client and policy.
    pub fn reader(
        location: &str,
        client: reqwest::Client,
        policy: Policy,
    ) -> Result<HttpLookaside> {
        let parsed = Location::parse(location)?;
        let auth = parsed.reader_credentials();
        HttpLookaside::from_location(&parsed, auth, client, policy).map_err(Into::into)
    }

    /// A store at a parsed http(s) location with the credentials chosen by
    /// the caller (a reader's or a mirror writer's).
    pub fn from_location(
        location: &Location,
        auth: Option<Credentials>,
        client: reqwest::Client,
        policy: Policy,
    ) -> Result<HttpLookaside, LocationError> {
        match location {
            Location::Http { base, .. } => Ok(HttpLookaside {
                base: base.clone(),
                auth,
                client,
                policy,
            }),
            Location::Directory(d) => Err(LocationError {
                location: d.display().to_string(),
                reason: "not an http(s):// URL".into(),
            }),
        }
    }

    /// The same store with another request policy (timeouts, retries).
    pub fn with_policy(mut self, policy: Policy) -> HttpLookaside {
        self.policy = policy;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn auth(&self) -> Option<&Credentials> {
        self.auth.as_ref()
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The URL of `name` in an image's signature directory.
    pub fn url(&self, repository_path: &str, digest: &Digest, name: &str) -> String {
        format!(
            "{}/{}/{name}",
            self.base,
            signature_dir(repository_path, digest)
        )
    }

    /// One GET through the store's policy (conditional when `known`).
    pub async fn get(&self, url: &str, known: Option<&Validators>) -> Result<Outcome, FetchError> {
        fetch::get(&self.client, url, self.auth.as_ref(), known, &self.policy).await
    }

    /// Walks `signature-1..` of an image until the first 404, a stopping
    /// answer, a failure or the 128 limit. `known[n-1]`, when given and
    /// not empty, makes the request for `signature-n` conditional; with
    /// `known`, the files it describes and the next number are asked at
    /// once (HTTP/2 multiplexes them) and the answers are still read in
    /// order, so the stop-at-404 rule holds. Beyond that, one by one.
    pub async fn walk(&self, repository_path: &str, digest: &Digest, known: &[Validators]) -> Walk {
        let get = |n: u32| {
            let name = format!("signature-{n}");
            let url = self.url(repository_path, digest, &name);
            let validators = known.get(n as usize - 1).filter(|v| !v.is_empty()).cloned();
            async move {
                let outcome = self.get(&url, validators.as_ref()).await;
                (name, url, outcome)
            }
        };
        let ahead = (known.len() as u32 + 1).min(MAX_SIGNATURES);
        let first = if known.is_empty() {
            Vec::new()
        } else {
            futures_util::future::join_all((1..=ahead).map(get)).await
        };
        let mut answers = first.into_iter();
        let mut files = Vec::new();
        for n in 1..=MAX_SIGNATURES {
            let (name, url, outcome) = match answers.next() {
                Some(a) => a,
                None => get(n).await,
            };
            let end = match outcome {
                Err(e) => WalkEnd::Failed(e),
                Ok(Outcome::NotFound) => WalkEnd::Missing,
                Ok(
                    outcome @ (Outcome::Found { .. } | Outcome::NotModified | Outcome::TooLarge(_)),
                ) => {
                    files.push(Walked { name, url, outcome });
                    continue;
                }
                Ok(outcome) => WalkEnd::Stopped(Walked { name, url, outcome }),
            };
            return Walk { files, end };
        }
        Walk {
            files,
            end: WalkEnd::Limit,
        }
    }

    pub fn read(&self, repository_path: &str, digest: &Digest) -> Result<SignatureSet> {
        net::block_on(self.read_async(repository_path, digest))
    }

    /// Reads several images concurrently (bounded), results in order.
    pub fn read_many(&self, images: &[(&str, &Digest)]) -> Vec<Result<SignatureSet>> {
        net::block_on(
            futures_util::stream::iter(images.iter().map(|(p, d)| self.read_async(p, d)))
                .buffered(CONCURRENT_IMAGES)
                .collect(),
        )
    }

    /// `stagex verify`'s view of a walk: the files a reader sees (a soft
    /// 404 is kept as the last one, for the report); a 401, any other
    /// status or a transport failure fails the read naming the URL.
    async fn read_async(&self, repository_path: &str, digest: &Digest) -> Result<SignatureSet> {
        let walk = self.walk(repository_path, digest, &[]).await;
        let mut set = SignatureSet::default();
        for file in walk.files {
            let content = match file.outcome {
                Outcome::Found { body, .. } => Fetched::Blob(body),
                Outcome::TooLarge(size) => Fetched::TooLarge(size),
                // No validators were sent: a 304 is a broken server.
                _ => bail!("GET {}: unexpected HTTP 304: check the mirror", file.url),
            };
            set.files.push(SignatureFile {
                name: file.name,
                location: file.url,
                content,
            });
        }
        match walk.end {
            WalkEnd::Missing | WalkEnd::Limit => {}
            WalkEnd::Failed(e) => return Err(e.into()),
            WalkEnd::Stopped(Walked {
                name,
                url,
                outcome: Outcome::SoftNotFound,
            }) => set.files.push(SignatureFile {
                name,
                location: url,
                content: Fetched::SoftNotFound,
            }),
            WalkEnd::Stopped(Walked { url, outcome, .. }) => {
                let status = match outcome {
                    Outcome::Status(s) => s,
                    _ => 401,
                };
                bail!(
                    "GET {url}: HTTP {status} (a lookaside must answer 200 or 404): check the mirror"
                )
            }
        }
        Ok(set)
    }
}
