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
//! what they return into a `Listing`. Async: the caller owns the runtime
//! (one client per `Store`, so one connection pool, HTTP/2 where the
//! server speaks it).
use anyhow::Result;

use crate::lookaside::fetch::{self, Outcome, Policy, Validators};
use crate::lookaside::file::{read_signature, FileLookaside};
use crate::lookaside::http::{HttpLookaside, WalkEnd, Walked};
use crate::lookaside::location::Location;
use crate::lookaside::{Fetched, MAX_SIGNATURES};
use crate::sign::image::ImageTarget;

/// A lookaside to read from.
pub enum Store {
    File(FileLookaside),
    /// Credentials from the URL's userinfo, else the host's ~/.netrc entry.
    Http(HttpLookaside),
}

/// What one file gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    Blob {
        bytes: Vec<u8>,
        validators: Validators,
    },
    /// 304 to a conditional request: as the caller's validators describe.
    Unchanged,
    /// Over the 4 MiB limit (not read).
    TooLarge(u64),
}

/// One `signature-N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// Path or URL (for messages).
    pub location: String,
    pub got: Got,
}

/// Why reading stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The first missing file (404 / no such file): the normal end.
    Missing,
    /// 128 files read: readers stop there.
    Limit,
    /// An HTML page with status 200 at this file.
    SoftNotFound { name: String, location: String },
    /// A status other than 200/304/404 (after retries).
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
    pub files: Vec<Entry>,
    pub end: End,
    /// Files after a gap (directories only), with their content.
    pub hidden: Vec<Entry>,
}

impl Store {
    /// `https://...`, `http://...`, `file:///dir` or a directory path.
    pub fn parse(location: &str, policy: Policy) -> Result<Store> {
        Ok(match Location::parse(location)? {
            Location::Directory(path) => Store::File(FileLookaside::new(path)),
            remote @ Location::Http { .. } => {
                let auth = remote.reader_credentials();
                let client = crate::net::http_client()?;
                Store::Http(HttpLookaside::from_location(&remote, auth, client, policy)?)
            }
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Store::File(f) => f.root().display().to_string(),
            Store::Http(h) => h.base().to_string(),
        }
    }

    /// Reads `signature-1..` of `image`. `known[n-1]`, when given and not
    /// empty, makes the request for `signature-n` conditional.
    pub async fn list(&self, image: &ImageTarget, known: &[Validators]) -> Listing {
        match self {
            Store::File(f) => list_file(f, image),
            Store::Http(h) => list_http(h, image, known).await,
        }
    }

    /// One file, unconditionally (to get the bytes behind a 304).
    pub async fn get(&self, image: &ImageTarget, name: &str) -> Result<Got, End> {
        match self {
            Store::File(f) => {
                let listing = list_file(f, image);
                listing
                    .files
                    .into_iter()
                    .find(|e| e.name == name)
                    .map(|e| e.got)
                    .ok_or(listing.end)
            }
            Store::Http(h) => {
                let url = h.url(&image.repository_path, &image.digest, name);
                let outcome = h.get(&url, None).await;
                match entry_or_end(name, &url, outcome) {
                    Ok(Some(entry)) => Ok(entry.got),
                    Ok(None) => Err(End::Missing),
                    Err(end) => Err(end),
                }
            }
        }
    }

    /// Over http: which of the `count` files after `signature-<after>`
    /// exist (a gap cannot be listed, only probed).
    pub async fn probe_after(&self, image: &ImageTarget, after: u32, count: u32) -> Vec<Entry> {
        let Store::Http(h) = self else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for n in after + 1..=(after + count).min(MAX_SIGNATURES) {
            let name = format!("signature-{n}");
            let url = h.url(&image.repository_path, &image.digest, &name);
            let outcome = h.get(&url, None).await;
            if let Ok(Some(entry)) = entry_or_end(&name, &url, outcome) {
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
    let mut end = if set.files.len() as u32 >= MAX_SIGNATURES {
        End::Limit
    } else {
        End::Missing
    };
    let mut files = Vec::new();
    for f in set.files {
        let got = match f.content {
            Fetched::Blob(bytes) => Got::Blob {
                bytes,
                validators: Validators::default(),
            },
            Fetched::TooLarge(n) => Got::TooLarge(n),
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
        files.push(Entry {
            name: f.name,
            location: f.location,
            got,
        });
    }
    let dir = store.image_dir(&image.repository_path, &image.digest);
    let mut hidden = Vec::new();
    for name in set.hidden {
        let path = dir.join(&name);
        let location = path.display().to_string();
        let got = match read_signature(&path) {
            Ok(Some(Fetched::Blob(bytes))) => Got::Blob {
                bytes,
                validators: Validators::default(),
            },
            Ok(Some(Fetched::TooLarge(n))) => Got::TooLarge(n),
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
        hidden.push(Entry {
            location,
            name,
            got,
        });
    }
    Listing { files, end, hidden }
}

/// The one http walker's answer as a `Listing`: each file an entry, the
/// end classified as `entry_or_end` classifies a single answer.
async fn list_http(store: &HttpLookaside, image: &ImageTarget, known: &[Validators]) -> Listing {
    let walk = store
        .walk(&image.repository_path, &image.digest, known)
        .await;
    // A walked file is found, 304 or too large: always an entry.
    let files = walk
        .files
        .into_iter()
        .filter_map(|Walked { name, url, outcome }| {
            entry_or_end(&name, &url, Ok(outcome)).ok().flatten()
        })
        .collect();
    let end = match walk.end {
        WalkEnd::Missing => End::Missing,
        WalkEnd::Limit => End::Limit,
        WalkEnd::Stopped(Walked { name, url, outcome }) => {
            match entry_or_end(&name, &url, Ok(outcome)) {
                Err(end) => end,
                // Never: a walk stops only at an answer that ends a list.
                Ok(_) => End::Missing,
            }
        }
        WalkEnd::Failed(e) => End::Error {
            location: e.url,
            message: e.message,
        },
    };
    Listing {
        files,
        end,
        hidden: Vec::new(),
    }
}

/// An entry, `None` at a 404, or how the list ended.
fn entry_or_end(
    name: &str,
    url: &str,
    outcome: Result<Outcome, fetch::FetchError>,
) -> Result<Option<Entry>, End> {
    let entry = |got| {
        Ok(Some(Entry {
            name: name.to_string(),
            location: url.to_string(),
            got,
        }))
    };
    match outcome {
        Ok(Outcome::Found { body, validators }) => entry(Got::Blob {
            bytes: body,
            validators,
        }),
        Ok(Outcome::NotModified) => entry(Got::Unchanged),
        Ok(Outcome::TooLarge(n)) => entry(Got::TooLarge(n)),
        Ok(Outcome::NotFound) => Ok(None),
        Ok(Outcome::SoftNotFound) => Err(End::SoftNotFound {
            name: name.to_string(),
            location: url.to_string(),
        }),
        Ok(Outcome::Unauthorized) => Err(End::Status {
            name: name.to_string(),
            location: url.to_string(),
            status: 401,
        }),
        Ok(Outcome::Status(status)) => Err(End::Status {
            name: name.to_string(),
            location: url.to_string(),
            status,
        }),
        Err(e) => Err(End::Error {
            location: e.url,
            message: e.message,
        }),
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
            matches!(&listing.hidden[..], [Entry { got: Got::Blob { bytes, .. }, .. }] if bytes == b"three")
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
