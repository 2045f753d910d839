//! Pallets: declarative definitions (`definition`), `a+b` expressions
//! (`expr`), the pure composer (`compose`) and resolution of package images
//! from a registry or local layouts (`resolve`), the quorum gate on inputs
//! (`inputs`) and the whole command minus its flags (`pipeline`).
pub mod compose;
pub mod containerfile;
pub mod definition;
pub mod entry_rules;
pub mod expr;
pub mod input_gate;
pub mod materialize;
pub mod pipeline;
pub mod resolve;
// The pallet catalog (`catalog`), its built-in data and its reports.
pub mod catalog;
pub mod catalog_data;
pub mod catalog_report;
