//! Owns: READING one image's signature files from a lookaside (a directory
//! or http(s)://) as data for sync and audit: every `signature-N` until the
//! first missing one, with how the list ended (a real 404, a soft 404, a
//! 403 or other status, a transport error), conditional requests when the
//! caller knows the files' validators (304 = unchanged, no body), and on a
//! directory the files hidden behind a gap.
//!
//! It does not judge signatures and draws no UI, nor walk a store itself:
//! a directory is read by `FileLookaside::read`, http(s) by
//! `HttpLookaside::walk` (the one walker per transport); this module turns
//! what they return into a `Listing` of the walker's own file type
//! (`http::Walked`, `http::Read`; a directory's files too), as methods of
//! the one store type, `lookaside::Lookaside`. Async: the caller owns the
//! runtime.
use anyhow::Result;

use crate::lookaside::fetch::{self, Validators};
use crate::lookaside::file::{read_signature, FileLookaside};
use crate::lookaside::http::{Answer, HttpLookaside, Read, Stop, WalkEnd, Walked};
use crate::lookaside::location::ReaderUnauthorized;
use crate::lookaside::{max_signatures, Fetched, Lookaside};
use crate::sign::image::ImageTarget;

/// Why reading stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The first missing file (404 / no such file): the normal end.
    Missing,
    /// 128 files read: readers stop there.
    Limit,
    /// An HTML page with status 200 at this file.
    SoftNotFound { name: String, location: String },
    /// 401: the message says which credentials were sent and how a
    /// reader is given them.
    Unauthorized {
        name: String,
        error: ReaderUnauthorized,
    },
    /// A status other than 200/304/401/404 (after retries).
    Status {
        name: String,
        location: String,
        status: u16,
    },
    /// A transport failure (timeout, reset, redirect loop...) or a file
    /// system error, after retries.
    Error { location: String, message: String },
}

impl End {
    /// True when the list is known to be complete.
    pub fn is_clean(&self) -> bool {
        matches!(self, End::Missing | End::Limit)
    }
}

/// One image's files as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<Walked>,
    pub end: End,
    /// Files after a gap (directories only), with their content.
    pub hidden: Vec<Walked>,
}

impl Lookaside {
    /// Reads `signature-1..` of `image`. `known[n-1]`, when given and not
    /// empty, makes the request for `signature-n` conditional.
    pub async fn list(&self, image: &ImageTarget, known: &[Validators]) -> Listing {
        match self {
            Lookaside::File(f) => list_file(f, image),
            Lookaside::Http(h) => list_http(h, image, known).await,
        }
    }

    /// One file, unconditionally (to get the bytes behind a 304).
    pub async fn get(&self, image: &ImageTarget, name: &str) -> Result<Read, End> {
        match self {
            Lookaside::File(f) => {
                let listing = list_file(f, image);
                listing
                    .files
                    .into_iter()
                    .find(|e| e.name == name)
                    .map(|e| e.read)
                    .ok_or(listing.end)
            }
            Lookaside::Http(h) => {
                let url = h.url(&image.repository_path, &image.digest, name);
                match get_one(h, name, &url).await {
                    Ok(Some(file)) => Ok(file.read),
                    Ok(None) => Err(End::Missing),
                    Err(end) => Err(end),
                }
            }
        }
    }

    /// Over http: which of the `count` files after `signature-<after>`
    /// exist (a gap cannot be listed, only probed).
    pub async fn probe_after(&self, image: &ImageTarget, after: u32, count: u32) -> Vec<Walked> {
        let Lookaside::Http(h) = self else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for n in after + 1..=(after + count).min(max_signatures()) {
            let name = format!("signature-{n}");
            let url = h.url(&image.repository_path, &image.digest, &name);
            if let Ok(Some(entry)) = get_one(h, &name, &url).await {
                found.push(entry);
            }
        }
        found
    }
}

