//! The ONE network layer. Owns: the process-wide tokio runtime (created
//! lazily, shared by the registry client, the https lookaside and fetch;
//! no other runtime exists in the library), the shared HTTP configuration
//! (`config`: timeouts, user agent, private CAs with `certs` (certs.d),
//! plain HTTP for loopback),
//! and the typed errors every network call returns (`error`). It knows
//! nothing about images, signatures or packages.
pub mod certs;
mod classify;
pub mod config;
pub mod error;
pub mod retry;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

pub use certs::CERTS_DIR_ENV;
pub use config::{
    config, host_of, http_client, is_loopback, uses_tls, NetConfig, CA_FILE_ENV, TIMEOUT_ENV,
    TLS_HOSTS_ENV, USER_AGENT,
};
pub use error::{ConfigError, NetError, RegistryError};

/// The process-wide multi-thread runtime (created on first use).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("stagex-net")
            .enable_all()
            .build()
            // Only fails when the OS refuses threads or an epoll fd: nothing
            // a caller could recover from.
            .expect("starting the tokio runtime (out of threads or file descriptors?)")
    })
}

/// Runs `future` to completion on the shared runtime, from synchronous
/// code. Called from inside a multi-thread runtime (a blocking task, a
/// worker), it blocks in place instead of starting a nested runtime; inside
/// a current-thread runtime tokio forbids blocking: use the async API there.
pub fn block_on<F: Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => tokio::task::block_in_place(|| handle.block_on(future)),
        Err(_) => runtime().block_on(future),
    }
}

/// `future` under a total deadline: a small document (manifest, token,
/// signature) must be complete within `after`, however slowly it trickles.
pub async fn within<T>(
    after: Duration,
    host: &str,
    what: &str,
    future: impl Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    tokio::time::timeout(after, future)
        .await
        .unwrap_or_else(|_| Err(NetError::deadline(host, what, after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runtime_serves_every_thread() {
        let a = runtime() as *const _ as usize;
        let b = std::thread::spawn(|| runtime() as *const _ as usize)
            .join()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(block_on(async { 41 + 1 }), 42);
    }

    #[test]
    fn block_on_nests_from_blocking_tasks() {
        // A synchronous library call made from a blocking task must not try
        // to start a second runtime.
        let got = block_on(async {
            tokio::task::spawn_blocking(|| block_on(async { 7 }))
                .await
                .unwrap()
        });
        assert_eq!(got, 7);
    }

    #[test]
    fn a_deadline_names_host_and_object() {
        let result: Result<(), NetError> = block_on(within(
            Duration::from_millis(20),
            "127.0.0.1:9",
            "GET http://127.0.0.1:9/x",
            async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            },
        ));
        let error = result.unwrap_err();
        assert!(matches!(error, NetError::Timeout { .. }), "{error:?}");
        assert!(error.to_string().contains("GET http://127.0.0.1:9/x"));
    }
}
