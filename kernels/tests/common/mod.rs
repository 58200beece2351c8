//! Shared by the kernel tests: one GPU for the whole test binary, poisoned outputs, and the
//! tolerance helper that explains failures.
#![allow(dead_code)] // each test binary uses a different part

use std::sync::OnceLock;

use hartonomous_kernels::{DType, Gpu, Tensor};

/// The adapter the machine has (lavapipe in CI: `scripts/test.sh` installs it).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = Gpu::new().expect("a GPU adapter (scripts/test.sh installs lavapipe where there is none)");
        eprintln!("adapter: {}", gpu.report());
        gpu
    })
}

/// An f32 tensor full of NaN, so any element a kernel fails to write fails the comparison.
pub fn poisoned(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    gpu().upload(&vec![f32::NAN; n], shape, DType::F32).expect("upload")
}

pub fn upload(data: &[f32], shape: &[usize]) -> Tensor {
    gpu().upload_f32(data, shape).expect("upload")
}

/// Asserts |got[i] - want[i]| <= tolerance(i) for every element, reporting how many fail, the
/// worst excess (error / tolerance) and where. NaN in `got` always fails.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f64], tolerance: impl Fn(usize) -> f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = 0usize;
    let mut worst: Option<(f64, usize)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        let tol = tolerance(i);
        // Written so that a NaN (which compares false) counts as a failure.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let outside = !(err <= tol);
        if outside {
            bad += 1;
            let excess = if err.is_nan() { f64::INFINITY } else { err / tol.max(f64::MIN_POSITIVE) };
            if worst.is_none_or(|(e, _)| excess > e) {
                worst = Some((excess, i));
            }
        }
    }
    if let Some((excess, i)) = worst {
        panic!(
            "{what}: {bad} of {} elements out of tolerance; worst at index {i}: got {}, want {}, error {:e} = {excess:.1} x tolerance {:e}",
            want.len(),
            got[i],
            want[i],
            (f64::from(got[i]) - want[i]).abs(),
            tolerance(i)
        );
    }
}

/// f32 results of O(1) computations: 1e-5 relative, with an absolute floor of 1e-6 for values
/// near zero (a few f32 ulps of the O(1) intermediates they came from).
pub fn f32_tolerance(want: f64) -> f64 {
    1e-5 * want.abs() + 1e-6
}

/// Deterministic pseudo-random f32 in [-range, range) from a seed (tests stay reproducible
/// without storing data).
pub fn random(n: usize, seed: u64, range: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * range
        })
        .collect()
}
