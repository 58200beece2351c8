//! Elementwise ops, LayerNorm, RMSNorm and softmax against the CPU references, on whatever
//! adapter the machine has, over random shapes (tile-unfriendly sizes, single rows, long rows).

mod common;

use common::{assert_close, f32_tolerance, gpu, poisoned, random, upload};
use hartonomous_kernels::ops::elementwise::{binary, unary, BinaryOp, UnaryOp};
use hartonomous_kernels::ops::norm::{layer_norm, rms_norm};
use hartonomous_kernels::ops::softmax::softmax;
use hartonomous_kernels::{reference, KernelError};
use proptest::prelude::*;

fn run_unary(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    let xt = upload(x, &[x.len()]);
    let out = poisoned(&[x.len()]);
    gpu().run(|rec| unary(rec, op, &xt, &out)).expect("unary runs");
    gpu().download_f32(&out).expect("download")
}

fn run_binary(op: BinaryOp, a: &[f32], b: &[f32]) -> Vec<f32> {
    let (at, bt) = (upload(a, &[a.len()]), upload(b, &[b.len()]));
    let out = poisoned(&[a.len()]);
    gpu().run(|rec| binary(rec, op, &at, &bt, &out)).expect("binary runs");
    gpu().download_f32(&out).expect("download")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// GELU: the kernel's erf (Abramowitz & Stegun 7.1.26) is within 1.5e-7 of erf, so GELU is
    /// within ½·|x|·1.5e-7 of the reference, on top of f32 rounding.
    #[test]
    fn gelu_matches_reference(n in 1usize..3000, seed in any::<u64>()) {
        let x = random(n, seed, 8.0);
        let got = run_unary(UnaryOp::Gelu, &x);
        let want: Vec<f64> = x.iter().map(|&v| reference::gelu(v)).collect();
        assert_close(&got, &want, |i| f32_tolerance(want[i]) + 0.5 * f64::from(x[i].abs()) * 1.5e-7, "gelu");
    }

    /// SiLU: WGSL's exp is accurate to 3 + 2|x| ulp, which for |x| <= 20 stays under 1e-5.
    #[test]
    fn silu_matches_reference(n in 1usize..3000, seed in any::<u64>()) {
        let x = random(n, seed, 20.0);
        let got = run_unary(UnaryOp::Silu, &x);
        let want: Vec<f64> = x.iter().map(|&v| reference::silu(v)).collect();
        assert_close(&got, &want, |i| f32_tolerance(want[i]), "silu");
    }

    #[test]
    fn binary_ops_broadcast_rows(rows in 1usize..40, cols in 1usize..300, same_shape in any::<bool>(), seed in any::<u64>()) {
        let a = random(rows * cols, seed, 4.0);
        let b = random(if same_shape { rows * cols } else { cols }, seed ^ 1, 4.0);
        for (op, f) in [
            (BinaryOp::Add, (|x: f64, y: f64| x + y) as fn(f64, f64) -> f64),
            (BinaryOp::Mul, |x, y| x * y),
            (BinaryOp::SwiGlu, |x, y| x / (1.0 + (-x).exp()) * y),
        ] {
            let got = run_binary(op, &a, &b);
            let want = reference::binary(&a, &b, f);
            assert_close(&got, &want, |i| f32_tolerance(want[i]), &format!("{op:?}"));
        }
    }

    /// Normalised values are O(1): the f32 mean and variance over <= 4096 terms round to a few
    /// 1e-7 relative, inside the 1e-5 tolerance.
    #[test]
    fn layer_norm_matches_reference(rows in 1usize..20, cols in 1usize..1100, seed in any::<u64>()) {
        let x = random(rows * cols, seed, 3.0);
        let (w, b) = (random(cols, seed ^ 2, 2.0), random(cols, seed ^ 3, 1.0));
        let (xt, wt, bt) = (upload(&x, &[rows, cols]), upload(&w, &[cols]), upload(&b, &[cols]));
        let out = poisoned(&[rows, cols]);
        gpu().run(|rec| layer_norm(rec, &xt, &wt, &bt, 1e-12, &out)).expect("runs");
        let got = gpu().download_f32(&out).expect("download");
        let want = reference::layer_norm(&x, &w, &b, 1e-12);
        assert_close(&got, &want, |i| f32_tolerance(want[i]) + 1e-5 * f64::from(w[i % cols].abs()), "layer_norm");
    }

    #[test]
    fn rms_norm_matches_reference(rows in 1usize..20, cols in 1usize..1100, seed in any::<u64>()) {
        let x = random(rows * cols, seed, 3.0);
        let w = random(cols, seed ^ 2, 2.0);
        let (xt, wt) = (upload(&x, &[rows, cols]), upload(&w, &[cols]));
        let out = poisoned(&[rows, cols]);
        gpu().run(|rec| rms_norm(rec, &xt, &wt, 1e-5, &out)).expect("runs");
        let got = gpu().download_f32(&out).expect("download");
        let want = reference::rms_norm(&x, &w, 1e-5);
        assert_close(&got, &want, |i| f32_tolerance(want[i]) + 1e-5 * f64::from(w[i % cols].abs()), "rms_norm");
    }

    /// Probabilities are in [0, 1]; exp's 3 + 2|x| ulp error on logits up to ~20 stays near 1e-5.
    #[test]
    fn softmax_matches_reference(
        mask_rows in 1usize..4, rows_per_mask in 1usize..6, cols in 1usize..700,
        use_mask in any::<bool>(), seed in any::<u64>(),
    ) {
        let rows = mask_rows * rows_per_mask;
        let x = random(rows * cols, seed, 10.0);
        let mask: Vec<u32> = random(mask_rows * cols, seed ^ 5, 1.0).iter().map(|&v| u32::from(v > -0.5)).collect();
        let xt = upload(&x, &[rows, cols]);
        let mt = gpu().upload_u32(&mask, &[mask_rows, cols]).expect("upload");
        let out = poisoned(&[rows, cols]);
        let m = use_mask.then_some(&mt);
        gpu().run(|rec| softmax(rec, &xt, m, 0.7, &out)).expect("runs");
        let got = gpu().download_f32(&out).expect("download");
        let want = reference::softmax(&x, cols, use_mask.then_some(mask.as_slice()), 0.7);
        assert_close(&got, &want, |i| 2e-5 * want[i] + 1e-7, "softmax");
    }
}

