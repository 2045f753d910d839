//! Throwaway GnuPG homes with one key each (primary key signs, no
//! passphrase), for signing and verifying with the real gpg. The agent the
//! home starts is stopped (gpgconf --kill) when dropped.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tools;

pub struct GpgHome {
    pub home: tempfile::TempDir,
    pub fingerprint: String,
    gpg: PathBuf,
}

impl GpgHome {
    /// A new home with an ed25519 key whose primary signs.
    /// `None` if gpg is missing outside CI.
    pub fn with_key(name: &str) -> Option<GpgHome> {
        let gpg = tools::require(&["gpg"])?.remove(0);
        let home = tempfile::Builder::new()
            .prefix("gh")
            .tempdir_in("/tmp")
            .unwrap();
        let params = home.path().join("params");
        std::fs::write(
            &params,
            format!(
                "%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\nName-Real: {name}\nName-Email: {name}@example.org\nExpire-Date: 0\n%commit\n"
            ),
        )
        .unwrap();
        let mut this = GpgHome {
            home,
            fingerprint: String::new(),
            gpg,
        };
        tools::run_ok(this.cmd().args(["--batch", "--gen-key"]).arg(&params));
        let listing =
            tools::run_ok(
                this.cmd()
                    .args(["--batch", "--with-colons", "--list-secret-keys"]),
            );
        this.fingerprint = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("a fingerprint in gpg's listing");
        Some(this)
    }

    /// gpg with this home.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.gpg);
        c.env("GNUPGHOME", self.home.path()).stdin(Stdio::null());
        c
    }

    pub fn path(&self) -> &Path {
        self.home.path()
    }

    /// The public certificate, binary.
    pub fn export(&self) -> Vec<u8> {
        tools::run_ok(self.cmd().args(["--batch", "--export", &self.fingerprint])).stdout
    }

    /// The secret key, binary, unprotected.
    pub fn export_secret(&self) -> Vec<u8> {
        tools::run_ok(
            self.cmd()
                .args(["--batch", "--export-secret-keys", &self.fingerprint]),
        )
        .stdout
    }

    /// `gpg --sign --no-armor` of `payload` (the StageX way).
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let file = self.home.path().join("payload.json");
        std::fs::write(&file, payload).unwrap();
        tools::run_ok(
            self.cmd()
                .args([
                    "--batch",
                    "--sign",
                    "--no-armor",
                    "--local-user",
                    &self.fingerprint,
                    "--output",
                    "-",
                ])
                .arg(&file),
        )
        .stdout
    }

    /// Imports certificates (public keys) into this home.
    pub fn import(&self, file: &Path) {
        tools::run_ok(self.cmd().args(["--batch", "--import"]).arg(file));
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
