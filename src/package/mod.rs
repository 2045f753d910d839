//! Package definitions: the package.toml model and its placeholders,
//! loading a packages/ tree, the dependency graph between packages, and
//! fetching their sources.
pub mod fetch;
pub mod graph;
pub mod load;
pub mod model;
pub mod placeholders;

pub use load::PackageTree;
pub use model::{Package, ResolvedSource, Source};
