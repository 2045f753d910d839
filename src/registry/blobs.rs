//! Owns: the blob requests to a registry (the pull is in `pull.rs`):
//! existence checks, cross-repository mounts (the raw answer) and the
//! one-request upload with its idle watchdog. The rule that combines them
//! (existing / mounted / uploaded, and what a refused mount means) is
//! `push.rs`; the client, its auth and its error mapping are in `mod.rs`.
use super::*;

impl RegistryClient {
    /// Whether the blob must be sent to `repo`: false when the registry
    /// holds it. A server error (5xx) answered to the HEAD means "send it":
    /// a docker-registry killed while committing a blob can leave the
    /// repository's link to it half-written, answering 500 for that blob
    /// until an upload rewrites the link; a registry that is really failing
    /// fails the upload too.
    pub fn needs_blob(&self, repo: &str, digest: &Digest) -> Result<bool, RegistryError> {
        match self.blob_exists(repo, digest) {
            Err(RegistryError::Server { status, .. }) if status >= 500 => Ok(true),
            answer => answer.map(|there| !there),
        }
    }

    /// True if `repo` on this registry has the blob.
    pub fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let what = format!("blob {}", self.url(repo, &format!("/blobs/{digest}")));
        let request = self
            .http
            .head(self.endpoint(repo, &format!("blobs/{digest}")));
        let found = self.small(
            repo,
            RegistryOperation::Pull,
            &what,
            request,
            &[StatusCode::OK],
            |_| async { Ok(()) },
        );
        match found {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Asks the registry to mount `digest` from `from_repo` into `repo`:
    /// 201 is `Mounted`, 202 `NotMounted` (the caller uploads); any other
    /// answer (401, 403, 5xx, ...) is an error. What such an error means
    /// for a push is decided once, in `push::read_mount`.
    pub fn mount_blob(
        &self,
        repo: &str,
        from_repo: &str,
        digest: &Digest,
    ) -> Result<Mount, RegistryError> {
        let what = format!(
            "mount of {digest} from {} into {}",
            self.url(from_repo, ""),
            self.url(repo, "")
        );
        let request = self
            .http
            .post(self.endpoint(repo, "blobs/uploads/"))
            .query(&[("mount", digest.to_string().as_str()), ("from", from_repo)])
            .header(reqwest::header::CONTENT_LENGTH, "0");
        let status = self.small(
            repo,
            RegistryOperation::Push,
            &what,
            request,
            &[StatusCode::CREATED, StatusCode::ACCEPTED],
            |response| async move { Ok(response.status()) },
        )?;
        Ok(if status == StatusCode::CREATED {
            Mount::Mounted
        } else {
            Mount::NotMounted
        })
    }

    /// Uploads a blob from `layout` in constant memory, as one progress
    /// task: one request carries the bytes (see `upload`), their size
    /// checked while they are read (`upload::SizedChunks`); the registry
    /// checks their digest.
    pub fn upload_blob(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        progress: &dyn Progress,
    ) -> Result<(), RegistryError> {
        let task = push_task(progress, descriptor);
        self.upload(repo, descriptor, layout, &task)
    }

    fn upload(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        task: &Task<'_>,
    ) -> Result<(), RegistryError> {
        let what = format!(
            "upload of blob {}",
            self.url(repo, &format!("/blobs/{}", descriptor.digest))
        );
        let path = layout.blob_path(&descriptor.digest);
        let local = |detail: String| RegistryError::Local {
            what: what.clone(),
            detail,
        };
        let file = File::open(&path)
            .map_err(|e| local(format!("blob missing from {}: {e}", path.display())))?;
        let url = self.open_upload(repo, &descriptor.digest, &what)?;
        // Credentials only go back where they came from: a Location on
        // another origin (a storage backend) gets the bytes, not the token.
        let authorization = if self.same_origin(&url) {
            net::block_on(self.authorize(repo, RegistryOperation::Push, &what))?
        } else {
            None
        };
        let body = upload::channel_body();
        let mut request = self
            .upload_client()?
            .put(url)
            .header(CONTENT_LENGTH, descriptor.size)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body.stream);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let (idle, activity) = (self.config.idle, body.activity);
        // The exchange runs on the runtime while this thread reads and
        // feeds the body.
        let exchange = net::runtime().spawn(async move {
            tokio::select! {
                answer = answer_of(request) => Some(answer),
                _ = activity.stalled(idle) => None,
            }
        });
        let fed = upload::feed(file, descriptor, &body.sender, idle, |n| task.advance(n));
        drop(body.sender);
        let answer =
            net::block_on(exchange).map_err(|e| local(format!("the upload task failed: {e}")))?;
        self.upload_outcome(repo, descriptor, &what, &path, fed, answer)
    }

