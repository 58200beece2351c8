//! Kernel throughput on whatever adapter the machine has, each figure beside that adapter's
//! measured ceilings: a vec4 copy kernel's GB/s (read + write) and an FMA probe's GFLOP/s.
//! Shapes are the transformer shapes the daemon runs (MiniLM at 512 tokens, SmolLM2 decode and
//! its tied output layer) plus square 1024³. Every timing synchronises the device before the
//! clock stops; each op records at least `REPS` dispatches per submission, as a forward pass does.
//!
//! Run: `cargo bench -p hartonomous-benches --bench kernels` (HARTONOMOUS_ADAPTER picks an adapter).
//! On a hardware GPU set `HARTONOMOUS_BENCH_LARGE=1` as well: the shapes above fit in a data-centre
//! GPU's L2 cache (50 MB on an H100), so alone they measure the cache; the large set adds a 1 GiB
//! copy ceiling and shapes several times the L2 (a 4096³ matmul, 1×32768×8192 matvecs, a 1M-vector
//! scan), which measure device memory.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hartonomous_kernels::ops::attention::{attention, AttentionMask};
use hartonomous_kernels::ops::ceiling::{copy, copy_wide, fma_peak};
use hartonomous_kernels::ops::matmul::{matmul, Epilogue};
use hartonomous_kernels::ops::qmatmul::{qmatmul, qmatmul_input, qmatmul_products_one_dispatch, Input, Product};
use hartonomous_kernels::ops::similarity::{row_norms_sq, search, CorpusPiece, Metric};
use hartonomous_kernels::{DType, Gpu, Recorder, Result, Tensor};
use hartonomous_benches::random_block_bytes;

const REPS: usize = 8;

