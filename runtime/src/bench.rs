//! `hartonomous bench`: a closed-loop load generator that drives a daemon over HTTPS the way its
//! users do, and reports throughput, latency percentiles, time to first token for streams,
//! errors by kind, and the daemon's own metrics sampled during the run.
//!
//! At each concurrency C, C tasks send requests back to back (a closed loop): first for the
//! warm-up, not counted (connections, paging, the batcher), then for the measured window (a
//! duration, or a number of requests). A request counts in the window it completes in. Inputs
//! are fixed and seeded: sentence `i` of the corpus shipped with the repository (3,921
//! sentences from Python's documentation, `benches/data/python_doc_sentences.txt`), so runs are
//! comparable. The `noop` scenario calls `GET /livez`, which does nothing, to show the rate the
//! harness itself reaches. `--protocol grpc` sends the same requests as `hartonomous.v1` calls
//! on the same port (the no-op is then the standard health check).
//!
//! `--compare` then runs a peer on the same machine, after the daemon's levels (an embedded
//! daemon is stopped first, so the peer has the machine to itself): a program that reads one
//! [`PeerJob`] as JSON on stdin (the scenario, the exact inputs the harness sent, the levels and
//! the window) and prints one [`PeerReport`] as the last line of its stdout. Each level C of the
//! peer runs batches of C inputs back to back, which is what a batching server at concurrency C
//! can at best do with the same engine in process. Peers: `benches/peer-candle` for embed (candle,
//! CPU), `benches/scripts/llamacpp_generate_bench.py --job` for generate (llama.cpp),
//! `benches/scripts/faiss_search_bench.py --job` for search (FAISS).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

/// The corpus: one sentence a line after the two header lines (source and licence).
const CORPUS: &str = include_str!("../../benches/data/python_doc_sentences.txt");

pub fn corpus() -> Vec<&'static str> {
    CORPUS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot reach the daemon at {base}: {what}")]
    Unreachable { base: String, what: String },
    #[error("{0}")]
    Setup(String),
}

/// What a run exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// `POST /v1/embeddings`, one sentence a request.
    Embed,
    /// `POST /v1/completions`, streamed, greedy, `--max-tokens` tokens.
    Generate,
    /// `POST /v1/chat/completions`, streamed, greedy.
    Chat,
    /// `POST /v1/search`: a sentence as the query, k = 10, over the corpus embedded first.
    Search,
    /// `POST /v1/ensemble`: the embedding model with itself, weights 1 and 1.
    Ensemble,
    /// Embed, search, generate and ensemble in turn.
    Mixed,
    /// `GET /livez`: the harness's own ceiling.
    Noop,
}

impl Scenario {
    /// What one request yields, for the throughput line.
    fn unit(self) -> &'static str {
        match self {
            Scenario::Embed | Scenario::Ensemble => "sentences",
            Scenario::Generate | Scenario::Chat => "tokens",
            Scenario::Search => "queries",
            Scenario::Mixed | Scenario::Noop => "requests",
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub scenario: Scenario,
    pub concurrency: Vec<usize>,
    /// The measured window per level: a duration, or else a number of requests.
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub embed_model: Option<String>,
    pub generate_model: Option<String>,
    pub max_tokens: u32,
    /// The peer to compare with (a shell command speaking the [`PeerJob`] protocol), if any.
    pub peer: Option<String>,
}

/// The neighbours a search request asks for.
const SEARCH_K: usize = 10;
/// Corpus sentences embedded (and so stored) before a search run; the queries are their vectors.
const SEARCH_CORPUS: usize = 512;

/// What a peer is asked to do: the same work the daemon was given.
#[derive(Debug, Clone, Serialize)]
pub struct PeerJob {
    pub scenario: Scenario,
    /// The inputs in the order the harness sent them (sentences, or prompts), cycled.
    pub inputs: Vec<String>,
    pub levels: Vec<usize>,
    pub seconds: f64,
    pub warmup_seconds: f64,
    /// Generate: tokens per answer.
    pub max_tokens: u32,
    /// Search: neighbours per query; how many vectors the daemon scanned (the stored corpus);
    /// and `vectors`, the stored vectors of the first corpus sentences, which are both the
    /// queries sent and the first `vectors.len()` of the scanned corpus (the peer may stand in
    /// for the rest with random unit vectors: a flat scan's time does not depend on values).
    pub k: usize,
    pub scanned: usize,
    pub vectors: Vec<Vec<f32>>,
}

/// What a peer answers, as the last line of its stdout.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PeerReport {
    /// The peer's name, version and setup ("candle 0.9 CPU f32, 2 threads").
    pub peer: String,
    pub levels: Vec<PeerLevel>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PeerLevel {
    pub concurrency: usize,
    pub items_per_second: f64,
}

/// Which front door the requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Https,
    Grpc,
}

