//! Acceptance (issue 3, item 3): top-k on the GPU equals the CPU reference exactly (indices and
//! order, ties to the lower index), for random keys with deliberate ties, k = 1, k > N, k up to
//! 1024, corpora in several pieces. And similarity search (cosine, L2, dot; f32 and f16 corpus)
//! against the f64 reference.

mod common;

use common::{gpu, random, upload};
use hartonomous_kernels::ops::similarity::{row_norms_sq, search, top_k, top_k_sorted, CorpusPiece, Metric};
use hartonomous_kernels::{reference, DType, Tensor};
use proptest::prelude::*;

/// Keys drawn from few distinct values, so ties are everywhere.
fn tied_keys(q: usize, n: usize, seed: u64) -> Vec<f32> {
    random(q * n, seed, 1.0).iter().map(|v| (v * 6.0).round()).collect()
}

fn check_top_k(q: usize, sizes: &[usize], k: usize, seed: u64) {
    let n: usize = sizes.iter().sum();
    let keys = tied_keys(q, n, seed);
    // Split each query's row into the pieces.
    let mut pieces = Vec::new();
    let mut start = 0;
    for &size in sizes {
        let piece: Vec<f32> = (0..q).flat_map(|qi| keys[qi * n + start..qi * n + start + size].to_vec()).collect();
        pieces.push(upload(&piece, &[q, size]));
        start += size;
    }
    let refs: Vec<&Tensor> = pieces.iter().collect();
    // The launcher's choice (on a CPU adapter, the insertion kernel for k <= 64) and the bitonic
    // kernel forced, so that CI checks both.
    for (route, result) in [
        ("top_k", gpu().run(|rec| top_k(rec, &refs, k)).expect("top_k runs")),
        ("top_k_sorted", gpu().run(|rec| top_k_sorted(rec, &refs, k)).expect("top_k_sorted runs")),
    ] {
        let got = result.download(gpu(), Metric::Dot).expect("download");
        for qi in 0..q {
            let row: Vec<f64> = keys[qi * n..(qi + 1) * n].iter().map(|&v| f64::from(v)).collect();
            let want: Vec<(u32, f32)> = reference::top_k(&row, k).into_iter().map(|(i, key)| (i, key as f32)).collect();
            assert_eq!(got[qi], want, "{route}, query {qi}: top-{k} of {n} keys in pieces {sizes:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn top_k_equals_reference_exactly(
        q in 1usize..4, sizes in proptest::collection::vec(1usize..5000, 1..4), k_pick in 0usize..5, seed in any::<u64>(),
    ) {
        let k = [1, 10, 64, 300, 1024][k_pick];
        check_top_k(q, &sizes, k, seed);
    }
}

#[test]
fn signed_zeros_tie_and_break_by_index() {
    let keys = upload(&[0.0, -0.0, 1.0, -0.0, 0.0], &[1, 5]);
    let result = gpu().run(|rec| top_k(rec, &[&keys], 5)).expect("top_k runs");
    let got: Vec<u32> = result.download(gpu(), Metric::Dot).expect("download")[0].iter().map(|p| p.0).collect();
    assert_eq!(got, [2, 0, 1, 3, 4]);
}

#[test]
fn pinned_top_k_edges() {
    check_top_k(1, &[5], 1024, 1); // k > N: all five, padding dropped
    check_top_k(2, &[1], 1, 2); // a single key
    check_top_k(1, &[2048, 2048, 1], 1024, 3); // exact chunk boundaries, three pieces
    check_top_k(1, &[20_000], 1, 4); // many merge levels for k = 1
    check_top_k(3, &[512, 513, 40_000], 64, 5); // the insertion kernel's run boundaries, k at its limit
}

fn vectors(n: usize, d: usize, seed: u64, integers: bool) -> Vec<f32> {
    random(n * d, seed, 1.0).iter().map(|v| if integers { (v * 4.0).round() } else { *v }).collect()
}

fn corpus_piece(values: &[f32], n: usize, d: usize, f16: bool) -> (Tensor, Tensor) {
    let t = if f16 {
        let halves: Vec<u16> = values.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
        gpu().upload(&halves, &[n, d], DType::F16).expect("upload")
    } else {
        upload(values, &[n, d])
    };
    let norms = gpu().empty(&[n], DType::F32).expect("alloc");
    gpu().run(|rec| row_norms_sq(rec, &t, &norms)).expect("norms");
    (t, norms)
}

fn run_search(queries: &[f32], q: usize, d: usize, pieces: &[(Tensor, Tensor)], metric: Metric, k: usize) -> Vec<Vec<(u32, f32)>> {
    let qt = upload(queries, &[q, d]);
    let corpus: Vec<CorpusPiece<'_>> = pieces.iter().map(|(v, n)| CorpusPiece { vectors: v, norms_sq: n }).collect();
    let result = gpu().run(|rec| search(rec, &qt, &corpus, metric, k)).expect("search runs");
    result.download(gpu(), metric).expect("download")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Small-integer vectors make every f32 product and sum exact (|values| <= 4, D < 300), so
    /// dot and L2 keys equal the f64 reference's and the results must match exactly, ties and all.
    #[test]
    fn dot_and_l2_search_is_exact_on_integer_vectors(
        q in 1usize..4, n1 in 1usize..3000, n2 in 0usize..1500, d in 1usize..300, f16 in any::<bool>(),
        l2 in any::<bool>(), k_pick in 0usize..3, seed in any::<u64>(),
    ) {
        let k = [1, 7, 1024][k_pick];
        let metric = if l2 { Metric::L2 } else { Metric::Dot };
        let queries = vectors(q, d, seed, true);
        let (a, b) = (vectors(n1, d, seed ^ 1, true), vectors(n2, d, seed ^ 2, true));
        let mut pieces = vec![corpus_piece(&a, n1, d, f16)];
        if n2 > 0 {
            pieces.push(corpus_piece(&b, n2, d, f16));
        }
        let got = run_search(&queries, q, d, &pieces, metric, k);
        let all = [a, b].concat();
        for qi in 0..q {
            let qv = &queries[qi * d..(qi + 1) * d];
            let keys: Vec<f64> = all.chunks(d).map(|x| reference::similarity_key(qv, x, if l2 { 2 } else { 0 })).collect();
            let want: Vec<(u32, f32)> = reference::top_k(&keys, k).into_iter().map(|(i, key)| (i, metric.score(key as f32))).collect();
            prop_assert_eq!(&got[qi], &want, "query {}", qi);
        }
    }

    /// Cosine involves square roots: every rank's score is within 1e-5 of the reference's at that
    /// rank, and each returned vector's true cosine is within 1e-5 of its reported score.
    #[test]
    fn cosine_search_matches_reference(
        q in 1usize..4, n in 1usize..4000, d in 1usize..400, f16 in any::<bool>(), seed in any::<u64>(),
    ) {
        let k = 20;
        let queries = vectors(q, d, seed, false);
        let corpus = vectors(n, d, seed ^ 1, false);
        let stored: Vec<f32> = if f16 { corpus.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect() } else { corpus.clone() };
        let pieces = [corpus_piece(&corpus, n, d, f16)];
        let got = run_search(&queries, q, d, &pieces, Metric::Cosine, k);
        for qi in 0..q {
            let qv = &queries[qi * d..(qi + 1) * d];
            let keys: Vec<f64> = stored.chunks(d).map(|x| reference::similarity_key(qv, x, 1)).collect();
            let want = reference::top_k(&keys, k);
            prop_assert_eq!(got[qi].len(), want.len());
            for (rank, (&(index, score), &(_, want_score))) in got[qi].iter().zip(&want).enumerate() {
                prop_assert!((f64::from(score) - want_score).abs() <= 1e-5, "query {} rank {}: {} vs {}", qi, rank, score, want_score);
                prop_assert!((f64::from(score) - keys[index as usize]).abs() <= 1e-5, "query {} rank {}: index {} reported {} true {}", qi, rank, index, score, keys[index as usize]);
            }
        }
    }
}

#[test]
fn k_out_of_range_is_an_error() {
    let keys = upload(&[1.0, 2.0], &[1, 2]);
    for k in [0, 1025] {
        let err = gpu().run(|rec| top_k(rec, &[&keys], k).map(|_| ())).unwrap_err();
        assert!(err.to_string().contains(&format!("{k} is outside 1..=1024")), "{err}");
    }
}
