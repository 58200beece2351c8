//! f32 matmul, ours against burn 0.22's autotuned wgpu matmul, on the same adapter, same run.
//! Both compute C[M, N] from A[M, K] and a weight; ours reads the weight as [N, K] (models'
//! layout), burn multiplies by a [K, N] tensor (its natural layout, so it is not penalised).
//! Each iteration records `REPS` matmuls and synchronises before the clock stops.
//!
//! Run: `cargo bench -p hartonomous-peer-burn --bench matmul_vs_burn`.

use std::time::{Duration, Instant};

use burn_tensor::{Device as BurnDevice, DeviceKind, Distribution, Tensor as BurnTensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hartonomous_kernels::ops::matmul::{matmul, Epilogue};
use hartonomous_kernels::Gpu;

const REPS: u32 = 4;
const SHAPES: [(&str, usize, usize, usize); 1] = [("square_1024", 1024, 1024, 1024)];

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new().expect("an adapter");
    println!("adapter: {}", gpu.report());
    // burn 0.22 dispatches on a device value; lavapipe is a CPU adapter, picked by wgpu's default.
    let device = BurnDevice::wgpu(DeviceKind::DefaultDevice);
    let mut group = c.benchmark_group("matmul_f32");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, m, n, k) in SHAPES {
        group.throughput(Throughput::Elements((2 * m * n * k) as u64 * u64::from(REPS)));
        let a = gpu.upload_f32(&vec![0.5; m * k], &[m, k]).expect("upload");
        let w = gpu.upload_f32(&vec![0.25; n * k], &[n, k]).expect("upload");
        let out = gpu.empty(&[m, n], hartonomous_kernels::DType::F32).expect("alloc");
        group.bench_function(BenchmarkId::new("hartonomous", name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    gpu.run(|rec| (0..REPS).try_for_each(|_| matmul(rec, &a, &w, Epilogue::default(), &out))).expect("matmul");
                    gpu.sync().expect("sync");
                }
                start.elapsed()
            })
        });
        // burn evaluates lazily: each repetition multiplies a different A, the products are
        // summed and the whole sum is read back, so no product can be skipped (an earlier
        // version that read one element of the last product measured impossible rates).
        let bas: Vec<_> = (0..REPS).map(|_| BurnTensor::<2>::random([m, k], Distribution::Default, &device)).collect();
        let bw = BurnTensor::<2>::random([k, n], Distribution::Default, &device);
        // Warm-up runs burn's autotuner for this shape before anything is timed.
        let _ = bas[0].clone().matmul(bw.clone()).into_data();
        group.bench_function(BenchmarkId::new("burn", name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let sum = bas.iter().map(|a| a.clone().matmul(bw.clone())).reduce(|x, y| x + y).expect("REPS > 0");
                    let _ = sum.into_data();
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
