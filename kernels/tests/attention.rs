//! Attention (prefill and decode against a KV cache, grouped-query heads, causal and padding
//! masks) against the f64 reference. Tolerance: 1e-5 of Σ p·|v| per output (the weighted sum's
//! magnitude) plus the effect of f32 score rounding, a few ulps of the scaled dot products
//! (≤ 1e-5 relative on probabilities for |q·k|·scale up to ~20).

mod common;

use common::{assert_close, gpu, poisoned, random, upload};
use hartonomous_kernels::ops::attention::{attention, kv_write, AttentionMask};
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
        rows: None,
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
    let m = AttentionMask { causal: false, q_pos0: 0, key_mask: Some(&mt), rows: None };
    gpu().run(|rec| attention(rec, &qt, &kt, &kt, 2, m, 1.0, &out)).expect("runs");
    assert_eq!(gpu().download_f32(&out).expect("download"), [0.0; 4]);
}

/// Continuous batching: B rows, each reading its own slot of a [slots, capacity, kv_heads, D]
/// cache from its own position, in one dispatch; every row must equal the reference run on its
/// slot alone (a single-sequence cache).
#[allow(clippy::too_many_arguments)]
fn check_slotted(rows: &[(u32, u32)], t: usize, heads: usize, kv_heads: usize, d: usize, slots: usize, capacity: usize, seed: u64) {
    let b = rows.len();
    let per_slot = capacity * kv_heads * d;
    let q = random(b * t * heads * d, seed, 1.0);
    let k = random(slots * per_slot, seed ^ 1, 1.0);
    let v = random(slots * per_slot, seed ^ 2, 1.0);
    let scale = 1.0 / (d as f32).sqrt();
    let (qt, kt, vt) = (upload(&q, &[b, t, heads, d]), upload(&k, &[slots, capacity, kv_heads, d]), upload(&v, &[slots, capacity, kv_heads, d]));
    let flat: Vec<u32> = rows.iter().flat_map(|&(s, p)| [s, p]).collect();
    let rows_t = gpu().upload_u32(&flat, &[b, 2]).expect("upload");
    let out = poisoned(&[b, t, heads, d]);
    let m = AttentionMask { causal: true, q_pos0: 0, key_mask: None, rows: Some(&rows_t) };
    gpu().run(|rec| attention(rec, &qt, &kt, &vt, capacity, m, scale, &out)).expect("attention runs");
    let got = gpu().download_f32(&out).expect("download");
    let row_len = t * heads * d;
    for (bi, &(slot, pos)) in rows.iter().enumerate() {
        let slot = slot as usize;
        let (want, mag) = reference::attention(
            &q[bi * row_len..][..row_len],
            &k[slot * per_slot..][..per_slot],
            &v[slot * per_slot..][..per_slot],
            None,
            (1, t, heads, d),
            (capacity, kv_heads, capacity),
            true,
            pos as usize,
            scale,
        );
        let what = format!("slotted attention row {bi} (slot {slot}, position {pos}) t{t} h{heads}/{kv_heads} d{d}");
        assert_close(&got[bi * row_len..][..row_len], &want, |i| 2e-5 * mag[i] + 1e-6, &what);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20))]

    #[test]
    fn slotted_attention_matches_each_sequence_alone(
        slots in 1usize..5, b in 1usize..6, t in 1usize..4, kv_heads in 1usize..4, group in 1usize..4,
        d in 1usize..70, capacity in 4usize..300, seed in any::<u64>(),
    ) {
        let rows: Vec<(u32, u32)> = (0..b)
            .map(|i| (((seed >> (i * 3)) as usize % slots) as u32, ((seed >> (i * 7)) as usize % (capacity - t + 1)) as u32))
            .collect();
        check_slotted(&rows, t, kv_heads * group, kv_heads, d, slots, capacity, seed);
    }
}

#[test]
fn pinned_smollm2_decode_batch_of_eight_sequences() {
    // Eight sequences at different lengths in a pool of 8 slots of 512, SmolLM2's heads.
    let rows: Vec<(u32, u32)> = (0..8).map(|i| (7 - i, 17 + 61 * i)).collect();
    check_slotted(&rows, 1, 9, 3, 64, 8, 512, 41);
}

#[test]
fn kv_write_places_each_row_at_its_slot_and_position_and_drops_out_of_range_rows() {
    let (slots, capacity, width, t) = (3usize, 5usize, 8usize, 2usize);
    // Row 2 would run past the cache's end at its second token: that token is dropped.
    let rows = [(2u32, 0u32), (0, 3), (1, 4)];
    let src = random(rows.len() * t * width, 7, 1.0);
    let cache_init = random(slots * capacity * width, 8, 1.0);
    let cache = upload(&cache_init, &[slots, capacity, 2, width / 2]);
    let flat: Vec<u32> = rows.iter().flat_map(|&(s, p)| [s, p]).collect();
    let rows_t = gpu().upload_u32(&flat, &[rows.len(), 2]).expect("upload");
    let src_t = upload(&src, &[rows.len(), t, width]);
    gpu().run(|rec| kv_write(rec, &src_t, &rows_t, &cache)).expect("kv_write runs");
    let mut want = cache_init.clone();
    for (b, &(slot, pos)) in rows.iter().enumerate() {
        for ti in 0..t {
            let p = pos as usize + ti;
            if p < capacity {
                let at = (slot as usize * capacity + p) * width;
                want[at..at + width].copy_from_slice(&src[(b * t + ti) * width..][..width]);
            }
        }
    }
    assert_eq!(gpu().download_f32(&cache).expect("download"), want);
}

#[test]
fn kv_write_refuses_a_width_that_does_not_match_the_cache() {
    let src = upload(&[0.0; 8], &[1, 1, 8]);
    let cache = upload(&[0.0; 48], &[2, 4, 6]);
    let rows = gpu().upload_u32(&[0, 0], &[1, 2]).expect("upload");
    let err = gpu().run(|rec| kv_write(rec, &src, &rows, &cache)).expect_err("width 8 into positions of 6");
    assert!(err.to_string().contains("8 elements per position"), "{err}");
}
