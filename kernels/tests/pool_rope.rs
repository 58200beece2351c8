//! Mean pooling + L2 normalisation and RoPE (both layouts) against the CPU references.

mod common;

use common::{assert_close, f32_tolerance, gpu, poisoned, random, upload};
use hartonomous_kernels::ops::pool::mean_pool;
use hartonomous_kernels::ops::rope::{rope, RopeLayout, RopeTable};
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

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
