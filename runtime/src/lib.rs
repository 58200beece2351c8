//! The Hartonomous runtime: everything that composes the loader, the kernels and the store into
//! the daemon and its CLI. Today it holds the CLI's commands; the store, pager, models, APIs and
//! lineage arrive with their issues (see ARCHITECTURE.md).
//!
//! Invariant: only this crate knows the store, the wire protocols and the models.

pub mod inspect;
pub mod progress;
