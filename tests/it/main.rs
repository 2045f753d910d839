//! Owns: the ONE integration-test binary (issue 18: each test binary linked
//! the whole crate, 46 times). Every test module is declared here; the shared
//! support modules stay in tests/<name>/ so the benches can include them too.
//! Three tests keep binaries of their own because they change process-wide
//! state (environment, umask): registry_auth, layer_golden_env,
//! layer_extract_umask.

#[path = "../build_support/mod.rs"]
mod build_support;
#[path = "../layer_support/mod.rs"]
mod layer_support;
#[path = "../pallet_support/mod.rs"]
mod pallet_support;
#[path = "../peers/mod.rs"]
mod peers;
#[path = "../publish_support/mod.rs"]
mod publish_support;
#[path = "../sign_support/mod.rs"]
mod sign_support;
#[path = "../sigs_support/mod.rs"]
mod sigs_support;

mod build_buildah;
mod build_graph;
mod build_native;
mod build_plan;
mod build_schedule;
mod checked_targets;
mod child_deadlines;
mod concurrent_writers;
mod diff;
mod fetch_mirrors;
mod image_model;
mod image_peers;
mod keys;
mod layer_entries;
mod layer_extract;
mod layer_golden;
mod net_not_found;
mod net_timeouts;
mod out_integrity;
mod package_load;
mod package_targets_py;
mod pallet_catalog;
mod pallet_conflicts;
mod pallet_containerfiles;
mod pallet_entries;
mod pallet_every;
mod pallet_flatten;
mod pallet_pull_faults;
mod pallet_registry;
mod pallet_verify;
mod peers_smoke;
mod preseed;
mod progress_tty;
mod properties;
mod publish_demo;
mod publish_faults;
mod publish_gate;
mod publish_registry;
mod publish_snapshot;
mod publish_tls;
mod push_mount;
mod registry_certs;
mod registry_client;
mod registry_faults;
mod registry_tls;
mod release;
mod reproduce;
mod sign_keys;
mod sign_peers;
mod sign_policy;
mod sign_preverify;
mod sign_release;
mod sign_verify;
mod sigs_audit;
mod sigs_mirror;
mod sigs_mirror_race;
mod sigs_options;
mod sigs_sync;
mod sigstore;
