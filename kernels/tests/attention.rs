//! Attention (prefill and decode against a KV cache, grouped-query heads, causal and padding
//! masks) against the f64 reference. Tolerance: 1e-5 of Σ p·|v| per output (the weighted sum's
//! magnitude) plus the effect of f32 score rounding, a few ulps of the scaled dot products
//! (≤ 1e-5 relative on probabilities for |q·k|·scale up to ~20).

mod common;

use common::{assert_close, gpu, poisoned, random, upload};
use hartonomous_kernels::ops::attention::{attention, AttentionMask};
use hartonomous_kernels::reference;
use proptest::prelude::*;

#[allow(clippy::too_many_arguments)]
fn check(b: usize, t: usize, heads: usize, kv_heads: usize, d: usize, capacity: usize, kv_len: usize, causal: bool, q_pos0: usize, padded: bool, seed: u64) {
    let q = random(b * t * heads * d, seed, 1.0);
    let k = random(b * capacity * kv_heads * d, seed ^ 1, 1.0);
    let v = random(b * capacity * kv_heads * d, seed ^ 2, 1.0);
    let mask: Vec<u32> = (0..b * capacity).map(|i| u32::from(!padded || (i as u64 * 7 + seed) % 4 != 0)).collect();
    let scale = 1.0 / (d as f32).sqrt();
    let (qt, kt, vt) = (upload(&q, &[b, t, heads, d]), upload(&k, &[b, capacity, kv_heads, d]), upload(&v, &[b, capacity, kv_heads, d]));
    let mt = gpu().upload_u32(&mask, &[b, capacity]).expect("upload");
    let out = poisoned(&[b, t, heads, d]);
    let m = AttentionMask {
        causal,
        q_pos0,
        key_mask: padded.then_some(&mt),
    };
    gpu().run(|rec| attention(rec, &qt, &kt, &vt, kv_len, m, scale, &out)).expect("attention runs");
    let got = gpu().download_f32(&out).expect("download");
    let (want, mag) = reference::attention(
        &q,
        &k,
        &v,
        padded.then_some(mask.as_slice()),
        (b, t, heads, d),
        (capacity, kv_heads, kv_len),
        causal,
        q_pos0,
        scale,
    );
    assert_close(&got, &want, |i| 2e-5 * mag[i] + 1e-6, &format!("attention b{b} t{t} h{heads}/{kv_heads} d{d} kv{kv_len}/{capacity} causal={causal} pos0={q_pos0} padded={padded}"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(30))]

    #[test]
    fn attention_matches_reference(
        b in 1usize..3, t in 1usize..9, kv_heads in 1usize..4, group in 1usize..4, d in 1usize..80,
        extra in 0usize..600, causal in any::<bool>(), padded in any::<bool>(), seed in any::<u64>(),
    ) {
        // Keys past one 256-chunk exercise the online softmax; q_pos0 + t <= kv_len as in decoding.
        let kv_len = t + extra;
        let capacity = kv_len + (seed % 5) as usize;
        check(b, t, kv_heads * group, kv_heads, d, capacity, kv_len, causal, kv_len - t, padded, seed);
    }
}

#[test]
fn pinned_smollm2_decode_and_minilm_prefill() {
    // SmolLM2 decode: 9 query heads over 3 KV heads of 64, one new token at position 700.
    check(1, 1, 9, 3, 64, 1024, 701, true, 700, false, 31);
    // SmolLM2 prefill of 40 tokens into an empty cache.
    check(1, 40, 9, 3, 64, 64, 40, true, 0, false, 32);
    // MiniLM: 2 padded sequences of 128, 12 heads of 32, no causality.
    check(2, 128, 12, 12, 32, 128, 128, false, 0, true, 33);
}

#[test]
fn a_query_that_sees_no_key_outputs_zeros() {
    // Every key masked.
    let (qt, kt) = (upload(&[1.0; 4], &[1, 1, 1, 4]), upload(&[1.0; 8], &[1, 2, 1, 4]));
    let mt = gpu().upload_u32(&[0, 0], &[1, 2]).expect("upload");
    let out = poisoned(&[1, 1, 1, 4]);
    let m = AttentionMask { causal: false, q_pos0: 0, key_mask: Some(&mt) };
    gpu().run(|rec| attention(rec, &qt, &kt, &kt, 2, m, 1.0, &out)).expect("runs");
    assert_eq!(gpu().download_f32(&out).expect("download"), [0.0; 4]);
}
