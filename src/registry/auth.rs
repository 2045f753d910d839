//! Registry credentials: `auths` entries of the docker/podman auth files
//! (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`), base64
//! `user:pass`. Anonymous when none matches. Credential helpers are not run.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine;
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// The auth files searched, first match wins.
pub fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(p).join("containers/auth.json"));
    }
    if let Some(p) = std::env::var_os("DOCKER_CONFIG") {
        files.push(PathBuf::from(p).join("config.json"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        files.push(PathBuf::from(home).join(".docker/config.json"));
    }
    files
}

/// The host part of an `auths` key (`https://host/v1/` -> `host`).
fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// Finds `(user, password)` for `host` in auth file `text`.
pub fn find_in(text: &str, host: &str) -> Result<Option<(String, String)>> {
    let file: AuthFile = serde_json::from_str(text).context("invalid auth file JSON")?;
    for (key, entry) in &file.auths {
        if key_host(key) != host {
            continue;
        }
        let Some(auth) = &entry.auth else { continue };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .with_context(|| format!("auths[{key:?}].auth is not base64"))?;
        let decoded = String::from_utf8(decoded)
            .with_context(|| format!("auths[{key:?}].auth is not UTF-8"))?;
        let (user, pass) = decoded
            .split_once(':')
            .with_context(|| format!("auths[{key:?}].auth is not base64 of user:password"))?;
        return Ok(Some((user.to_string(), pass.to_string())));
    }
    Ok(None)
}

/// Credentials for `host` from the first auth file that has them.
pub fn credentials(host: &str) -> Result<Option<(String, String)>> {
    for path in auth_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Some(found) = find_in(&text, host).with_context(|| path.display().to_string())? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_basic_credentials_by_host() {
        let text =
            r#"{"auths":{"https://reg.example:5000/v1/":{"auth":"dXNlcjpwYTpzcw=="},"other":{}}}"#;
        assert_eq!(
            find_in(text, "reg.example:5000").unwrap(),
            Some(("user".into(), "pa:ss".into()))
        );
        assert_eq!(find_in(text, "other.example").unwrap(), None);
        assert!(find_in(r#"{"auths":{"h":{"auth":"!!"}}}"#, "h").is_err());
    }
}