/// Runs `op` in one submission `reps` times, the device synchronized before the clock stops;
/// seconds per op.
fn submit_timed(gpu: &Gpu, reps: usize, op: &mut impl FnMut(&mut Recorder<'_>) -> Result<()>) -> f64 {
    let start = Instant::now();
    gpu.run(|rec| (0..reps).try_for_each(|_| op(rec))).expect("op runs");
    gpu.sync().expect("sync");
    start.elapsed().as_secs_f64() / reps as f64
}

/// Submissions of at least `REPS` ops: small ops get more (up to 64, about 50 ms a submission),
/// since a forward pass records hundreds of dispatches a submission and the fixed cost of one
/// submission and wait (about 0.3 ms on lavapipe) is not the op's. The first run compiles.
fn reps_for(gpu: &Gpu, op: &mut impl FnMut(&mut Recorder<'_>) -> Result<()>) -> usize {
    let first = submit_timed(gpu, REPS, op);
    ((0.05 / first).ceil() as usize).clamp(REPS, 64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds per op, the median of 5 submissions.
fn time_op(gpu: &Gpu, mut op: impl FnMut(&mut Recorder<'_>) -> Result<()>) -> f64 {
    let reps = reps_for(gpu, &mut op);
    median((0..5).map(|_| submit_timed(gpu, reps, &mut op)).collect())
}

/// Rounds of [`alternate`].
const ALTERNATE_ROUNDS: usize = 15;

/// Seconds per op of `a` and of `b`, timed in alternating submissions over [`ALTERNATE_ROUNDS`]
/// rounds (medians), and the median of each round's a/b: two routes of one op compared on a VM
/// whose speed drifts by tens of percent over seconds.
fn alternate(gpu: &Gpu, mut a: impl FnMut(&mut Recorder<'_>) -> Result<()>, mut b: impl FnMut(&mut Recorder<'_>) -> Result<()>) -> (f64, f64, f64) {
    let (reps_a, reps_b) = (reps_for(gpu, &mut a), reps_for(gpu, &mut b));
    let rounds: Vec<(f64, f64)> =
        (0..ALTERNATE_ROUNDS).map(|_| (submit_timed(gpu, reps_a, &mut a), submit_timed(gpu, reps_b, &mut b))).collect();
    (median(rounds.iter().map(|r| r.0).collect()), median(rounds.iter().map(|r| r.1).collect()), median(rounds.iter().map(|r| r.0 / r.1).collect()))
}

/// The copy ceilings' buffers (64 MiB each way; 1 GiB with the large set, far beyond any L2)
/// and the FMA ceiling.
struct Ceilings {
    src: Tensor,
    dst: Tensor,
    fma_gflops: f64,
}

/// An op's time and the copy ceilings measured beside it: each of 5 rounds submits the op, the
/// vec4 copy and the wide copy in turn, so the three see the same machine (a VM's speed drifts
/// by 20% over seconds; measured apart, the fractions moved with it).
struct Timing {
    secs: f64,
    copy_gbs: f64,
    /// The u64 copy's, where the adapter has 64-bit shader integers (`copy_wide.wgsl`).
    wide_copy_gbs: Option<f64>,
    /// A vec4 copy of as many bytes as the op reads, in one dispatch: on an adapter whose every
    /// dispatch pays a fixed cost (lavapipe: ~85 us, waking its worker threads), a small op's
    /// like-for-like ceiling, since the copy of its bytes pays that cost too.
    same_size_copy_gbs: Option<f64>,
}

impl Ceilings {
    fn new(gpu: &Gpu, large: bool) -> Ceilings {
        let n = if large { 256 << 20 } else { 16 << 20 };
        let src = gpu.upload_f32(&vec![1.0; n], &[n]).expect("upload");
        let dst = gpu.empty(&[n], DType::F32).expect("alloc");
        let out = gpu.empty(&[256 * 1024], DType::F32).expect("alloc");
        let mut flops = 0;
        let secs = time_op(gpu, |rec| {
            flops = fma_peak(rec, &out, 512)?;
            Ok(())
        });
        let ceil = Ceilings { src, dst, fma_gflops: flops as f64 / secs / 1e9 };
        let idle = ceil.measure(gpu, None, |_| Ok(()));
        println!(
            "ceiling: copy {:.2} GB/s (vec4 f32, read + write, {} MiB each way), FMA {:.1} GFLOP/s",
            idle.copy_gbs,
            (n * 4) >> 20,
            ceil.fma_gflops
        );
        if let Some(wide) = idle.wide_copy_gbs {
            println!("ceiling: wide copy {wide:.2} GB/s (u64 pairs, 64 bytes an invocation, read + write, {} MiB each way)", (n * 4) >> 20);
        }
        // What a dispatch costs before its first load: small ops (SmolLM2's 0.5 MB decode
        // matrices) pay it whole, so their fraction of the copy is capped by it.
        let tiny_src = gpu.upload_f32(&[1.0; 64], &[64]).expect("upload");
        let tiny_dst = gpu.empty(&[64], DType::F32).expect("alloc");
        let floor = time_op(gpu, |rec| copy(rec, &tiny_src, &tiny_dst, 0));
        println!("floor: {:.1} us an op for a dispatch that moves 512 bytes (a 64-float copy)", floor * 1e6);
        ceil
    }

    /// Times `op` beside the copies; `read_bytes`, the bytes `op` reads, adds a copy of that many
    /// bytes (whole vec4s, at most the ceiling's buffers).
    fn measure(&self, gpu: &Gpu, read_bytes: Option<f64>, mut op: impl FnMut(&mut Recorder<'_>) -> Result<()>) -> Timing {
        let mut copy_op = |rec: &mut Recorder<'_>| copy(rec, &self.src, &self.dst, 0);
        let mut wide_op = |rec: &mut Recorder<'_>| copy_wide(rec, &self.src, &self.dst);
        let same = read_bytes.map(|bytes| {
            let floats = ((bytes as usize).div_ceil(16) * 4).clamp(4, self.src.len());
            let src = gpu.upload_f32(&vec![1.0; floats], &[floats]).expect("upload");
            let dst = gpu.empty(&[floats], DType::F32).expect("alloc");
            (src, dst)
        });
        let mut same_op = |rec: &mut Recorder<'_>| match &same {
            Some((src, dst)) => copy(rec, src, dst, 0),
            None => Ok(()),
        };
        let wide = gpu.report().shader_int64;
        let reps = reps_for(gpu, &mut op);
        let copy_reps = reps_for(gpu, &mut copy_op);
        let wide_reps = if wide { reps_for(gpu, &mut wide_op) } else { 0 };
        let same_reps = if same.is_some() { reps_for(gpu, &mut same_op) } else { 0 };
        let (mut secs, mut copies, mut wides, mut sames) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            secs.push(submit_timed(gpu, reps, &mut op));
            copies.push(submit_timed(gpu, copy_reps, &mut copy_op));
            if wide {
                wides.push(submit_timed(gpu, wide_reps, &mut wide_op));
            }
            if same.is_some() {
                sames.push(submit_timed(gpu, same_reps, &mut same_op));
            }
        }
        let moved = 2.0 * self.src.byte_len() as f64 / 1e9;
        Timing {
            secs: median(secs),
            copy_gbs: moved / median(copies),
            wide_copy_gbs: wide.then(|| moved / median(wides)),
            same_size_copy_gbs: same.map(|(src, _)| 2.0 * src.byte_len() as f64 / 1e9 / median(sames)),
        }
    }
}

fn report(name: &str, t: Timing, flops: f64, bytes: f64, c: &Ceilings) {
    let gbs = bytes / t.secs / 1e9;
    let wide = t.wide_copy_gbs.map(|w| format!(" ({:>5.1}% of wide copy)", 100.0 * gbs / w)).unwrap_or_default();
    let same = t.same_size_copy_gbs.map(|s| format!(" ({:>5.1}% of same-size copy)", 100.0 * gbs / s)).unwrap_or_default();
    println!(
        "{name:<44} {:>9.1} us  {:>8.2} GFLOP/s ({:>5.1}% of FMA)  {gbs:>7.2} GB/s ({:>5.1}% of copy){wide}{same}",
        t.secs * 1e6,
        flops / t.secs / 1e9,
        100.0 * flops / t.secs / 1e9 / c.fma_gflops,
        100.0 * gbs / t.copy_gbs
    );
}


fn benches(c: &mut Criterion) {
    let gpu = Gpu::new().expect("an adapter (scripts/test.sh installs lavapipe)");
    println!("adapter: {}", gpu.report());
    println!("weights: {}", if gpu.texel_weights() { "with texel copies (measured faster here)" } else { "in buffers only" });
    // HARTONOMOUS_BENCH_REPORT_ONLY=1 prints the ceiling table and skips criterion's statistics.
    let report_only = std::env::var_os("HARTONOMOUS_BENCH_REPORT_ONLY").is_some();
    let large = std::env::var_os("HARTONOMOUS_BENCH_LARGE").is_some();
    // HARTONOMOUS_BENCH_FILTER=a|b measures only the ops whose reported name contains a or b.
    let filter = std::env::var("HARTONOMOUS_BENCH_FILTER").unwrap_or_default();
    let wanted = |name: &str| filter.split('|').any(|part| name.contains(part));
    let ceil = Ceilings::new(&gpu, large);
    let mut group = c.benchmark_group("kernels");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));

    // f32 matmul: (name, M, N, K).
    for (name, m, n, k) in [
        ("minilm_qkv_512x384x384", 512, 384, 384),
        ("minilm_ffn_up_512x1536x384", 512, 1536, 384),
        ("smollm2_decode_1x576x1536", 1, 576, 1536),
        ("square_1024", 1024, 1024, 1024),
    ] {
        if !wanted(&format!("matmul_f32 {name}")) {
            continue;
        }
        let a = gpu.upload_f32(&vec![0.5; m * k], &[m, k]).expect("upload");
        let w = gpu.upload_f32(&vec![0.25; n * k], &[n, k]).expect("upload");
        let out = gpu.empty(&[m, n], DType::F32).expect("alloc");
        let flops = 2.0 * (m * n * k) as f64;
        let bytes = 4.0 * (m * k + n * k + m * n) as f64;
        report(&format!("matmul_f32 {name}"), ceil.measure(&gpu, (m == 1).then_some(bytes), |rec| matmul(rec, &a, &w, Epilogue::default(), &out)), flops, bytes, &ceil);
        if report_only {
            continue;
        }
        group.throughput(Throughput::Elements(flops as u64 * REPS as u64));
        group.bench_function(BenchmarkId::new("matmul_f32_flops", name), |b| {
            b.iter(|| {
                gpu.run(|rec| (0..REPS).try_for_each(|_| matmul(rec, &a, &w, Epilogue::default(), &out))).expect("runs");
                gpu.sync().expect("sync");
            })
        });
    }

    // Quantized matvec (decode) and prefill matmul per format: bytes are the weight blocks read.
    // K-quant blocks hold 256 elements, so those formats take SmolLM2's ffn_down shape (K = 1536).
    for dtype in [DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4K, DType::Q6K] {
        let shapes: &[(&str, usize, usize, usize)] = if dtype.block().0 == 256 {
            &[("decode_1x576x1536", 1, 576, 1536), ("output_size_1x49152x1536", 1, 49152, 1536), ("prefill_512x576x1536", 512, 576, 1536)]
        } else {
            &[("decode_1x1536x576", 1, 1536, 576), ("tied_output_1x49152x576", 1, 49152, 576), ("prefill_512x1536x576", 512, 1536, 576)]
        };
        for &(name, m, n, k) in shapes {
            if !wanted(&format!("qmatmul_{} {name}", dtype.name())) {
                continue;
            }
            let bytes_w = dtype.bytes_for((n * k) as u64) as usize;
            let w = gpu.upload_weights(&random_block_bytes(bytes_w, 7), &[n, k], dtype).expect("upload");
            let a = gpu.upload_f32(&vec![0.5; m * k], &[m, k]).expect("upload");
            let out = gpu.empty(&[m, n], DType::F32).expect("alloc");
            let timing = ceil.measure(&gpu, (m == 1).then_some(bytes_w as f64), |rec| qmatmul(rec, &a, &w, Epilogue::default(), &out));
            report(&format!("qmatmul_{} {name}", dtype.name()), timing, 2.0 * (m * n * k) as f64, bytes_w as f64, &ceil);
            if m == 1 && n != 49152 && !report_only {
                group.throughput(Throughput::Bytes(bytes_w as u64 * REPS as u64));
                group.bench_function(BenchmarkId::new("qmatvec_weight_bytes", format!("{}_{name}", dtype.name())), |b| {
                    b.iter(|| {
                        gpu.run(|rec| (0..REPS).try_for_each(|_| qmatmul(rec, &a, &w, Epilogue::default(), &out))).expect("runs");
                        gpu.sync().expect("sync");
                    })
                });
            }
        }
    }

    // Products of one input (`qmatmul_input`): SmolLM2's Q, K and V and its gate and up, or for
    // the 256-element formats two matrices of ffn_down's shape. At a decode step, the route the model takes
    // (one dispatch on CPU adapters) beside the ceilings; then, at 1 to 128 tokens, one dispatch
    // (`qmatmul_products_one_dispatch`) against a dispatch a product in alternating rounds, the
    // comparison that sets `FUSED_PRODUCTS_MAX_ROW_TOKENS`. Bytes are all the weight blocks read.
    let formats = [DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4K, DType::Q6K];
    let product_cases = formats.into_iter().flat_map(|dtype| -> Vec<(DType, &str, &[usize], usize)> {
        if dtype.block().0 == 256 {
            vec![(dtype, "pair_(576+576)x1536", &[576, 576], 1536)]
        } else {
            vec![(dtype, "qkv_(576+192+192)x576", &[576, 192, 192], 576), (dtype, "gate_up_(1536+1536)x576", &[1536, 1536], 576)]
        }
    });
    for (dtype, shape, rows, k) in product_cases {
        let name = format!("qmatmul_{} {shape}", dtype.name());
        if !wanted(&name) {
            continue;
        }
        let weights: Vec<Tensor> = rows
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let bytes = random_block_bytes(dtype.bytes_for((n * k) as u64) as usize, 20 + i as u64);
                gpu.upload_weights(&bytes, &[n, k], dtype).expect("upload")
            })
            .collect();
        let bytes_w: f64 = rows.iter().map(|&n| dtype.bytes_for((n * k) as u64) as f64).sum();
        let n_total: usize = rows.iter().sum();
        // The comparison needs the shared dispatch: the CPU rows kernel.
        let adapter = gpu.report();
        let comparable = adapter.software && adapter.shader_int64;
        for m in [1, 2, 4, 8, 128] {
            let outs: Vec<Tensor> = rows.iter().map(|&n| gpu.empty(&[m, n], DType::F32).expect("alloc")).collect();
            let a = gpu.upload_f32(&vec![0.5; m * k], &[m, k]).expect("upload");
            let products: Vec<Product> = weights.iter().zip(&outs).map(|(w, out)| Product { w, epilogue: Epilogue::default(), out }).collect();
            if m == 1 {
                let timing = ceil.measure(&gpu, Some(bytes_w), |rec| qmatmul_input(rec, Input::Plain(&a), &products));
                report(&format!("{name} decode"), timing, 2.0 * (n_total * k) as f64, bytes_w, &ceil);
            }
            if !comparable {
                continue;
            }
            let one = |rec: &mut Recorder<'_>| qmatmul_products_one_dispatch(rec, Input::Plain(&a), &products);
            let each = |rec: &mut Recorder<'_>| products.iter().try_for_each(|p| qmatmul(rec, &a, p.w, p.epilogue, p.out));
            let (t_one, t_each, ratio) = alternate(&gpu, one, each);
            println!(
                "products {name} m{m}: one dispatch {:.1} us, a dispatch each {:.1} us, one/each {ratio:.2} (median of {ALTERNATE_ROUNDS} rounds' ratios)",
                t_one * 1e6,
                t_each * 1e6
            );
        }
    }

    if wanted("attention_decode smollm2 kv1024") || wanted("similarity_scan cosine") {
        // Attention decode: SmolLM2's 9 query heads over 3 KV heads of 64, 1024 cached positions.
        let (heads, kv_heads, d, cap) = (9, 3, 64, 1024);
        let q = gpu.upload_f32(&vec![0.1; heads * d], &[1, 1, heads, d]).expect("upload");
        let kv = gpu.upload_f32(&vec![0.1; cap * kv_heads * d], &[1, cap, kv_heads, d]).expect("upload");
        let out = gpu.empty(&[1, 1, heads, d], DType::F32).expect("alloc");
        let mask = AttentionMask { causal: true, q_pos0: cap - 1, key_mask: None, rows: None };
        let timing = ceil.measure(&gpu, Some(2.0 * 4.0 * (cap * kv_heads * d) as f64), |rec| attention(rec, &q, &kv, &kv, cap, mask, 0.125, &out));
        report("attention_decode smollm2 kv1024", timing, 4.0 * (heads * cap * d) as f64, 2.0 * 4.0 * (cap * kv_heads * d) as f64, &ceil);

        // Similarity scan: 8 queries against 100,000 × 384 f16 vectors, top-10 cosine.
        let (nq, n, dim) = (8, 100_000, 384);
        let halves: Vec<u16> = (0..n * dim).map(|i| half::f16::from_f32(((i % 97) as f32 - 48.0) / 97.0).to_bits()).collect();
        let corpus = gpu.upload(&halves, &[n, dim], DType::F16).expect("upload");
        let norms = gpu.empty(&[n], DType::F32).expect("alloc");
        gpu.run(|rec| row_norms_sq(rec, &corpus, &norms)).expect("norms");
        let queries = gpu.upload_f32(&vec![0.1; nq * dim], &[nq, dim]).expect("upload");
        let pieces = [CorpusPiece { vectors: &corpus, norms_sq: &norms }];
        let timing = ceil.measure(&gpu, Some((n * dim * 2) as f64), |rec| search(rec, &queries, &pieces, Metric::Cosine, 10).map(|_| ()));
        report("similarity_scan cosine 8q x 100k x 384 f16", timing, 2.0 * (nq * n * dim) as f64, (n * dim * 2) as f64, &ceil);
        drop((corpus, norms));
    }
    if large {
        large_shapes(&gpu, &ceil);
    }
    group.finish();
}

