//! Shared harness for integration tests against real peers (registry,
//! nginx, skopeo, umoci, podman, gpg). Each test file includes it with
//! `mod peers;`.
#![allow(dead_code)]
pub mod gpg;
pub mod nginx;
pub mod registry;
pub mod tools;
