//! The file:// lookaside: reading `signature-1..` until the first missing
//! file (and reporting files hidden behind a gap or past the cap):
//! `FileLookaside::read` is the ONE walker of a directory store, used by
//! `stagex verify`, the `sigs` source listing and the mirror writer; and
//! `FileLookaside::update`, the ONE write path (`stagex sign`, `sigs sync`
//! and `publish` to a directory mirror): under the image's lock
//! (`scratch::ImageLock`) it reads the image's signatures, lets the caller
//! decide what to add, and adds each blob atomically without ever
//! overwriting one: the blob is written to a scratch file in the tree's
//! `.stagex-tmp/` (where no reader looks), then hard-linked to the first
//! free `signature-N` (link fails if the name exists, so two writers racing
//! for N both keep their file and numbering stays contiguous).
//!
//! Where hard links are refused (some FUSE/network file systems), the same
//! fsynced temporary file is renamed with `renameat2(RENAME_NOREPLACE)`
//! (Linux): still atomic and never overwriting, so a crash cannot leave a
//! truncated `signature-N`. Only if that call is unsupported (EINVAL,
//! ENOSYS, EXDEV, not Linux) do we fall back to exclusive create-then-write.
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::scratch::{self, ImageLock};
use super::{
    max_signatures, signature_dir, End, Fetched, Listing, SignatureFile, StoreError, Validators,
    MAX_SIGNATURE_BYTES,
};
use crate::oci::digest::Digest;

/// A lookaside tree on the local file system.
#[derive(Clone, Debug)]
pub struct FileLookaside {
    root: PathBuf,
    /// Set once this store's stale scratch files were swept (shared by clones).
    swept: std::sync::Arc<std::sync::OnceLock<()>>,
}

