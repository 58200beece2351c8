//! The text-generation benchmark: prefill tokens/s and greedy decode tokens/s at batch 1 and
//! batch B (default 8) of a Llama-family model stored in a Hartonomous store, in process (no
//! HTTP), beside the roofline that memory bandwidth puts on decoding.
//!
//! - warm-up: one prefill of the prompt, which pages every weight in (not timed);
//! - prefill: one sequence of P prompt tokens in one step, tokens/s = P / time;
//! - decode, batch 1: after an untimed prefill of the prompt, D greedy steps of one token,
//!   tokens/s = D / time of those steps;
//! - decode, batch B: B sequences in one KV pool, each prefilled alone (untimed), then D steps
//!   of `LlamaModel::step` with all B sequences (one token each), tokens/s = B·D / time.
//!
//! Every step returns its logits to the host (the greedy argmax needs them), so each timing
//! ends with the device synchronised. With `--seconds N` each figure is repeated until N
//! seconds have been measured, and the figure is total tokens / total time.
//!
//! The roofline: a decode step must read every weight once (the tied output layer included;
//! the embedding lookup reads one row, so this slightly overstates it), that is the pager's
//! resident bytes after warm-up (exactly the GGUF's tensor bytes: no dequantized copies), at the
//! bandwidth of the kernels' vec4 copy kernel (bytes read + written / time, 64 MiB each way, as
//! `benches/benches/kernels.rs` measures it). Minimum seconds per step = bytes / bandwidth, so
//! decode tokens/s at batch 1 is at most bandwidth / bytes, and at batch B at most B times that
//! (KV-cache reads ignored).
//!
//! The prompt is the first P tokens of a fixed English text (repeated) tokenized with the
//! tokenizer stored with the model (sequence i of the batch starts at the text's token i);
//! `--write-prompt-ids FILE` writes all these ids as JSON (`prompt_ids`, `batch_prompt_ids`) so
//! that a peer (`benches/scripts/llamacpp_generate_bench.py`) runs on the same ones.
//!
//! Run: `generate_bench --db STORE --model SmolLM2-135M-Instruct --prompt-tokens 128
//! --decode-tokens 64` after `hartonomous ingest` (`scripts/bench-generate.sh` does both and
//! runs llama.cpp beside it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use hartonomous_kernels::Gpu;
use hartonomous_runtime::models::gguf_tokenizer::GgufTokenizer;
use hartonomous_runtime::models::llama::{LlamaConfig, LlamaModel, SequenceStep};
use hartonomous_runtime::pager::{Pager, WeightsSource};
use hartonomous_runtime::store::sqlite::SqliteStore;
use hartonomous_runtime::store::Store;

/// The prompt's source text; the peer script keeps the same text for when it runs alone.
pub const PROMPT_TEXT: &str = "The history of the printing press begins in the fifteenth century, when \
Johannes Gutenberg combined movable metal type, oil-based ink and a wooden screw press into a \
system that could produce books quickly and cheaply. Within fifty years printers were at work in \
more than two hundred European cities, and the number of books in circulation grew from thousands \
to millions. Scholars could compare identical copies of a text, errors could be corrected in later \
editions, and ideas travelled faster than ever before. ";

#[derive(Parser)]
#[command(about = "Prefill and greedy decode tokens/s (batch 1 and B) of a stored Llama-family model, beside its bandwidth roofline")]
struct Args {
    /// The SQLite store the model was ingested into (`hartonomous ingest`).
    #[arg(long)]
    db: PathBuf,
    /// The model's name in the store.
    #[arg(long, default_value = "SmolLM2-135M-Instruct")]
    model: String,
    /// Prompt tokens (P) of every prefill.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Greedy decode steps (D) per decode measurement.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Sequences decoded together in the batched measurement (B).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Repeat each measurement until this many seconds have been measured (at least once).
    #[arg(long, default_value_t = 0.0)]
    seconds: f64,
    /// Write the prompts' token ids here as JSON (`prompt_ids`, `batch_prompt_ids`), for a peer.
    #[arg(long)]
    write_prompt_ids: Option<PathBuf>,
}

fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().fold((0u32, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i as u32, v) } else { best }).0
}

/// Repeats `once` (which returns the tokens it produced and the time it measured) until
/// `seconds` have been measured; returns tokens/s over all repetitions and the repetitions.
fn repeat(seconds: f64, mut once: impl FnMut() -> Result<(usize, Duration)>) -> Result<(f64, usize)> {
    let (mut tokens, mut time, mut reps) = (0usize, Duration::ZERO, 0usize);
    while reps == 0 || time.as_secs_f64() < seconds {
        let (t, d) = once()?;
        tokens += t;
        time += d;
        reps += 1;
    }
    Ok((tokens as f64 / time.as_secs_f64(), reps))
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.prompt_tokens > 0 && args.decode_tokens > 0 && args.batch > 0, "--prompt-tokens, --decode-tokens and --batch must be at least 1");
    let (p, d, b) = (args.prompt_tokens, args.decode_tokens, args.batch);

    let runtime = tokio::runtime::Runtime::new()?;
    let store: Arc<dyn Store> = Arc::new(
        runtime
            .block_on(SqliteStore::open(&args.db, false))
            .with_context(|| format!("opening the store {}", args.db.display()))?,
    );
    let (row, material, layers) = runtime.block_on(async {
        let row = store
            .model(&args.model, None)
            .await?
            .with_context(|| format!("no model {:?} in {}: ingest it first (hartonomous ingest FILE --db STORE --name NAME)", args.model, args.db.display()))?;
        let material = store.model_material(row.id).await?.context("the model has no stored configuration")?;
        let layers = store.layers(row.id).await?;
        anyhow::Ok((row, material, layers))
    })?;
    ensure!(material.tokenizer_kind == "gguf", "the model's tokenizer is {:?}, not one from GGUF metadata: this benchmark runs GGUF Llama-family models", material.tokenizer_kind);
    let tokenizer = GgufTokenizer::from_metadata(&row.label(), material.tokenizer_material.as_deref().context("the model has no tokenizer metadata")?)?;
    let text_ids = tokenizer.encode(&PROMPT_TEXT.repeat(p / 64 + b / 64 + 1))?;
    ensure!(text_ids.len() >= p + b, "the prompt text gives only {} tokens, fewer than --prompt-tokens + --batch", text_ids.len());
    let prompt = text_ids[..p].to_vec();
    // The batched measurement's prompts: sequence i's is the text from token i on, so they differ.
    let prompts: Vec<Vec<u32>> = (0..b).map(|i| text_ids[i..i + p].to_vec()).collect();
    if let Some(path) = &args.write_prompt_ids {
        let ids = serde_json::json!({ "prompt_ids": prompt, "batch_prompt_ids": prompts });
        std::fs::write(path, ids.to_string()).with_context(|| format!("writing {}", path.display()))?;
    }

    let gpu = Arc::new(Gpu::new()?);
    let config = LlamaConfig::from_json(&row.label(), &material.config_json)?;
    ensure!(p + d <= config.context, "P + D = {} exceeds the model's context of {} tokens", p + d, config.context);
    let vocab = config.vocab;
    // What a decode step reads: the stored tensors' bytes. The pager's resident bytes can be
    // twice that for some layers (their texel copy, on a software adapter where texel fetches were
    // measured faster), which is not read twice.
    let gguf_bytes: u64 = layers.iter().map(|l| l.byte_length).sum();
    let model = LlamaModel::new(&row.label(), config, layers, &gpu)?;
    let mut pager = Pager::new(gpu.clone(), store, runtime.handle().clone(), 4 << 30, WeightsSource::Atoms);
    println!("model {} ({} layers, vocab {vocab}); adapter {}", row.label(), model.config().layers, gpu.report());

    // Warm-up: page every weight in and compile every kernel.
    let start = Instant::now();
    let mut cache = model.new_cache(&gpu, p)?;
    model.forward(&mut pager, &mut cache, &prompt, false)?;
    let resident_bytes = pager.metrics().counts().resident_bytes;
    let weight_bytes = gguf_bytes;
    println!("warm-up prefill (paging {weight_bytes} weight bytes in, {resident_bytes} resident): {:.2} s", start.elapsed().as_secs_f64());

    // (a) prefill.
    let (prefill_tps, prefill_reps) = repeat(args.seconds, || {
        let mut cache = model.new_cache(&gpu, p)?;
        let start = Instant::now();
        model.forward(&mut pager, &mut cache, &prompt, false)?;
        Ok((p, start.elapsed()))
    })?;

    // (b) decode, batch 1.
    let mut generated = Vec::new();
    let (decode1_tps, decode1_reps) = repeat(args.seconds, || {
        let mut cache = model.new_cache(&gpu, p + d)?;
        let mut logits = model.forward(&mut pager, &mut cache, &prompt, false)?;
        generated.clear();
        let start = Instant::now();
        for _ in 0..d {
            let next = argmax(&logits);
            generated.push(next);
            logits = model.forward(&mut pager, &mut cache, &[next], false)?;
        }
        Ok((d, start.elapsed()))
    })?;
    println!("greedy continuation at batch 1: {:?}", tokenizer.decode(&generated).unwrap_or_default());

    // (c) decode, batch B.
    let (decode_b_tps, decode_b_reps) = repeat(args.seconds, || {
        let pool = model.new_pool(&gpu, b, p + d)?;
        let mut next = Vec::with_capacity(b);
        for (slot, ids) in prompts.iter().enumerate() {
            let logits = model.step(&mut pager, &pool, &[SequenceStep { slot, position: 0, ids }], false)?;
            next.push(argmax(&logits));
        }
        let start = Instant::now();
        for step in 0..d {
            let steps: Vec<SequenceStep> =
                next.iter().enumerate().map(|(slot, id)| SequenceStep { slot, position: p + step, ids: std::slice::from_ref(id) }).collect();
            let logits = model.step(&mut pager, &pool, &steps, false)?;
            let chosen: Vec<u32> = logits.chunks_exact(vocab).map(argmax).collect();
            next = chosen;
        }
        Ok((b * d, start.elapsed()))
    })?;

    let counts = pager.metrics().counts();
    ensure!(counts.resident_bytes == resident_bytes && counts.evictions == 0, "weights were paged during the measurement ({counts:?}): raise the pager budget");

    let bandwidth = hartonomous_benches::copy_bandwidth(&gpu)?;
    let step_floor = weight_bytes as f64 / bandwidth;
    let bound1 = 1.0 / step_floor;
    let bound_b = b as f64 * bound1;

    println!();
    println!("| measurement | tokens/s | repetitions |");
    println!("|---|---:|---:|");
    println!("| prefill, {p} tokens, batch 1 | {prefill_tps:.1} | {prefill_reps} |");
    println!("| decode, batch 1, {d} steps after {p} prompt tokens | {decode1_tps:.2} | {decode1_reps} |");
    println!("| decode, batch {b}, {d} steps after {p} prompt tokens each | {decode_b_tps:.2} | {decode_b_reps} |");
    println!();
    println!("| roofline | value |");
    println!("|---|---:|");
    println!("| weight bytes read per decode step (the GGUF's tensor bytes) | {weight_bytes} ({:.1} MB) |", weight_bytes as f64 / 1e6);
    println!("| measured bandwidth (vec4 copy kernel, read + write) | {:.2} GB/s |", bandwidth / 1e9);
    println!("| minimum time per decode step | {:.2} ms |", step_floor * 1e3);
    println!("| decode bound, batch 1 | {bound1:.1} tokens/s (reached {:.1}%) |", 100.0 * decode1_tps / bound1);
    println!("| decode bound, batch {b} (KV reads ignored) | {bound_b:.1} tokens/s (reached {:.1}%) |", 100.0 * decode_b_tps / bound_b);
    Ok(())
}
