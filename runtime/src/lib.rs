//! The Hartonomous runtime: everything that composes the loader, the kernels and the store into
//! the daemon and its CLI. Today it holds the store and the CLI's commands (`inspect`, `ingest`);
//! the pager, models, APIs and lineage arrive with their issues (see ARCHITECTURE.md).
//!
//! Invariant: only this crate knows the store, the wire protocols and the models.

pub mod ingest;
pub mod inspect;
pub mod progress;
pub mod store;
