//! Throwaway GnuPG homes with one key each (no passphrase), for signing
//! and verifying with the real gpg: ed25519 or RSA-4096, primary-key or
//! signing-subkey signers, and keys made, signed with, extended and revoked
//! in the past (`--faked-system-time EPOCH!`). The agent the home starts is
//! stopped (gpgconf --kill) when dropped.
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
        let mut this = GpgHome::empty()?;
        let params = this.home.path().join("params");
        std::fs::write(
            &params,
            format!(
                "%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\nName-Real: {name}\nName-Email: {name}@example.org\nExpire-Date: 0\n%commit\n"
            ),
        )
        .unwrap();
        tools::run_ok(this.cmd().args(["--batch", "--gen-key"]).arg(&params));
        this.read_fingerprint("--list-secret-keys");
        Some(this)
    }

    /// A new home whose key gpg makes with `--quick-gen-key` (algorithm
    /// `algo`, e.g. `rsa4096`/`ed25519`, usage `sign` or `cert`, expiry
    /// `expire` such as `never`/`1y`), at the faked time `at` (epoch
    /// seconds) when given. `None` if gpg is missing outside CI.
    pub fn generate(
        name: &str,
        algo: &str,
        usage: &str,
        expire: &str,
        at: Option<u64>,
    ) -> Option<GpgHome> {
        let mut this = GpgHome::empty()?;
        let uid = format!("{name} <{name}@example.org>");
        tools::run_ok(this.cmd_at(at).args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            &uid,
            algo,
            usage,
            expire,
        ]));
        this.read_fingerprint("--list-keys");
        Some(this)
    }

    /// A new empty home (no key yet) in /tmp. `None` if gpg is missing
    /// outside CI.
    fn empty() -> Option<GpgHome> {
        let gpg = tools::require(&["gpg"])?.remove(0);
        let home = tempfile::Builder::new()
            .prefix("gh")
            .tempdir_in("/tmp")
            .unwrap();
        Some(GpgHome {
            home,
            fingerprint: String::new(),
            gpg,
        })
    }

    /// Sets `fingerprint` from the first `fpr:` line of `gpg --with-colons
    /// LIST` (`--list-keys` or `--list-secret-keys`).
    fn read_fingerprint(&mut self, list: &str) {
        let listing = tools::run_ok(self.cmd().args(["--batch", "--with-colons", list]));
        self.fingerprint = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("a fingerprint in gpg's listing");
    }

    /// gpg with this home at the faked time `at` (frozen), if given.
    pub fn cmd_at(&self, at: Option<u64>) -> Command {
        let mut c = self.cmd();
        if let Some(t) = at {
            c.arg(format!("--faked-system-time={t}!"));
        }
        c
    }

    /// Adds a subkey (`--quick-add-key FPR algo usage expire`) at `at`.
    pub fn add_subkey(&self, algo: &str, usage: &str, expire: &str, at: Option<u64>) {
        tools::run_ok(self.cmd_at(at).args([
            "--batch",
            "--passphrase",
            "",
            "--quick-add-key",
            &self.fingerprint,
            algo,
            usage,
            expire,
        ]));
    }

    /// Sets the primary key's expiry (`--quick-set-expire`) at `at`.
    pub fn set_expire(&self, expire: &str, at: Option<u64>) {
        tools::run_ok(self.cmd_at(at).args([
            "--batch",
            "--passphrase",
            "",
            "--quick-set-expire",
            &self.fingerprint,
            expire,
        ]));
    }

    /// Revokes the key at `at` with gpg's reason `code` (0 no reason,
    /// 1 compromised, 2 superseded, 3 no longer used) and imports the
    /// revocation, as a maintainer would.
    pub fn revoke(&self, code: u8, at: Option<u64>) {
        use std::io::Write;
        let mut child = self
            .cmd_at(at)
            .args([
                "--command-fd",
                "0",
                "--status-fd",
                "2",
                "--no-tty",
                "--armor",
                "--gen-revoke",
                &self.fingerprint,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg --gen-revoke");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("y\n{code}\ntest revocation\n\ny\n").as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success() && !output.stdout.is_empty(),
            "gpg --gen-revoke failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let file = self.home.path().join("revocation.asc");
        std::fs::write(&file, &output.stdout).unwrap();
        self.import(&file);
    }

    /// `gpg --sign --no-armor` of `payload` at the faked time `at`.
    pub fn sign_at(&self, payload: &[u8], at: Option<u64>) -> Vec<u8> {
        let file = self.home.path().join("payload.json");
        std::fs::write(&file, payload).unwrap();
        tools::run_ok(
            self.cmd_at(at)
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
        self.sign_at(payload, None)
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