/// Where the daemon is. Discovery and `/metrics` always go over HTTPS.
#[derive(Clone)]
pub struct Target {
    pub base: String,
    pub client: reqwest::Client,
    pub api_key: Option<String>,
    /// A gRPC channel to the same daemon, for `--protocol grpc`.
    pub grpc: Option<tonic::transport::Channel>,
}

impl Target {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.auth(self.client.post(format!("{}{path}", self.base)))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.auth(self.client.get(format!("{}{path}", self.base)))
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` (milliseconds); zeros when there are none.
    pub fn of(values: &mut [f64]) -> Self {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Percentiles {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: values[values.len() - 1],
            mean: values.iter().sum::<f64>() / values.len() as f64,
        }
    }
}

/// The daemon's metrics sampled once a second during a level.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonSample {
    pub samples: u32,
    /// Pager hits ÷ (hits + misses) over the level.
    pub pager_hit_rate: Option<f64>,
    pub resident_bytes_max: u64,
    pub queue_depth_max: u64,
    pub live_sequences_max: u64,
    /// The daemon's RSS at the level's first and last sample (flat memory shows as equal).
    pub resident_set_first: Option<u64>,
    pub resident_set_last: Option<u64>,
}

/// One concurrency level's results.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    pub concurrency: usize,
    pub seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    /// Sentences, tokens or queries a second (see `unit`).
    pub items_per_second: f64,
    pub unit: &'static str,
    pub latency_ms: Percentiles,
    /// Time to the first generated text, for streamed scenarios.
    pub time_to_first_token_ms: Option<Percentiles>,
    /// By kind: `http NNN code` or `transport`.
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub daemon: DaemonSample,
    /// CPU seconds this process spent during the level (user + system), and as a share of one
    /// core: the harness's own cost against `--target`; harness and daemon together when the
    /// daemon is embedded.
    pub process_cpu_seconds: Option<f64>,
    pub process_cpu_cores: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub scenario: Scenario,
    pub protocol: Protocol,
    pub target: String,
    pub embed_model: Option<String>,
    pub generate_model: Option<String>,
    pub machine: Machine,
    pub levels: Vec<LevelReport>,
    /// `--compare`: the peer's figures on the same inputs, same machine, same run.
    pub peer: Option<PeerReport>,
    /// The job the peer was given, to run it again by hand (not in the JSON report: it holds
    /// every input and vector).
    #[serde(skip)]
    pub peer_job: Option<PeerJob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    pub adapter: Option<String>,
}

/// One request's outcome.
struct Outcome {
    latency: Duration,
    first_token: Option<Duration>,
    items: u64,
}

/// What the tasks of a level share.
struct Level {
    target: Target,
    scenario: Scenario,
    embed_model: String,
    generate_model: String,
    max_tokens: u32,
    corpus: Vec<&'static str>,
    /// Search queries: the stored vectors of the first corpus sentences.
    query_vectors: Arc<Vec<Vec<f32>>>,
    /// Sentence of the next request: counts on across levels, so every request is new.
    next: Arc<AtomicU64>,
}

impl Level {
    async fn one(&self) -> Result<Outcome, String> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let sentence = self.corpus[(i % self.corpus.len() as u64) as usize];
        let call = self.call(i);
        let query = self.query_vectors.get((i % self.query_vectors.len().max(1) as u64) as usize).map(Vec::as_slice).unwrap_or(&[]);
        match &self.target.grpc {
            Some(channel) => self.one_grpc(channel.clone(), call, sentence, query).await,
            None => self.one_https(call, sentence, query).await,
        }
    }

    fn call(&self, i: u64) -> Call {
        match self.scenario {
            Scenario::Mixed => [Call::Embed, Call::Search, Call::Generate, Call::Ensemble][(i % 4) as usize],
            Scenario::Embed => Call::Embed,
            Scenario::Generate => Call::Generate,
            Scenario::Chat => Call::Chat,
            Scenario::Search => Call::Search,
            Scenario::Ensemble => Call::Ensemble,
            Scenario::Noop => Call::Noop,
        }
    }

    fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = self.target.api_key.as_ref().and_then(|k| format!("Bearer {k}").parse().ok()) {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    async fn one_grpc(&self, channel: tonic::transport::Channel, call: Call, sentence: &str, query: &[f32]) -> Result<Outcome, String> {
        use crate::serve::grpc::pb;
        let status = |s: tonic::Status| format!("grpc {:?}", s.code());
        let mut client = pb::hartonomous_client::HartonomousClient::new(channel.clone())
            .max_decoding_message_size(crate::serve::api::MAX_BODY_BYTES);
        let started = Instant::now();
        let sampling = || Some(pb::Sampling { max_tokens: Some(self.max_tokens), temperature: Some(0.0), ..Default::default() });
        let mut stream = match call {
            Call::Noop => {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                health.check(self.grpc_request(tonic_health::pb::HealthCheckRequest { service: String::new() })).await.map_err(status)?;
                return Ok(Outcome { latency: started.elapsed(), first_token: None, items: 1 });
            }
            Call::Embed => {
                client.embed(self.grpc_request(pb::EmbedRequest { model: self.embed_model.clone(), input: vec![sentence.to_string()] })).await.map_err(status)?;
                return Ok(Outcome { latency: started.elapsed(), first_token: None, items: 1 });
            }
            Call::Search => {
                let request = pb::SearchRequest {
                    model: self.embed_model.clone(),
                    vectors: vec![pb::Vector { values: query.to_vec() }],
                    k: Some(SEARCH_K as u32),
                    ..Default::default()
                };
                client.search(self.grpc_request(request)).await.map_err(status)?;
                return Ok(Outcome { latency: started.elapsed(), first_token: None, items: 1 });
            }
            Call::Ensemble => {
                let member = || pb::EnsembleMember { model: self.embed_model.clone(), weight: Some(1.0) };
                let request = pb::EnsembleRequest {
                    models: vec![member(), member()],
                    input: vec![sentence.to_string()],
                    output: "embedding".into(),
                    ..Default::default()
                };
                client.ensemble(self.grpc_request(request)).await.map_err(status)?;
                return Ok(Outcome { latency: started.elapsed(), first_token: None, items: 1 });
            }
            Call::Generate => {
                let request = pb::GenerateRequest { model: self.generate_model.clone(), prompt: sentence.to_string(), sampling: sampling() };
                client.generate(self.grpc_request(request)).await.map_err(status)?.into_inner()
            }
            Call::Chat => {
                let message = pb::ChatMessage { role: "user".into(), content: sentence.to_string() };
                let request = pb::ChatRequest { model: self.generate_model.clone(), messages: vec![message], sampling: sampling() };
                client.chat(self.grpc_request(request)).await.map_err(status)?.into_inner()
            }
        };
        let (mut first_token, mut tokens) = (None, 0u64);
        while let Some(chunk) = stream.message().await.map_err(status)? {
            if first_token.is_none() && !chunk.text.is_empty() {
                first_token = Some(started.elapsed());
            }
            if let Some(usage) = chunk.usage {
                tokens = u64::from(usage.completion_tokens);
            }
        }
        Ok(Outcome { latency: started.elapsed(), first_token, items: tokens })
    }

    async fn one_https(&self, call: Call, sentence: &str, query: &[f32]) -> Result<Outcome, String> {
        let started = Instant::now();
        let (path, body) = match call {
            Call::Noop => {
                let response = self.target.get("/livez").send().await.map_err(|e| format!("transport: {e}"))?;
                let status = response.status();
                response.bytes().await.map_err(|e| format!("transport: {e}"))?;
                if !status.is_success() {
                    return Err(format!("http {}", status.as_u16()));
                }
                return Ok(Outcome { latency: started.elapsed(), first_token: None, items: 1 });
            }
            Call::Embed => ("/v1/embeddings", json!({"model": self.embed_model, "input": sentence})),
            Call::Search => ("/v1/search", json!({"model": self.embed_model, "query": query, "k": SEARCH_K})),
            Call::Ensemble => (
                "/v1/ensemble",
                json!({"models": [{"model": self.embed_model, "weight": 1}, {"model": self.embed_model, "weight": 1}], "input": sentence, "output": "embedding"}),
            ),
            Call::Generate => (
                "/v1/completions",
                json!({"model": self.generate_model, "prompt": sentence, "max_tokens": self.max_tokens, "temperature": 0,
                       "stream": true, "stream_options": {"include_usage": true}}),
            ),
            Call::Chat => (
                "/v1/chat/completions",
                json!({"model": self.generate_model, "messages": [{"role": "user", "content": sentence}], "max_tokens": self.max_tokens,
                       "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}),
            ),
        };
        let mut response = self.target.post(path).json(&body).send().await.map_err(|e| format!("transport: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let code = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_string));
            return Err(format!("http {}{}", status.as_u16(), code.map(|c| format!(" {c}")).unwrap_or_default()));
        }
        if matches!(call, Call::Generate | Call::Chat) {
            // Server-sent events: the first chunk with text is the first token; the usage chunk
            // says how many tokens came.
            let (mut first_token, mut tokens, mut pending) = (None, 0u64, String::new());
            while let Some(chunk) = response.chunk().await.map_err(|e| format!("transport: {e}"))? {
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
                    if data == "[DONE]" {
                        continue;
                    }
                    let v: Value = serde_json::from_str(data).map_err(|e| format!("bad event: {e}"))?;
                    if v.get("error").is_some() {
                        return Err("stream error".into());
                    }
                    let text = v["choices"][0]["text"].as_str().or_else(|| v["choices"][0]["delta"]["content"].as_str()).unwrap_or("");
                    if first_token.is_none() && !text.is_empty() {
                        first_token = Some(started.elapsed());
                    }
                    if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                        tokens = n;
                    }
                }
            }
            return Ok(Outcome { latency: started.elapsed(), first_token, items: tokens });
        }
        response.bytes().await.map_err(|e| format!("transport: {e}"))?;
        Ok(Outcome { latency: started.elapsed(), first_token: None, items: 1 })
    }
}

/// One request of a scenario (`Mixed` takes the others in turn).
#[derive(Clone, Copy)]
enum Call {
    Noop,
    Embed,
    Search,
    Ensemble,
    Generate,
    Chat,
}

/// The served models: the first embedding and generation models unless named.
async fn discover(target: &Target, options: &BenchOptions) -> Result<(Option<String>, Option<String>), BenchError> {
    let unreachable = |what: String| BenchError::Unreachable { base: target.base.clone(), what };
    let response = target.get("/v1/models").send().await.map_err(|e| unreachable(format!("{e:#}")))?;
    if !response.status().is_success() {
        return Err(unreachable(format!("GET /v1/models answered {} (a key is needed? pass --api-key)", response.status())));
    }
    let models: Value = response.json().await.map_err(|e| unreachable(e.to_string()))?;
    let first = |kind: &str| {
        models["data"].as_array().and_then(|d| d.iter().find(|m| m["hartonomous"]["kind"] == kind)).and_then(|m| m["id"].as_str()).map(str::to_string)
    };
    Ok((options.embed_model.clone().or_else(|| first("embeddings")), options.generate_model.clone().or_else(|| first("generation"))))
}

/// Samples `/metrics` once a second until `stop`.
async fn sample_metrics(target: Target, stop: Arc<tokio::sync::Notify>) -> DaemonSample {
    let mut sample = DaemonSample::default();
    let mut first_counts: Option<(f64, f64)> = None;
    let mut last_counts = (0.0, 0.0);
    loop {
        if let Ok(response) = target.get("/metrics").send().await {
            if let Ok(text) = response.text().await {
                let value = |name: &str| {
                    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok())).unwrap_or(0.0)
                };
                let counts = (value("hartonomous_pager_hits_total "), value("hartonomous_pager_misses_total "));
                first_counts.get_or_insert(counts);
                last_counts = counts;
                sample.samples += 1;
                sample.resident_bytes_max = sample.resident_bytes_max.max(value("hartonomous_pager_resident_bytes ") as u64);
                sample.queue_depth_max = sample.queue_depth_max.max(value("hartonomous_queue_depth ") as u64);
                sample.live_sequences_max = sample.live_sequences_max.max(value("hartonomous_generate_live_sequences ") as u64);
                let rss = value("hartonomous_process_resident_bytes ") as u64;
                if rss > 0 {
                    sample.resident_set_first.get_or_insert(rss);
                    sample.resident_set_last = Some(rss);
                }
            }
        }
        tokio::select! {
            () = stop.notified() => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    if let Some((hits0, misses0)) = first_counts {
        let (hits, misses) = (last_counts.0 - hits0, last_counts.1 - misses0);
        if hits + misses > 0.0 {
            sample.pager_hit_rate = Some(hits / (hits + misses));
        }
    }
    sample
}

/// Runs every level; `progress` is told each level's start and each completion.
pub async fn run(target: Target, options: BenchOptions, progress: &(dyn Fn(ProgressEvent) + Sync)) -> Result<BenchReport, BenchError> {
    if options.concurrency.is_empty() || options.concurrency.contains(&0) {
        return Err(BenchError::Setup("--concurrency takes levels of at least 1, e.g. 1,8,32".into()));
    }
    let (embed_model, generate_model) = discover(&target, &options).await?;
    let needs_embed = matches!(options.scenario, Scenario::Embed | Scenario::Search | Scenario::Ensemble | Scenario::Mixed);
    let needs_generate = matches!(options.scenario, Scenario::Generate | Scenario::Chat | Scenario::Mixed);
    if needs_embed && embed_model.is_none() {
        return Err(BenchError::Setup("the daemon serves no embedding model; this scenario needs one (--embed-model)".into()));
    }
    if needs_generate && generate_model.is_none() {
        return Err(BenchError::Setup("the daemon serves no generation model; this scenario needs one (--generate-model)".into()));
    }
    let corpus = corpus();
    let mut query_vectors = Vec::new();
    let mut scanned = 0;
    if matches!(options.scenario, Scenario::Search | Scenario::Mixed) {
        // The searched corpus: the first 512 sentences, embedded (and so stored) first. Their
        // vectors are the queries, so a search request measures the search alone (the embed
        // scenario measures embedding).
        progress(ProgressEvent::Setup("embedding 512 sentences for the search index"));
        let setup = |what: String| BenchError::Setup(format!("embedding the search corpus: {what}"));
        for chunk in corpus[..SEARCH_CORPUS.min(corpus.len())].chunks(64) {
            let body = json!({"model": embed_model, "input": chunk});
            let response = target.post("/v1/embeddings").json(&body).send().await.map_err(|e| setup(e.to_string()))?;
            if !response.status().is_success() {
                return Err(setup(format!("HTTP {}", response.status())));
            }
            let answer: Value = response.json().await.map_err(|e| setup(e.to_string()))?;
            for item in answer["data"].as_array().ok_or_else(|| setup("no `data` in the answer".into()))? {
                let vector: Option<Vec<f32>> = item["embedding"].as_array().and_then(|v| v.iter().map(|x| x.as_f64().map(|x| x as f32)).collect());
                query_vectors.push(vector.ok_or_else(|| setup("an `embedding` is not an array of numbers".into()))?);
            }
        }
        // How many vectors a search scans: the stored corpus, which may hold more than these.
        let first = query_vectors.first().ok_or_else(|| setup("the daemon returned no embeddings".into()))?;
        let body = json!({"model": embed_model, "query": first, "k": SEARCH_K});
        let answer: Value = target.post("/v1/search").json(&body).send().await.map_err(|e| setup(e.to_string()))?.json().await.map_err(|e| setup(e.to_string()))?;
        scanned = answer["data"][0]["candidates_scanned"].as_u64().unwrap_or(0) as usize;
    }
    let query_vectors = Arc::new(query_vectors);
    let adapter = adapter(&target).await;
    let mut levels = Vec::new();
    let next = Arc::new(AtomicU64::new(0));
    for &concurrency in &options.concurrency {
        let level = Arc::new(Level {
            target: target.clone(),
            scenario: options.scenario,
            embed_model: embed_model.clone().unwrap_or_default(),
            generate_model: generate_model.clone().unwrap_or_default(),
            max_tokens: options.max_tokens,
            corpus: corpus.clone(),
            query_vectors: query_vectors.clone(),
            next: next.clone(),
        });
        progress(ProgressEvent::Level { concurrency, requests: options.requests, duration: options.duration });
        levels.push(run_level(level, concurrency, &options, progress).await);
    }
    let peer_job = options.peer.as_ref().map(|_| PeerJob {
        scenario: options.scenario,
        inputs: if options.scenario == Scenario::Search { Vec::new() } else { corpus.iter().map(|s| s.to_string()).collect() },
        levels: options.concurrency.clone(),
        seconds: options.duration.map_or(10.0, |d| d.as_secs_f64()),
        warmup_seconds: options.warmup.as_secs_f64(),
        max_tokens: options.max_tokens,
        k: SEARCH_K,
        scanned,
        vectors: if options.scenario == Scenario::Search { query_vectors.to_vec() } else { Vec::new() },
    });
    Ok(BenchReport {
        peer: None,
        peer_job,
        scenario: options.scenario,
        protocol: if target.grpc.is_some() { Protocol::Grpc } else { Protocol::Https },
        target: target.base.clone(),
        embed_model,
        generate_model,
        machine: Machine { cores: std::thread::available_parallelism().map_or(1, |n| n.get()), memory_bytes: memory_bytes(), adapter },
        levels,
    })
}

/// Runs `command` (through `sh -c`) as the peer of `job`: the job as JSON on its stdin, its
/// report as the last line of its stdout; its stderr passes through, so its progress shows.
pub fn run_peer(command: &str, job: &PeerJob) -> Result<PeerReport, BenchError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let failed = |what: String| BenchError::Setup(format!("the peer `{command}` {what}"));
    if !matches!(job.scenario, Scenario::Embed | Scenario::Generate | Scenario::Chat | Scenario::Search) {
        return Err(BenchError::Setup(format!("--compare runs a peer for embed, generate, chat or search, not {}", name(&job.scenario))));
    }
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| failed(format!("could not start: {e}")))?;
    let input = serde_json::to_vec(job).map_err(|e| failed(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Written from a thread: a peer that prints before reading all of stdin must not deadlock.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().map_err(|e| failed(format!("could not be waited for: {e}")))?;
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let tail: Vec<&str> = stdout.lines().rev().take(5).collect();
        return Err(failed(format!("exited with {} (its stderr is above; last lines of stdout: {:?})", output.status, tail)));
    }
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let report: PeerReport = serde_json::from_str(last).map_err(|e| failed(format!("did not end its stdout with a report ({e}): {last:?}")))?;
    if report.levels.len() != job.levels.len() || report.levels.iter().zip(&job.levels).any(|(l, &c)| l.concurrency != c) {
        return Err(failed(format!("answered levels {:?} for {:?}", report.levels.iter().map(|l| l.concurrency).collect::<Vec<_>>(), job.levels)));
    }
    Ok(report)
}

/// What the progress display is told.
pub enum ProgressEvent {
    Setup(&'static str),
    Level { concurrency: usize, requests: Option<u64>, duration: Option<Duration> },
    Completed { errors: u64 },
    LevelDone,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    first_tokens: Vec<f64>,
    items: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

async fn run_level(level: Arc<Level>, concurrency: usize, options: &BenchOptions, progress: &(dyn Fn(ProgressEvent) + Sync)) -> LevelReport {
    // Warm-up: every task sends until the warm-up has passed and it has had one answer.
    let warm_until = Instant::now() + options.warmup;
    let mut warmers = Vec::new();
    for _ in 0..concurrency {
        let level = level.clone();
        warmers.push(tokio::spawn(async move {
            loop {
                let answered = level.one().await.is_ok();
                if answered && Instant::now() >= warm_until {
                    break;
                }
                if Instant::now() >= warm_until + Duration::from_secs(120) {
                    break;
                }
            }
        }));
    }
    for w in warmers {
        let _ = w.await;
    }
    let stop_sampling = Arc::new(tokio::sync::Notify::new());
    let sampler = tokio::spawn(sample_metrics(level.target.clone(), stop_sampling.clone()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let issued = Arc::new(AtomicU64::new(0));
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let cpu_at_start = process_cpu_seconds();
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let budget = if deadline.is_some() { None } else { Some(options.requests.unwrap_or(100)) };
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (level, tally, issued, events) = (level.clone(), tally.clone(), issued.clone(), events_tx.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if budget.is_some_and(|b| issued.fetch_add(1, Ordering::Relaxed) >= b) {
                    break;
                }
                let outcome = level.one().await;
                if deadline.is_some_and(|d| Instant::now() > d) {
                    break; // completed after the window: not counted
                }
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(o) => {
                        t.latencies.push(o.latency.as_secs_f64() * 1e3);
                        if let Some(ft) = o.first_token {
                            t.first_tokens.push(ft.as_secs_f64() * 1e3);
                        }
                        // A mixed run's requests yield different things: count requests.
                        t.items += if level.scenario == Scenario::Mixed { 1 } else { o.items };
                        let _ = events.send(false);
                    }
                    Err(kind) => {
                        let key = kind.split(':').next().unwrap_or("error").to_string();
                        *t.errors.entry(key).or_default() += 1;
                        t.first_error.get_or_insert(kind);
                        let _ = events.send(true);
                    }
                }
            }
        }));
    }
    drop(events_tx);
    let mut errors = 0;
    while let Some(failed) = events_rx.recv().await {
        errors += u64::from(failed);
        progress(ProgressEvent::Completed { errors });
    }
    for t in tasks {
        let _ = t.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_at_start.zip(process_cpu_seconds()).map(|(a, b)| b - a);
    stop_sampling.notify_one();
    let daemon = sampler.await.unwrap_or_default();
    progress(ProgressEvent::LevelDone);
    let mut t = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let requests = t.latencies.len() as u64;
    LevelReport {
        concurrency,
        seconds,
        requests,
        requests_per_second: requests as f64 / seconds,
        items_per_second: t.items as f64 / seconds,
        unit: level.scenario.unit(),
        latency_ms: Percentiles::of(&mut t.latencies),
        time_to_first_token_ms: (!t.first_tokens.is_empty()).then(|| Percentiles::of(&mut t.first_tokens)),
        errors: t.errors,
        first_error: t.first_error,
        daemon,
        process_cpu_seconds: cpu,
        process_cpu_cores: cpu.map(|c| c / seconds),
    }
}

async fn adapter(target: &Target) -> Option<String> {
    let health: Value = target.get("/health").send().await.ok()?.json().await.ok()?;
    health["adapter"].as_str().map(str::to_string)
}

/// User plus system CPU seconds of this process (Linux `/proc/self/stat`, in clock ticks of
/// 1/100 s, the value of `sysconf(_SC_CLK_TCK)` on Linux).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some((utime + stime) / 100.0)
}

fn memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

impl BenchReport {
    /// The report as a table for the terminal.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "scenario {} over {} against {} ({} cores, adapter {})\n",
            name(&self.scenario),
            name(&self.protocol),
            self.target,
            self.machine.cores,
            self.machine.adapter.as_deref().unwrap_or("?")
        );
        out.push_str("  conc   req/s    items/s           p50 ms   p90 ms   p99 ms   max ms   ttft p50  errors  pager hit  queue max  cpu cores\n");
        for l in &self.levels {
            let errors: u64 = l.errors.values().sum();
            out.push_str(&format!(
                "  {:>4} {:>7.2} {:>9.2} {:<9} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9} {:>7} {:>10} {:>10} {:>10}\n",
                l.concurrency,
                l.requests_per_second,
                l.items_per_second,
                l.unit,
                l.latency_ms.p50,
                l.latency_ms.p90,
                l.latency_ms.p99,
                l.latency_ms.max,
                l.time_to_first_token_ms.as_ref().map_or("-".into(), |t| format!("{:.1}", t.p50)),
                errors,
                l.daemon.pager_hit_rate.map_or("-".into(), |r| format!("{:.3}", r)),
                l.daemon.queue_depth_max,
                l.process_cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
            ));
            if let (Some(first), Some(last)) = (l.daemon.resident_set_first, l.daemon.resident_set_last) {
                out.push_str(&format!("         daemon RSS {:.1} MiB at the first sample, {:.1} MiB at the last\n", first as f64 / 1048576.0, last as f64 / 1048576.0));
            }
            if let Some(e) = &l.first_error {
                out.push_str(&format!("         first error: {e}\n"));
            }
        }
        if let Some(peer) = &self.peer {
            out.push_str(&format!("peer: {}\n", peer.peer));
            out.push_str(&format!("  conc  ours {0:<10}  peer {0:<10}  ours / peer\n", format!("{}/s", self.levels.first().map_or("items", |l| l.unit))));
            for (ours, theirs) in self.levels.iter().zip(&peer.levels) {
                out.push_str(&format!(
                    "  {:>4} {:>15.2} {:>15.2} {:>12.3}\n",
                    ours.concurrency,
                    ours.items_per_second,
                    theirs.items_per_second,
                    ours.items_per_second / theirs.items_per_second
                ));
            }
        }
        out
    }
}


/// A scenario's or protocol's name as the command line and the JSON report spell it.
fn name(value: &impl Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Where a TrueType font for the plot's text is looked for (Debian's fonts-dejavu-core first).
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
];

/// Draws throughput and latency (p50, p99) against concurrency as a PNG: two panels side by side.
pub fn plot(report: &BenchReport, path: &std::path::Path) -> Result<(), BenchError> {
    use plotters::prelude::*;
    let failed = |what: &str, e: &dyn std::fmt::Display| BenchError::Setup(format!("plotting to {}: {what}: {e}", path.display()));
    if report.levels.is_empty() {
        return Err(BenchError::Setup("nothing to plot: the run has no levels".into()));
    }
    let font = FONT_PATHS.iter().find_map(|p| std::fs::read(p).ok()).ok_or_else(|| {
        BenchError::Setup(format!("no font for the plot's text: install fonts-dejavu-core (looked in {})", FONT_PATHS.join(", ")))
    })?;
    // ab_glyph keeps the font for the process's life; one plot per run.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font).map_err(|_| failed("the font", &"not a TrueType font"))?;
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed("the canvas", &e))?;
    let (left, right) = root.split_horizontally(600);
    let xs: Vec<f64> = report.levels.iter().map(|l| l.concurrency as f64).collect();
    let x_max = xs.iter().copied().fold(1.0, f64::max) * 1.1;
    let unit = report.levels[0].unit;
    let title = format!("{} over {}", name(&report.scenario), name(&report.protocol));

    let throughput: Vec<(f64, f64)> = report.levels.iter().map(|l| (l.concurrency as f64, l.items_per_second)).collect();
    let y_max = throughput.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("{title}: throughput"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| failed("the throughput chart", &e))?;
    chart
        .configure_mesh()
        .x_desc("concurrency")
        .y_desc(format!("{unit} / s"))
        .draw()
        .map_err(|e| failed("the throughput axes", &e))?;
    chart.draw_series(LineSeries::new(throughput.clone(), BLUE.stroke_width(2))).map_err(|e| failed("the throughput line", &e))?;
    chart.draw_series(throughput.iter().map(|&p| Circle::new(p, 4, BLUE.filled()))).map_err(|e| failed("the throughput points", &e))?;

    let p50: Vec<(f64, f64)> = report.levels.iter().map(|l| (l.concurrency as f64, l.latency_ms.p50)).collect();
    let p99: Vec<(f64, f64)> = report.levels.iter().map(|l| (l.concurrency as f64, l.latency_ms.p99)).collect();
    let y_max = p99.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(&right)
        .caption(format!("{title}: latency"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| failed("the latency chart", &e))?;
    chart
        .configure_mesh()
        .x_desc("concurrency")
        .y_desc("ms")
        .draw()
        .map_err(|e| failed("the latency axes", &e))?;
    chart
        .draw_series(LineSeries::new(p50, GREEN.stroke_width(2)))
        .map_err(|e| failed("the p50 line", &e))?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(p99, RED.stroke_width(2)))
        .map_err(|e| failed("the p99 line", &e))?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed("the legend", &e))?;
    root.present().map_err(|e| failed("writing the file", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert!((p.mean - 50.5).abs() < 1e-12);
        let p = Percentiles::of(&mut [7.0]);
        assert_eq!((p.p50, p.p99, p.max), (7.0, 7.0, 7.0));
        assert_eq!(Percentiles::of(&mut []).max, 0.0);
    }

    #[test]
    fn the_corpus_is_the_shipped_sentences_without_its_header() {
        let c = corpus();
        assert_eq!(c.len(), 3921, "the header says 3921 sentences");
        assert!(c.iter().all(|s| !s.starts_with('#')));
    }
}