#[test]
fn pinned_long_rows_and_huge_grid() {
    // A 4096-wide row (long reduction) and 70,000 rows of 1 (more workgroups than one grid
    // dimension holds).
    let x = random(4096, 7, 3.0);
    let w = random(4096, 8, 2.0);
    let (xt, wt) = (upload(&x, &[1, 4096]), upload(&w, &[4096]));
    let out = poisoned(&[1, 4096]);
    gpu().run(|rec| rms_norm(rec, &xt, &wt, 1e-5, &out)).expect("runs");
    let want = reference::rms_norm(&x, &w, 1e-5);
    assert_close(&gpu().download_f32(&out).expect("download"), &want, |i| f32_tolerance(want[i]) + 1e-5, "rms_norm 4096");

    let n = 70_000;
    let x = random(n, 9, 4.0);
    let got = run_unary(UnaryOp::Gelu, &x);
    let want: Vec<f64> = x.iter().map(|&v| reference::gelu(v)).collect();
    assert_close(&got, &want, |i| f32_tolerance(want[i]) + 0.5 * f64::from(x[i].abs()) * 1.5e-7, "gelu 70k");
    let ones = vec![1.0; n];
    let (xt, wt) = (upload(&x, &[n, 1]), upload(&ones[..1], &[1]));
    let out = poisoned(&[n, 1]);
    gpu().run(|rec| softmax(rec, &xt, None, 1.0, &out)).expect("runs");
    assert!(gpu().download_f32(&out).expect("download").iter().all(|&p| p == 1.0), "softmax of one column is 1");
    let _ = wt;
}

