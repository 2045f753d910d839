//! Owns: the files a user installs so that podman/skopeo (containers/image)
//! verify StageX images on pull: `policy.json` (one `signedBy` requirement
//! per registry namespace, the trusted keys inline as `keyData`, the
//! identity rule, `remapIdentity` for mirrors) and `registries.d/<name>.yaml`
//! (the lookaside of each namespace). Pure: builds the bytes; the CLI
//! writes them. It cannot express a quorum: containers-policy's `signedBy`
//! accepts ONE signature by ANY listed key (`stagex verify` counts the
//! quorum).
use anyhow::{bail, Result};
use base64::Engine;
use sequoia_openpgp::serialize::Serialize as _;
use serde_json::{json, Map, Value};

use super::identity::{normalize_prefix, IdentityRule};
use super::keyring::Keyring;

/// What the policy is made of.
#[derive(Clone, Debug)]
pub struct PolicyRequest {
    /// Registry namespaces images are pulled from (`docker.io/stagex`,
    /// `quay.io/stagex`); normalized here.
    pub registries: Vec<String>,
    /// The namespace signatures name (`stagex` = `docker.io/stagex`):
    /// registries other than this one get `remapIdentity` to it.
    pub signed_namespace: String,
    /// Where signatures are served (`https://...`, `file:///...`).
    pub lookaside: String,
}

/// The generated files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFiles {
    pub policy_json: Vec<u8>,
    /// File name under `registries.d/`.
    pub registries_d_name: String,
    pub registries_d_yaml: Vec<u8>,
    /// (namespace, identity rule) per scope, for the report.
    pub scopes: Vec<(String, IdentityRule)>,
}

/// Builds policy.json and the registries.d YAML.
pub fn build(keyring: &Keyring, request: &PolicyRequest) -> Result<PolicyFiles> {
    if keyring.is_empty() {
        bail!("no trusted certificate to put in the policy");
    }
    if !request.lookaside.contains("://") {
        bail!(
            "lookaside {:?} is not a URL: give https://... or file:///absolute/path",
            request.lookaside
        );
    }
    let key_data = base64::engine::general_purpose::STANDARD.encode(keyring_bytes(keyring)?);
    let signed = normalize_prefix(&request.signed_namespace)?;
    let mut scopes = Vec::new();
    for registry in &request.registries {
        let scope = normalize_prefix(registry)?;
        let rule = if scope == signed {
            IdentityRule::MatchRepoDigestOrExact
        } else {
            IdentityRule::RemapIdentity {
                prefix: scope.clone(),
                signed_prefix: signed.clone(),
            }
        };
        if !scopes.iter().any(|(s, _)| *s == scope) {
            scopes.push((scope, rule));
        }
    }
    if scopes.is_empty() {
        bail!("no registry namespace given");
    }
    let mut docker = Map::new();
    for (scope, rule) in &scopes {
        docker.insert(
            scope.clone(),
            json!([{
                "type": "signedBy",
                "keyType": "GPGKeys",
                "keyData": key_data,
                "signedIdentity": rule.policy_json(),
            }]),
        );
    }
    let policy = json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": Value::Object(docker)},
    });
    let mut policy_json = serde_json::to_vec_pretty(&policy)?;
    policy_json.push(b'\n');
    let mut yaml = String::from(
        "# Where StageX signatures are served (written by `stagex policy`).\ndocker:\n",
    );
    for (scope, _) in &scopes {
        yaml += &format!(
            "  {}:\n    lookaside: {}\n",
            yaml_string(scope),
            yaml_string(&request.lookaside)
        );
    }
    Ok(PolicyFiles {
        policy_json,
        registries_d_name: "stagex.yaml".to_string(),
        registries_d_yaml: yaml.into_bytes(),
        scopes,
    })
}

/// Every trusted certificate, public parts, binary (a GPG keyring).
fn keyring_bytes(keyring: &Keyring) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    for cert in keyring.certs() {
        cert.serialize(&mut bytes)?;
    }
    Ok(bytes)
}

/// A double-quoted YAML scalar (JSON strings are valid YAML).
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp::cert::prelude::*;

    #[test]
    fn one_scope_per_namespace_mirrors_remapped() {
        let (cert, _) = CertBuilder::general_purpose(Some("a <a@example.org>"))
            .generate()
            .unwrap();
        let mut keyring = Keyring::default();
        keyring.add_cert(cert, "a".into());
        let files = build(
            &keyring,
            &PolicyRequest {
                registries: vec![
                    "stagex".into(),
                    "quay.io/stagex".into(),
                    "docker.io/stagex".into(),
                ],
                signed_namespace: "stagex".into(),
                lookaside: "https://sigs.example.org/".into(),
            },
        )
        .unwrap();
        let policy: Value = serde_json::from_slice(&files.policy_json).unwrap();
        let docker = &policy["transports"]["docker"];
        assert_eq!(docker.as_object().unwrap().len(), 2);
        assert_eq!(
            docker["docker.io/stagex"][0]["signedIdentity"]["type"],
            "matchRepoDigestOrExact"
        );
        assert_eq!(
            docker["quay.io/stagex"][0]["signedIdentity"],
            json!({"type": "remapIdentity", "prefix": "quay.io/stagex", "signedPrefix": "docker.io/stagex"})
        );
        assert_eq!(docker["quay.io/stagex"][0]["keyType"], "GPGKeys");
        let yaml = String::from_utf8(files.registries_d_yaml).unwrap();
        assert!(
            yaml.contains("  \"quay.io/stagex\":\n    lookaside: \"https://sigs.example.org/\"\n"),
            "{yaml}"
        );
        let bad = PolicyRequest {
            registries: vec!["stagex".into()],
            signed_namespace: "stagex".into(),
            lookaside: "signatures".into(),
        };
        assert!(build(&keyring, &bad).is_err());
    }
}
