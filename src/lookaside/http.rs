//! The http(s):// lookaside (read-only here): GET signature-1, -2, ...
//! until the first 404. Any other non-200 status is an error; bodies over
//! 4 MiB are rejected; an HTML page served with 200 is reported as a mirror
//! misconfiguration ("soft 404") and ends the list.
//!
//! Owns: the lookaside's HTTP reads only. The client, its timeouts, the
//! private CA (`STAGEX_CA_FILE`) and the runtime are the shared ones of
//! `crate::net`; each signature must arrive whole within the small-document
//! deadline, so a stalled mirror fails the check naming its host.
use anyhow::{bail, Result};
use futures_util::StreamExt;

use super::{
    looks_like_html, signature_dir, Fetched, SignatureFile, SignatureSet, MAX_SIGNATURES,
    MAX_SIGNATURE_BYTES,
};
use crate::net::{self, NetConfig, NetError};
use crate::oci::digest::Digest;

/// Images fetched at once by `read_many`.
const CONCURRENT_IMAGES: usize = 16;

pub struct HttpLookaside {
    base: String,
    host: String,
    client: reqwest::Client,
    config: NetConfig,
}

/// One GET's outcome before interpretation.
enum Answer {
    Missing,
    Body {
        content_type: Option<String>,
        body: Vec<u8>,
        too_large: Option<u64>,
    },
}

impl HttpLookaside {
    pub fn new(base: &str) -> Result<HttpLookaside> {
        let config = net::config()?.clone();
        Ok(HttpLookaside::with_client(
            base,
            config,
            net::http_client()?,
        ))
    }

    /// A lookaside with its own configuration (e.g. shorter timeouts).
    pub fn with_config(base: &str, config: NetConfig) -> Result<HttpLookaside> {
        let client = config.http_client()?;
        Ok(HttpLookaside::with_client(base, config, client))
    }

    fn with_client(base: &str, config: NetConfig, client: reqwest::Client) -> HttpLookaside {
        let base = base.trim_end_matches('/').to_string();
        HttpLookaside {
            host: net::host_of(&base).to_string(),
            base,
            client,
            config,
        }
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

    /// One signature URL, whole, within the small-document deadline.
    async fn get(&self, url: &str) -> Result<Answer> {
        let what = format!("GET {url}");
        let transport =
            |e: &reqwest::Error| NetError::from_reqwest(&self.host, &what, e, &self.config);
        let answer = net::within(self.config.document, &self.host, &what, async {
            let response = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| transport(&e))?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(Ok(Answer::Missing));
            }
            if status != reqwest::StatusCode::OK {
                return Ok(Err(status));
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let Some(length) = response
                .content_length()
                .filter(|n| *n > MAX_SIGNATURE_BYTES)
            {
                return Ok(Ok(Answer::Body {
                    content_type,
                    body: Vec::new(),
                    too_large: Some(length),
                }));
            }
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                body.extend_from_slice(&chunk.map_err(|e| transport(&e))?);
                if body.len() as u64 > MAX_SIGNATURE_BYTES {
                    let size = body.len() as u64;
                    return Ok(Ok(Answer::Body {
                        content_type,
                        body: Vec::new(),
                        too_large: Some(size),
                    }));
                }
            }
            Ok(Ok(Answer::Body {
                content_type,
                body,
                too_large: None,
            }))
        })
        .await?;
        match answer {
            Ok(answer) => Ok(answer),
            Err(status) => {
                bail!("GET {url}: HTTP {status} (a lookaside must answer 200 or 404): check the mirror")
            }
        }
    }

    async fn read_async(&self, repository_path: &str, digest: &Digest) -> Result<SignatureSet> {
        let dir = signature_dir(repository_path, digest);
        let mut set = SignatureSet::default();
        for n in 1..=MAX_SIGNATURES {
            let name = format!("signature-{n}");
            let url = format!("{}/{dir}/{name}", self.base);
            let content = match self.get(&url).await? {
                Answer::Missing => break,
                Answer::Body {
                    too_large: Some(size),
                    ..
                } => Fetched::TooLarge(size),
                Answer::Body {
                    content_type, body, ..
                } if looks_like_html(content_type.as_deref(), &body) => Fetched::SoftNotFound,
                Answer::Body { body, .. } => Fetched::Blob(body),
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