#[test]
fn fully_masked_rows_are_zero() {
    let xt = upload(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let mt = gpu().upload_u32(&[0, 0, 1, 0], &[2, 2]).expect("upload");
    let out = poisoned(&[2, 2]);
    gpu().run(|rec| softmax(rec, &xt, Some(&mt), 1.0, &out)).expect("runs");
    assert_eq!(gpu().download_f32(&out).expect("download"), [0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn launchers_reject_bad_shapes_dtypes_and_aliasing() {
    let a = upload(&[1.0; 6], &[2, 3]);
    let b = upload(&[1.0; 4], &[4]);
    let out = poisoned(&[2, 3]);
    let err = gpu().run(|rec| binary(rec, BinaryOp::Add, &a, &b, &out)).unwrap_err();
    assert!(matches!(err, KernelError::ShapeMismatch { what: "b", .. }), "{err}");
    let err = gpu().run(|rec| unary(rec, UnaryOp::Gelu, &a, &a)).unwrap_err();
    assert!(matches!(err, KernelError::InvalidArgument { what: "out", .. }), "{err}");
    let ids = gpu().upload_u32(&[1; 6], &[2, 3]).expect("upload");
    let err = gpu().run(|rec| unary(rec, UnaryOp::Gelu, &ids, &out)).unwrap_err();
    assert!(matches!(err, KernelError::DTypeMismatch { expected: "f32", got: "u32", .. }), "{err}");
    let wrong = upload(&[1.0; 2], &[2]);
    let err = gpu().run(|rec| layer_norm(rec, &a, &wrong, &wrong, 1e-5, &out)).unwrap_err();
    assert!(err.to_string().contains("layer_norm: weight has shape [2], expected [3]"), "{err}");
}

#[test]
fn copy_appends_at_an_offset_and_the_fma_probe_runs() {
    use hartonomous_kernels::ops::ceiling::{copy, fma_peak};
    let src = upload(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[8]);
    let dst = upload(&[0.0; 16], &[16]);
    gpu().run(|rec| copy(rec, &src, &dst, 4)).expect("copy");
    let got = gpu().download_f32(&dst).expect("download");
    assert_eq!(&got[..4], &[0.0; 4]);
    assert_eq!(&got[4..12], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    assert_eq!(&got[12..], &[0.0; 4]);
    assert!(gpu().run(|rec| copy(rec, &src, &dst, 12)).is_err(), "past the end");
    let out = poisoned(&[256]);
    let flops = gpu().run(|rec| fma_peak(rec, &out, 10)).expect("probe");
    assert_eq!(flops, 256 * 10 * 64);
    assert!(gpu().download_f32(&out).expect("download").iter().all(|v| v.is_finite()));
}

#[test]
fn wide_copy_moves_whole_groups_and_the_tail() {
    use hartonomous_kernels::ops::ceiling::copy_wide;
    if !gpu().report().shader_int64 {
        eprintln!("skipped: the adapter has no 64-bit shader integers, which the wide copy needs");
        return;
    }
    // 4 units of 16 bytes an invocation: 9 units are two whole groups and a tail of one, and the
    // destination's last unit must stay untouched.
    let values: Vec<f32> = (0..36).map(|i| i as f32 + 0.5).collect();
    let src = upload(&values, &[36]);
    let dst = poisoned(&[40]);
    gpu().run(|rec| copy_wide(rec, &src, &dst)).expect("wide copy");
    let got = gpu().download_f32(&dst).expect("download");
    assert_eq!(&got[..36], &values[..]);
    assert!(got[36..].iter().all(|v| v.is_nan()), "wrote past the source's length: {:?}", &got[36..]);
    let short = upload(&[0.0; 8], &[8]);
    assert!(gpu().run(|rec| copy_wide(rec, &src, &short)).is_err(), "a destination shorter than the source");
}
