//! Mean pooling + L2 normalisation and RoPE (both layouts) against the CPU references.

mod common;

use common::{assert_close, f32_tolerance, gpu, poisoned, random, upload};
use hartonomous_kernels::ops::pool::mean_pool;
use hartonomous_kernels::ops::rope::{rope, rope_append, RopeAppend, RopeLayout, RopeTable};
use hartonomous_kernels::reference;
use proptest::prelude::*;

fn run_pool(b: usize, s: usize, h: usize, mask: &[u32], normalize: bool, seed: u64) {
    let hidden = random(b * s * h, seed, 2.0);
    let (ht, mt) = (upload(&hidden, &[b, s, h]), gpu().upload_u32(mask, &[b, s]).expect("upload"));
    let out = poisoned(&[b, h]);
    gpu().run(|rec| mean_pool(rec, &ht, &mt, normalize, &out)).expect("runs");
    let got = gpu().download_f32(&out).expect("download");
    let want = reference::mean_pool(&hidden, mask, b, s, h, normalize);
    assert_close(&got, &want, |i| f32_tolerance(want[i]), &format!("mean_pool b{b} s{s} h{h} norm={normalize}"));
}

fn run_rope(t: usize, heads: usize, d: usize, rotary: usize, layout: RopeLayout, seed: u64) {
    let base = 100_000.0;
    let max_pos = 8192;
    let x = random(t * heads * d, seed, 4.0);
    let positions: Vec<u32> = (0..t).map(|i| ((i as u64 * 2654435761 + seed) % max_pos as u64) as u32).collect();
    let table = RopeTable::new(gpu(), base, rotary, max_pos).expect("table");
    let (xt, pt) = (upload(&x, &[t, heads, d]), gpu().upload_u32(&positions, &[t]).expect("upload"));
    let out = poisoned(&[t, heads, d]);
    gpu().run(|rec| rope(rec, &xt, &pt, &table, layout, &out)).expect("runs");
    let got = gpu().download_f32(&out).expect("download");
    let want = reference::rope(&x, &positions, heads, d, rotary, base, layout == RopeLayout::Interleaved);
    // Each output is a 2-term product of table entries (rounded to half an ulp) and inputs: a few
    // ulps of the pair's magnitude, at most √2·max|x|.
    let max_abs = x.iter().fold(0.0f64, |m, &v| m.max(f64::from(v.abs())));
    assert_close(&got, &want, |_| 4.0 * f64::from(f32::EPSILON) * max_abs * std::f64::consts::SQRT_2, &format!("rope {layout:?} t{t} h{heads} d{d} r{rotary}"));
}

