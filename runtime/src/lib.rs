//! The Hartonomous runtime: everything that composes the loader, the kernels and the store into
//! the daemon and its CLI: the store ([`store`]), ingest and inspect, the pager that makes stored
//! weights resident on the GPU ([`pager`]), the model architectures ([`models`]), derived models ([`student`]), tenants
//! and access ([`governance`]) and the daemon
//! with its HTTPS API and lineage writer ([`serve`]). See ARCHITECTURE.md.
//!
//! Invariant: only this crate knows the store, the wire protocols and the models.

pub mod bench;
pub mod governance;
pub mod ingest;
pub mod inspect;
pub mod models;
pub mod pager;
pub mod progress;
pub mod search;
pub mod serve;
pub mod store;
pub mod student;
