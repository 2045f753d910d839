//! The ONE registry client. Owns: the OCI distribution requests (manifests
//! by tag or digest as exact bytes, or their digest by HEAD; blobs streamed
//! and verified against their digests, existence checks, cross-repository
//! mounts, one-request uploads (`upload`), manifests pushed as exact
//! bytes), run on the shared runtime with the shared timeouts of
//! `crate::net`, and the answers turned into `net::RegistryError` once.
//! Credentials come from `auth`; bearer tokens from oci-client's token
//! exchange, reused through `authz`. It knows nothing about pallets or
//! packages, and draws nothing (progress is reported as events).
pub mod auth;
pub mod authz;
mod blobs;
mod catalog;
pub mod challenge;
mod manifests;
mod pull;
pub mod push;
pub mod upload;

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
    WWW_AUTHENTICATE,
};
use reqwest::StatusCode;

use crate::net::{self, NetConfig, RegistryError};
use crate::oci::blob_writer::BlobError;
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::media_type;
use crate::oci::reference::DockerReference;
use crate::progress::{Progress, Task};
use challenge::Challenge;

pub use crate::net::{is_loopback, uses_tls, TLS_HOSTS_ENV};

/// Largest manifest accepted (containers/image uses the same 4 MiB cap).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Largest error body read (for its OCI error codes).
const MAX_ERROR_BYTES: usize = 64 << 10;

/// The header a registry returns the digest of a manifest or blob in.
const CONTENT_DIGEST: &str = "docker-content-digest";

/// The fix for a blob in out/ that is not what its digest says.
const REFETCH: &str = "rebuild or re-fetch the image in out/";

/// Manifest media types we accept when pulling.
const ACCEPTED: &[&str] = &[
    media_type::OCI_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST,
    media_type::DOCKER_MANIFEST_LIST,
];

/// Splits `host[:port]/repo/path` into `(host, repo)`; a first component
/// without '.', ':' or `localhost` is not a host (error: be explicit).
pub fn split_repository(text: &str) -> Result<(String, String)> {
    let reference = DockerReference::parse_explicit(text)?;
    if reference.tag.is_some() || reference.digest.is_some() {
        anyhow::bail!("{text:?}: expected HOST[:PORT]/REPOSITORY without a tag or digest");
    }
    Ok((reference.domain, reference.path))
}

/// What a push of one blob did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry already had it in the target repository.
    Existed,
    /// Mounted from another repository on the same registry.
    Mounted,
    /// Uploaded (this many bytes).
    Uploaded(u64),
}

/// The answer to a mount request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mount {
    /// 201: the blob is now in the target repository.
    Mounted,
    /// 202: the registry did not mount it (it opened an upload instead):
    /// the caller uploads.
    NotMounted,
}

/// A client for one registry host.
pub struct RegistryClient {
    /// The host as the user wrote it (messages, credentials, certs.d).
    host: String,
    /// The host the API is served on (`api_host`): what requests go to.
    api_host: String,
    scheme: &'static str,
    http: reqwest::Client,
    /// For upload bodies: no read timeout (an idle watchdog instead).
    upload_http: std::sync::OnceLock<Result<reqwest::Client, net::ConfigError>>,
    /// Token exchange, catalog and tag lists.
    oci: Client,
    auth: RegistryAuth,
    /// Where `auth` came from (named when the registry refuses it).
    credential_source: Option<String>,
    authorizations: authz::Authorizations,
    config: NetConfig,
}

impl RegistryClient {
    /// A client for `host` (`127.0.0.1:5000`, `registry.example`) with the
    /// process-wide network configuration.
    pub fn new(host: &str) -> Result<RegistryClient, RegistryError> {
        let config = net::config()?;
        // The shared pool, unless certs.d scopes CAs to hosts.
        let http = if config.has_certs() {
            config.http_client_for(host)?
        } else {
            net::http_client()?
        };
        RegistryClient::build(host, config.clone(), http)
    }

    /// A client with its own configuration (e.g. shorter timeouts).
    pub fn with_config(host: &str, config: NetConfig) -> Result<RegistryClient, RegistryError> {
        let http = config.http_client_for(host)?;
        RegistryClient::build(host, config, http)
    }

