//! Owns: the ONE HTTP configuration every network peer shares (registries,
//! https lookasides, fetch mirrors): timeouts (`$STAGEX_TIMEOUT`), the user
//! agent, the private CAs (`$STAGEX_CA_FILE` for every host, and a
//! containers-style certs.d directory per host, see `certs`), and which
//! hosts are spoken to over plain HTTP (loopback, unless listed in
//! `$STAGEX_TLS_HOSTS`). A registry client trusts the CA file and its own
//! host's certs.d CAs; the one shared client (lookasides, mirrors, fetch:
//! one connection pool for many hosts) trusts the CA file and every
//! certs.d CA.
//! Proxy variables (`HTTPS_PROXY`, `NO_PROXY`, ...) are honoured by reqwest's
//! defaults, which this module keeps. It makes no request itself.
use std::sync::OnceLock;
use std::time::Duration;

use super::certs::CertsDir;
use super::error::ConfigError;

/// Seconds: the idle timeout (and the base of the others) when
/// `$STAGEX_TIMEOUT` is not set.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The connect timeout never exceeds this (a black-holed SYN should not
/// cost half a minute per mirror).
pub const MAX_CONNECT_SECS: u64 = 10;
/// Small documents (manifests, tokens, signatures) must arrive whole
/// within this many idle timeouts.
pub const DOCUMENT_FACTOR: u32 = 2;

/// `$STAGEX_TIMEOUT`: seconds a peer may stay silent (see [`NetConfig`]).
pub const TIMEOUT_ENV: &str = "STAGEX_TIMEOUT";
/// `$STAGEX_CA_FILE`: a PEM bundle trusted besides the system roots.
pub const CA_FILE_ENV: &str = "STAGEX_CA_FILE";
/// `$STAGEX_TLS_HOSTS`: comma-separated loopback `host[:port]`s spoken to
/// over TLS (a local TLS registry, or a tunnel).
pub const TLS_HOSTS_ENV: &str = "STAGEX_TLS_HOSTS";

/// The user agent of every request.
pub const USER_AGENT: &str = concat!("stagex/", env!("CARGO_PKG_VERSION"));

/// Timeouts shared by every client. With `STAGEX_TIMEOUT=N`: connecting
/// gives up after `min(N, 10)` s, a peer silent for `N` s (no header, no
/// body byte) fails the request, and a small document must be complete
/// within `2 N` s. Large blobs and sources have no total limit: only
/// silence ends them. Default N = 30.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub connect: Duration,
    pub idle: Duration,
    pub document: Duration,
    /// PEM bytes of `$STAGEX_CA_FILE` (with the path, for messages).
    pub ca: Option<CaBundle>,
    /// The certs.d directory in use, read.
    pub certs: Option<CertsDir>,
}

/// A private CA bundle as read from its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaBundle {
    pub path: String,
    pub pem: Vec<u8>,
}

impl NetConfig {
    /// The configuration for an idle timeout of `seconds` (no private CA).
    pub fn with_timeout(seconds: u64) -> NetConfig {
        let idle = Duration::from_secs(seconds.max(1));
        NetConfig {
            connect: Duration::from_secs(seconds.clamp(1, MAX_CONNECT_SECS)),
            idle,
            document: idle * DOCUMENT_FACTOR,
            ca: None,
            certs: None,
        }
    }

