//! Owns: finding registry credentials the way container users keep them,
//! first match wins:
//! 1. `$STAGEX_REGISTRY_USER` / `$STAGEX_REGISTRY_PASSWORD` (CI), for the
//!    hosts listed in `$STAGEX_REGISTRY_HOSTS` (comma-separated), or, when
//!    that variable is unset, for the hosts the command was configured
//!    with (`bind_env_credentials`: stagex.toml's registries and the
//!    `--registry` flags); never for any other host;
//! 2. the auth files, in order `$REGISTRY_AUTH_FILE`,
//!    `$XDG_RUNTIME_DIR/containers/auth.json`, `$DOCKER_CONFIG/config.json`,
//!    `~/.docker/config.json`; in each, `credHelpers[host]`, then
//!    `auths[host].auth` (base64 `user:pass`), then `credsStore`. A helper
//!    is the program `docker-credential-<name>` from PATH, run as `get`
//!    with the host on stdin (the docker credential-helper protocol),
//!    under a timeout.
//!
//! Docker Hub answers to two names (`docker.io`, `index.docker.io`, and
//! `docker login` keys it as `https://index.docker.io/v1/`): each finds
//! credentials stored under the other.
//!
//! Anonymous when nothing matches. Must not: print or log a secret. When
//! credentials are sent is the client's business (`challenge`: only after
//! a 401 challenge, never in clear text except to loopback).
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::Deserialize;

/// CI credentials.
pub const USER_ENV: &str = "STAGEX_REGISTRY_USER";
pub const PASSWORD_ENV: &str = "STAGEX_REGISTRY_PASSWORD";
/// Limits the CI credentials to these hosts.
pub const HOSTS_ENV: &str = "STAGEX_REGISTRY_HOSTS";

/// Longest a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// What a helper answers.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
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

/// Docker Hub's names: `docker login` keys its credentials by the legacy
/// index URL (`https://index.docker.io/v1/`), podman and users by
/// `docker.io`; the API itself is on `index.docker.io`.
const HUB: &str = "docker.io";
const HUB_INDEX: &str = "index.docker.io";
/// The server URL `docker login` stores Hub credentials under (also what
/// it asks credential helpers for).
const HUB_SERVER_URL: &str = "https://index.docker.io/v1/";

/// One name per registry: Docker Hub's two host names are the same one.
fn canonical(host: &str) -> &str {
    if host == HUB_INDEX {
        HUB
    } else {
        host
    }
}

/// True when auth-file key (or host) `key` names registry `host`.
fn names_host(key: &str, host: &str) -> bool {
    canonical(key_host(key)) == canonical(host)
}

/// What to ask a credential helper for `host`, in order: for Docker Hub
/// the server URL `docker login` stored, then the host as written.
fn helper_servers(host: &str) -> Vec<&str> {
    if canonical(host) == HUB {
        vec![HUB_SERVER_URL, host]
    } else {
        vec![host]
    }
}

/// Where to get the credentials of `host` from one auth file.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    Basic(String, String),
    /// `docker-credential-<name>`.
    Helper(String),
}

/// Finds how to get `(user, password)` for `host` in auth file `text`:
/// `credHelpers` first, then `auths`, then `credsStore` (pure).
pub fn source_in(text: &str, host: &str) -> Result<Option<Stored>> {
    let file: AuthFile = serde_json::from_str(text).context("invalid auth file JSON")?;
    if let Some((_, helper)) = file.cred_helpers.iter().find(|(k, _)| names_host(k, host)) {
        return Ok(Some(Stored::Helper(helper.clone())));
    }
    for (key, entry) in &file.auths {
        if !names_host(key, host) {
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
        return Ok(Some(Stored::Basic(user.to_string(), pass.to_string())));
    }
    Ok(file
        .creds_store
        .filter(|s| !s.is_empty())
        .map(Stored::Helper))
}

/// Finds `(user, password)` stored inline for `host` in auth file `text`.
pub fn find_in(text: &str, host: &str) -> Result<Option<(String, String)>> {
    Ok(match source_in(text, host)? {
        Some(Stored::Basic(user, pass)) => Some((user, pass)),
        _ => None,
    })
}

/// The hosts the environment's credentials are for when
/// `$STAGEX_REGISTRY_HOSTS` is unset (see `bind_env_credentials`).
static BOUND_HOSTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Lets `$STAGEX_REGISTRY_USER`/`PASSWORD` go to the registry of
/// `registry` (`HOST[:PORT][/NAMESPACE]`) when `$STAGEX_REGISTRY_HOSTS` is
/// unset: the CLI binds stagex.toml's registries and `--registry` flags.
pub fn bind_env_credentials(registry: &str) {
    let registry = registry.strip_prefix("docker://").unwrap_or(registry);
    let host = registry.split('/').next().unwrap_or(registry).to_string();
    let mut hosts = BOUND_HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    if !host.is_empty() && !hosts.contains(&host) {
        hosts.push(host);
    }
}

/// Whether the environment's credentials are for `host`.
fn env_applies(host: &str) -> bool {
    match std::env::var(HOSTS_ENV) {
        Ok(hosts) => hosts.split(',').any(|h| names_host(h.trim(), host)),
        Err(_) => BOUND_HOSTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|h| names_host(h, host)),
    }
}

/// The CI credentials from the environment, if they apply to `host`.
fn from_env(host: &str) -> Option<(String, String)> {
    let user = std::env::var(USER_ENV).ok().filter(|u| !u.is_empty())?;
    let password = std::env::var(PASSWORD_ENV).ok()?;
    env_applies(host).then_some((user, password))
}

