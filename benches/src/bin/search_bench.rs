//! The similarity-search benchmark: latency of an exact top-k search over N stored vectors of
//! dimension D (default 1,000,000 × 384, f16) through the daemon's search index
//! (`hartonomous_runtime::search`: the corpus resident in GPU pieces, scored as a matmul,
//! top-k selected on the GPU), beside the bandwidth the scan reaches and the adapter's ceiling.
//!
//! - load: the corpus (seeded uniform values in [-1, 1), then L2-normalised, as sentence
//!   embeddings are) handed to the index, which converts, uploads and computes the norms;
//! - one query: the latency of a search for 1 query (k = 10, cosine), median of the repetitions;
//! - a batch: the latency of one search for Q queries at once (one matmul-shaped scan);
//! - bandwidth: corpus bytes read per scan / latency, beside the kernels' vec4 copy bandwidth
//!   (bytes read + written / time, as `benches/benches/kernels.rs` measures it). A scan reads
//!   each stored value once, so the copy rate bounds it.
//!
//! A spot check keeps the figures honest: a query equal to a corpus row must find that row
//! first, at cosine 1.
//!
//! Run: `search_bench --rows 1000000 --dim 384 --storage f16 --seconds 10`
//! (`scripts/bench-search.sh` runs FAISS beside it on the same machine).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use clap::Parser;
use hartonomous_kernels::ops::similarity::Metric;
use hartonomous_kernels::Gpu;
use hartonomous_runtime::search::{IndexOptions, SearchIndex, SearchMode, SearchRequest, VectorStorage};
use hartonomous_runtime::store::{ContentAtomId, ModelId, StoredEmbedding};

#[derive(Parser)]
#[command(about = "Exact top-k search latency over N stored vectors through the daemon's GPU search index")]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    #[arg(long, default_value_t = 384)]
    dim: usize,
    #[arg(long, value_enum, default_value = "f16")]
    storage: VectorStorage,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Queries in the batched measurement.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Repeat each measurement until this many seconds have been measured (at least 3 times).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Emit the figures as one JSON object on stdout as well.
    #[arg(long)]
    json: bool,
}

/// A splitmix64 stream: the corpus is reproducible without a dependency.
struct Stream(u64);

impl Stream {
    fn next_unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| self.next_unit()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
        v.into_iter().map(|x| x / norm).collect()
    }
}

/// Median seconds of `once`, repeated until `seconds` have passed (at least 3 times).
fn median_time(seconds: f64, mut once: impl FnMut() -> Result<()>) -> Result<(f64, usize)> {
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || started.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        once()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times.len()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.rows > 0 && args.dim > 0 && args.batch > 0, "--rows, --dim and --batch must be at least 1");
    let gpu = Arc::new(Gpu::new()?);
    let report = gpu.report().clone();
    eprintln!("adapter: {report}");
    let copy_bw = hartonomous_benches::copy_bandwidth(&gpu)?;

    let mut stream = Stream(0x5EED);
    let rows: Vec<StoredEmbedding> = (0..args.rows)
        .map(|i| StoredEmbedding { id: i as i64 + 1, atom: ContentAtomId(i as i64 + 1), modality: "text".into(), vector: stream.unit_vector(args.dim) })
        .collect();
    let probe = rows[args.rows / 2].vector.clone();
    let probe_atom = rows[args.rows / 2].atom;
    let stored_bytes = (args.rows * args.dim * args.storage.bytes_per_value()) as f64;
    let index = SearchIndex::new(gpu.clone(), IndexOptions { storage: args.storage, gpu_budget: u64::MAX, ..IndexOptions::default() });
    let model = ModelId(1);
    let load = Instant::now();
    index.load_rows(model, rows)?;
    gpu.sync()?;
    let load_s = load.elapsed().as_secs_f64();

    let request = |queries: Vec<Vec<f32>>| SearchRequest { queries, k: args.k, metric: Metric::Cosine, modality: None, mode: SearchMode::Exact };
    // Warm-up (pipelines compiled) and the spot check.
    let found = index.scan_loaded(model, &request(vec![probe.clone()]))?;
    let first = found[0].hits.first().copied();
    ensure!(
        first.is_some_and(|h| h.atom == probe_atom && (h.score - 1.0).abs() < 1e-2),
        "spot check failed: a corpus row did not find itself first ({first:?})"
    );
    let single = vec![stream.unit_vector(args.dim)];
    let (one_s, one_reps) = median_time(args.seconds, || index.scan_loaded(model, &request(single.clone())).map(drop).map_err(Into::into))?;
    let batch: Vec<Vec<f32>> = (0..args.batch).map(|_| stream.unit_vector(args.dim)).collect();
    let (batch_s, batch_reps) = median_time(args.seconds, || index.scan_loaded(model, &request(batch.clone())).map(drop).map_err(Into::into))?;

    let scan_bw = stored_bytes / one_s;
    println!("search index: {} rows x {} {}, {:.0} MB stored, loaded in {:.1} s", args.rows, args.dim, args.storage.as_str(), stored_bytes / 1e6, load_s);
    println!("copy ceiling: {:.2} GB/s (read + written)", copy_bw / 1e9);
    println!(
        "1 query, k={}: {:.1} ms median of {one_reps} ({:.2} GB/s of stored vectors, {:.0}% of copy)",
        args.k,
        one_s * 1e3,
        scan_bw / 1e9,
        100.0 * scan_bw / copy_bw
    );
    println!(
        "{} queries in one scan: {:.1} ms median of {batch_reps} ({:.2} ms per query, {:.1} queries/s)",
        args.batch,
        batch_s * 1e3,
        batch_s * 1e3 / args.batch as f64,
        args.batch as f64 / batch_s
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "rows": args.rows, "dim": args.dim, "storage": args.storage.as_str(), "k": args.k,
                "adapter": report.to_string(), "load_s": load_s, "copy_gbps": copy_bw / 1e9,
                "one_query_ms": one_s * 1e3, "scan_gbps": scan_bw / 1e9, "fraction_of_copy": scan_bw / copy_bw,
                "batch": args.batch, "batch_ms": batch_s * 1e3,
            })
        );
    }
    Ok(())
}
