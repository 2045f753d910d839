//! Registry client (oci-client wrapper).
