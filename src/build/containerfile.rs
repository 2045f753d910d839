//! Containerfile packages through an external OCI builder (stub).
use anyhow::{bail, Result};

use super::image_out::PackageOutput;
use super::package_build::BuildOptions;
use crate::package::{Package, PackageTree};

pub fn build(
    _tree: &PackageTree,
    package: &Package,
    _options: &BuildOptions,
) -> Result<(PackageOutput, String)> {
    bail!(
        "{}: Containerfile builds are not implemented yet",
        package.id
    )
}