impl FileLookaside {
    pub fn new(root: impl Into<PathBuf>) -> FileLookaside {
        FileLookaside {
            root: root.into(),
            swept: Default::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one image's signatures.
    pub fn image_dir(&self, repository_path: &str, digest: &Digest) -> PathBuf {
        self.root.join(signature_dir(repository_path, digest))
    }

    /// The walk of one image as a `Listing` (a file system error ends it
    /// as `End::Failed`, naming the path).
    pub fn list(&self, repository_path: &str, digest: &Digest) -> Listing {
        self.read(repository_path, digest)
            .unwrap_or_else(|e| Listing::failed(StoreError::Directory(e)))
    }

    /// Reads signature-1, -2, ... until the first missing file, and the
    /// files behind a gap or past the cap (`hidden`, contents read too).
    /// The directory is listed first, so only files that exist are opened.
    pub fn read(&self, repository_path: &str, digest: &Digest) -> Result<Listing> {
        let dir = self.image_dir(repository_path, digest);
        let numbers = numbered_files(&dir)?;
        let cap = max_signatures();
        let listed = numbers
            .iter()
            .zip(1..=cap)
            .take_while(|(n, expected)| *n == expected)
            .count() as u32;
        let mut files = Vec::new();
        let mut stopped_at = listed + 1;
        for n in 1..=listed {
            match read_file(&dir, n)? {
                Some(file) => files.push(file),
                // Removed since the listing: the numbering ends here.
                None => {
                    stopped_at = n;
                    break;
                }
            }
        }
        let mut hidden = Vec::new();
        for n in numbers.into_iter().filter(|&n| n > stopped_at.min(cap)) {
            // Removed since the listing: nothing hides there any more.
            hidden.extend(read_file(&dir, n)?);
        }
        let end = if files.len() as u32 >= cap {
            End::Limit
        } else {
            End::Missing
        };
        Ok(Listing { files, end, hidden })
    }

    /// Adds a blob as the first free `signature-N`; returns N and the path.
    pub fn add(
        &self,
        repository_path: &str,
        digest: &Digest,
        blob: &[u8],
    ) -> Result<(u32, PathBuf)> {
        let mut placed = self.update(repository_path, digest, |_| Ok(vec![blob.to_vec()]))?;
        Ok(placed.remove(0))
    }

    /// The one write path: holding the image's lock, reads its signatures,
    /// asks `decide` which blobs to add (none: nothing is written), and adds
    /// each as the first free `signature-N`. Returns N and the path of
    /// each, in order. Another process's `update` of the same image waits,
    /// so "is it already there?" and the write are one step.
    pub fn update(
        &self,
        repository_path: &str,
        digest: &Digest,
        decide: impl FnOnce(&Listing) -> Result<Vec<Vec<u8>>>,
    ) -> Result<Vec<(u32, PathBuf)>> {
        let dir = self.image_dir(repository_path, digest);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.swept.get_or_init(|| scratch::sweep_stale(&self.root));
        let _lock = ImageLock::acquire(&dir)?;
        scratch::sweep_legacy(&dir);
        let blobs = decide(&self.read(repository_path, digest)?)?;
        let placed = blobs
            .iter()
            .map(|blob| self.place(&dir, blob))
            .collect::<Result<Vec<_>>>();
        scratch::remove_scratch_dir_if_empty(&self.root);
        placed
    }

    /// Writes `blob` to a scratch file, then links it to the first free
    /// `signature-N` of `dir` (the caller holds the image's lock).
    fn place(&self, dir: &Path, blob: &[u8]) -> Result<(u32, PathBuf)> {
        let temp = scratch::write_scratch(&self.root, blob)?;
        let linked = claim_slot(dir, first_free(dir)?, |target| {
            match fs::hard_link(temp.path(), target) {
                Ok(()) => Ok(Slot::Placed),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Slot::Taken),
                Err(e)
                    if e.kind() == io::ErrorKind::Unsupported
                        || e.kind() == io::ErrorKind::PermissionDenied
                        || e.raw_os_error() == Some(libc::EXDEV) =>
                {
                    Ok(Slot::Unsupported)
                }
                Err(e) => Err(e),
            }
        })?;
        match linked {
            Claim::Placed(n, target) => Ok((n, target)),
            // No link from the scratch directory (another mount, or a file
            // system without hard links): from a file beside the target.
            Claim::Unsupported(n) => {
                drop(temp);
                add_by_rename(dir, scratch::write_beside(dir, blob)?, blob, n)
            }
        }
    }
}

impl FileLookaside {
    /// `--prune`: deletes the named files of one image, then renames the
    /// `visible` ones left (signature-1.. up to the first gap, as the
    /// caller listed them) down to a contiguous 1..k, in order, never
    /// replacing a file. Returns the paths removed. A crash in between
    /// leaves a gap (audit reports it).
    pub fn remove_and_compact(
        &self,
        repository_path: &str,
        digest: &Digest,
        visible: &[String],
        remove: &[String],
    ) -> Result<Vec<PathBuf>> {
        let dir = self.image_dir(repository_path, digest);
        let _lock = ImageLock::acquire(&dir)?;
        let mut removed = Vec::new();
        for name in remove {
            let path = dir.join(name);
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed.push(path);
        }
        let kept = visible.iter().filter(|n| !remove.contains(n));
        for (i, name) in kept.enumerate() {
            let target = dir.join(format!("signature-{}", i + 1));
            let from = dir.join(name);
            if from != target {
                rename_noreplace(&from, &target).with_context(|| {
                    format!("renaming {} to {}", from.display(), target.display())
                })?;
            }
        }
        sync_dir(&dir);
        Ok(removed)
    }
}

/// What one attempt to place a signature at `signature-N` did.
enum Slot {
    Placed,
    /// `signature-N` exists: try N+1.
    Taken,
    /// This way of placing files does not work here: try the next way.
    Unsupported,
}

/// How a whole search for a free slot ended.
enum Claim {
    Placed(u32, PathBuf),
    Unsupported(u32),
}

/// The one slot-claiming loop behind every way of adding a signature: tries
/// `place(signature-N)` for N = `n`, N+1, ... until it places (the directory
/// entry is then synced), the method turns out unsupported, or the
/// signature cap readers honour (`max_signatures`) is reached.
fn claim_slot(
    dir: &Path,
    mut n: u32,
    mut place: impl FnMut(&Path) -> io::Result<Slot>,
) -> Result<Claim> {
    loop {
        let cap = max_signatures();
        if n > cap {
            bail!(
                "{} already holds {cap} signatures, the cap ({}): readers ignore any more",
                dir.display(),
                super::MAX_SIGNATURES_ENV
            );
        }
        let target = dir.join(format!("signature-{n}"));
        match place(&target).with_context(|| format!("creating {}", target.display()))? {
            Slot::Placed => {
                sync_dir(dir);
                return Ok(Claim::Placed(n, target));
            }
            Slot::Taken => n += 1,
            Slot::Unsupported => return Ok(Claim::Unsupported(n)),
        }
    }
}

/// No hard links here: renames the written and fsynced `temp` to the first
/// free `signature-N` from `n` on, with RENAME_NOREPLACE (EEXIST: try N+1).
/// Atomic and never overwriting. Falls back to `add_by_create` only when
/// the kernel or file system does not support that rename.
fn add_by_rename(
    dir: &Path,
    temp: tempfile::NamedTempFile,
    blob: &[u8],
    n: u32,
) -> Result<(u32, PathBuf)> {
    let mut temp = temp.into_temp_path(); // closed; removed on drop
    let renamed = claim_slot(dir, n, |target| match rename_noreplace(&temp, target) {
        Ok(()) => Ok(Slot::Placed),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(Slot::Taken),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EXDEV)
            ) || e.kind() == io::ErrorKind::Unsupported =>
        {
            Ok(Slot::Unsupported)
        }
        Err(e) => Err(e),
    })?;
    match renamed {
        Claim::Placed(n, target) => {
            // The temporary name is gone: never unlink it afterwards.
            temp.disable_cleanup(true);
            Ok((n, target))
        }
        Claim::Unsupported(n) => {
            drop(temp);
            add_by_create(dir, blob, n)
        }
    }
}