fn list_file(store: &FileLookaside, image: &ImageTarget) -> Listing {
    let set = match store.read(&image.repository_path, &image.digest) {
        Ok(set) => set,
        Err(e) => {
            return Listing {
                files: Vec::new(),
                end: End::Error {
                    location: store
                        .image_dir(&image.repository_path, &image.digest)
                        .display()
                        .to_string(),
                    message: format!("{e:#}"),
                },
                hidden: Vec::new(),
            }
        }
    };
    let mut end = if set.files.len() as u32 >= max_signatures() {
        End::Limit
    } else {
        End::Missing
    };
    let mut files = Vec::new();
    for f in set.files {
        let read = match f.content {
            Fetched::Blob(body) => Read::Found {
                body,
                validators: Validators::default(),
            },
            Fetched::TooLarge(n) => Read::TooLarge(n),
            // Only http answers are classified as HTML pages; should a
            // store ever say so, the list ends there as over http.
            Fetched::SoftNotFound => {
                end = End::SoftNotFound {
                    name: f.name,
                    location: f.location,
                };
                break;
            }
        };
        files.push(Walked {
            name: f.name,
            url: f.location,
            read,
        });
    }
    let dir = store.image_dir(&image.repository_path, &image.digest);
    let mut hidden = Vec::new();
    for name in set.hidden {
        let path = dir.join(&name);
        let location = path.display().to_string();
        let read = match read_signature(&path) {
            Ok(Some(Fetched::Blob(body))) => Read::Found {
                body,
                validators: Validators::default(),
            },
            Ok(Some(Fetched::TooLarge(n))) => Read::TooLarge(n),
            // Removed since the listing, or (never for files) a page.
            Ok(Some(Fetched::SoftNotFound)) | Ok(None) => continue,
            // An unreadable file is not an empty one: the listing fails.
            Err(e) => {
                end = End::Error {
                    location,
                    message: format!("{e:#}"),
                };
                break;
            }
        };
        hidden.push(Walked {
            url: location,
            name,
            read,
        });
    }
    Listing { files, end, hidden }
}

/// The one http walker's answer as a `Listing`: each file an entry, the
/// end as `end_of` classifies a stopping answer.
async fn list_http(store: &HttpLookaside, image: &ImageTarget, known: &[Validators]) -> Listing {
    let walk = store
        .walk(&image.repository_path, &image.digest, known)
        .await;
    let end = match walk.end {
        WalkEnd::Missing => End::Missing,
        WalkEnd::Limit => End::Limit,
        WalkEnd::Stopped { name, url, stop } => end_of(store, name, url, stop),
        WalkEnd::Failed(e) => failed(e),
    };
    Listing {
        files: walk.files,
        end,
        hidden: Vec::new(),
    }
}

/// One unconditional GET: an entry, `None` at a 404, or how a list would
/// end there (classified as the walk classifies it).
async fn get_one(store: &HttpLookaside, name: &str, url: &str) -> Result<Option<Walked>, End> {
    match store.get(url, None).await {
        Err(e) => Err(failed(e)),
        Ok(outcome) => match Answer::of(outcome, false) {
            Answer::File(read) => Ok(Some(Walked {
                name: name.into(),
                url: url.into(),
                read,
            })),
            Answer::Missing => Ok(None),
            Answer::Stop(stop) => Err(end_of(store, name.into(), url.into(), stop)),
        },
    }
}

/// How a list ends at an answer that stops it.
fn end_of(store: &HttpLookaside, name: String, location: String, stop: Stop) -> End {
    match stop {
        Stop::SoftNotFound => End::SoftNotFound { name, location },
        Stop::Unauthorized => End::Unauthorized {
            error: store.unauthorized(&location),
            name,
        },
        Stop::Status(status) => End::Status {
            name,
            location,
            status,
        },
    }
}

fn failed(e: fetch::FetchError) -> End {
    End::Error {
        location: e.url,
        message: e.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Digest;
    use crate::oci::reference::DockerReference;

    fn image(digest: &Digest) -> ImageTarget {
        ImageTarget {
            name: "core-x".into(),
            digest: digest.clone(),
            platform: None,
            identity: "stagex/core-x:1.0".into(),
            reference: DockerReference::parse("stagex/core-x:1.0").unwrap(),
            repository_path: "stagex/core-x".into(),
        }
    }

    #[test]
    fn a_hidden_file_that_cannot_be_read_fails_the_listing() {
        let root = tempfile::tempdir().unwrap();
        let store = FileLookaside::new(root.path());
        let digest = Digest::of_bytes(b"hidden");
        let dir = store.image_dir("stagex/core-x", &digest);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("signature-1"), b"one").unwrap();
        std::fs::write(dir.join("signature-3"), b"three").unwrap();
        let listing = list_file(&store, &image(&digest));
        assert_eq!(listing.end, End::Missing);
        assert_eq!(listing.files.len(), 1);
        assert!(
            matches!(&listing.hidden[..], [Walked { read: Read::Found { body, .. }, .. }] if body == b"three")
        );
        // A directory where a file should be: an error naming it, never an
        // empty signature.
        std::fs::create_dir(dir.join("signature-5")).unwrap();
        let listing = list_file(&store, &image(&digest));
        assert!(
            matches!(&listing.end, End::Error { location, .. } if location.ends_with("signature-5")),
            "{:?}",
            listing.end
        );
    }
}
