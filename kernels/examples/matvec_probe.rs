//! Compares variants of the CPU adapters' matvec kernel (`qmatvec_rows.wgsl`) in one process,
//! interleaved round by round with the vec4 copy ceiling, so that a VM's drift (20% over tens of
//! seconds on the machines in benches/NOTES.md) falls on every variant alike. Each variant's
//! output is checked against the first one's (bit for bit, or the largest difference).
//! `cargo run --release -p hartonomous-kernels --example matvec_probe -- q4_1 49152 576 12 \
//!     kernels/src/wgsl/qmatvec_rows.wgsl /tmp/variant.wgsl`
//! (format, rows N, K, rounds, then template files, the first the baseline; FILE@R forces R
//! rows an invocation; TOKENS=m sets the tokens).

use std::time::Instant;

use hartonomous_kernels::ops::ceiling::copy;
use hartonomous_kernels::ops::qmatmul::{qmatmul_rows_variant, RowsVariant};
use hartonomous_kernels::{DType, Gpu, Recorder, Result};

/// One variant's dispatch, recorded into a submission.
type Op<'a> = dyn FnMut(&mut Recorder<'_>) -> Result<()> + 'a;

fn dtype(name: &str) -> DType {
    match name {
        "f16" => DType::F16,
        "q8_0" => DType::Q8_0,
        "q4_0" => DType::Q4_0,
        "q4_1" => DType::Q4_1,
        "q5_0" => DType::Q5_0,
        "q5_1" => DType::Q5_1,
        "q4_k" => DType::Q4K,
        "q5_k" => DType::Q5K,
        "q6_k" => DType::Q6K,
        other => panic!("unknown format {other}: f16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k"),
    }
}

/// Blocks of random bytes whose f16 fields stay finite (as the kernel bench makes them).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
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

fn submit_timed(gpu: &Gpu, reps: usize, op: &mut dyn FnMut(&mut Recorder<'_>) -> Result<()>) -> f64 {
    let start = Instant::now();
    gpu.run(|rec| (0..reps).try_for_each(|_| op(rec))).expect("op runs");
    gpu.sync().expect("sync");
    start.elapsed().as_secs_f64() / reps as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [format, n, k, rounds, files @ ..] = &args[..] else {
        panic!("usage: matvec_probe FORMAT N K ROUNDS TEMPLATE.wgsl [TEMPLATE.wgsl ...]");
    };
    let (dtype, n, k, rounds): (DType, usize, usize, usize) = (dtype(format), n.parse().unwrap(), k.parse().unwrap(), rounds.parse().unwrap());
    let m: usize = std::env::var("TOKENS").ok().map(|t| t.parse().unwrap()).unwrap_or(1);
    let gpu = Gpu::new().expect("an adapter");
    println!("adapter: {}", gpu.report());
    // FILE@R forces R rows an invocation for that variant.
    let templates: Vec<(String, String, Option<usize>)> = files
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let (f, rows) = match spec.split_once('@') {
                Some((f, r)) => (f, Some(r.parse().expect("rows after @"))),
                None => (spec.as_str(), None),
            };
            (format!("v{i}r{}", rows.unwrap_or(0)), std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{f}: {e}")), rows)
        })
        .collect();
    let bytes_w = dtype.bytes_for((n * k) as u64) as usize;
    let w = gpu.upload_weights(&random_bytes(bytes_w, 7), &[n, k], dtype).expect("upload");
    let xs: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0).collect();
    let a = gpu.upload_f32(&xs, &[m, k]).expect("upload");
    let out = gpu.empty(&[m, n], DType::F32).expect("alloc");
    let src = gpu.upload_f32(&vec![1.0; 16 << 20], &[16 << 20]).expect("upload");
    let dst = gpu.empty(&[16 << 20], DType::F32).expect("alloc");

    let mut baseline: Option<Vec<f32>> = None;
    for (name, text, rows) in &templates {
        let start = Instant::now();
        let variant = RowsVariant { name, template: text, rows: *rows };
        gpu.run(|rec| qmatmul_rows_variant(rec, &a, &w, &out, &variant)).expect("compiles and runs");
        let got = gpu.download_f32(&out).expect("download");
        let compiled = start.elapsed().as_secs_f64();
        match &baseline {
            None => println!("{name} {}: first run {compiled:.1} s (baseline)", files[0]),
            Some(base) => {
                let identical = base.iter().zip(&got).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
                let worst = base.iter().zip(&got).map(|(a, b)| ((a - b).abs() / a.abs().max(1e-3), a, b)).max_by(|x, y| x.0.total_cmp(&y.0)).unwrap();
                println!("{name}: first run {compiled:.1} s; {identical}/{} bit-identical to v0, worst relative {:.2e} ({} vs {})", got.len(), worst.0, worst.1, worst.2);
            }
        }
        baseline.get_or_insert(got);
    }

    let mut ops: Vec<Box<Op>> = templates
        .iter()
        .map(|(name, text, rows)| {
            let (a, w, out) = (&a, &w, &out);
            let variant = RowsVariant { name, template: text, rows: *rows };
            Box::new(move |rec: &mut Recorder<'_>| qmatmul_rows_variant(rec, a, w, out, &variant)) as Box<Op>
        })
        .collect();
    let mut copy_op = |rec: &mut Recorder<'_>| copy(rec, &src, &dst, 0);
    let reps: Vec<usize> = ops.iter_mut().map(|op| ((0.05 / submit_timed(&gpu, 4, op.as_mut())).ceil() as usize).clamp(4, 64)).collect();
    let copy_reps = ((0.05 / submit_timed(&gpu, 2, &mut copy_op)).ceil() as usize).clamp(2, 64);
    let mut times = vec![Vec::new(); ops.len()];
    let mut copies = Vec::new();
    for _ in 0..rounds {
        for (i, op) in ops.iter_mut().enumerate() {
            times[i].push(submit_timed(&gpu, reps[i], op.as_mut()));
        }
        copies.push(submit_timed(&gpu, copy_reps, &mut copy_op));
    }
    let copy_gbs = 2.0 * src.byte_len() as f64 / 1e9 / median(copies);
    println!("copy: {copy_gbs:.2} GB/s moved ({rounds} rounds)");
    let base = median(times[0].clone());
    for (i, t) in times.into_iter().enumerate() {
        let lo = t.iter().copied().fold(f64::INFINITY, f64::min);
        let secs = median(t);
        let gbs = bytes_w as f64 / secs / 1e9;
        println!(
            "v{i} {:<40} {:>9.1} us (min {:>9.1})  {gbs:>6.2} GB/s  {:>5.1}% of copy  {:>5.2}x v0",
            files[i],
            secs * 1e6,
            lo * 1e6,
            100.0 * gbs / copy_gbs,
            base / secs
        );
    }
}
