//! Owns: fetching one certificate by fingerprint from one key source: a
//! keyserver (the VKS API `/vks/v1/by-fingerprint/FPR`, then HKP
//! `/pks/lookup?op=get&options=mr&search=0xFPR` when VKS has nothing), or
//! the Web Key Directory of an e-mail address. Every request goes through
//! the network layer's client (its timeouts, CA and certs.d) under the
//! document deadline, and the answer is capped in size.
use std::time::Duration;

use sequoia_openpgp as openpgp;

use openpgp::cert::CertParser;
use openpgp::parse::Parse;
use openpgp::{Cert, Fingerprint};

use crate::net::{self, NetError};

/// A certificate larger than this is refused (keyservers strip third-party
/// signatures; real maintainer certificates are a few KiB to a few 100 KiB).
pub const MAX_CERT_BYTES: usize = 8 * 1024 * 1024;

/// Where certificates are fetched from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `https://host[:port]` (or http:// on loopback): VKS, then HKP.
    Keyserver(String),
    /// The WKD of the certificate's primary user ID's domain.
    Wkd,
}

impl KeySource {
    /// `wkd`, `hkps://host`, `https://host`, `http://127.0.0.1:port`.
    pub fn parse(text: &str) -> Result<KeySource, FetchError> {
        let text = text.trim().trim_end_matches('/');
        if text.eq_ignore_ascii_case("wkd") {
            return Ok(KeySource::Wkd);
        }
        if let Some(host) = text.strip_prefix("hkps://") {
            return Ok(KeySource::Keyserver(format!("https://{host}")));
        }
        if text.starts_with("https://") {
            return Ok(KeySource::Keyserver(text.to_string()));
        }
        // Plain http only to this machine: anyone on the path could serve
        // an old certificate without its revocation.
        if let Some(rest) = text.strip_prefix("http://") {
            let host = rest.split('/').next().unwrap_or(rest);
            if crate::net::is_loopback(host) {
                return Ok(KeySource::Keyserver(text.to_string()));
            }
        }
        Err(FetchError::BadSource(text.to_string()))
    }

    pub fn label(&self) -> String {
        match self {
            KeySource::Keyserver(url) => url.clone(),
            KeySource::Wkd => "wkd".to_string(),
        }
    }
}

/// Why a fetch gave no certificate.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0:?} is not a key source: use https://HOST (VKS, then HKP), hkps://HOST or wkd (plain http:// only to this machine)")]
    BadSource(String),
    #[error("{source_label} has no certificate for {fingerprint}")]
    NotFound {
        source_label: String,
        fingerprint: String,
    },
    #[error("WKD: the certificate {0} has no user ID with an e-mail address")]
    NoEmail(String),
    #[error("{url}: the answer holds no OpenPGP certificate ({detail})")]
    NotACertificate { url: String, detail: String },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{0}")]
    Config(#[from] net::ConfigError),
}

/// Every certificate `source` serves for `fingerprint` (keyservers may send
/// several; the caller keeps the one it trusts). `emails` are the trusted
/// copy's addresses, for WKD.
pub fn fetch(
    source: &KeySource,
    fingerprint: &Fingerprint,
    emails: &[String],
) -> Result<Vec<Cert>, FetchError> {
    let hex = fingerprint.to_hex();
    let urls = match source {
        KeySource::Keyserver(base) => vec![
            format!("{base}/vks/v1/by-fingerprint/{hex}"),
            format!("{base}/pks/lookup?op=get&options=mr&search=0x{hex}"),
        ],
        KeySource::Wkd => {
            let urls: Vec<String> = emails
                .iter()
                .filter_map(|e| super::wkd::urls(e))
                .flatten()
                .collect();
            if urls.is_empty() {
                return Err(FetchError::NoEmail(hex));
            }
            urls
        }
    };
    for url in &urls {
        if let Some(bytes) = get(url)? {
            return parse_certs(url, &bytes);
        }
    }
    Err(FetchError::NotFound {
        source_label: source.label(),
        fingerprint: hex,
    })
}

/// One GET: the body, None on 404/410, an error otherwise.
fn get(url: &str) -> Result<Option<Vec<u8>>, FetchError> {
    let config = net::config()?;
    let host = net::config::host_of(url).to_string();
    let client = config.http_client_for(&host)?;
    let what = format!("GET {url}");
    let deadline: Duration = config.document;
    net::block_on(net::within(deadline, &host, &what, async {
        let response = client
            .get(url)
            .send()
            .await
            .map_err(|e| NetError::from_reqwest(&host, &what, &e, config))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Ok(None);
        }
        let headers = response.headers().clone();
        let body = read_capped(response, &host, &what, config).await?;
        if !status.is_success() {
            return Err(NetError::from_status(&host, &what, status, &headers, &body));
        }
        Ok(Some(body))
    }))
    .map_err(FetchError::from)
}

async fn read_capped(
    mut response: reqwest::Response,
    host: &str,
    what: &str,
    config: &net::config::NetConfig,
) -> Result<Vec<u8>, NetError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| NetError::from_reqwest(host, what, &e, config))?
    {
        if body.len() + chunk.len() > MAX_CERT_BYTES {
            return Err(NetError::TooLarge {
                host: host.to_string(),
                what: what.to_string(),
                limit: MAX_CERT_BYTES as u64,
                detail: format!("more than {MAX_CERT_BYTES} bytes for one certificate"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse_certs(url: &str, bytes: &[u8]) -> Result<Vec<Cert>, FetchError> {
    let not_a_cert = |detail: String| FetchError::NotACertificate {
        url: url.to_string(),
        detail,
    };
    let parser = CertParser::from_bytes(bytes).map_err(|e| not_a_cert(e.to_string()))?;
    let certs: Vec<Cert> = parser.filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(not_a_cert("nothing parsed".to_string()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_key_sources_are_only_this_machine() {
        for good in [
            "wkd",
            "hkps://keys.example",
            "https://keys.example",
            "http://127.0.0.1:8080",
        ] {
            assert!(KeySource::parse(good).is_ok(), "{good}");
        }
        let err = KeySource::parse("http://keys.example").unwrap_err();
        assert!(err.to_string().contains("only to this machine"), "{err}");
    }
}
