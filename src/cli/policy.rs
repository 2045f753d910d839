//! Owns: `stagex policy --out DIR [--registry NS]... [--lookaside URL]`:
//! writes `DIR/policy.json` and `DIR/registries.d/stagex.yaml` (built by
//! `sign::policy` from keys/ and stagex.toml), each atomically, and tells
//! the user how to install them and what containers-policy cannot express.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;

use super::Context;
use crate::oci::layout::write_atomic;
use crate::sign::keyring::Keyring;
use crate::sign::policy::{build, PolicyRequest};

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Directory to write policy.json and registries.d/ into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A registry namespace images are pulled from (repeatable; default: the
    /// identity namespace). Others than the signed namespace get remapIdentity.
    #[arg(long = "registry", value_name = "NS")]
    pub registries: Vec<String>,
    /// Where signatures are served (https://..., file:///...; default:
    /// stagex.toml `lookaside`, a directory becoming file://).
    #[arg(long, value_name = "URL")]
    pub lookaside: Option<String>,
    /// Directory of trusted maintainer certificates (default: stagex.toml `keys`).
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// The namespace signatures name (default: stagex.toml `namespace`).
    #[arg(long, value_name = "NS")]
    pub identity: Option<String>,
}

pub fn run(ctx: &Context, args: PolicyArgs) -> Result<ExitCode> {
    let keys = args
        .keys
        .clone()
        .unwrap_or_else(|| ctx.settings.keys.clone());
    let keyring = Keyring::load_dir(&keys)?;
    let signed_namespace = args
        .identity
        .clone()
        .unwrap_or_else(|| ctx.settings.namespace.clone());
    let registries = if args.registries.is_empty() {
        vec![signed_namespace.clone()]
    } else {
        args.registries.clone()
    };
    let lookaside = lookaside_url(args.lookaside.as_deref().unwrap_or(&ctx.settings.lookaside))?;
    let files = build(
        &keyring,
        &PolicyRequest {
            registries,
            signed_namespace,
            lookaside: lookaside.clone(),
        },
    )?;
    let policy = args.out.join("policy.json");
    let yaml = args.out.join("registries.d").join(&files.registries_d_name);
    std::fs::create_dir_all(yaml.parent().expect("has a parent"))
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_atomic(&policy, &files.policy_json)?;
    write_atomic(&yaml, &files.registries_d_yaml)?;
    if ctx.json {
        let scopes: Vec<serde_json::Value> = files
            .scopes
            .iter()
            .map(|(scope, rule)| serde_json::json!({"scope": scope, "signedIdentity": rule.policy_json()}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "policy": policy, "registries_d": yaml, "keys": keyring.len(),
                "lookaside": lookaside, "scopes": scopes,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("wrote {}", policy.display());
    println!("wrote {}", yaml.display());
    for (scope, rule) in &files.scopes {
        println!(
            "  {scope}: signedBy any of {} key(s) from {}, {}, signatures from {lookaside}",
            keyring.len(),
            keys.display(),
            describe(rule)
        );
    }
    println!(
        "install: merge {} into /etc/containers/policy.json (other images stay accepted: default insecureAcceptAnything) and copy {} to /etc/containers/registries.d/",
        policy.display(),
        yaml.display()
    );
    println!("note: containers-policy can only express \"any one of these keys\": podman/skopeo accept an image with ONE valid signature by any listed maintainer. The release quorum (distinct maintainers) is checked by `stagex verify`.");
    println!("note: containers/image (podman, skopeo) rejects signatures by keys that are expired NOW, even ones made while the key was valid; `stagex verify` applies the OpenPGP rule (valid if made while the key was alive). Keep keys/ up to date with extended keys.");
    Ok(ExitCode::SUCCESS)
}

fn describe(rule: &crate::sign::identity::IdentityRule) -> String {
    match rule {
        crate::sign::identity::IdentityRule::RemapIdentity {
            prefix,
            signed_prefix,
        } => format!("identity remapped {prefix} -> {signed_prefix}"),
        other => format!("identity rule {}", other.name()),
    }
}

/// A URL as registries.d wants it: a directory becomes `file://` + its absolute path.
fn lookaside_url(location: &str) -> Result<String> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let path = Path::new(location);
    let absolute =
        std::path::absolute(path).with_context(|| format!("making {} absolute", path.display()))?;
    Ok(format!("file://{}", absolute.display()))
}
