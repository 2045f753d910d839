//! The http(s):// lookaside: GET signature-1, -2, ... until the first 404.
//!
//! Owns: the ONE walker of an image's `signature-1..N` over http(s)
//! (`HttpLookaside::walk`), used by `stagex verify`'s lookaside read
//! (`read`), the `sigs sync`/`audit` source listing (`sigs::source`) and
//! the mirror writer's listing (`lookaside::mirror`). Each file is one
//! `lookaside::fetch::get` (limits, soft 404s, conditional headers, and the
//! bounded retry with backoff of the store's `Policy`); the walk returns
//! what every file said (`Read`: found, 304 to a conditional request, too
//! large) and how the list ended (`WalkEnd`; a `Stop` is a soft 404, a 401
//! or another status), as data: what those mean is each caller's decision
//! (a reader's 401 message is `location::ReaderUnauthorized`). A walk or
//! GET asking nothing conditionally (`walk_plain`, `get_plain`: `read` and
//! the mirror's listing) gives files as `Fetched`, with no "not modified"
//! case. The client, its timeouts, the private CA (`STAGEX_CA_FILE`) and
//! the runtime are the shared ones of `crate::net`.
use anyhow::Result;
use futures_util::StreamExt;

use super::fetch::{self, Credentials, FetchError, Outcome, Policy, Validators};
use super::location::{CredentialSource, Location, LocationError, ReaderUnauthorized};
use super::max_signatures;
use super::{signature_dir, Fetched, SignatureFile, SignatureSet};
use crate::net::{self, NetConfig};
use crate::oci::digest::Digest;

/// Images fetched at once by `read_many`.
const CONCURRENT_IMAGES: usize = 16;

/// A signature store over http(s): base URL, credentials, client, policy.
#[derive(Clone)]
pub struct HttpLookaside {
    /// The URL without userinfo (printed in messages).
    base: String,
    /// The host (for the 401 message's `~/.netrc` line).
    host: String,
    auth: Option<Credentials>,
    /// Where a reader's `auth` came from (for the 401 message).
    auth_from: Option<CredentialSource>,
    client: reqwest::Client,
    policy: Policy,
}

/// A file the walk read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// 200 with a signature-sized, non-HTML body.
    Found {
        body: Vec<u8>,
        validators: Validators,
    },
    /// 304 to a CONDITIONAL request (validators were sent): unchanged. A
    /// 304 to a plain GET ends the walk as `Stop::Status(304)`.
    NotModified,
    /// A body over 4 MiB (not read).
    TooLarge(u64),
}

/// An answer that stops a walk (other than the closing 404).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// 200 with an HTML page: a mirror answering "soft 404s".
    SoftNotFound,
    /// 401: credentials missing or refused.
    Unauthorized,
    /// Any other status (after the policy's retries).
    Status(u16),
}

/// What one GET answer means to a walk of `signature-1..N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    File(Read),
    /// 404: the end of the list.
    Missing,
    Stop(Stop),
}

impl Answer {
    /// Classifies a GET's outcome; `conditional` says whether validators
    /// were sent (only then is a 304 a file).
    pub fn of(outcome: Outcome, conditional: bool) -> Answer {
        match outcome {
            Outcome::Found { body, validators } => Answer::File(Read::Found { body, validators }),
            Outcome::NotModified if conditional => Answer::File(Read::NotModified),
            Outcome::NotModified => Answer::Stop(Stop::Status(304)),
            Outcome::TooLarge(n) => Answer::File(Read::TooLarge(n)),
            Outcome::NotFound => Answer::Missing,
            Outcome::SoftNotFound => Answer::Stop(Stop::SoftNotFound),
            Outcome::Unauthorized => Answer::Stop(Stop::Unauthorized),
            Outcome::Status(s) => Answer::Stop(Stop::Status(s)),
        }
    }
}

