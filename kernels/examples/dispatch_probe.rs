//! What one dispatch costs on this adapter beyond its work: 256 dispatches of a 64-float copy in
//! one submission, timed in three parts (recording, submitting, executing and waiting). On
//! lavapipe (Mesa 22.3, 2 cores) executing is 60–115 µs a dispatch whatever the kernel does,
//! the floor under every small op (benches/NOTES.md, "The CPU matvec reads u64 words").
//! `cargo run --release -p hartonomous-kernels --example dispatch_probe`

use std::time::Instant;

use hartonomous_kernels::ops::ceiling::copy;
use hartonomous_kernels::{DType, Gpu, Result};

fn main() -> Result<()> {
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.report());
    let src = gpu.upload_f32(&[1.0; 64], &[64])?;
    let dst = gpu.empty(&[64], DType::F32)?;
    const DISPATCHES: usize = 256;
    for round in 0..3 {
        let start = Instant::now();
        let mut rec = gpu.recorder();
        for _ in 0..DISPATCHES {
            copy(&mut rec, &src, &dst, 0)?;
        }
        let recorded = Instant::now();
        rec.submit()?;
        let submitted = Instant::now();
        gpu.sync()?;
        let done = Instant::now();
        let per = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e6 / DISPATCHES as f64;
        println!(
            "round {round} (0 compiles): record {:.1} µs, submit {:.1} µs, execute and wait {:.1} µs a dispatch",
            per(start, recorded),
            per(recorded, submitted),
            per(submitted, done)
        );
    }
    Ok(())
}
