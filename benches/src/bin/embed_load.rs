//! The serving benchmark's load client: sentences/s end to end over HTTPS against an
//! OpenAI-compatible `POST /v1/embeddings` (the daemon's), at several concurrencies.
//!
//! For each concurrency C, C tasks send requests back to back (a closed loop) with new
//! 32-token sentences each time (`hartonomous_benches::sentences`, the ones the candle peer
//! embeds), first for a warm-up that is not counted (at least `--warmup-seconds`, and until
//! every task has had an answer), then for the measured window. A request
//! counts in the window it completes in, so throughput is completions per second; latency is
//! from sending the request to having read the whole response body. Every non-200 response and
//! transport error in the window counts as an error, and the first error body is printed.
//!
//! Only the first response is parsed (its `usage.prompt_tokens` must be 32 × inputs, else the
//! run stops): parsing every embedding would spend the client's CPU, which on a small machine is
//! the server's CPU too. The others are read to the end and their status checked.
//!
//! Run: `embed_load --url https://127.0.0.1:8443 --cacert cert.pem --model all-MiniLM-L6-v2
//! --concurrency 1,8,32 --seconds 20` (`scripts/bench-serve.sh` starts a daemon and does this).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use hartonomous_benches::quantile;
use hartonomous_benches::sentences::{sentence, SENTENCE_TOKENS};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Load client for POST /v1/embeddings over HTTPS: sentences/s and latency at several concurrencies")]
struct Args {
    /// The server's base URL; HTTPS only.
    #[arg(long)]
    url: String,
    /// PEM file of the certificate (or its CA) to trust; the system's roots are not used.
    #[arg(long)]
    cacert: std::path::PathBuf,
    /// The `model` field of each request.
    #[arg(long, default_value = "all-MiniLM-L6-v2")]
    model: String,
    /// Concurrencies to measure, comma-separated: that many requests in flight at all times.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Measured seconds per concurrency.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Least seconds of load before each measurement, not counted (connections, pager, batcher);
    /// longer if some task has not had its first answer by then.
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
    /// Sentences in each request's `input` array.
    #[arg(long, default_value_t = 1)]
    inputs_per_request: usize,
    /// Also print the results as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// What the tasks of one concurrency level share.
struct Shared {
    client: reqwest::Client,
    endpoint: String,
    model: String,
    inputs: usize,
    /// The next sentence index: every request gets new sentences, across all levels.
    next_sentence: Arc<AtomicU64>,
    /// The first error seen in the whole run, printed once.
    first_error: Arc<Mutex<Option<String>>>,
}

impl Shared {
    fn body(&self) -> Value {
        let start = self.next_sentence.fetch_add(self.inputs as u64, Ordering::Relaxed);
        let input: Vec<String> = (start..start + self.inputs as u64).map(sentence).collect();
        json!({ "model": self.model, "input": input })
    }

