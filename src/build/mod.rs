//! Building package images: native declarative packages and external OCI builders.
