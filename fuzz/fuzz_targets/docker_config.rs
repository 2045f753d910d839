#![no_main]
//! Owns: fuzzing a docker/podman auth file (`config.json`, `auth.json`):
//! `credHelpers`, `auths` (base64 `user:password`) and `credsStore`, as
//! looked up for the host names registries go by. A helper named in the
//! file becomes a program name `docker-credential-<name>`.
use libfuzzer_sys::fuzz_target;
use stagex::registry::auth::{find_in, source_in, Stored};

const HOSTS: [&str; 4] = [
    "127.0.0.1:5000",
    "docker.io",
    "index.docker.io",
    "registry.example",
];

fuzz_target!(|data: &[u8]| {
    let Some(text) = stagex_fuzz::text(data) else {
        return;
    };
    for host in HOSTS {
        match source_in(text, host) {
            Ok(Some(Stored::Basic(user, _))) => assert!(!user.contains(':'), "{user:?}"),
            Ok(_) => {}
            Err(e) => {
                let _ = format!("{e:#}");
            }
        }
        let _ = find_in(text, host);
    }
});