/// `rename(from, to)` that fails with EEXIST instead of replacing `to`
/// (renameat2 RENAME_NOREPLACE; EINVAL or ENOSYS where the kernel or the
/// file system lacks it).
#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Last resort (no hard links, no RENAME_NOREPLACE): exclusive create, then
/// write. Never overwrites, but a crash mid-write leaves a short file.
fn add_by_create(dir: &Path, blob: &[u8], n: u32) -> Result<(u32, PathBuf)> {
    let created = claim_slot(dir, n, |target| {
        let mut file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(target)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Slot::Taken),
            Err(e) => return Err(e),
        };
        if let Err(e) = file.write_all(blob).and_then(|_| file.sync_all()) {
            // Never leave a short signature where readers look.
            let _ = fs::remove_file(target);
            return Err(e);
        }
        Ok(Slot::Placed)
    })?;
    match created {
        Claim::Placed(n, target) => Ok((n, target)),
        Claim::Unsupported(_) => {
            unreachable!("exclusive create is the last resort and never reports unsupported")
        }
    }
}

/// Makes a new directory entry durable (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The lowest N with no `signature-N` (fills a gap, keeping numbering contiguous).
fn first_free(dir: &Path) -> Result<u32> {
    let taken = numbered_files(dir)?;
    let mut n = 1;
    for t in taken {
        if t == n {
            n += 1;
        } else if t > n {
            break;
        }
    }
    Ok(n)
}

