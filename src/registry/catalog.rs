//! Owns: listing a registry: the repositories of its catalog under a
//! prefix and the tags of a repository, both paginated (for `stagex sigs
//! sync --registry`).
use super::*;

/// Listing repositories and tags (for `stagex sigs sync --registry`).
impl RegistryClient {
    /// Every repository of the registry's catalog under `prefix/`
    /// (`/v2/_catalog`, paginated). Registries without a catalog (Docker
    /// Hub) answer an error: name the images with a digests file there.
    pub fn repositories(&self, prefix: &str) -> Result<Vec<String>, RegistryError> {
        let anchor = Reference::with_tag(self.host.clone(), format!("{prefix}/x"), "latest".into());
        let what = format!(
            "the repository catalog of {} (/v2/_catalog; a registry without one needs --digests)",
            self.host
        );
        let auth = self.oci_auth(&what)?;
        let mut all = self.paginate(&what, |last| {
            let (anchor, auth) = (&anchor, &auth);
            async move {
                let page = self
                    .oci
                    .catalog(anchor, auth, Some(PAGE), last.as_deref())
                    .await?;
                Ok(page.repositories)
            }
        })?;
        let wanted = format!("{}/", prefix.trim_end_matches('/'));
        all.retain(|r| r.starts_with(&wanted));
        Ok(all)
    }

    /// Every tag of `repo` (paginated).
    pub fn tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let anchor = Reference::with_tag(self.host.clone(), repo.to_string(), "latest".into());
        let what = format!("the tags of {}", self.url(repo, ""));
        let auth = self.oci_auth(&what)?;
        self.paginate(&what, |last| {
            let (anchor, auth) = (&anchor, &auth);
            async move {
                let page = self
                    .oci
                    .list_tags(anchor, auth, Some(PAGE), last.as_deref())
                    .await?;
                Ok(page.tags)
            }
        })
    }

    /// Collects pages of `PAGE` names (each under the document deadline)
    /// until a short page; `page(last)` asks for the names after `last`.
    fn paginate<F>(
        &self,
        what: &str,
        page: impl Fn(Option<String>) -> F,
    ) -> Result<Vec<String>, RegistryError>
    where
        F: std::future::Future<
            Output = Result<Vec<String>, oci_client::errors::OciDistributionError>,
        >,
    {
        let mut all: Vec<String> = Vec::new();
        loop {
            let names =
                net::block_on(net::within(self.config.document, &self.host, what, async {
                    page(all.last().cloned())
                        .await
                        .map_err(|e| self.oci_error(what, e))
                }))?;
            let full = names.len() >= PAGE;
            all.extend(names);
            if !full {
                return Ok(all);
            }
        }
    }
}

/// Names asked for per page when listing.
const PAGE: usize = 1000;
