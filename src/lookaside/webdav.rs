//! Owns: the WebDAV requests of a mirror written over http(s) (nginx
//! `dav_methods PUT DELETE MKCOL MOVE`): claiming the first free
//! `signature-N` (HEAD, then PUT with `If-None-Match: *`, since nginx's
//! dav module ignores that header; MKCOL of the parents on 409), reading
//! back what was written, and removing and renumbering files for `prune`
//! (DELETE, MOVE with `Overwrite: F`).
//!
//! There is no lock over WebDAV, so two writers of the same blob may both
//! plan it from their listings. A slot found taken while claiming (HEAD
//! 2xx, or PUT 412 from a server that honours `If-None-Match`) was not in
//! the writer's listing: it is read (GET) and, if it already holds exactly
//! the blob, the claim stops there (`Claimed::Found`) and nothing is
//! written; otherwise the next slot is tried. Two writers racing with the
//! same signature therefore store it once (the race left open is the one
//! between one writer's HEAD 404 and its PUT, which nginx's dav module,
//! ignoring `If-None-Match`, cannot close: that PUT answers 204 and is
//! reported as an overwrite).
//!
//! These requests are not retried (the GETs of the listing and the
//! read-back are, in `fetch`): a PUT or MOVE that timed out may still have
//! happened, and trying it again could place a blob twice; the next run's
//! listing sees what did.
//!
//! Hand-written on reqwest on purpose: the WebDAV crates (`reqwest_dav`
//! and the like) wrap PUT/MKCOL/MOVE but neither the never-overwrite
//! claim nor the read-back that are the point here, and would bring a
//! second client beside `crate::net`'s (its timeouts, CAs and errors).
use super::error::StoreError;
use super::fetch::transport;
use super::http::HttpLookaside;
use super::put::{Claimed, Placed};
use super::{max_signatures, signature_dir, Fetched};
use crate::oci::digest::Digest;