    fn build(
        host: &str,
        config: NetConfig,
        http: reqwest::Client,
    ) -> Result<RegistryClient, RegistryError> {
        let oci_config = config.oci_client_config(host);
        let found = auth::credentials(host).map_err(|e| RegistryError::Local {
            what: format!("credentials for {host}"),
            detail: format!("{e:#}"),
        })?;
        let credential_source = found.as_ref().map(|f| f.source.clone());
        let auth = match found {
            Some(f) => RegistryAuth::Basic(f.user, f.password),
            None => RegistryAuth::Anonymous,
        };
        Ok(RegistryClient {
            host: host.to_string(),
            api_host: api_host(host),
            scheme: if uses_tls(host) { "https" } else { "http" },
            http,
            upload_http: std::sync::OnceLock::new(),
            oci: Client::new(oci_config),
            auth,
            credential_source,
            authorizations: authz::Authorizations::default(),
            config,
        })
    }

    /// The client for upload bodies, made on the first upload (most
    /// clients only read).
    fn upload_client(&self) -> Result<reqwest::Client, RegistryError> {
        self.upload_http
            .get_or_init(|| self.config.upload_client_for(&self.host))
            .clone()
            .map_err(RegistryError::from)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// `HOST/REPO` + `what` (for messages).
    fn url(&self, repo: &str, what: &str) -> String {
        format!("{}/{repo}{what}", self.host)
    }

    fn endpoint(&self, repo: &str, path: &str) -> String {
        format!("{}://{}/v2/{repo}/{path}", self.scheme, self.api_host)
    }

    /// The Authorization header for `repo`: a bearer token from the
    /// registry's token service, else basic credentials, else none; reused
    /// from the cache while good.
    async fn authorize(
        &self,
        repo: &str,
        operation: RegistryOperation,
        what: &str,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let push = operation == RegistryOperation::Push;
        if let Some(header) = self.authorizations.get(repo, push, Instant::now()) {
            return Ok(header);
        }
        let (header, bearer) = self.ask_authorization(repo, operation, what).await?;
        self.authorizations
            .put(repo, push, header.clone(), bearer, Instant::now());
        Ok(header)
    }

    /// Asks the registry (an anonymous `GET /v2/`) how to authorize, and
    /// only after its 401 challenge sends credentials: basic ones to the
    /// registry, or to the token service its Bearer challenge names (see
    /// `challenge`). The header and whether it is a bearer token.
    async fn ask_authorization(
        &self,
        repo: &str,
        operation: RegistryOperation,
        what: &str,
    ) -> Result<(Option<HeaderValue>, bool), RegistryError> {
        let (value, bearer) = match self.challenge(what).await? {
            Challenge::None => return Ok((None, false)),
            Challenge::Basic => match self.basic_for(&self.origin()) {
                Some(basic) => (basic, false),
                None => return Ok((None, false)),
            },
            Challenge::Bearer { realm, service } => {
                let token = self
                    .token(&realm, service.as_deref(), repo, operation, what)
                    .await?;
                (format!("Bearer {token}"), true)
            }
        };
        HeaderValue::from_str(&value)
            .map(|v| (Some(v), bearer))
            .map_err(|_| RegistryError::Local {
                what: what.to_string(),
                detail: "credentials are not a valid HTTP header value".into(),
            })
    }

    /// `scheme://api_host/`: where this registry's own requests go.
    fn origin(&self) -> String {
        format!("{}://{}/", self.scheme, self.api_host)
    }

    /// `Basic <base64>` of this registry's credentials, when it has some
    /// and `url` may receive them (`challenge::may_send_to`).
    fn basic_for(&self, url: &str) -> Option<String> {
        use base64::Engine;
        let RegistryAuth::Basic(user, pass) = &self.auth else {
            return None;
        };
        challenge::may_send_to(url).then(|| {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            format!("Basic {encoded}")
        })
    }

    /// The registry's answer to an anonymous `GET /v2/`.
    async fn challenge(&self, what: &str) -> Result<Challenge, RegistryError> {
        let url = format!("{}v2/", self.origin());
        net::within(self.config.document, &self.host, what, async {
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| self.transport(what, &e))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(Challenge::None);
            }
            let values = response.headers().get_all(WWW_AUTHENTICATE);
            Ok(challenge::parse(
                values.iter().filter_map(|v| v.to_str().ok()),
            ))
        })
        .await
    }

    /// A token for `operation` on `repo` from the token service `realm`,
    /// with this registry's credentials when `realm` may receive them
    /// (an anonymous token otherwise).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        repo: &str,
        operation: RegistryOperation,
        what: &str,
    ) -> Result<String, RegistryError> {
        let actions = match operation {
            RegistryOperation::Pull => "pull",
            RegistryOperation::Push => "pull,push",
        };
        let mut query = vec![("scope", format!("repository:{repo}:{actions}"))];
        query.extend(service.map(|s| ("service", s.to_string())));
        let request = self.http.get(realm).query(&query);
        let authorization = self
            .basic_for(realm)
            .and_then(|v| HeaderValue::from_str(&v).ok());
        net::within(self.config.document, &self.host, what, async {
            let response = self
                .send(request, authorization, &[StatusCode::OK], what)
                .await?;
            let body = self.read_capped(response, MAX_ERROR_BYTES, what).await?;
            token_of(&body).ok_or_else(|| RegistryError::Protocol {
                host: self.host.clone(),
                what: what.to_string(),
                detail: format!("the token service {realm} answered no token"),
            })
        })
        .await
    }

    /// The credentials oci-client may use (catalog, tag lists): this
    /// registry's when its challenge lets them go where oci-client sends
    /// them, else none.
    fn oci_auth(&self, what: &str) -> Result<RegistryAuth, RegistryError> {
        let allowed = match net::block_on(self.challenge(what))? {
            Challenge::None => false,
            Challenge::Basic => challenge::may_send_to(&self.origin()),
            Challenge::Bearer { realm, .. } => challenge::may_send_to(&realm),
        };
        Ok(if allowed {
            self.auth.clone()
        } else {
            RegistryAuth::Anonymous
        })
    }

    /// One small exchange under the document deadline: credentials for
    /// `operation` on `repo`, `request` sent and its status checked
    /// against `expected`, then `read` of the response. A 401 answered to
    /// cached credentials drops them and asks once more with fresh ones.
    fn small<T, F>(
        &self,
        repo: &str,
        operation: RegistryOperation,
        what: &str,
        request: reqwest::RequestBuilder,
        expected: &[StatusCode],
        read: impl FnOnce(reqwest::Response) -> F,
    ) -> Result<T, RegistryError>
    where
        F: std::future::Future<Output = Result<T, RegistryError>>,
    {
        net::block_on(net::within(self.config.document, &self.host, what, async {
            let again = request.try_clone();
            let authorization = self.authorize(repo, operation, what).await?;
            let response = match self.send(request, authorization, expected, what).await {
                Err(RegistryError::Unauthorized { .. }) if again.is_some() => {
                    let push = operation == RegistryOperation::Push;
                    self.authorizations.forget(repo, push);
                    let authorization = self.authorize(repo, operation, what).await?;
                    let request = again.expect("checked above");
                    self.send(request, authorization, expected, what).await
                }
                other => other,
            }
            .inspect_err(|e| self.forget_refused(repo, operation, e))?;
            read(response).await
        }))
    }

    /// Drops cached credentials the registry refused.
    fn forget_refused(&self, repo: &str, operation: RegistryOperation, error: &RegistryError) {
        if matches!(error, RegistryError::Unauthorized { .. }) {
            self.authorizations
                .forget(repo, operation == RegistryOperation::Push);
        }
    }

    /// Sends `request` (with credentials); the response if its status is
    /// one of `expected`, else the classified error.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        authorization: Option<HeaderValue>,
        expected: &[StatusCode],
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let request = match authorization {
            Some(value) => request.header(AUTHORIZATION, value),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.transport(what, &e))?;
        if expected.contains(&response.status()) {
            return Ok(response);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let body = self
            .read_capped(response, MAX_ERROR_BYTES, what)
            .await
            .unwrap_or_default();
        Err(self.status_error(what, status, &headers, &body))
    }

    fn transport(&self, what: &str, error: &reqwest::Error) -> RegistryError {
        RegistryError::from_reqwest(&self.host, what, error, &self.config)
    }

    /// A non-success answer, naming where refused credentials came from.
    fn status_error(
        &self,
        what: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> RegistryError {
        RegistryError::from_status(&self.host, what, status, headers, body)
            .with_credential_source(self.credential_source.as_deref())
    }

    /// An oci-client failure, naming where refused credentials came from.
    fn oci_error(
        &self,
        what: &str,
        error: oci_client::errors::OciDistributionError,
    ) -> RegistryError {
        RegistryError::from_oci(&self.host, what, error, &self.config)
            .with_credential_source(self.credential_source.as_deref())
    }

    /// The body, refused past `limit` bytes without reading further.
    async fn read_capped(
        &self,
        response: reqwest::Response,
        limit: usize,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        match capped_body(response, limit).await {
            Ok(Capped::Whole(body)) => Ok(body),
            Ok(Capped::Over(_)) => Err(RegistryError::TooLarge {
                host: self.host.clone(),
                what: what.to_string(),
                limit: limit as u64,
                detail: format!(
                    "over the {limit}-byte limit (as in containers/image); not read further"
                ),
            }),
            Err(e) => Err(self.transport(what, &e)),
        }
    }

    /// The idle timeout this client uses (for callers' messages).
    pub fn idle_timeout(&self) -> Duration {
        self.config.idle
    }
}

