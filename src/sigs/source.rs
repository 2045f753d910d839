//! Owns: READING one image's signature files from a lookaside (a directory
//! or http(s)://) as data for sync and audit: every `signature-N` until the
//! first missing one, with how the list ended (a real 404, a soft 404, a
//! 403 or other status, a transport error), conditional requests when the
//! caller knows the files' validators (304 = unchanged, no body), and on a
//! directory the files hidden behind a gap.
//!
//! It does not judge signatures and draws no UI. Async: the caller owns the
//! runtime (one client per `Store`, so one connection pool, HTTP/2 where
//! the server speaks it).
use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::lookaside::fetch::{self, Credentials, Outcome, Policy, Validators};
use crate::lookaside::file::{read_signature, FileLookaside};
use crate::lookaside::mirror::{reader_credentials, redact};
use crate::lookaside::{signature_dir, Fetched, MAX_SIGNATURES};
use crate::sign::image::ImageTarget;

/// A lookaside to read from.
pub enum Store {
    File(FileLookaside),
    Http {
        /// The URL without userinfo (printed in reports).
        base: String,
        /// From the URL's userinfo, else the host's ~/.netrc entry.
        auth: Option<Credentials>,
        client: reqwest::Client,
        policy: Policy,
    },
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
        if location.starts_with("http://") || location.starts_with("https://") {
            let (base, auth) = reader_credentials(location)
                .map_err(|e| anyhow::anyhow!("source {}: {e}", redact(location)))?;
            Ok(Store::Http {
                base,
                auth,
                client: crate::net::http_client()?,
                policy,
            })
        } else if let Some(path) = location.strip_prefix("file://") {
            Ok(Store::File(FileLookaside::new(path)))
        } else if location.contains("://") {
            bail!(
                "unsupported lookaside {location:?}: use https://, http://, file:// or a directory"
            )
        } else {
            Ok(Store::File(FileLookaside::new(location)))
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Store::File(f) => f.root().display().to_string(),
            Store::Http { base, .. } => base.clone(),
        }
    }

    /// The directory of a directory store (walked for the image set).
    pub fn directory(&self) -> Option<PathBuf> {
        match self {
            Store::File(f) => Some(f.root().to_path_buf()),
            Store::Http { .. } => None,
        }
    }

    /// Reads `signature-1..` of `image`. `known[n-1]`, when given and not
    /// empty, makes the request for `signature-n` conditional.
    pub async fn list(&self, image: &ImageTarget, known: &[Validators]) -> Listing {
        match self {
            Store::File(f) => list_file(f, image),
            Store::Http {
                base,
                auth,
                client,
                policy,
            } => list_http(base, auth.as_ref(), client, policy, image, known).await,
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
            Store::Http {
                base,
                auth,
                client,
                policy,
            } => {
                let url = file_url(base, image, name);
                let outcome = fetch::get(client, &url, auth.as_ref(), None, policy).await;
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
        let Store::Http {
            base,
            auth,
            client,
            policy,
        } = self
        else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for n in after + 1..=(after + count).min(MAX_SIGNATURES) {
            let name = format!("signature-{n}");
            let url = file_url(base, image, &name);
            let outcome = fetch::get(client, &url, auth.as_ref(), None, policy).await;
            if let Ok(Some(entry)) = entry_or_end(&name, &url, outcome) {
                found.push(entry);
            }
        }
        found
    }
}

fn file_url(base: &str, image: &ImageTarget, name: &str) -> String {
    format!(
        "{base}/{}/{name}",
        signature_dir(&image.repository_path, &image.digest)
    )
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

async fn list_http(
    base: &str,
    auth: Option<&Credentials>,
    client: &reqwest::Client,
    policy: &Policy,
    image: &ImageTarget,
    known: &[Validators],
) -> Listing {
    let get = |n: u32| {
        let name = format!("signature-{n}");
        let url = file_url(base, image, &name);
        let validators = known.get(n as usize - 1).filter(|v| !v.is_empty()).cloned();
        async move {
            let outcome = fetch::get(client, &url, auth, validators.as_ref(), policy).await;
            entry_or_end(&name, &url, outcome)
        }
    };
    // With the last run's state, the files it saw and the next number are
    // asked at once (HTTP/2 multiplexes them); the answers are still read
    // in order, so the stop-at-404 rule holds. Beyond that, one by one.
    let ahead = (known.len() as u32 + 1).min(MAX_SIGNATURES);
    let first = if known.is_empty() {
        Vec::new()
    } else {
        futures_util::future::join_all((1..=ahead).map(get)).await
    };
    let mut files = Vec::new();
    let mut answers = first.into_iter();
    for n in 1..=MAX_SIGNATURES {
        let answer = match answers.next() {
            Some(a) => a,
            None => get(n).await,
        };
        match answer {
            Ok(Some(entry)) => files.push(entry),
            Ok(None) => {
                return Listing {
                    files,
                    end: End::Missing,
                    hidden: Vec::new(),
                }
            }
            Err(end) => {
                return Listing {
                    files,
                    end,
                    hidden: Vec::new(),
                }
            }
        }
    }
    Listing {
        files,
        end: End::Limit,
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