    /// Sends one request and reads the whole body. `Err` carries what to report as the error.
    async fn send(&self) -> std::result::Result<(), String> {
        let response = self.client.post(&self.endpoint).json(&self.body()).send().await.map_err(|e| format!("transport: {e:#}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("reading the body: {e:#}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    }

    fn record_error(&self, error: String) {
        // A poisoned lock only means another task panicked; the message slot is still usable.
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            eprintln!("first error: {error}");
            *first = Some(error);
        }
    }
}

/// One task's tally of the measured window.
#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    errors: u64,
}

/// The measured window, `[from, until)`, once the warm-up is over.
type Window = Option<(Instant, Instant)>;

async fn worker(shared: Arc<Shared>, window: tokio::sync::watch::Receiver<Window>, warmed: Arc<AtomicUsize>) -> Tally {
    let mut tally = Tally::default();
    let mut first = true;
    loop {
        let current = *window.borrow();
        if current.is_some_and(|(_, until)| Instant::now() >= until) {
            break;
        }
        let start = Instant::now();
        let outcome = shared.send().await;
        let done = Instant::now();
        // Any answer counts, an error too: a server that only fails must not stall the warm-up.
        if first {
            first = false;
            warmed.fetch_add(1, Ordering::Relaxed);
        }
        // The window as it is now: a request sent in the warm-up may complete inside it.
        let counted = window.borrow().is_some_and(|(from, until)| done >= from && done < until);
        match outcome {
            Ok(()) if counted => tally.latencies_ms.push((done - start).as_secs_f64() * 1e3),
            Ok(()) => {}
            Err(error) => {
                if counted {
                    tally.errors += 1;
                }
                shared.record_error(error);
            }
        }
    }
    tally
}

/// One concurrency level's figures.
struct Measured {
    concurrency: usize,
    /// Seconds of warm-up it took (see [`measure`]).
    warmed_up: f64,
    sentences_per_s: f64,
    requests_per_s: f64,
    requests: usize,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

async fn measure(shared: &Arc<Shared>, concurrency: usize, warmup: Duration, seconds: Duration) -> Result<Measured> {
    let (open_window, window) = tokio::sync::watch::channel(None);
    let warmed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> =
        (0..concurrency).map(|_| tokio::spawn(worker(shared.clone(), window.clone(), warmed.clone()))).collect();
    // The warm-up lasts at least `warmup` and until every task has had an answer: with many
    // requests in flight the first answers can take longer than `warmup`, and a window opened
    // before the queue has filled would count a start-up wave, not the steady state.
    tokio::time::sleep(warmup).await;
    while warmed.load(Ordering::Relaxed) < concurrency {
        ensure!(
            tasks.iter().all(|t| !t.is_finished()),
            "a load task ended during the warm-up (the first error is printed above)"
        );
        ensure!(
            started.elapsed() < warmup + Duration::from_secs(300),
            "after 300 s of warm-up only {} of {concurrency} tasks have had an answer (the first error, if any, is printed above)",
            warmed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let from = Instant::now();
    let warmed_up = (from - started).as_secs_f64();
    open_window.send_replace(Some((from, from + seconds)));
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let tally = task.await.context("a load task panicked")?;
        latencies.extend(tally.latencies_ms);
        errors += tally.errors;
    }
    latencies.sort_by(f64::total_cmp);
    let window = seconds.as_secs_f64();
    if latencies.len() < 2 * concurrency {
        eprintln!(
            "warning: concurrency {concurrency}: only {} requests completed in {window} s; lengthen --seconds for a steady-state figure",
            latencies.len()
        );
    }
    Ok(Measured {
        concurrency,
        warmed_up,
        sentences_per_s: (latencies.len() * shared.inputs) as f64 / window,
        requests_per_s: latencies.len() as f64 / window,
        requests: latencies.len(),
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        errors,
    })
}

/// Sends one request and checks what comes back: 200, one embedding per input, and
/// `usage.prompt_tokens` = 32 × inputs (else the sentences are not what this benchmark claims).
/// Returns the embedding dimension.
async fn check_first_response(shared: &Shared) -> Result<usize> {
    let response = shared.client.post(&shared.endpoint).json(&shared.body()).send().await.with_context(|| {
        format!("sending the first request to {} (is the server up, and is --cacert its certificate?)", shared.endpoint)
    })?;
    let status = response.status();
    let text = response.text().await.context("reading the first response")?;
    if status != reqwest::StatusCode::OK {
        bail!("the first request got HTTP {status}: {text}");
    }
    let value: Value = serde_json::from_str(&text).context("the first response is not JSON")?;
    let prompt_tokens = value["usage"]["prompt_tokens"].as_u64().context("the first response has no usage.prompt_tokens")?;
    let expected = (SENTENCE_TOKENS * shared.inputs) as u64;
    ensure!(
        prompt_tokens == expected,
        "the server counted {prompt_tokens} prompt tokens for {} sentences, not {expected}: the sentences are not {SENTENCE_TOKENS} tokens for this model, so the figures would not be what they claim",
        shared.inputs
    );
    let data = value["data"].as_array().context("the first response has no `data` array")?;
    ensure!(data.len() == shared.inputs, "{} embeddings for {} inputs", data.len(), shared.inputs);
    let dimension = data[0]["embedding"].as_array().context("data[0] has no `embedding` array")?.len();
    Ok(dimension)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.url.starts_with("https://"), "--url must be https:// (this measures the daemon over TLS)");
    ensure!(args.seconds > 0.0 && args.warmup_seconds >= 0.0, "--seconds must be positive and --warmup-seconds not negative");
    ensure!(args.inputs_per_request > 0, "--inputs-per-request must be at least 1");
    ensure!(args.concurrency.iter().all(|&c| c > 0), "concurrencies must be positive");
    let pem = std::fs::read(&args.cacert).with_context(|| format!("reading --cacert {}", args.cacert.display()))?;
    let certificate = reqwest::Certificate::from_pem(&pem).with_context(|| format!("{} is not a PEM certificate", args.cacert.display()))?;
    let client = reqwest::Client::builder()
        .add_root_certificate(certificate)
        .tls_built_in_root_certs(false)
        .https_only(true)
        // Enough idle connections that every task keeps its own between requests.
        .pool_max_idle_per_host(args.concurrency.iter().copied().max().unwrap_or(1))
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTPS client")?;
    let shared = Arc::new(Shared {
        client,
        endpoint: format!("{}/v1/embeddings", args.url.trim_end_matches('/')),
        model: args.model.clone(),
        inputs: args.inputs_per_request,
        next_sentence: Arc::new(AtomicU64::new(0)),
        first_error: Arc::new(Mutex::new(None)),
    });
    let dimension = check_first_response(&shared).await?;
    println!(
        "{} model {}: {} input(s) of {SENTENCE_TOKENS} tokens per request, {dimension} dimensions; at least {:.0} s warm-up + {:.0} s measured per level",
        shared.endpoint, args.model, args.inputs_per_request, args.warmup_seconds, args.seconds
    );

    let mut results = Vec::new();
    for &concurrency in &args.concurrency {
        let m = measure(&shared, concurrency, Duration::from_secs_f64(args.warmup_seconds), Duration::from_secs_f64(args.seconds)).await?;
        eprintln!("concurrency {concurrency}: {:.1} sentences/s after {:.1} s of warm-up", m.sentences_per_s, m.warmed_up);
        results.push(m);
    }
    println!();
    println!("| concurrency | sentences/s | requests/s | requests | p50 ms | p99 ms | errors |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for m in &results {
        println!(
            "| {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {} |",
            m.concurrency, m.sentences_per_s, m.requests_per_s, m.requests, m.p50_ms, m.p99_ms, m.errors
        );
    }
    if args.json {
        let rows: Vec<Value> = results
            .iter()
            .map(|m| {
                json!({
                    "concurrency": m.concurrency, "sentences_per_s": m.sentences_per_s,
                    "requests_per_s": m.requests_per_s, "requests": m.requests,
                    "p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "errors": m.errors, "warmed_up_seconds": m.warmed_up,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "url": args.url, "model": args.model, "inputs_per_request": args.inputs_per_request,
                "tokens_per_sentence": SENTENCE_TOKENS, "warmup_seconds": args.warmup_seconds,
                "seconds": args.seconds, "dimension": dimension, "results": rows,
            })
        );
    }
    let errors: u64 = results.iter().map(|m| m.errors).sum();
    if errors > 0 {
        bail!("{errors} requests failed in the measured windows (the first error is printed above)");
    }
    Ok(())
}