/// The host the registry API of `host` is served on, resolved exactly as
/// oci-client resolves it for the token exchange (`Reference::
/// resolve_registry`: Docker Hub's `docker.io` is served on
/// `index.docker.io`), so requests and tokens go to the same place.
fn api_host(host: &str) -> String {
    Reference::with_tag(host.to_string(), "x".into(), "latest".into())
        .resolve_registry()
        .to_string()
}

/// Status, headers and (capped) body of an answer.
type Answer = (StatusCode, HeaderMap, Vec<u8>);

/// Sends an upload request: its answer.
async fn answer_of(request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let response = request.send().await?;
    let (status, headers) = (response.status(), response.headers().clone());
    // An error body past the cap is cut: only its start is shown.
    let body = match capped_body(response, MAX_ERROR_BYTES).await? {
        Capped::Whole(body) | Capped::Over(body) => body,
    };
    Ok((status, headers, body))
}

/// A body read up to a cap.
enum Capped {
    Whole(Vec<u8>),
    /// The cap was reached: what came before the chunk that passed it.
    Over(Vec<u8>),
}

/// Reads `response`'s body, stopping (unread further) at `limit` bytes.
async fn capped_body(response: reqwest::Response, limit: usize) -> Result<Capped, reqwest::Error> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Ok(Capped::Over(body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Capped::Whole(body))
}

