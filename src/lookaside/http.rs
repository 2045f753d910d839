//! The http(s):// lookaside (read-only here): GET signature-1, -2, ...
//! until the first 404. Any other non-200 status is an error; bodies over
//! 4 MiB are rejected; an HTML page served with 200 is reported as a mirror
//! misconfiguration ("soft 404") and ends the list.
//!
//! Owns: walking an image's signature list over http(s). Each file is one
//! `lookaside::fetch::get` (the one lookaside GET: limits, soft 404s); the
//! client, its timeouts, the private CA (`STAGEX_CA_FILE`) and the runtime
//! are the shared ones of `crate::net`. Each signature must arrive whole
//! within the small-document deadline, so a stalled mirror fails the check
//! naming its URL.
use anyhow::{bail, Result};
use futures_util::StreamExt;

use super::fetch::{self, Credentials, Outcome, Policy};
use super::mirror::{reader_credentials, redact};
use super::{signature_dir, Fetched, SignatureFile, SignatureSet, MAX_SIGNATURES};
use crate::net::{self, NetConfig};
use crate::oci::digest::Digest;

/// Images fetched at once by `read_many`.
const CONCURRENT_IMAGES: usize = 16;

pub struct HttpLookaside {
    /// The URL without userinfo (printed in messages).
    base: String,
    auth: Option<Credentials>,
    client: reqwest::Client,
    config: NetConfig,
}

impl HttpLookaside {
    pub fn new(base: &str) -> Result<HttpLookaside> {
        let config = net::config()?.clone();
        HttpLookaside::with_client(base, config, net::http_client()?)
    }

    /// A lookaside with its own configuration (e.g. shorter timeouts).
    pub fn with_config(base: &str, config: NetConfig) -> Result<HttpLookaside> {
        let client = config.http_client()?;
        HttpLookaside::with_client(base, config, client)
    }

    fn with_client(
        location: &str,
        config: NetConfig,
        client: reqwest::Client,
    ) -> Result<HttpLookaside> {
        let (base, auth) = reader_credentials(location)
            .map_err(|e| anyhow::anyhow!("lookaside {}: {e}", redact(location)))?;
        Ok(HttpLookaside {
            base,
            auth,
            client,
            config,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
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

    /// One signature URL through the lookaside GET (`super::fetch`): whole
    /// within the small-document deadline, one attempt (a stalled mirror
    /// fails the check at once; retrying is the caller's policy).
    async fn get(&self, url: &str) -> Result<Option<Fetched>> {
        let policy = Policy {
            timeout: self.config.document,
            attempts: 1,
            ..Policy::default()
        };
        Ok(
            match fetch::get(&self.client, url, self.auth.as_ref(), None, &policy).await? {
                Outcome::NotFound => None,
                Outcome::Found { body, .. } => Some(Fetched::Blob(body)),
                Outcome::TooLarge(size) => Some(Fetched::TooLarge(size)),
                Outcome::SoftNotFound => Some(Fetched::SoftNotFound),
                Outcome::Unauthorized => bail!(
                    "GET {url}: HTTP 401 (a lookaside must answer 200 or 404): check the mirror"
                ),
                Outcome::Status(status) => bail!(
                "GET {url}: HTTP {status} (a lookaside must answer 200 or 404): check the mirror"
            ),
                // No validators were sent: a 304 is a broken server.
                Outcome::NotModified => bail!("GET {url}: unexpected HTTP 304: check the mirror"),
            },
        )
    }

    async fn read_async(&self, repository_path: &str, digest: &Digest) -> Result<SignatureSet> {
        let dir = signature_dir(repository_path, digest);
        let mut set = SignatureSet::default();
        for n in 1..=MAX_SIGNATURES {
            let name = format!("signature-{n}");
            let url = format!("{}/{dir}/{name}", self.base);
            let Some(content) = self.get(&url).await? else {
                break;
            };
            let soft = content == Fetched::SoftNotFound;
            set.files.push(SignatureFile {
                name,
                location: url,
                content,
            });
            if soft {
                break;
            }
        }
        Ok(set)
    }
}