    /// What an upload came to: a local failure first (the request was
    /// aborted because of it), then silence, the transport, the status and
    /// the digest the registry reports.
    fn upload_outcome(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        what: &str,
        path: &std::path::Path,
        fed: Result<(), upload::FeedError>,
        answer: Option<Result<Answer, reqwest::Error>>,
    ) -> Result<(), RegistryError> {
        let local = |detail: String| RegistryError::Local {
            what: what.to_string(),
            detail,
        };
        let (status, headers, body) = match (fed, answer) {
            (Err(upload::FeedError::Io(e)), _) => {
                return Err(local(format!(
                    "reading {}: {e}; nothing was committed on the registry",
                    path.display()
                )))
            }
            (Err(upload::FeedError::Mismatch(e)), _) => {
                return Err(local(format!(
                    "{}: {e}; the upload was aborted, nothing was committed ({REFETCH})",
                    path.display()
                )))
            }
            (_, None) => return Err(RegistryError::deadline(&self.host, what, self.config.idle)),
            (_, Some(Err(e))) => return Err(self.transport(what, &e)),
            (_, Some(Ok(answer))) => answer,
        };
        if status == StatusCode::BAD_REQUEST && net::error::has_oci_code(&body, "DIGEST_INVALID") {
            // The registry hashed the bytes (upload.rs leaves that to it).
            return Err(local(format!(
                "{} does not match its digest {}: {} refused the bytes (DIGEST_INVALID) and committed nothing ({REFETCH})",
                path.display(),
                descriptor.digest,
                self.host
            )));
        }
        if status != StatusCode::CREATED {
            let error = self.status_error(what, status, &headers, &body);
            self.forget_refused(repo, RegistryOperation::Push, &error);
            return Err(error);
        }
        match header_digest(&headers) {
            Some(got) if got != descriptor.digest => Err(RegistryError::DigestMismatch {
                host: self.host.clone(),
                what: what.to_string(),
                expected: descriptor.digest.to_string(),
                actual: got.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// True when `url` is on this registry (scheme, host and port).
    pub(super) fn same_origin(&self, url: &reqwest::Url) -> bool {
        reqwest::Url::parse(&format!("{}://{}/", self.scheme, self.api_host))
            .is_ok_and(|own| own.origin() == url.origin())
    }

    /// Opens an upload session (`POST /blobs/uploads/`, 202) and returns
    /// where to `PUT` the bytes of `digest`.
    fn open_upload(
        &self,
        repo: &str,
        digest: &Digest,
        what: &str,
    ) -> Result<reqwest::Url, RegistryError> {
        let endpoint = self.endpoint(repo, "blobs/uploads/");
        let request = self.http.post(&endpoint).header(CONTENT_LENGTH, "0");
        let location = self.small(
            repo,
            RegistryOperation::Push,
            what,
            request,
            &[StatusCode::ACCEPTED],
            |response| async move {
                Ok(response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string))
            },
        )?;
        let protocol = |detail: String| RegistryError::Protocol {
            host: self.host.clone(),
            what: what.to_string(),
            detail,
        };
        let location =
            location.ok_or_else(|| protocol("202 without a Location for the upload".into()))?;
        let mut url = reqwest::Url::parse(&endpoint)
            .and_then(|base| base.join(&location))
            .map_err(|e| protocol(format!("upload Location {location:?}: {e}")))?;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        Ok(url)
    }
}