/// The `Docker-Content-Digest` an answer carries, when valid.
fn header_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v.trim()).ok())
}

/// The progress task of pushing one blob (`push <12 hex digits>`).
fn push_task<'a>(progress: &'a dyn Progress, descriptor: &Descriptor) -> Task<'a> {
    Task::start(
        progress,
        &descriptor.digest.to_string(),
        &format!("push {}", &descriptor.digest.hex()[..12]),
        Some(descriptor.size),
    )
}

/// `:tag` or `@sha256:..` as written after a repository.
fn sep(tag_or_digest: &str) -> String {
    if tag_or_digest.starts_with("sha256:") {
        format!("@{tag_or_digest}")
    } else {
        format!(":{tag_or_digest}")
    }
}

/// The token of a token service's JSON answer (`token`, or OAuth2's
/// `access_token`).
fn token_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_can_serve_many_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<RegistryClient>();
    }

    #[test]
    fn credentials_follow_an_upload_only_on_the_same_origin() {
        let client =
            RegistryClient::with_config("127.0.0.1:5000", NetConfig::with_timeout(5)).unwrap();
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(client.same_origin(&url(
            "http://127.0.0.1:5000/v2/ns/x/blobs/uploads/u?_state=1"
        )));
        for other in [
            "http://127.0.0.1:5001/v2/",
            "https://127.0.0.1:5000/v2/",
            "http://storage.example:5000/v2/",
        ] {
            assert!(!client.same_origin(&url(other)), "{other}");
        }
    }

    #[test]
    fn requests_go_where_the_token_exchange_goes() {
        assert_eq!(api_host("docker.io"), "index.docker.io");
        assert_eq!(api_host("index.docker.io"), "index.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(api_host("registry.example"), "registry.example");
        let client = RegistryClient::with_config("docker.io", NetConfig::with_timeout(5)).unwrap();
        assert_eq!(
            client.host(),
            "docker.io",
            "messages keep the host as written"
        );
        assert_eq!(
            client.endpoint("stagex/core-x", "manifests/1"),
            "https://index.docker.io/v2/stagex/core-x/manifests/1"
        );
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(client.same_origin(&url("https://index.docker.io/v2/stagex/x/blobs/uploads/u")));
        assert!(!client.same_origin(&url("https://docker.io/v2/stagex/x/blobs/uploads/u")));
    }

    #[test]
    fn splits_repositories() {
        assert_eq!(
            split_repository("127.0.0.1:5000/stagex").unwrap(),
            ("127.0.0.1:5000".into(), "stagex".into())
        );
        assert!(split_repository("stagex/core").is_err());
        assert!(split_repository("host.example").is_err());
        assert!(split_repository("host.example/a:1").is_err());
    }
}