/// What one GET WITHOUT validators means (`HttpLookaside::get_plain`): as
/// `Answer`, but a file is only ever a body or too large, since a 304 to
/// a plain GET is `Stop::Status(304)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlainAnswer {
    /// `Fetched::Blob` or `Fetched::TooLarge`.
    File(Fetched),
    /// 404: the end of the list.
    Missing,
    Stop(Stop),
}

impl PlainAnswer {
    /// Classifies the outcome of a GET sent without validators.
    pub fn of(outcome: Outcome) -> PlainAnswer {
        match Answer::of(outcome, false) {
            Answer::File(read) => match plain(read) {
                Ok(content) => PlainAnswer::File(content),
                Err(stop) => PlainAnswer::Stop(stop),
            },
            Answer::Missing => PlainAnswer::Missing,
            Answer::Stop(stop) => PlainAnswer::Stop(stop),
        }
    }
}

/// A file read without validators as its content; a 304 (`Answer::of`
/// never makes one a file without validators) is the stop it would be.
fn plain(read: Read) -> Result<Fetched, Stop> {
    match read {
        Read::Found { body, .. } => Ok(Fetched::Blob(body)),
        Read::TooLarge(size) => Ok(Fetched::TooLarge(size)),
        Read::NotModified => Err(Stop::Status(304)),
    }
}

/// A walk without validators (`HttpLookaside::walk_plain`): every file's
/// content is `Fetched::Blob` or `Fetched::TooLarge`.
#[derive(Debug)]
pub struct PlainWalk {
    pub files: Vec<SignatureFile>,
    pub end: WalkEnd,
}

/// One file the walk read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walked {
    /// `signature-N`.
    pub name: String,
    pub url: String,
    pub read: Read,
}

/// How a walk ended.
#[derive(Debug)]
pub enum WalkEnd {
    /// The first 404: the normal end.
    Missing,
    /// 128 files read: readers stop there.
    Limit,
    /// A soft 404, a 401 or another status (after the policy's retries)
    /// at `signature-N` (`name`).
    Stopped {
        name: String,
        url: String,
        stop: Stop,
    },
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
    /// A store to read from with its own configuration (e.g. shorter
    /// timeouts): each attempt within its document deadline, the default
    /// retries.
    pub fn with_config(base: &str, config: NetConfig) -> Result<HttpLookaside> {
        let policy = Policy {
            timeout: config.document,
            ..Policy::default()
        };
        let location = Location::parse(base)?;
        Ok(HttpLookaside::reader(
            &location,
            config.http_client()?,
            policy,
        )?)
    }

    /// A store to READ from at an http(s) location: credentials from the
    /// URL, else `~/.netrc` (`Location::reader_credentials_and_source`).
    pub fn reader(
        location: &Location,
        client: reqwest::Client,
        policy: Policy,
    ) -> Result<HttpLookaside, LocationError> {
        let (auth, auth_from) = match location.reader_credentials_and_source() {
            Some((auth, from)) => (Some(auth), Some(from)),
            None => (None, None),
        };
        HttpLookaside::at(location, auth, auth_from, client, policy)
    }

    /// A store to WRITE to (a mirror): credentials from the URL, the
    /// environment or `~/.netrc` (`Location::writer_credentials`).
    pub fn writer(
        location: &Location,
        client: reqwest::Client,
        policy: Policy,
    ) -> Result<HttpLookaside, LocationError> {
        let auth = location.writer_credentials();
        HttpLookaside::at(location, auth, None, client, policy)
    }

