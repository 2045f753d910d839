//! Making signature blobs: a binary (non-armored) one-pass signed message
//! holding the payload, one v4 signature, as `gpg --sign --no-armor` makes.
//!
//! Two signers: an OpenPGP secret key file through sequoia (the primary key
//! is preferred when it can sign, since skopeo 1.9 accepts only primary-key
//! signatures), and gpg through its agent (`--gpg FPR`), so smartcards,
//! PINs and touch confirmation work. Owns no file layout.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sequoia_openpgp as openpgp;

use openpgp::cert::amalgamation::key::PrimaryKey;
use openpgp::crypto::KeyPair;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{LiteralWriter, Message, Signer};
use openpgp::{Cert, Fingerprint};

use super::keyring::Keyring;
use super::verify::verify_blob;

/// Environment variable holding the passphrase of a protected `--key` file.
pub const PASSPHRASE_ENV: &str = "STAGEX_KEY_PASSPHRASE";

/// Something that signs payloads with one key.
pub trait PayloadSigner {
    /// The signer's certificate (public parts).
    fn cert(&self) -> &Cert;
    /// The primary fingerprint (what quorums count).
    fn fingerprint(&self) -> Fingerprint {
        self.cert().fingerprint()
    }
    /// Produces one signature blob over `payload`.
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>>;
}

/// Signs with a secret key file through sequoia.
pub struct KeyFileSigner {
    cert: Cert,
    keypair: std::sync::Mutex<KeyPair>,
}

impl KeyFileSigner {
    /// Loads an OpenPGP secret key (armored or binary); a protected key is
    /// unlocked with `$STAGEX_KEY_PASSPHRASE`.
    pub fn from_file(path: &Path) -> Result<KeyFileSigner> {
        let cert = Cert::from_file(path)
            .with_context(|| format!("{}: not an OpenPGP secret key", path.display()))?;
        KeyFileSigner::from_cert(cert).with_context(|| format!("signing key {}", path.display()))
    }

    /// Uses a certificate with secret key material.
    pub fn from_cert(cert: Cert) -> Result<KeyFileSigner> {
        let policy = StandardPolicy::new();
        let valid = cert
            .with_policy(&policy, None)
            .context("the key is not valid under the standard policy")?;
        valid
            .alive()
            .context("the key is expired: extend it or use another key")?;
        let mut candidates: Vec<_> = valid
            .keys()
            .alive()
            .revoked(false)
            .for_signing()
            .secret()
            .collect();
        if candidates.is_empty() {
            bail!(
                "no signing-capable secret key in {} (a public certificate was given, or the signing key lives on a card: use --gpg FPR)",
                cert.fingerprint()
            );
        }
        // The primary first: skopeo 1.9 rejects subkey signatures.
        candidates.sort_by_key(|ka| !ka.primary());
        let ka = &candidates[0];
        if ka.key().version() != 4 {
            bail!(
                "key {} is a v{} key: container signatures need v4 keys",
                ka.key().fingerprint(),
                ka.key().version()
            );
        }
        let mut secret = ka.key().clone();
        if !secret.has_unencrypted_secret() {
            if let Some(passphrase) = std::env::var_os(PASSPHRASE_ENV) {
                let password =
                    openpgp::crypto::Password::from(passphrase.to_string_lossy().as_ref());
                secret = secret.decrypt_secret(&password).with_context(|| {
                    format!(
                        "{PASSPHRASE_ENV} does not unlock key {}",
                        ka.key().fingerprint()
                    )
                })?;
            }
        }
        let keypair = secret
            .into_keypair()
            .with_context(|| {
                format!(
                    "the secret key {} is password-protected: set {PASSPHRASE_ENV}, or sign through gpg with --gpg",
                    ka.key().fingerprint()
                )
            })?;
        let cert = cert.strip_secret_key_material();
        Ok(KeyFileSigner {
            cert,
            keypair: std::sync::Mutex::new(keypair),
        })
    }
}

impl PayloadSigner for KeyFileSigner {
    fn cert(&self) -> &Cert {
        &self.cert
    }

    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let keypair = self.keypair.lock().expect("keypair lock").clone();
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        let signer = Signer::new(message, keypair)?.build()?;
        let mut literal = LiteralWriter::new(signer).build()?;
        literal.write_all(payload)?;
        literal.finalize()?;
        Ok(out)
    }
}

/// Signs through `gpg --sign --no-armor --local-user FPR` (the agent does
/// the private-key work: smartcards, pinentry and touch all work).
pub struct GpgSigner {
    program: PathBuf,
    user: String,
    cert: Cert,
}

impl GpgSigner {
    /// The gpg binary: `$STAGEX_GPG`, else `gpg` from PATH.
    pub fn program() -> PathBuf {
        std::env::var_os("STAGEX_GPG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("gpg"))
    }

    /// Looks the key up in gpg's keyring (`gpg --export FPR`).
    pub fn new(fingerprint: &str) -> Result<GpgSigner> {
        let program = GpgSigner::program();
        let output = Command::new(&program)
            .args(["--export", "--", fingerprint])
            .stdin(Stdio::null())
            .output()
            .with_context(|| {
                format!(
                    "cannot run {} (install gnupg or set STAGEX_GPG)",
                    program.display()
                )
            })?;
        if !output.status.success() || output.stdout.is_empty() {
            bail!(
                "gpg has no public key {fingerprint} ({}): import it or check the fingerprint; {}",
                program.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let cert = Cert::from_bytes(&output.stdout)
            .with_context(|| format!("parsing gpg's export of {fingerprint}"))?;
        Ok(GpgSigner {
            program,
            user: fingerprint.to_string(),
            cert,
        })
    }
}

impl PayloadSigner for GpgSigner {
    fn cert(&self) -> &Cert {
        &self.cert
    }

    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        // No --batch: pinentry must be able to ask for a PIN / touch. gpg's
        // stdin is the payload, so tell the agent where our terminal is.
        let mut command = Command::new(&self.program);
        if std::env::var_os("GPG_TTY").is_none() {
            if let Some(tty) = stdin_tty() {
                command.env("GPG_TTY", tty);
            }
        }
        let mut child = command
            .args([
                "--sign",
                "--no-armor",
                "--local-user",
                &self.user,
                "--output",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {}", self.program.display()))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = payload.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output()?;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("gpg stdin writer panicked"))?
            .context("writing the payload to gpg")?;
        if !output.status.success() {
            bail!(
                "gpg --sign with key {} failed ({}): see gpg's message above",
                self.user,
                output.status
            );
        }
        // Check what gpg made: one signature by this certificate.
        let mut own = Keyring::default();
        own.add_cert(self.cert.clone(), PathBuf::from("gpg"));
        let verified = verify_blob(&own, &output.stdout).map_err(|reason| {
            anyhow::anyhow!(
                "gpg produced an unusable signature with key {}: {reason}",
                self.user
            )
        })?;
        if verified.payload != payload {
            bail!("gpg signed different bytes than the payload");
        }
        Ok(output.stdout)
    }
}

/// The terminal on our stdin, if any (for pinentry).
fn stdin_tty() -> Option<std::ffi::OsString> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return None;
    }
    std::fs::read_link("/proc/self/fd/0")
        .ok()
        .map(|p| p.into_os_string())
}
