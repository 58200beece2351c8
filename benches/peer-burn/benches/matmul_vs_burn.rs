//! f32 matmul, ours against burn 0.22's autotuned wgpu matmul, on the same adapter, same run.
//! Both compute C[M, N] from A[M, K] and a weight; ours reads the weight as [N, K] (models'
//! layout), burn multiplies by a [K, N] tensor (its natural layout, so it is not penalised).
//!
//! burn evaluates lazily and fuses, so each timed iteration multiplies a fresh A (made and
//! synchronised before the clock starts), then calls `Device::sync`, which waits for the queued
//! work; an element of the product is read after the clock stops and checked against the
//! expected magnitude, so a skipped multiplication cannot pass for a fast one. Ours is timed the
//! same way (one matmul, then `Gpu::sync`).
//!
//! Run: `cargo bench -p hartonomous-peer-burn --bench matmul_vs_burn`.

use std::time::{Duration, Instant};

use burn_tensor::{Device as BurnDevice, DeviceKind, Distribution, Tensor as BurnTensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hartonomous_kernels::ops::matmul::{matmul, Epilogue};
use hartonomous_kernels::Gpu;

const SHAPES: [(&str, usize, usize, usize); 1] = [("square_1024", 1024, 1024, 1024)];

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new().expect("an adapter");
    println!("adapter: {}", gpu.report());
    // burn 0.22 dispatches on a device value; lavapipe is a CPU adapter, picked by wgpu's default.
    let device = BurnDevice::wgpu(DeviceKind::DefaultDevice);
    let mut group = c.benchmark_group("matmul_f32");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(1));
    for (name, m, n, k) in SHAPES {
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        // Inputs uniform in [0, 1): every product element is near K / 4.
        let expected = k as f32 / 4.0;
        let w = gpu.upload_f32(&(0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect::<Vec<_>>(), &[n, k]).expect("upload");
        let out = gpu.empty(&[m, n], hartonomous_kernels::DType::F32).expect("alloc");
        let mut seed = 1usize;
        group.bench_function(BenchmarkId::new("hartonomous", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    seed += 1;
                    let a_host: Vec<f32> = (0..m * k).map(|i| ((i * 104_729 + seed * 31) % 1000) as f32 / 1000.0).collect();
                    let a = gpu.upload_f32(&a_host, &[m, k]).expect("upload");
                    gpu.sync().expect("sync");
                    let start = Instant::now();
                    gpu.run(|rec| matmul(rec, &a, &w, Epilogue::default(), &out)).expect("matmul");
                    gpu.sync().expect("sync");
                    total += start.elapsed();
                    let first = gpu.download_f32(&out).expect("download")[0];
                    assert!((first / expected - 1.0).abs() < 0.2, "ours: c[0] = {first}, expected about {expected}");
                }
                total
            })
        });
        let bw = BurnTensor::<2>::random([k, n], Distribution::Default, &device);
        // Warm-up runs burn's autotuner for this shape before anything is timed.
        let _ = BurnTensor::<2>::random([m, k], Distribution::Default, &device).matmul(bw.clone()).into_data();
        group.bench_function(BenchmarkId::new("burn", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let a = BurnTensor::<2>::random([m, k], Distribution::Default, &device);
                    device.sync().expect("sync");
                    let start = Instant::now();
                    let product = a.matmul(bw.clone());
                    device.sync().expect("sync");
                    total += start.elapsed();
                    let first: Vec<f32> = product.slice([0..1, 0..1]).into_data().to_vec().expect("f32 data");
                    assert!((first[0] / expected - 1.0).abs() < 0.2, "burn: c[0] = {}, expected about {expected}", first[0]);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