    /// Parses a `$STAGEX_TIMEOUT` value (whole seconds, at least 1).
    pub fn parse_timeout(text: &str) -> Result<u64, ConfigError> {
        match text.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(ConfigError::Timeout(text.to_string())),
        }
    }

    /// Reads `$STAGEX_TIMEOUT`, `$STAGEX_CA_FILE` and the certs.d directory.
    pub fn from_env() -> Result<NetConfig, ConfigError> {
        let seconds = match std::env::var(TIMEOUT_ENV) {
            Ok(text) => NetConfig::parse_timeout(&text)?,
            Err(_) => DEFAULT_TIMEOUT_SECS,
        };
        let mut config = NetConfig::with_timeout(seconds);
        if let Some(path) = std::env::var_os(CA_FILE_ENV) {
            let path = path.to_string_lossy().into_owned();
            let pem = std::fs::read(&path).map_err(|e| ConfigError::CaFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            config.ca = Some(CaBundle { path, pem });
        }
        if let Some(dir) = super::certs::chosen() {
            config.certs = Some(CertsDir::load(&dir)?);
        }
        Ok(config)
    }

    /// A reqwest client with these settings for any host (system roots,
    /// the CA file and every certs.d CA).
    pub fn http_client(&self) -> Result<reqwest::Client, ConfigError> {
        self.client_with(Some(self.idle), &self.cas(None))
    }

    /// A client for `host` only (system roots, the CA file and the host's
    /// certs.d CAs).
    pub fn http_client_for(&self, host: &str) -> Result<reqwest::Client, ConfigError> {
        self.client_with(Some(self.idle), &self.cas(Some(host)))
    }

    /// The same client without a read timeout, for request bodies of any
    /// size: reqwest counts its read timeout from the start of the request,
    /// body included, so the caller must watch for silence itself (see
    /// `registry::upload`).
    pub fn upload_client_for(&self, host: &str) -> Result<reqwest::Client, ConfigError> {
        self.client_with(None, &self.cas(Some(host)))
    }

    /// True when certs.d holds any CA: a host's client must then be its
    /// own (`http_client_for`), not the shared one that trusts them all.
    pub fn has_certs(&self) -> bool {
        self.certs
            .as_ref()
            .is_some_and(|c| c.all().next().is_some())
    }

    /// The CA file and the certs.d CAs of `host` (of every host: `None`).
    fn cas(&self, host: Option<&str>) -> Vec<&CaBundle> {
        let mut cas: Vec<&CaBundle> = self.ca.iter().collect();
        if let Some(certs) = &self.certs {
            match host {
                Some(host) => cas.extend(certs.for_host(host)),
                None => cas.extend(certs.all()),
            }
        }
        cas
    }

    fn client_with(
        &self,
        read_timeout: Option<Duration>,
        cas: &[&CaBundle],
    ) -> Result<reqwest::Client, ConfigError> {
        let builder = || {
            let builder = reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(self.connect);
            match read_timeout {
                Some(after) => builder.read_timeout(after),
                None => builder,
            }
        };
        if cas.is_empty() {
            return builder()
                .build()
                .map_err(|e| ConfigError::Client(e.to_string()));
        }
        let mut certs = Vec::new();
        for ca in cas {
            certs.extend(
                reqwest::Certificate::from_pem_bundle(&ca.pem)
                    .map_err(|_| ConfigError::CaNotPem(ca.path.clone()))?,
            );
        }
        match builder().tls_certs_merge(certs.clone()).build() {
            Ok(client) => Ok(client),
            // Some verifiers cannot merge roots: trust only the given CA then.
            Err(_) => builder()
                .tls_certs_only(certs)
                .build()
                .map_err(|e| ConfigError::Client(e.to_string())),
        }
    }

    /// The oci-client configuration for `host` with these settings.
    pub fn oci_client_config(&self, host: &str) -> oci_client::client::ClientConfig {
        use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
        ClientConfig {
            protocol: if uses_tls(host) {
                ClientProtocol::Https
            } else {
                ClientProtocol::Http
            },
            platform_resolver: None,
            extra_root_certificates: self
                .cas(Some(host))
                .into_iter()
                .map(|ca| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: ca.pem.clone(),
                })
                .collect(),
            connect_timeout: Some(self.connect),
            read_timeout: Some(self.idle),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        }
    }
}

/// The process-wide configuration, read from the environment once.
pub fn config() -> Result<&'static NetConfig, ConfigError> {
    static CONFIG: OnceLock<Result<NetConfig, ConfigError>> = OnceLock::new();
    CONFIG
        .get_or_init(NetConfig::from_env)
        .as_ref()
        .map_err(Clone::clone)
}

/// The process-wide HTTP client (one connection pool for lookasides and
/// mirrors), built from [`config`] once.
pub fn http_client() -> Result<reqwest::Client, ConfigError> {
    static CLIENT: OnceLock<Result<reqwest::Client, ConfigError>> = OnceLock::new();
    CLIENT.get_or_init(|| config()?.http_client()).clone()
}

/// True for hosts spoken to over plain HTTP: 127.0.0.0/8, localhost, [::1].
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host)
    };
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `host` is spoken to over TLS: every non-loopback host, and
/// loopback hosts listed in `$STAGEX_TLS_HOSTS`.
pub fn uses_tls(host: &str) -> bool {
    !is_loopback(host)
        || std::env::var(TLS_HOSTS_ENV)
            .map(|list| list.split(',').any(|h| h.trim() == host))
            .unwrap_or(false)
}

/// `host[:port]` of an `http(s)://` URL, for messages (the URL itself when
/// it has no host part).
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_use_plain_http() {
        for host in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:80",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "registry.example",
            "10.0.0.1:5000",
            "localhost.example:5000",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn timeouts_follow_one_number() {
        let c = NetConfig::with_timeout(2);
        assert_eq!(c.connect, Duration::from_secs(2));
        assert_eq!(c.idle, Duration::from_secs(2));
        assert_eq!(c.document, Duration::from_secs(4));
        let d = NetConfig::with_timeout(DEFAULT_TIMEOUT_SECS);
        assert_eq!(d.connect, Duration::from_secs(MAX_CONNECT_SECS));
        assert_eq!(d.idle, Duration::from_secs(30));
        assert_eq!(NetConfig::parse_timeout(" 5 ").unwrap(), 5);
        for bad in ["0", "-1", "1.5", "soon", ""] {
            assert!(NetConfig::parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(host_of("http://127.0.0.1:81/a/b"), "127.0.0.1:81");
        assert_eq!(host_of("https://u:p@h.example/x?y"), "h.example");
        assert_eq!(host_of("h.example"), "h.example");
    }
}
