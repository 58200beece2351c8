//! Times each kernel of one BERT (MiniLM) encoder layer at a batch shape, each op submitted and
//! waited for alone: where a forward pass spends its time on this adapter.
//! `cargo run --release -p hartonomous-kernels --example bert_layer_profile -- [BATCH] [TOKENS]`

use std::time::Instant;

use hartonomous_kernels::ops::attention::{attention, AttentionMask};
use hartonomous_kernels::ops::elementwise::{unary, UnaryOp};
use hartonomous_kernels::ops::matmul::{matmul, Epilogue};
use hartonomous_kernels::ops::norm::layer_norm;
use hartonomous_kernels::{DType, Gpu, Recorder, Result};

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (b, t) = (args.first().copied().unwrap_or(8), args.get(1).copied().unwrap_or(32));
    let (h, heads, inter) = (384usize, 12usize, 1536usize);
    let d = h / heads;
    let rows = b * t;
    let gpu = Gpu::new()?;
    println!("adapter {}; batch {b} × {t} tokens", gpu.report());
    let fill = |n: usize| (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect::<Vec<f32>>();
    let x = gpu.upload_f32(&fill(rows * h), &[rows, h])?;
    let w_hh = gpu.upload_f32(&fill(h * h), &[h, h])?;
    let w_ih = gpu.upload_f32(&fill(inter * h), &[inter, h])?;
    let w_hi = gpu.upload_f32(&fill(h * inter), &[h, inter])?;
    let bias_h = gpu.upload_f32(&fill(h), &[h])?;
    let bias_i = gpu.upload_f32(&fill(inter), &[inter])?;
    let mask = gpu.upload_u32(&vec![1u32; b * t], &[b, t])?;
    let out_h = gpu.empty(&[rows, h], DType::F32)?;
    let out_i = gpu.empty(&[rows, inter], DType::F32)?;
    let out_i2 = gpu.empty(&[rows, inter], DType::F32)?;
    let ctx = gpu.empty(&[b, t, heads, d], DType::F32)?;
    let q = x.reshape(&[b, t, heads, d])?;
    let time = |name: &str, flops: f64, f: &dyn Fn(&mut Recorder<'_>) -> Result<()>| -> Result<f64> {
        gpu.run(|rec| f(rec))?;
        gpu.sync()?;
        let reps = 5;
        let started = Instant::now();
        for _ in 0..reps {
            gpu.run(|rec| f(rec))?;
            gpu.sync()?;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3 / reps as f64;
        println!("{name:<28} {ms:8.2} ms  {:6.2} GFLOP/s", flops / ms / 1e6);
        Ok(ms)
    };
    let mut total = 0.0;
    let e = Epilogue { bias: Some(&bias_h), residual: None };
    total += 4.0 * time("matmul h×h (×4 per layer)", 2.0 * (rows * h * h) as f64, &|r| matmul(r, &x, &w_hh, e, &out_h))?;
    let ei = Epilogue { bias: Some(&bias_i), residual: None };
    total += time("matmul up h→4h", 2.0 * (rows * h * inter) as f64, &|r| matmul(r, &x, &w_ih, ei, &out_i))?;
    let ed = Epilogue { bias: Some(&bias_h), residual: Some(&x) };
    total += time("matmul down 4h→h", 2.0 * (rows * h * inter) as f64, &|r| matmul(r, &out_i, &w_hi, ed, &out_h))?;
    let m = AttentionMask { causal: false, q_pos0: 0, key_mask: Some(&mask), rows: None };
    total += time("attention", 4.0 * (b * heads * t * t * d) as f64, &|r| attention(r, &q, &q, &q, t, m, 0.17, &ctx))?;
    total += 2.0 * time("layer_norm (×2)", 0.0, &|r| layer_norm(r, &x, &bias_h, &bias_h, 1e-12, &out_h))?;
    total += time("gelu", 0.0, &|r| unary(r, UnaryOp::Gelu, &out_i, &out_i2))?;
    println!("one layer ≈ {total:.1} ms; 6 layers ≈ {:.0} ms → {:.1} sentences/s at this batch", 6.0 * total, b as f64 / (6.0 * total / 1e3));
    Ok(())
}
