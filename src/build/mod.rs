//! Building package images: native declarative packages (our own layer
//! writer, no daemon) and Containerfile packages through an external OCI
//! builder whose result is normalized.
pub mod containerfile;
pub mod critical_path;
pub mod image_out;
pub mod inputs;
pub mod native;
pub mod package_build;
pub mod plan;
pub mod preseed;
pub mod reproduce;
pub mod reproduce_vary;
pub mod scheduler;
