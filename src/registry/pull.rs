//! Owns: the verified streaming pull of one blob into a layout, with an
//! optional tee that sees every chunk as it arrives (the store indexes a
//! layer from it in the same pass). The bytes are checked against the
//! descriptor's size while they stream and against its digest before the
//! blob is stored under its name; the tee's consumer must not keep
//! anything it derived unless the pull returns `Ok`.
use super::*;

impl RegistryClient {
    /// Streams a blob into `layout` (no-op if present), verified against
    /// the descriptor's digest and size; nothing is stored on mismatch.
    /// Only silence (the idle timeout) ends a slow transfer.
    pub fn pull_blob(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        progress: &dyn Progress,
    ) -> Result<(), RegistryError> {
        if layout.has_blob(&descriptor.digest) {
            return Ok(());
        }
        self.pull_blob_teed(repo, descriptor, layout, progress, &mut |_| {})
    }

    /// `pull_blob` that also hands every chunk to `tee` as it arrives (the
    /// blob is fetched even when `layout` has it). `Ok` means the bytes the
    /// tee saw are exactly the blob's: the digest and size matched and the
    /// blob is stored.
    pub fn pull_blob_teed(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        progress: &dyn Progress,
        tee: &mut dyn FnMut(&[u8]),
    ) -> Result<(), RegistryError> {
        let digest = &descriptor.digest;
        let what = format!("blob {}", self.url(repo, &format!("/blobs/{digest}")));
        let local_error = |e: &dyn std::fmt::Display| RegistryError::Local {
            what: what.clone(),
            detail: e.to_string(),
        };
        let mut writer = layout
            .blob_writer()
            .map_err(|e| local_error(&format!("{e:#}")))?
            .expecting(digest, Some(descriptor.size));
        net::block_on(async {
            let authorization = self.authorize(repo, RegistryOperation::Pull, &what).await?;
            let request = self
                .http
                .get(self.endpoint(repo, &format!("blobs/{digest}")));
            let response = self
                .send(request, authorization, &[StatusCode::OK], &what)
                .await
                .inspect_err(|e| self.forget_refused(repo, RegistryOperation::Pull, e))?;
            let task = Task::start(progress, &digest.to_string(), &what, Some(descriptor.size));
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.transport(&what, &e))?;
                // A hostile registry must not fill the disk: stop at the
                // descriptor's size instead of trusting the stream's end.
                if writer.count() + chunk.len() as u64 > descriptor.size {
                    return Err(RegistryError::TooLarge {
                        host: self.host.clone(),
                        what: what.clone(),
                        limit: descriptor.size,
                        detail: format!(
                            "the registry sent more than the {} bytes the descriptor declares; nothing stored",
                            descriptor.size
                        ),
                    });
                }
                writer.write_all(&chunk).map_err(|e| local_error(&e))?;
                tee(&chunk);
                task.advance(chunk.len() as u64);
            }
            Ok(())
        })?;
        writer.commit().map_err(|e| match e {
            BlobError::Io { .. } => local_error(&e),
            mismatch => RegistryError::DigestMismatch {
                host: self.host.clone(),
                what: what.clone(),
                expected: format!("{digest} ({} bytes)", descriptor.size),
                actual: mismatch.to_string(),
            },
        })?;
        Ok(())
    }
}