/// `signature-<n>` of `dir` as read; `None` if it does not exist.
fn read_file(dir: &Path, n: u32) -> Result<Option<SignatureFile>> {
    let name = format!("signature-{n}");
    let path = dir.join(&name);
    Ok(read_signature(&path)?.map(|content| SignatureFile {
        name,
        location: path.display().to_string(),
        content,
        validators: Validators::default(),
    }))
}

/// One signature file, bounded in size; `None` if it does not exist.
fn read_signature(path: &Path) -> Result<Option<Fetched>> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // Signatures are a few hundred bytes: one read fills the buffer.
    let mut bytes = Vec::with_capacity(4096);
    file.take(MAX_SIGNATURE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(if bytes.len() as u64 > MAX_SIGNATURE_BYTES {
        Fetched::TooLarge(fs::metadata(path).map(|m| m.len()).unwrap_or(0))
    } else {
        Fetched::Blob(bytes)
    }))
}

/// The N of every `signature-N` in `dir`, sorted.
fn numbered_files(dir: &Path) -> Result<Vec<u32>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut numbers = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("signature-"))
            .and_then(|n| n.parse::<u32>().ok().filter(|v| v.to_string() == n))
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_is_contiguous_and_gaps_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLookaside::new(dir.path());
        let d = Digest::of_bytes(b"m");
        assert_eq!(store.add("stagex/x", &d, b"a").unwrap().0, 1);
        assert_eq!(store.add("stagex/x", &d, b"b").unwrap().0, 2);
        let image = store.image_dir("stagex/x", &d);
        fs::write(image.join("signature-4"), b"d").unwrap();
        let set = store.read("stagex/x", &d).unwrap();
        assert_eq!(set.files.len(), 2);
        assert_eq!(set.files[1].content, Fetched::Blob(b"b".to_vec()));
        assert_eq!(set.hidden_names(), ["signature-4"]);
        assert!(!set.capped());
        // The next signature fills the gap.
        assert_eq!(store.add("stagex/x", &d, b"c").unwrap().0, 3);
        assert_eq!(store.read("stagex/x", &d).unwrap().files.len(), 4);
        assert_eq!(store.add("stagex/x", &d, b"e").unwrap().0, 5);
        let leftovers: Vec<_> = fs::read_dir(&image)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with("signature-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(store.read("stagex/none", &d).unwrap().files.is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(image.join("signature-1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "signatures must be world-readable");
        // `signature-06` is not a signature name readers ask for: it must
        // not make `add` skip 6 (that would open a gap).
        fs::write(image.join("signature-06"), b"x").unwrap();
        assert_eq!(store.add("stagex/x", &d, b"f").unwrap().0, 6);
    }

    #[test]
    fn oversized_files_are_rejected_and_at_most_128_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLookaside::new(dir.path());
        let d = Digest::of_bytes(b"big");
        let image = store.image_dir("stagex/x", &d);
        fs::create_dir_all(&image).unwrap();
        fs::write(
            image.join("signature-1"),
            vec![0u8; MAX_SIGNATURE_BYTES as usize + 1],
        )
        .unwrap();
        for n in 2..=130 {
            fs::write(image.join(format!("signature-{n}")), b"s").unwrap();
        }
        let set = store.read("stagex/x", &d).unwrap();
        assert_eq!(set.files.len(), max_signatures() as usize);
        assert_eq!(
            set.files[0].content,
            Fetched::TooLarge(MAX_SIGNATURE_BYTES + 1)
        );
        assert_eq!(set.hidden_names(), ["signature-129", "signature-130"]);
        assert!(
            set.capped(),
            "129 and 130 are past the cap, not after a gap"
        );
        assert!(store.add("stagex/x", &d, b"more").is_err());
    }

    /// The no-hard-link path: an atomic rename that skips taken numbers and
    /// never replaces an existing signature (the old fallback could leave a
    /// truncated file in the slot after a crash).
    #[test]
    fn rename_fallback_is_atomic_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path();
        fs::write(image.join("signature-1"), b"one").unwrap();
        fs::write(image.join("signature-2"), b"two").unwrap();
        let written = |blob: &[u8]| {
            let mut temp = crate::oci::layout::new_temp_file(image).unwrap();
            temp.write_all(blob).unwrap();
            temp
        };
        // Start at 1 on purpose: 1 and 2 are taken (EEXIST) and must survive.
        let (n, path) = add_by_rename(image, written(b"three"), b"three", 1).unwrap();
        assert_eq!((n, path.clone()), (3, image.join("signature-3")));
        assert_eq!(fs::read(image.join("signature-1")).unwrap(), b"one");
        assert_eq!(fs::read(image.join("signature-2")).unwrap(), b"two");
        assert_eq!(fs::read(&path).unwrap(), b"three");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // The file is renamed, never rewritten: same inode as the temp file.
        let temp = written(b"four");
        use std::os::unix::fs::MetadataExt;
        let inode = temp.as_file().metadata().unwrap().ino();
        let (n, path) = add_by_rename(image, temp, b"four", 2).unwrap();
        assert_eq!(n, 4);
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        let mut names: Vec<String> = fs::read_dir(image)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["signature-1", "signature-2", "signature-3", "signature-4"],
            "no temporary file may be left behind"
        );
        // Full: an error, and the temporary file is removed.
        let err = add_by_rename(image, written(b"x"), b"x", max_signatures() + 1).unwrap_err();
        assert!(err.to_string().contains("already holds"), "{err}");
        assert_eq!(fs::read_dir(image).unwrap().count(), 4);
    }

    #[test]
    fn rename_noreplace_refuses_an_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
        assert_eq!(fs::read(&b).unwrap(), b"b");
        rename_noreplace(&a, &dir.path().join("c")).unwrap();
        assert!(!a.exists());
    }
    #[test]
    fn a_hidden_file_that_cannot_be_read_fails_the_listing() {
        let root = tempfile::tempdir().unwrap();
        let store = FileLookaside::new(root.path());
        let digest = Digest::of_bytes(b"hidden");
        let dir = store.image_dir("stagex/core-x", &digest);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("signature-1"), b"one").unwrap();
        fs::write(dir.join("signature-3"), b"three").unwrap();
        let listing = store.list("stagex/core-x", &digest);
        assert!(matches!(listing.end, End::Missing), "{:?}", listing.end);
        assert_eq!(listing.files.len(), 1);
        assert_eq!(listing.hidden[0].content, Fetched::Blob(b"three".to_vec()));
        // A directory where a file should be: an error naming it, never an
        // empty signature.
        fs::create_dir(dir.join("signature-5")).unwrap();
        let listing = store.list("stagex/core-x", &digest);
        assert!(
            matches!(&listing.end, End::Failed { error, .. } if error.to_string().contains("signature-5")),
            "{:?}",
            listing.end
        );
    }

    #[test]
    fn an_image_directory_on_another_mount_gets_whole_signatures_and_no_leftovers() {
        use std::os::unix::fs::MetadataExt;
        // The store's root (and its scratch directory) on the disk, the
        // image's directory on a tmpfs: no hard link between them (EXDEV).
        let root = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir_in("/dev/shm").unwrap();
        std::os::unix::fs::symlink(other.path(), root.path().join("stagex")).unwrap();
        let two_devices =
            fs::metadata(root.path()).unwrap().dev() != fs::metadata(other.path()).unwrap().dev();
        let store = FileLookaside::new(root.path());
        let d = Digest::of_bytes(b"mounted");
        let (n, path) = store.add("stagex/core-x", &d, b"whole").unwrap();
        assert_eq!((n, fs::read(&path).unwrap()), (1, b"whole".to_vec()));
        let dir = store.image_dir("stagex/core-x", &d);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != ".lock")
            .collect();
        assert_eq!(names, ["signature-1"], "two devices: {two_devices}");
    }
}
