//! Acceptance (issue 3, aggregates): sum, mean, weighted mean, standard deviation, median and
//! average pairwise cosine of N vectors against the f64 references.

mod common;

use common::{assert_close, f32_tolerance, gpu, poisoned, random, upload};
use hartonomous_kernels::ops::aggregate::{aggregate, average_pairwise_cosine, unit_sum, Aggregate};
use hartonomous_kernels::{reference, DType};
use proptest::prelude::*;

fn check(n: usize, d: usize, seed: u64) {
    // Some repeated values so the median's ordering of equal elements matters.
    let x: Vec<f32> = random(n * d, seed, 3.0).iter().map(|v| (v * 8.0).round() / 8.0).collect();
    let weights: Vec<f32> = random(n, seed ^ 1, 1.0).iter().map(|v| v.abs() + 0.01).collect();
    let (xt, wt) = (upload(&x, &[n, d]), upload(&weights, &[n]));
    for (op, id) in [
        (Aggregate::Sum, 0),
        (Aggregate::Mean, 1),
        (Aggregate::WeightedMean(&wt), 2),
        (Aggregate::StdDev, 3),
        (Aggregate::Median, 4),
    ] {
        let out = poisoned(&[d]);
        gpu().run(|rec| aggregate(rec, &xt, op, &out)).expect("aggregate runs");
        let got = gpu().download_f32(&out).expect("download");
        let want = reference::aggregate(&x, n, d, id, Some(&weights));
        // Sums of N terms of magnitude <= 3 round to ~N·ε·3 in f32; the tolerance scales with it.
        assert_close(&got, &want, |i| f32_tolerance(want[i]) + 4.0 * n as f64 * f64::from(f32::EPSILON) * 3.0, &format!("{op:?} n{n} d{d}"));
    }
    let (sum, norms) = (poisoned(&[d]), gpu().empty(&[n], DType::F32).expect("alloc"));
    gpu().run(|rec| unit_sum(rec, &xt, &norms, &sum)).expect("unit sum runs");
    let got = average_pairwise_cosine(&gpu().download_f32(&sum).expect("download"), &gpu().download_f32(&norms).expect("download"));
    let want = reference::average_pairwise_cosine(&x, n, d);
    assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "average pairwise cosine n{n} d{d}: got {got}, want {want}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn aggregates_match_reference(n in 1usize..300, d in 1usize..100, seed in any::<u64>()) {
        check(n, d, seed);
    }
}

#[test]
fn pinned_ensemble_and_large_median() {
    check(2, 384, 41); // an ensemble of two embeddings
    check(2048, 3, 42); // the largest median
    check(1, 5, 43); // one vector: median and mean are itself, std 0, pairwise cosine 0
}

#[test]
fn median_past_its_limit_is_an_error() {
    let x = upload(&vec![0.0; 2049], &[2049, 1]);
    let out = poisoned(&[1]);
    let err = gpu().run(|rec| aggregate(rec, &x, Aggregate::Median, &out)).unwrap_err();
    assert!(err.to_string().contains("at most 2048"), "{err}");
}