/// rope_append: q rotated, k rotated and v appended to slotted caches, against reference::rope
/// and the cache layout kv_write documents ([slots, capacity, kv_heads, D], sequence b's token t
/// at (slot_b, pos_b + t)); `drop_last` puts the last sequence past the cache's end, whose rows
/// must be dropped (that cache row keeps its earlier contents).
#[allow(clippy::too_many_arguments)] // one case's shape, layout and seed, each named
fn run_rope_append(b: usize, t: usize, heads: usize, kv_heads: usize, d: usize, rotary: usize, layout: RopeLayout, drop_last: bool, seed: u64) {
    let (base, max_pos, slots, capacity) = (10_000.0, 64, b + 1, 12);
    let n = b * t;
    let (q, k, v) = (random(n * heads * d, seed, 3.0), random(n * kv_heads * d, seed ^ 1, 3.0), random(n * kv_heads * d, seed ^ 2, 3.0));
    // Sequence i in slot (2i + 1) mod slots at a position that leaves room for its T tokens.
    let mut rows: Vec<u32> = (0..b).flat_map(|i| [((2 * i + 1) % slots) as u32, ((seed as usize + 3 * i) % (capacity - t + 1)) as u32]).collect();
    if drop_last {
        rows[2 * b - 1] = (capacity - t + 1) as u32;
    }
    let positions: Vec<u32> = (0..n).map(|i| rows[2 * (i / t) + 1] + (i % t) as u32).collect();
    let width = kv_heads * d;
    let (k_fill, v_fill) = (random(slots * capacity * width, seed ^ 3, 1.0), random(slots * capacity * width, seed ^ 4, 1.0));
    let table = RopeTable::new(gpu(), base, rotary, max_pos).expect("table");
    let (qt, kt, vt) = (upload(&q, &[n, heads, d]), upload(&k, &[n, kv_heads, d]), upload(&v, &[n, kv_heads, d]));
    let (pt, rt) = (gpu().upload_u32(&positions, &[n]).expect("upload"), gpu().upload_u32(&rows, &[b, 2]).expect("upload"));
    let (k_cache, v_cache) = (upload(&k_fill, &[slots, capacity, kv_heads, d]), upload(&v_fill, &[slots, capacity, kv_heads, d]));
    let q_out = poisoned(&[n, heads, d]);
    let op = RopeAppend { q: &qt, k: &kt, v: &vt, positions: &pt, table: &table, layout, rows: &rt, q_out: &q_out, k_cache: &k_cache, v_cache: &v_cache };
    gpu().run(|rec| rope_append(rec, &op)).expect("rope_append runs");
    let interleaved = layout == RopeLayout::Interleaved;
    let want_q = reference::rope(&q, &positions, heads, d, rotary, base, interleaved);
    let k_rotated = reference::rope(&k, &positions, kv_heads, d, rotary, base, interleaved);
    let mut want_k: Vec<f64> = k_fill.iter().map(|&x| f64::from(x)).collect();
    let mut want_v: Vec<f64> = v_fill.iter().map(|&x| f64::from(x)).collect();
    for i in 0..n {
        let (slot, pos) = (rows[2 * (i / t)] as usize, rows[2 * (i / t) + 1] as usize + i % t);
        if pos < capacity {
            let at = (slot * capacity + pos) * width;
            want_k[at..at + width].copy_from_slice(&k_rotated[i * width..(i + 1) * width]);
            want_v[at..at + width].iter_mut().zip(&v[i * width..(i + 1) * width]).for_each(|(w, &x)| *w = f64::from(x));
        }
    }
    // As run_rope: a few ulps of a pair's magnitude; the copies exact.
    let tolerance = 4.0 * f64::from(f32::EPSILON) * 3.0 * std::f64::consts::SQRT_2;
    let what = format!("rope_append {layout:?} b{b} t{t} h{heads}/{kv_heads} d{d} r{rotary} drop_last={drop_last}");
    assert_close(&gpu().download_f32(&q_out).expect("download"), &want_q, |_| tolerance, &format!("{what}: q"));
    assert_close(&gpu().download_f32(&k_cache).expect("download"), &want_k, |_| tolerance, &format!("{what}: k cache"));
    assert_close(&gpu().download_f32(&v_cache).expect("download"), &want_v, |_| 0.0, &format!("{what}: v cache"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn rope_append_matches_rope_then_kv_write(
        b in 1usize..4, t in 1usize..6, kv_heads in 1usize..4, group in 1usize..4, half in 1usize..40,
        partial in any::<bool>(), interleaved in any::<bool>(), drop_last in any::<bool>(), seed in any::<u64>(),
    ) {
        let d = 2 * half;
        let rotary = if partial && half > 1 { 2 * (half / 2) } else { d };
        let layout = if interleaved { RopeLayout::Interleaved } else { RopeLayout::Halves };
        run_rope_append(b, t, kv_heads * group, kv_heads, d, rotary, layout, drop_last, seed);
    }

    #[test]
    fn mean_pool_matches_reference(b in 1usize..5, s in 1usize..70, h in 1usize..700, normalize in any::<bool>(), seed in any::<u64>()) {
        let mask: Vec<u32> = (0..b * s).map(|i| u32::from((i as u64 ^ seed) % 5 != 0)).collect();
        run_pool(b, s, h, &mask, normalize, seed);
    }

    #[test]
    fn rope_matches_reference(t in 1usize..20, heads in 1usize..10, half in 1usize..48, partial in any::<bool>(), interleaved in any::<bool>(), seed in any::<u64>()) {
        let d = 2 * half;
        let rotary = if partial && half > 1 { 2 * (half / 2) } else { d };
        let layout = if interleaved { RopeLayout::Interleaved } else { RopeLayout::Halves };
        run_rope(t, heads, d, rotary, layout, seed);
    }
}

#[test]
fn pinned_minilm_and_smollm2_shapes() {
    // MiniLM: 3 sequences of 128 with padding, 384 channels; one fully padded sequence pools to 0.
    let mut mask = vec![1u32; 3 * 128];
    mask[100..128].fill(0);
    mask[256..384].fill(0);
    run_pool(3, 128, 384, &mask, true, 21);
    // SmolLM2: 9 query heads of 64, both layouts, positions up to 8191.
    run_rope(17, 9, 64, 64, RopeLayout::Interleaved, 22);
    run_rope(17, 9, 64, 64, RopeLayout::Halves, 23);
    // SmolLM2's step: 9 query heads over 3 KV heads of 64, a prompt of 7 and a decode step of 3.
    run_rope_append(1, 7, 9, 3, 64, 64, RopeLayout::Interleaved, false, 24);
    run_rope_append(3, 1, 9, 3, 64, 64, RopeLayout::Interleaved, true, 25);
}

#[test]
fn the_two_rope_layouts_rotate_different_pairs() {
    // x = e0 of one head of dimension 4 at position 1: interleaved rotates it into e1, halves
    // into e2 (reference and kernel agree above; this pins which element moves).
    let want_interleaved = reference::rope(&[1.0, 0.0, 0.0, 0.0], &[1], 1, 4, 4, 10_000.0, true);
    let want_halves = reference::rope(&[1.0, 0.0, 0.0, 0.0], &[1], 1, 4, 4, 10_000.0, false);
    assert!(want_interleaved[1] > 0.8 && want_interleaved[2] == 0.0, "{want_interleaved:?}");
    assert!(want_halves[2] > 0.8 && want_halves[1] == 0.0, "{want_halves:?}");
}