/// Credentials found for a host, and where they came from (for the
/// message when the registry refuses them; never the secret itself).
#[derive(Clone, PartialEq, Eq)]
pub struct Found {
    pub user: String,
    pub password: String,
    /// `$STAGEX_REGISTRY_USER`, `auths in /root/.docker/config.json`,
    /// `docker-credential-pass (named in /root/.docker/config.json)`.
    pub source: String,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Found({}, <hidden>, from {})", self.user, self.source)
    }
}

/// Credentials for `host`: the environment, then the auth files.
pub fn credentials(host: &str) -> Result<Option<Found>> {
    if let Some((user, password)) = from_env(host) {
        let source = format!("${USER_ENV}/${PASSWORD_ENV}");
        return Ok(Some(Found {
            user,
            password,
            source,
        }));
    }
    for path in auth_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let source = source_in(&text, host).with_context(|| path.display().to_string())?;
        let found = match source {
            Some(Stored::Basic(user, password)) => Some(Found {
                user,
                password,
                source: format!("auths in {}", path.display()),
            }),
            Some(Stored::Helper(name)) => from_helper(&name, host, &path)?,
            None => None,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// What helper `docker-credential-<name>` (named in auth file `path`) has
/// for `host`, under each name the host is stored by.
fn from_helper(name: &str, host: &str, path: &Path) -> Result<Option<Found>> {
    let program = format!("docker-credential-{name}");
    let named_in = format!("{program} (named in {})", path.display());
    for server in helper_servers(host) {
        let found = run_helper(Path::new(&program), server)
            .with_context(|| format!("credentials for {server} from {named_in}"))?;
        if let Some((user, password)) = found {
            return Ok(Some(Found {
                user,
                password,
                source: named_in,
            }));
        }
    }
    Ok(None)
}

/// Runs `<program> get` with `host` on stdin. `None` when the helper has
/// no credentials for it (its "credentials not found" answer).
pub fn run_helper(program: &Path, host: &str) -> Result<Option<(String, String)>> {
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "cannot run {} (install it, or remove it from the auth file)",
                program.display()
            )
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A helper that exits without reading its input (it failed early) closes
    // the pipe: its exit status and stderr below say why, not EPIPE.
    match stdin.write_all(host.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    drop(stdin);
    // The output is read on a thread so that a helper which hangs (waiting
    // for a keyring unlock, say) fails the lookup instead of the run.
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(HELPER_TIMEOUT) {
        Ok(output) => output?,
        Err(_) => {
            // SAFETY: kill(2) on the pid of the child we started; it has
            // not been reaped (the waiting thread is still blocked on it).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            bail!(
                "{} did not answer within {}s",
                program.display(),
                HELPER_TIMEOUT.as_secs()
            );
        }
    };
    if !output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        // The protocol's own answer for "no credentials for this host".
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        bail!(
            "{} get failed ({}): {}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "{} get: expected JSON with Username and Secret",
            program.display()
        )
    })?;
    Ok(Some((answer.username, answer.secret)))
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

    #[test]
    fn docker_hub_names_find_each_others_credentials() {
        // What `docker login` writes for Docker Hub.
        let login = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#;
        // What podman writes.
        let podman = r#"{"auths":{"docker.io":{"auth":"dTpw"}}}"#;
        for text in [login, podman] {
            for host in ["docker.io", "index.docker.io"] {
                assert_eq!(
                    find_in(text, host).unwrap(),
                    Some(("u".into(), "p".into())),
                    "{host} in {text}"
                );
            }
            assert_eq!(find_in(text, "registry.example").unwrap(), None);
        }
        let helpers = r#"{"credHelpers":{"index.docker.io":"hub"}}"#;
        assert_eq!(
            source_in(helpers, "docker.io").unwrap(),
            Some(Stored::Helper("hub".into()))
        );
        assert!(names_host("index.docker.io", "docker.io"));
        assert!(!names_host("docker.io", "registry.example"));
        assert_eq!(
            helper_servers("docker.io"),
            vec!["https://index.docker.io/v1/", "docker.io"]
        );
        assert_eq!(helper_servers("reg.example"), vec!["reg.example"]);
    }

    #[test]
    fn helpers_come_first_then_auths_then_the_store() {
        let text = r#"{"auths":{"a.example":{"auth":"dTpw"}},"credHelpers":{"h.example":"pass"},"credsStore":"desktop"}"#;
        assert_eq!(
            source_in(text, "h.example").unwrap(),
            Some(Stored::Helper("pass".into()))
        );
        assert_eq!(
            source_in(text, "a.example").unwrap(),
            Some(Stored::Basic("u".into(), "p".into()))
        );
        assert_eq!(
            source_in(text, "z.example").unwrap(),
            Some(Stored::Helper("desktop".into()))
        );
        assert_eq!(source_in("{}", "z.example").unwrap(), None);
    }

    #[test]
    fn runs_a_credential_helper_by_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-test");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\nif [ \"$1\" = get ] && [ \"$host\" = reg.example ]; then\n  echo '{\"ServerURL\":\"reg.example\",\"Username\":\"ci\",\"Secret\":\"t0k\"}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            run_helper(&helper, "reg.example").unwrap(),
            Some(("ci".into(), "t0k".into()))
        );
        assert_eq!(run_helper(&helper, "other.example").unwrap(), None);
        let err = run_helper(&dir.path().join("missing"), "x").unwrap_err();
        assert!(format!("{err:#}").contains("cannot run"), "{err:#}");
    }
}
