//! Shared helpers for the benchmarks under `benches/benches/`: where the test models are.

use std::path::PathBuf;

/// The folder holding the unpacked model wheels: `HARTONOMOUS_MODELS_DIR`, as set by
/// `scripts/test.sh` and `scripts/run-main.sh` (which download them).
pub fn models_dir() -> Option<PathBuf> {
    std::env::var_os("HARTONOMOUS_MODELS_DIR").map(PathBuf::from)
}
