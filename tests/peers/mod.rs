//! Shared harness for integration tests against real peers (registry,
//! nginx, skopeo, umoci, podman, gpg). Each test file includes it with
//! `mod peers;`.
pub mod demo_package;
pub mod fault_proxy;
pub mod gpg;
pub mod http_server;
pub mod mock_http;
pub mod nginx;
pub mod podman;
pub mod registry;
pub mod tls_registry;
pub mod tools;