/// Shapes several times a data-centre GPU's L2, reported only (no criterion statistics): they
/// take seconds each on a software adapter.
fn large_shapes(gpu: &Gpu, ceil: &Ceilings) {
    let n = 4096;
    let a = gpu.upload(&random_f32(n * n, 1), &[n, n], DType::F32).expect("upload");
    let w = gpu.upload(&random_f32(n * n, 2), &[n, n], DType::F32).expect("upload");
    let out = gpu.empty(&[n, n], DType::F32).expect("alloc");
    let timing = ceil.measure(gpu, None, |rec| matmul(rec, &a, &w, Epilogue::default(), &out));
    report("matmul_f32 square_4096 (large)", timing, 2.0 * (n * n * n) as f64, 12.0 * (n * n) as f64, ceil);
    drop((a, w, out));
    let (rows, k) = (32768, 8192);
    for dtype in [DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4K, DType::Q6K] {
        let bytes_w = dtype.bytes_for((rows * k) as u64) as usize;
        let w = gpu.upload_weights(&random_block_bytes(bytes_w, 11), &[rows, k], dtype).expect("upload");
        let x = gpu.upload_f32(&random_f32(k, 3), &[1, k]).expect("upload");
        let out = gpu.empty(&[1, rows], DType::F32).expect("alloc");
        let timing = ceil.measure(gpu, None, |rec| qmatmul(rec, &x, &w, Epilogue::default(), &out));
        report(&format!("qmatmul_{} decode_1x32768x8192 (large)", dtype.name()), timing, 2.0 * (rows * k) as f64, bytes_w as f64, ceil);
    }
    let (nq, rows, dim) = (8, 1_000_000, 384);
    let halves: Vec<u16> = random_f32(rows * dim, 5).iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
    let corpus = gpu.upload(&halves, &[rows, dim], DType::F16).expect("upload");
    let norms = gpu.empty(&[rows], DType::F32).expect("alloc");
    gpu.run(|rec| row_norms_sq(rec, &corpus, &norms)).expect("norms");
    let queries = gpu.upload_f32(&random_f32(nq * dim, 6), &[nq, dim]).expect("upload");
    let pieces = [CorpusPiece { vectors: &corpus, norms_sq: &norms }];
    let timing = ceil.measure(gpu, None, |rec| search(rec, &queries, &pieces, Metric::Cosine, 10).map(|_| ()));
    report("similarity_scan cosine 8q x 1M x 384 f16 (large)", timing, 2.0 * (nq * rows * dim) as f64, (rows * dim * 2) as f64, ceil);
}

/// Uniform values in [-1, 1) from a xorshift stream: real-looking data, never all zeros.
fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

criterion_group!(kernels, benches);
criterion_main!(kernels);