impl HttpLookaside {
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self
            .client()
            .request(method, url)
            .timeout(self.policy().timeout);
        match self.auth() {
            Some(c) => request.basic_auth(&c.user, Some(&c.password)),
            None => request,
        }
    }

    /// Sends one write-side request; a 401 is the mirror's message.
    async fn send(
        &self,
        method: &'static str,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<u16, StoreError> {
        let response = request
            .send()
            .await
            .map_err(|e| transport(method, url, self.policy().timeout, e))?;
        match response.status().as_u16() {
            401 => Err(self.unauthorized(url)),
            status => Ok(status),
        }
    }

    /// Sends `method url` and accepts 2xx (and the `also` statuses).
    async fn expect(
        &self,
        method: &'static str,
        url: &str,
        request: reqwest::RequestBuilder,
        also: &[u16],
    ) -> Result<(), StoreError> {
        match self.send(method, url, request).await? {
            200..=299 => Ok(()),
            status if also.contains(&status) => Ok(()),
            status => Err(status_error(method, url, status)),
        }
    }

    /// Writes `blob` at the first free slot from `from` on: HEAD (taken ->
    /// next), PUT with If-None-Match: * (412 -> next; 409 -> MKCOL the
    /// parents once), then read back and compare. A taken slot (not in
    /// the caller's listing, which ends before `from`) holding exactly
    /// `blob` ends the claim: another writer stored it, `Claimed::Found`.
    pub(super) async fn put_new(
        &self,
        repository_path: &str,
        digest: &Digest,
        blob: &[u8],
        from: u32,
    ) -> Result<Claimed, StoreError> {
        let mut n = from.max(1);
        let mut made_collections = false;
        loop {
            if n > max_signatures() {
                return Err(StoreError::Full {
                    location: self.url(repository_path, digest, ""),
                    cap: max_signatures(),
                });
            }
            let name = format!("signature-{n}");
            let url = self.url(repository_path, digest, &name);
            let head = self.request(reqwest::Method::HEAD, &url);
            match self.send("HEAD", &url, head).await? {
                404 => {}
                200..=299 => {
                    if let Some(found) = self.found_at(&name, &url, blob).await? {
                        return Ok(found);
                    }
                    n += 1;
                    continue;
                }
                status => return Err(status_error("HEAD", &url, status)),
            }
            let put = self
                .request(reqwest::Method::PUT, &url)
                .header(reqwest::header::IF_NONE_MATCH, "*")
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(blob.to_vec());
            match self.send("PUT", &url, put).await? {
                201 => {}
                412 => {
                    if let Some(found) = self.found_at(&name, &url, blob).await? {
                        return Ok(found);
                    }
                    n += 1;
                    continue;
                }
                409 if !made_collections => {
                    self.make_collections(repository_path, digest).await?;
                    made_collections = true;
                    continue;
                }
                status @ (200 | 204) => return Err(StoreError::Overwrote { url, status }),
                status => return Err(status_error("PUT", &url, status)),
            }
            return self.read_back(name, url, blob).await.map(Claimed::Wrote);
        }
    }

    /// Reads a slot found taken: `Found` if it holds exactly `blob` (the
    /// same blob stored by another writer since our listing), `None` if it
    /// holds something else, is too large to be it, or is gone again.
    async fn found_at(
        &self,
        name: &str,
        url: &str,
        blob: &[u8],
    ) -> Result<Option<Claimed>, StoreError> {
        let held = self.get_file(url, name).await?.map(|f| f.content);
        Ok(match held {
            Some(Fetched::Blob(bytes)) if bytes == blob => Some(Claimed::Found(Placed {
                name: name.to_string(),
                location: url.to_string(),
            })),
            _ => None,
        })
    }

    /// GETs a file just written and compares it with what was written.
    async fn read_back(
        &self,
        name: String,
        url: String,
        blob: &[u8],
    ) -> Result<Placed, StoreError> {
        match self.get_file(&url, &name).await?.map(|f| f.content) {
            Some(Fetched::Blob(back)) if back == blob => Ok(Placed {
                name,
                location: url,
            }),
            Some(Fetched::TooLarge(size)) => Err(StoreError::TooLarge { url, size }),
            _ => Err(StoreError::ReadBackMismatch { location: url }),
        }
    }

    /// DELETE `remove`, then MOVE the other `visible` files down to a
    /// contiguous 1..k (`Overwrite: F`: never replacing a file).
    pub(super) async fn remove_and_compact(
        &self,
        repository_path: &str,
        digest: &Digest,
        visible: &[String],
        remove: &[String],
    ) -> Result<(), StoreError> {
        for name in remove {
            let url = self.url(repository_path, digest, name);
            let delete = self.request(reqwest::Method::DELETE, &url);
            self.expect("DELETE", &url, delete, &[404]).await?;
        }
        let kept = visible.iter().filter(|n| !remove.contains(n));
        for (i, name) in kept.enumerate() {
            let target = format!("signature-{}", i + 1);
            if *name == target {
                continue;
            }
            let url = self.url(repository_path, digest, name);
            let destination = self.url(repository_path, digest, &target);
            let r#move = reqwest::Method::from_bytes(b"MOVE").expect("valid method");
            let request = self
                .request(r#move, &url)
                .header("Destination", &destination)
                .header("Overwrite", "F");
            self.expect("MOVE", &url, request, &[]).await?;
        }
        Ok(())
    }

    /// MKCOL every directory of the image's path (for WebDAV servers that
    /// do not create parents on PUT; 405 means "exists").
    async fn make_collections(
        &self,
        repository_path: &str,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let dir = signature_dir(repository_path, digest);
        let mut path = String::new();
        for part in dir.split('/') {
            path = format!("{path}/{part}");
            let url = format!("{}{path}/", self.base());
            let mkcol = reqwest::Method::from_bytes(b"MKCOL").expect("valid method");
            self.expect("MKCOL", &url, self.request(mkcol, &url), &[405])
                .await?;
        }
        Ok(())
    }
}

fn status_error(method: &'static str, url: &str, status: u16) -> StoreError {
    StoreError::Status {
        method,
        url: url.to_string(),
        status,
        retry_after: None,
    }
}
