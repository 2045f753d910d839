//! The signature-trust flags shared by `stagex verify` and `stagex pallet`
//! (`--keys`, `--threshold`, `--lookaside`, `--identity`, `--allow-legacy`,
//! `--signed-identity` with `--prefix`/`--signed-prefix`) and how they and
//! stagex.toml become a keyring, a checked threshold, a lookaside and the
//! verification options.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::lookaside::Lookaside;
use crate::settings::Settings;
use crate::sign::identity::IdentityRule;
use crate::sign::image::Resolver;
use crate::sign::keyring::Keyring;
use crate::sign::quorum::check_threshold;
use crate::sign::verify::VerifyOptions;

pub use crate::sign::trust::Trust;

/// Which maintainers are trusted, how many must sign, where signatures are.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Directory of trusted maintainer certificates (default: stagex.toml `keys`).
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// Distinct trusted signers every image needs (default: stagex.toml `threshold`, 2).
    #[arg(long, value_name = "N")]
    pub threshold: Option<usize>,
    /// Where signatures are read: https://, http://, file:// or a directory
    /// (default: stagex.toml `lookaside`).
    #[arg(long, value_name = "URL|DIR")]
    pub lookaside: Option<String>,
    /// Identity namespace of the package images (default: stagex.toml `namespace`).
    #[arg(long, value_name = "NS")]
    pub identity: Option<String>,
    /// Count legacy StageX signatures (pre-2025.06 payload: "pgp container image
    /// signature", bare-hex digest, repository identity); otherwise they are
    /// reported as `legacy-format` and not counted.
    #[arg(long)]
    pub allow_legacy: bool,
    /// The containers-policy `signedIdentity` rule: matchRepoDigestOrExact (default),
    /// matchRepository, or remapIdentity (with --prefix and --signed-prefix).
    #[arg(long, value_name = "RULE", default_value = "matchRepoDigestOrExact")]
    pub signed_identity: String,
    /// remapIdentity: the image namespace to rewrite (e.g. quay.io/stagex).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// remapIdentity: what `--prefix` becomes before matching (e.g. docker.io/stagex).
    #[arg(long, value_name = "PREFIX")]
    pub signed_prefix: Option<String>,
}

impl TrustArgs {
    /// True when a flag asks for a check (keys, threshold or lookaside given).
    pub fn asked(&self) -> bool {
        self.keys.is_some() || self.threshold.is_some() || self.lookaside.is_some()
    }

    /// `--keys`, else stagex.toml `keys`.
    pub fn keys_dir(&self, settings: &Settings) -> PathBuf {
        self.keys.clone().unwrap_or_else(|| settings.keys.clone())
    }

    /// `--allow-legacy` and the identity rule.
    pub fn verify_options(&self) -> Result<VerifyOptions> {
        Ok(VerifyOptions {
            allow_legacy: self.allow_legacy,
            identity: IdentityRule::from_name(
                &self.signed_identity,
                self.prefix.as_deref(),
                self.signed_prefix.as_deref(),
            )?,
        })
    }

    /// Finds package images under out/ and packages/, named in the
    /// `--identity` namespace, else stagex.toml `namespace`.
    pub fn resolver<'a>(&'a self, settings: &'a Settings) -> Resolver<'a> {
        Resolver::from_settings(settings, self.identity.as_deref())
    }

    /// Loads the keyring from `keys_dir`, then the threshold and lookaside.
    pub fn load(&self, settings: &Settings) -> Result<Trust> {
        let keys = self.keys_dir(settings);
        let keyring = Keyring::load_dir(&keys)?;
        self.with_keyring(settings, keys, keyring)
    }

    /// The threshold (rejecting 0) and lookaside for an already loaded keyring.
    pub fn with_keyring(
        &self,
        settings: &Settings,
        keys: PathBuf,
        keyring: Keyring,
    ) -> Result<Trust> {
        let threshold = check_threshold(self.threshold.unwrap_or(settings.threshold))?;
        let location = self
            .lookaside
            .clone()
            .unwrap_or_else(|| settings.lookaside.clone());
        let lookaside = Lookaside::parse(&location)?;
        Ok(Trust {
            keys,
            keyring,
            threshold,
            lookaside,
            options: self.verify_options()?,
        })
    }
}
