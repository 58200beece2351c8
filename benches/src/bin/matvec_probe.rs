//! Compares variants of the CPU adapters' matvec kernel (`qmatvec_rows.wgsl`) in one process,
//! interleaved round by round with the vec4 copy ceiling, so that a VM's drift (20% over tens of
//! seconds on the machines in benches/NOTES.md) falls on every variant alike. Each variant's
//! output is checked against the first one's (bit for bit, or the largest difference).
//!
//! `cargo run --release -p hartonomous-benches --bin matvec_probe -- q4_1 49152 576 12 \
//!     kernels/src/wgsl/qmatvec_rows.wgsl kernels/src/wgsl/qmatvec_rows.wgsl+storage`
//!
//! Arguments: format, rows N, K, rounds, then variants, the first the baseline. A variant is a
//! template file, `@R` after it forcing R rows an invocation, `+storage` after that running it on
//! a copy of the weights uploaded without a texel copy (the storage-load route); the others read
//! the weights' texel copy (`Gpu::upload_weights_with_texels`), where the adapter can hold one.
//! `TOKENS=m` sets the tokens.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use hartonomous_benches::random_block_bytes;
use hartonomous_kernels::ops::ceiling::copy;
use hartonomous_kernels::ops::qmatmul::{qmatmul_rows_variant, RowsVariant};
use hartonomous_kernels::{DType, Gpu, Recorder};

/// One variant's dispatch, recorded into a submission.
type Op<'a> = dyn FnMut(&mut Recorder<'_>) -> hartonomous_kernels::Result<()> + 'a;

/// A variant from the command line: `FILE[@ROWS][+storage]`.
struct Spec {
    file: String,
    template: String,
    rows: Option<usize>,
    storage: bool,
}

fn parse_spec(arg: &str) -> Result<Spec> {
    let (rest, storage) = match arg.strip_suffix("+storage") {
        Some(rest) => (rest, true),
        None => (arg, false),
    };
    let (file, rows) = match rest.split_once('@') {
        Some((file, rows)) => (file, Some(rows.parse().with_context(|| format!("rows after @ in {arg:?}"))?)),
        None => (rest, None),
    };
    let template = std::fs::read_to_string(file).with_context(|| format!("reading the template {file}"))?;
    Ok(Spec { file: arg.to_string(), template, rows, storage })
}

fn dtype(name: &str) -> Result<DType> {
    Ok(match name {
        "f16" => DType::F16,
        "q8_0" => DType::Q8_0,
        "q4_0" => DType::Q4_0,
        "q4_1" => DType::Q4_1,
        "q5_0" => DType::Q5_0,
        "q5_1" => DType::Q5_1,
        "q4_k" => DType::Q4K,
        "q5_k" => DType::Q5K,
        "q6_k" => DType::Q6K,
        other => bail!("unknown format {other}: f16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k"),
    })
}