    fn at(
        location: &Location,
        auth: Option<Credentials>,
        auth_from: Option<CredentialSource>,
        client: reqwest::Client,
        policy: Policy,
    ) -> Result<HttpLookaside, LocationError> {
        match location {
            Location::Http { base, host, .. } => Ok(HttpLookaside {
                base: base.clone(),
                host: host.clone(),
                auth,
                auth_from,
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

    /// The error for a 401 to a READ of `url`: what was sent and how a
    /// reader is given credentials (`location::ReaderUnauthorized`).
    pub fn unauthorized(&self, url: &str) -> ReaderUnauthorized {
        ReaderUnauthorized {
            url: url.to_string(),
            base: self.base.clone(),
            host: self.host.clone(),
            sent: self
                .auth_from
                .clone()
                .zip(self.auth.as_ref().map(|c| c.user.clone())),
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
                (
                    name,
                    url,
                    outcome.map(|o| Answer::of(o, validators.is_some())),
                )
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
            let (name, url, outcome) = match answers.next() {
                Some(a) => a,
                None => get(n).await,
            };
            let end = match outcome {
                Err(e) => WalkEnd::Failed(e),
                Ok(Answer::Missing) => WalkEnd::Missing,
                Ok(Answer::File(read)) => {
                    files.push(Walked { name, url, read });
                    continue;
                }
                Ok(Answer::Stop(stop)) => WalkEnd::Stopped { name, url, stop },
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

    /// A walk asking nothing conditionally (`walk` without validators):
    /// each file a body or too large, and how the list ended.
    pub async fn walk_plain(&self, repository_path: &str, digest: &Digest) -> PlainWalk {
        let walk = self.walk(repository_path, digest, &[]).await;
        let mut files = Vec::new();
        for Walked { name, url, read } in walk.files {
            match plain(read) {
                Ok(content) => files.push(SignatureFile {
                    name,
                    location: url,
                    content,
                }),
                Err(stop) => {
                    let end = WalkEnd::Stopped { name, url, stop };
                    return PlainWalk { files, end };
                }
            }
        }
        PlainWalk {
            files,
            end: walk.end,
        }
    }

    /// One GET without validators, classified as a walk classifies it.
    pub async fn get_plain(&self, url: &str) -> Result<PlainAnswer, FetchError> {
        Ok(PlainAnswer::of(self.get(url, None).await?))
    }

    /// `stagex verify`'s view of a walk: the files a reader sees (a soft
    /// 404 is kept as the last one, for the report); a 401, any other
    /// status or a transport failure fails the read naming the URL.
    async fn read_async(&self, repository_path: &str, digest: &Digest) -> Result<SignatureSet> {
        let walk = self.walk_plain(repository_path, digest).await;
        let mut set = SignatureSet {
            files: walk.files,
            ..SignatureSet::default()
        };
        match walk.end {
            WalkEnd::Missing | WalkEnd::Limit => {}
            WalkEnd::Failed(e) => return Err(e.into()),
            WalkEnd::Stopped {
                name,
                url,
                stop: Stop::SoftNotFound,
            } => set.files.push(SignatureFile {
                name,
                location: url,
                content: Fetched::SoftNotFound,
            }),
            WalkEnd::Stopped {
                url,
                stop: Stop::Unauthorized,
                ..
            } => return Err(self.unauthorized(&url).into()),
            WalkEnd::Stopped {
                url,
                stop: Stop::Status(status),
                ..
            } => anyhow::bail!(
                "GET {url}: HTTP {status} (a lookaside must answer 200 or 404): check the mirror"
            ),
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_get_never_reads_a_file_as_not_modified() {
        let found = Outcome::Found {
            body: b"sig".to_vec(),
            validators: Validators::default(),
        };
        assert_eq!(
            PlainAnswer::of(found),
            PlainAnswer::File(Fetched::Blob(b"sig".to_vec()))
        );
        assert_eq!(
            PlainAnswer::of(Outcome::TooLarge(9)),
            PlainAnswer::File(Fetched::TooLarge(9))
        );
        assert_eq!(PlainAnswer::of(Outcome::NotFound), PlainAnswer::Missing);
        // A 304 without validators is the stop `Answer::of` makes of it.
        assert_eq!(
            PlainAnswer::of(Outcome::NotModified),
            PlainAnswer::Stop(Stop::Status(304))
        );
        assert_eq!(plain(Read::NotModified), Err(Stop::Status(304)));
    }
}
