//! Owns: manifests on a registry: a GET or HEAD by tag or digest (exact
//! bytes, capped, every manifest type we read accepted), the digest a
//! registry gives for a tag, and a push of exact bytes under a tag or
//! digest. The client, its auth and its error mapping are in `mod.rs`.
use oci_client::RegistryOperation;
use reqwest::StatusCode;

use super::*;

impl RegistryClient {
    /// A GET or HEAD of `repo`'s manifest `tag_or_digest`, accepting every
    /// manifest type we read, and its name for messages.
    fn manifest_request(
        &self,
        method: reqwest::Method,
        repo: &str,
        tag_or_digest: &str,
    ) -> (String, reqwest::RequestBuilder) {
        let what = format!("manifest {}", self.url(repo, &sep(tag_or_digest)));
        let request = self
            .http
            .request(
                method,
                self.endpoint(repo, &format!("manifests/{tag_or_digest}")),
            )
            .header(ACCEPT, ACCEPTED.join(", "));
        (what, request)
    }

    /// Pulls a manifest or index by tag or digest: exact bytes and their
    /// digest. A digest reference is checked against the bytes.
    pub fn pull_manifest(
        &self,
        repo: &str,
        tag_or_digest: &str,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        let (what, request) = self.manifest_request(reqwest::Method::GET, repo, tag_or_digest);
        let bytes = self.small(
            repo,
            RegistryOperation::Pull,
            &what,
            request,
            &[StatusCode::OK],
            |response| self.read_capped(response, MAX_MANIFEST_BYTES, &what),
        )?;
        let digest = Digest::of_bytes(&bytes);
        if tag_or_digest.starts_with("sha256:") && digest.to_string() != tag_or_digest {
            return Err(RegistryError::DigestMismatch {
                host: self.host.clone(),
                what,
                expected: tag_or_digest.to_string(),
                actual: digest.to_string(),
            });
        }
        Ok((bytes, digest))
    }

    /// The digest the registry serves for `repo:tag_or_digest`: asked
    /// with HEAD (its `Docker-Content-Digest`); a registry that answers
    /// without that header is asked for the bytes, which are hashed.
    pub fn manifest_digest(
        &self,
        repo: &str,
        tag_or_digest: &str,
    ) -> Result<Digest, RegistryError> {
        let (what, request) = self.manifest_request(reqwest::Method::HEAD, repo, tag_or_digest);
        let told = self.small(
            repo,
            RegistryOperation::Pull,
            &what,
            request,
            &[StatusCode::OK],
            |response| async move { Ok(header_digest(response.headers())) },
        )?;
        match told {
            Some(digest) => Ok(digest),
            None => self.pull_manifest(repo, tag_or_digest).map(|(_, d)| d),
        }
    }

    /// Pushes manifest or index bytes exactly as given, under a tag or
    /// digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        tag_or_digest: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let what = format!("push of manifest {}", self.url(repo, &sep(tag_or_digest)));
        let content_type = HeaderValue::from_str(media_type).map_err(|_| RegistryError::Local {
            what: what.clone(),
            detail: format!("bad media type {media_type:?}"),
        })?;
        let request = self
            .http
            .put(self.endpoint(repo, &format!("manifests/{tag_or_digest}")))
            .header(CONTENT_TYPE, content_type)
            .body(bytes.to_vec());
        self.small(
            repo,
            RegistryOperation::Push,
            &what,
            request,
            &[StatusCode::CREATED, StatusCode::OK, StatusCode::ACCEPTED],
            |_| async { Ok(()) },
        )
    }
}