fn submit_timed(gpu: &Gpu, reps: usize, op: &mut Op<'_>) -> Result<f64> {
    let start = Instant::now();
    gpu.run(|rec| (0..reps).try_for_each(|_| op(rec)))?;
    gpu.sync()?;
    Ok(start.elapsed().as_secs_f64() / reps as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [format, n, k, rounds, variants @ ..] = &args[..] else {
        bail!("usage: matvec_probe FORMAT N K ROUNDS TEMPLATE.wgsl[@ROWS][+storage] ...");
    };
    ensure!(!variants.is_empty(), "name at least one template");
    let dtype = dtype(format)?;
    let n: usize = n.parse().context("N")?;
    let k: usize = k.parse().context("K")?;
    let rounds: usize = rounds.parse().context("ROUNDS")?;
    ensure!(rounds > 0, "ROUNDS must be at least 1");
    let m: usize = match std::env::var("TOKENS") {
        Ok(t) => t.parse().context("TOKENS")?,
        Err(_) => 1,
    };
    let specs = variants.iter().map(|v| parse_spec(v)).collect::<Result<Vec<_>>>()?;
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.report());
    let bytes_w = dtype.bytes_for((n * k) as u64) as usize;
    let blocks = random_block_bytes(bytes_w, 7);
    let w_texels = gpu.upload_weights_with_texels(&blocks, &[n, k], dtype)?;
    let w_storage = gpu.upload(&blocks, &[n, k], dtype)?;
    let xs: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0).collect();
    let a = gpu.upload_f32(&xs, &[m, k])?;
    let out = gpu.empty(&[m, n], DType::F32)?;
    let src = gpu.upload_f32(&vec![1.0; 16 << 20], &[16 << 20])?;
    let dst = gpu.empty(&[16 << 20], DType::F32)?;
    let run_variant = |rec: &mut Recorder<'_>, i: usize, spec: &Spec| {
        let name = format!("v{i}r{}{}", spec.rows.unwrap_or(0), if spec.storage { "s" } else { "" });
        let variant = RowsVariant { name: &name, template: &spec.template, rows: spec.rows };
        qmatmul_rows_variant(rec, &a, if spec.storage { &w_storage } else { &w_texels }, &out, &variant)
    };

    let mut baseline: Option<Vec<f32>> = None;
    for (i, spec) in specs.iter().enumerate() {
        let start = Instant::now();
        gpu.run(|rec| run_variant(rec, i, spec)).with_context(|| format!("compiling and running {}", spec.file))?;
        let got = gpu.download_f32(&out)?;
        let first = start.elapsed().as_secs_f64();
        match &baseline {
            None => println!("v0 {}: first run {first:.1} s (baseline)", spec.file),
            Some(base) => {
                let identical = base.iter().zip(&got).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
                let worst = base.iter().zip(&got).map(|(a, b)| ((a - b).abs() / a.abs().max(1e-3), a, b)).max_by(|x, y| x.0.total_cmp(&y.0));
                let (rel, a, b) = worst.context("an empty output")?;
                println!("v{i} {}: first run {first:.1} s; {identical}/{} bit-identical to v0, worst relative {rel:.2e} ({a} vs {b})", spec.file, got.len());
            }
        }
        baseline.get_or_insert(got);
    }

    let mut ops: Vec<Box<Op>> = specs.iter().enumerate().map(|(i, spec)| Box::new(move |rec: &mut Recorder<'_>| run_variant(rec, i, spec)) as Box<Op>).collect();
    let mut copy_op = |rec: &mut Recorder<'_>| copy(rec, &src, &dst, 0);
    let mut reps = Vec::new();
    for op in &mut ops {
        reps.push(((0.05 / submit_timed(&gpu, 4, op.as_mut())?).ceil() as usize).clamp(4, 64));
    }
    let copy_reps = ((0.05 / submit_timed(&gpu, 2, &mut copy_op)?).ceil() as usize).clamp(2, 64);
    let mut times = vec![Vec::new(); ops.len()];
    let mut copies = Vec::new();
    for _ in 0..rounds {
        for (i, op) in ops.iter_mut().enumerate() {
            times[i].push(submit_timed(&gpu, reps[i], op.as_mut())?);
        }
        copies.push(submit_timed(&gpu, copy_reps, &mut copy_op)?);
    }
    let copy_gbs = 2.0 * src.byte_len() as f64 / 1e9 / median(copies);
    println!("copy: {copy_gbs:.2} GB/s moved ({rounds} rounds)");
    let base = median(times[0].clone());
    for (i, t) in times.into_iter().enumerate() {
        let lo = t.iter().copied().fold(f64::INFINITY, f64::min);
        let secs = median(t);
        let gbs = bytes_w as f64 / secs / 1e9;
        println!(
            "v{i} {:<44} {:>9.1} us (min {:>9.1})  {gbs:>6.2} GB/s  {:>5.1}% of copy  {:>5.2}x v0",
            specs[i].file,
            secs * 1e6,
            lo * 1e6,
            100.0 * gbs / copy_gbs,
            base / secs
        );
    }
    Ok(())
}
