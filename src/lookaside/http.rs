//! The http(s):// lookaside (read-only here): GET signature-1, -2, ...
//! until the first 404. Any other non-200 status is an error; bodies over
//! 4 MiB are rejected; an HTML page served with 200 is reported as a mirror
//! misconfiguration ("soft 404") and ends the list.
//!
//! A private CA (tests, internal mirrors) is added with `STAGEX_CA_FILE`
//! (PEM bundle). The API is blocking: it owns a small tokio runtime.
use anyhow::{bail, Context, Result};
use futures_util::StreamExt;

use super::{
    looks_like_html, signature_dir, Fetched, SignatureFile, SignatureSet, MAX_SIGNATURES,
    MAX_SIGNATURE_BYTES,
};
use crate::oci::digest::Digest;

/// Environment variable naming an extra PEM CA bundle to trust.
pub const CA_FILE_ENV: &str = "STAGEX_CA_FILE";

/// Images fetched at once by `read_many`.
const CONCURRENT_IMAGES: usize = 16;

pub struct HttpLookaside {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// Builds an HTTP client trusting `$STAGEX_CA_FILE` in addition to the
/// system roots.
pub fn client() -> Result<reqwest::Client> {
    // A mirror that accepts the connection and then stalls must fail the
    // check, not hang `verify` (and a release) forever.
    let builder = || {
        reqwest::Client::builder()
            .user_agent(concat!("stagex/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .read_timeout(std::time::Duration::from_secs(60))
    };
    let Some(path) = std::env::var_os(CA_FILE_ENV) else {
        return builder().build().context("creating the HTTP client");
    };
    let pem = std::fs::read(&path)
        .with_context(|| format!("reading {CA_FILE_ENV}={}", path.to_string_lossy()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
        format!(
            "{CA_FILE_ENV}={}: not a PEM certificate bundle",
            path.to_string_lossy()
        )
    })?;
    match builder().tls_certs_merge(certs.clone()).build() {
        Ok(client) => Ok(client),
        // Some verifiers cannot merge roots: trust only the given CA then.
        Err(_) => builder()
            .tls_certs_only(certs)
            .build()
            .context("creating the HTTP client"),
    }
}

impl HttpLookaside {
    pub fn new(base: &str) -> Result<HttpLookaside> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the HTTP runtime")?;
        Ok(HttpLookaside {
            base: base.trim_end_matches('/').to_string(),
            client: client()?,
            runtime,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn read(&self, repository_path: &str, digest: &Digest) -> Result<SignatureSet> {
        self.runtime
            .block_on(self.read_async(repository_path, digest))
    }

    /// Reads several images concurrently (bounded), results in order.
    pub fn read_many(&self, images: &[(&str, &Digest)]) -> Vec<Result<SignatureSet>> {
        self.runtime.block_on(
            futures_util::stream::iter(images.iter().map(|(p, d)| self.read_async(p, d)))
                .buffered(CONCURRENT_IMAGES)
                .collect(),
        )
    }

    async fn read_async(&self, repository_path: &str, digest: &Digest) -> Result<SignatureSet> {
        let dir = signature_dir(repository_path, digest);
        let mut set = SignatureSet::default();
        for n in 1..=MAX_SIGNATURES {
            let name = format!("signature-{n}");
            let url = format!("{}/{dir}/{name}", self.base);
            let response = self
                .client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                break;
            }
            if status != reqwest::StatusCode::OK {
                bail!("GET {url}: HTTP {status} (a lookaside must answer 200 or 404): check the mirror");
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let Some(length) = response.content_length() {
                if length > MAX_SIGNATURE_BYTES {
                    set.files.push(SignatureFile {
                        name,
                        location: url,
                        content: Fetched::TooLarge(length),
                    });
                    continue;
                }
            }
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            let mut too_large = false;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.with_context(|| format!("reading GET {url}"))?;
                body.extend_from_slice(&chunk);
                if body.len() as u64 > MAX_SIGNATURE_BYTES {
                    too_large = true;
                    break;
                }
            }
            let content = if too_large {
                Fetched::TooLarge(body.len() as u64)
            } else if looks_like_html(content_type.as_deref(), &body) {
                Fetched::SoftNotFound
            } else {
                Fetched::Blob(body)
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
