//! f32 matmul (A·Wᵀ, batched, with bias and residual epilogues) against the CPU reference.
//! Tolerance: 1e-5 of Σ|a·w| per output, the magnitude f32 rounding of the dot product is
//! relative to (its error grows like √K·ε·Σ|a·w| ≈ 4e-6 of it at K = 4096).

mod common;

use common::{assert_close, gpu, poisoned, random, upload};
use hartonomous_kernels::ops::matmul::{matmul, Epilogue};
use hartonomous_kernels::reference;
use proptest::prelude::*;

#[allow(clippy::too_many_arguments)]
fn check(batch: usize, m: usize, n: usize, k: usize, w_batched: bool, with_bias: bool, with_residual: bool, seed: u64) {
    let a = random(batch * m * k, seed, 1.0);
    let w = random(if w_batched { batch * n * k } else { n * k }, seed ^ 1, 1.0);
    let bias = random(n, seed ^ 2, 1.0);
    let residual = random(batch * m * n, seed ^ 3, 1.0);
    let three_d = batch > 1 || w_batched;
    let a_shape: Vec<usize> = if three_d { vec![batch, m, k] } else { vec![m, k] };
    let w_shape: Vec<usize> = if w_batched { vec![batch, n, k] } else { vec![n, k] };
    let c_shape: Vec<usize> = if three_d { vec![batch, m, n] } else { vec![m, n] };
    let (at, wt, bt, rt) = (upload(&a, &a_shape), upload(&w, &w_shape), upload(&bias, &[n]), upload(&residual, &c_shape));
    let out = poisoned(&c_shape);
    let epilogue = Epilogue {
        bias: with_bias.then_some(&bt),
        residual: with_residual.then_some(&rt),
    };
    gpu().run(|rec| matmul(rec, &at, &wt, epilogue, &out)).expect("matmul runs");
    let got = gpu().download_f32(&out).expect("download");
    let (want, scale) = reference::matmul(
        &a,
        &w,
        batch,
        m,
        n,
        k,
        with_bias.then_some(bias.as_slice()),
        with_residual.then_some(residual.as_slice()),
    );
    assert_close(&got, &want, |i| 1e-5 * scale[i] + 1e-7, &format!("matmul b{batch} {m}x{n}x{k} wb={w_batched} bias={with_bias} res={with_residual}"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn matmul_matches_reference(
        batch in 1usize..4, m in 1usize..140, n in 1usize..140, k in 1usize..300,
        w_batched in any::<bool>(), with_bias in any::<bool>(), with_residual in any::<bool>(), seed in any::<u64>(),
    ) {
        check(batch, m, n, k, w_batched && batch > 1, with_bias, with_residual, seed);
    }
}

#[test]
fn pinned_single_row_long_reduction() {
    check(1, 1, 5, 4096, false, true, false, 11);
}

#[test]
fn pinned_transformer_shape_with_residual() {
    // BERT's attention output projection on 128 tokens: [128, 384] · [384, 384]ᵀ + bias + residual.
    check(1, 128, 384, 384, false, true, true, 12);
}

#[test]
fn empty_dimensions_do_nothing() {
    let a = upload(&[], &[0, 4]);
    let w = upload(&[1.0; 8], &[2, 4]);
    let out = upload(&[], &[0, 2]);
    gpu().run(|rec| matmul(rec, &a, &w, Epilogue::default(), &out)).expect("empty matmul is fine");
}
