//! The daemon (`hartonomous serve`): loads models from the store, makes their weights resident
//! through the pager, and serves embeddings and text generation over HTTPS (REST and gRPC on one
//! port) with lineage written back.
//!
//! Threads and tasks: axum on tokio serves HTTP and tokenizes; one OS thread runs the embedding
//! models ([`worker`]) and one per generation model runs its continuous batching ([`generate`]),
//! each fed by a bounded queue and all sharing one pager (one budget); one tokio task writes
//! lineage ([`lineage`]). Shutdown (SIGTERM or Ctrl-C): stop accepting, let in-flight requests
//! finish, close the queues (the threads answer what they took), then flush lineage.

pub mod api;
pub mod completions;
pub mod ensemble;
pub mod generate;
pub mod governance;
pub mod grpc;
pub mod lineage;
pub mod tls;
pub mod vectors;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hartonomous_kernels::Gpu;
use tokio::sync::mpsc;

use crate::models::bert::{BertConfig, BertEncoder, BertTokenizer};
use crate::models::chat_template::ChatTemplate;
use crate::models::gguf_tokenizer::GgufTokenizer;
use crate::models::llama::{LlamaConfig, LlamaModel};
use crate::models::ModelError;
use crate::pager::{default_budget, Pager, PagerMetrics, WeightsSource};
use crate::search::{IndexOptions, SearchIndex, SearchMetrics, VectorStorage};
use crate::store::{ModelStatus, Store, StoreError};
use generate::{Generation, Generator};
use lineage::{LineageMetrics, LineageWriter};
use worker::{EmbedJob, ModelHandle, Worker, WorkerMetrics};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Boxed, as the others: a daemon error is rare and should not make every `Result` large.
    #[error(transparent)]
    Store(Box<StoreError>),

    #[error(transparent)]
    Model(Box<ModelError>),

    #[error("GPU: {0}")]
    Gpu(#[from] hartonomous_kernels::KernelError),

    #[error("TLS: {what}")]
    Tls { what: String },

    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),
}

impl From<StoreError> for ServeError {
    fn from(e: StoreError) -> Self {
        ServeError::Store(Box::new(e))
    }
}

impl From<ModelError> for ServeError {
    fn from(e: ModelError) -> Self {
        ServeError::Model(Box::new(e))
    }
}

/// When lineage is written relative to the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LineageMode {
    /// Queued and written off the response path.
    #[default]
    Async,
    /// The response waits until the request's lineage is stored.
    Sync,
}

/// Everything `hartonomous serve` is told.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// `(certificate, key)` PEM files; `None` generates a self-signed pair under `data_dir`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain HTTP, loopback only.
    pub insecure_http: bool,
    pub data_dir: PathBuf,
    /// GPU memory budget for resident weights; `None` = [`default_budget`].
    pub gpu_memory: Option<u64>,
    /// Models to serve (`NAME[:VERSION]`); empty = every ready BERT-family and Llama-family
    /// model in the store.
    pub models: Vec<String>,
    pub weights_source: WeightsSource,
    pub lineage: LineageMode,
    /// Padded tokens per forward pass.
    pub max_batch_tokens: usize,
    /// Requests waiting for the GPU before new ones get 503.
    pub queue_capacity: usize,
    /// Sequences a generation model decodes at once (its KV pool's slots).
    pub max_sequences: usize,
    /// Tokens per generated sequence, prompt and completion (clipped to the model's context).
    pub context: usize,
    /// How the search index holds stored embeddings, and the GPU bytes it may keep resident
    /// (beyond them, pieces are uploaded as they are scanned).
    pub search_storage: VectorStorage,
    pub search_memory: u64,
    /// How old the snapshot of keys, rules and limits may grow before it is re-read.
    pub governance_refresh: Duration,
}

impl ServeOptions {
    /// `hartonomous serve`'s defaults, which the embedded daemon of `hartonomous bench` uses too.
    pub const DEFAULT_MAX_BATCH_TOKENS: usize = 8192;
    pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
    pub const DEFAULT_MAX_SEQUENCES: usize = 8;
    pub const DEFAULT_CONTEXT: usize = 2048;
    pub const DEFAULT_SEARCH_MEMORY: u64 = 1 << 30;
    pub const DEFAULT_GOVERNANCE_REFRESH_SECONDS: f64 = 5.0;
}

/// Request counters, exported at `/metrics`.
#[derive(Debug, Default)]
pub struct ServeMetrics {
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
}

impl ServeMetrics {
    pub fn count_error(&self, status: u16) {
        if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        } else {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text exposition of every counter the daemon keeps.
    pub fn render(&self, state: &AppState) -> Result<String, String> {
        use prometheus::{Encoder, Gauge, IntCounter, IntGauge, Opts, Registry, TextEncoder};
        let registry = Registry::new();
        let counter = |name: &str, help: &str, v: u64| -> Result<(), String> {
            let c = IntCounter::with_opts(Opts::new(name, help)).map_err(|e| e.to_string())?;
            c.inc_by(v);
            registry.register(Box::new(c)).map_err(|e| e.to_string())
        };
        let gauge = |name: &str, help: &str, v: i64| -> Result<(), String> {
            let g = IntGauge::with_opts(Opts::new(name, help)).map_err(|e| e.to_string())?;
            g.set(v);
            registry.register(Box::new(g)).map_err(|e| e.to_string())
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter("hartonomous_requests_total", "Requests received (embeddings and generation).", ld(&self.requests))?;
        counter("hartonomous_requests_rejected_total", "Requests answered 503 because the queue was full.", ld(&self.rejected))?;
        counter("hartonomous_requests_client_errors_total", "Requests answered with a 4xx status.", ld(&self.client_errors))?;
        counter("hartonomous_requests_server_errors_total", "Requests answered with a 5xx status.", ld(&self.server_errors))?;
        let queued = state.queue_capacity.saturating_sub(state.jobs.capacity());
        gauge("hartonomous_queue_depth", "Requests waiting for the GPU thread.", queued as i64)?;
        let p = state.pager_metrics.counts();
        counter("hartonomous_pager_hits_total", "Tensor acquisitions served from GPU-resident buffers.", p.hits)?;
        counter("hartonomous_pager_misses_total", "Tensor acquisitions that paged the tensor in from the store.", p.misses)?;
        counter("hartonomous_pager_paged_bytes_total", "Bytes paged from the store into GPU buffers.", p.bytes_paged)?;
        counter("hartonomous_pager_evictions_total", "Resident tensors evicted to stay within the budget.", p.evictions)?;
        gauge("hartonomous_pager_resident_bytes", "Bytes of weights resident in GPU buffers.", p.resident_bytes as i64)?;
        gauge("hartonomous_pager_resident_tensors", "Tensors resident in GPU buffers.", p.resident_tensors as i64)?;
        gauge("hartonomous_pager_budget_bytes", "GPU memory budget for resident weights.", ld(&state.pager_metrics.budget_bytes) as i64)?;
        let page_in = Gauge::with_opts(Opts::new("hartonomous_pager_page_in_seconds_total", "Time spent paging tensors in (read, verify, upload)."))
            .map_err(|e| e.to_string())?;
        page_in.set(ld(&state.pager_metrics.page_in_nanos) as f64 / 1e9);
        registry.register(Box::new(page_in)).map_err(|e| e.to_string())?;
        let w = &state.worker_metrics;
        counter("hartonomous_batches_total", "Forward passes run.", ld(&w.batches))?;
        counter("hartonomous_batch_inputs_total", "Inputs encoded, over all forward passes.", ld(&w.batch_inputs))?;
        counter("hartonomous_batch_padded_tokens_total", "Padded tokens computed, over all forward passes.", ld(&w.batch_padded_tokens))?;
        let l = &state.lineage_metrics;
        gauge("hartonomous_lineage_backlog", "Lineage records accepted and not yet stored.", ld(&l.backlog) as i64)?;
        counter("hartonomous_lineage_written_total", "Lineage records stored.", ld(&l.written))?;
        counter("hartonomous_lineage_retries_total", "Failed lineage writes, each retried with backoff.", ld(&l.retries))?;
        let generated = |field: fn(&generate::GenerateMetrics) -> &AtomicU64| -> u64 {
            state.generators.iter().map(|g| ld(field(&g.handle.metrics))).sum()
        };
        counter("hartonomous_generate_sequences_total", "Generation sequences started.", generated(|m| &m.sequences_started))?;
        gauge("hartonomous_generate_live_sequences", "Generation sequences holding a KV slot.", generated(|m| &m.live_sequences) as i64)?;
        counter("hartonomous_generate_prefill_tokens_total", "Prompt tokens prefilled.", generated(|m| &m.prefill_tokens))?;
        counter("hartonomous_generate_decode_steps_total", "Batched decode steps run.", generated(|m| &m.decode_steps))?;
        counter("hartonomous_generate_decode_tokens_total", "Tokens decoded, over all decode steps.", generated(|m| &m.decode_tokens))?;
        let s = &state.search_metrics;
        counter("hartonomous_search_queries_total", "Search queries answered.", ld(&s.queries))?;
        counter("hartonomous_search_rows_scanned_total", "Stored embeddings scored, over all queries.", ld(&s.rows_scanned))?;
        counter("hartonomous_search_refresh_appends_total", "Index refreshes that appended new embeddings.", ld(&s.refresh_appends))?;
        counter("hartonomous_search_refresh_reloads_total", "Index refreshes that reloaded a model's embeddings whole.", ld(&s.refresh_reloads))?;
        gauge("hartonomous_search_resident_bytes", "Bytes of the search index resident in GPU buffers.", ld(&s.resident_bytes) as i64)?;
        gauge("hartonomous_search_indexed_rows", "Stored embeddings held by the search index.", ld(&s.indexed_rows) as i64)?;
        render_tenants(&registry, &state.tenant_metrics).map_err(|e| e.to_string())?;
        if let Some(rss) = resident_set_bytes() {
            gauge("hartonomous_process_resident_bytes", "The daemon process's resident memory (RSS).", rss as i64)?;
        }
        let healthy = state.models.iter().filter(|m| m.unhealthy().is_none()).count()
            + state.generators.iter().filter(|g| g.handle.unhealthy().is_none()).count();
        gauge("hartonomous_models_healthy", "Served models that are healthy.", healthy as i64)?;
        let mut out = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut out).map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

/// The process's resident set in bytes (Linux: `/proc/self/statm`); `None` elsewhere.
fn resident_set_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // The page size is 4 KiB on every Linux target the daemon runs on (x86-64, and arm64 as
    // distributions build it); `/proc/self/status`'s VmRSS would say it in kB at more cost.
    Some(pages * 4096)
}

/// Per-tenant counters, labelled by tenant and operation (and status where it applies).
fn render_tenants(registry: &prometheus::Registry, metrics: &governance::TenantMetrics) -> prometheus::Result<()> {
    use prometheus::{CounterVec, IntCounterVec, Opts};
    let answered = IntCounterVec::new(
        Opts::new("hartonomous_tenant_requests_total", "Requests admitted, by tenant, operation and the status answered."),
        &["tenant", "operation", "status"],
    )?;
    let refused = IntCounterVec::new(
        Opts::new("hartonomous_tenant_refusals_total", "Requests refused at the gate (401, 403, 429), by tenant, operation and status."),
        &["tenant", "operation", "status"],
    )?;
    let tokens = IntCounterVec::new(
        Opts::new("hartonomous_tenant_tokens_total", "Tokens used, by tenant, operation and direction (input, output)."),
        &["tenant", "operation", "direction"],
    )?;
    let vectors = IntCounterVec::new(Opts::new("hartonomous_tenant_vectors_total", "Vectors produced or consumed, by tenant and operation."), &["tenant", "operation"])?;
    let units = CounterVec::new(Opts::new("hartonomous_tenant_billing_units_total", "Billing units charged, by tenant and operation."), &["tenant", "operation"])?;
    for ((tenant, operation), c) in metrics.snapshot() {
        for (status, n) in &c.answered {
            answered.with_label_values(&[tenant.as_str(), operation, &status.to_string()]).inc_by(*n);
        }
        for (status, n) in &c.refused {
            refused.with_label_values(&[tenant.as_str(), operation, &status.to_string()]).inc_by(*n);
        }
        tokens.with_label_values(&[tenant.as_str(), operation, "input"]).inc_by(c.input_tokens);
        tokens.with_label_values(&[tenant.as_str(), operation, "output"]).inc_by(c.output_tokens);
        vectors.with_label_values(&[tenant.as_str(), operation]).inc_by(c.vectors);
        units.with_label_values(&[tenant.as_str(), operation]).inc_by(c.billing_units);
    }
    registry.register(Box::new(answered))?;
    registry.register(Box::new(refused))?;
    registry.register(Box::new(tokens))?;
    registry.register(Box::new(vectors))?;
    registry.register(Box::new(units))
}

/// What every handler shares.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub models: Vec<Arc<ModelHandle>>,
    pub generators: Vec<Generation>,
    pub jobs: mpsc::Sender<EmbedJob>,
    pub queue_capacity: usize,
    pub lineage: LineageWriter,
    pub lineage_sync: bool,
    pub metrics: ServeMetrics,
    pub pager_metrics: Arc<PagerMetrics>,
    pub worker_metrics: Arc<WorkerMetrics>,
    pub lineage_metrics: Arc<LineageMetrics>,
    pub adapter: String,
    /// The GPU, for the vector operations run outside the model threads (aggregates, ensemble
    /// averaging).
    pub gpu: Arc<Gpu>,
    /// Shared with the model threads: ensembles run their members through it.
    pub pager: Arc<Mutex<Pager>>,
    pub search: Arc<SearchIndex>,
    pub search_metrics: Arc<SearchMetrics>,
    /// Generation ensembles running at once (each holds a KV cache per member): at most
    /// `--max-sequences`.
    pub ensemble_permits: Arc<tokio::sync::Semaphore>,
    /// Keys, access rules, rate limits and prices: the gate every route but `/health` passes.
    pub governance: Arc<crate::governance::Governance>,
    pub tenant_metrics: governance::TenantMetrics,
}

/// A model loaded from the store, by kind.
enum Loaded {
    /// Its handle for the HTTP side and its encoder for the embedding thread.
    Encoder(Arc<ModelHandle>, BertEncoder),
    /// Everything a generation thread is built from.
    Decoder(Box<DecoderParts>),
}

struct DecoderParts {
    identity: (String, String, crate::store::ModelId, hartonomous_loader::Hash256, String),
    config: LlamaConfig,
    tokenizer: Arc<GgufTokenizer>,
    chat_template: Option<ChatTemplate>,
    layers: Vec<crate::store::LayerRow>,
}

/// Architectures served as embedding models and as generation models.
const ENCODER_ARCHITECTURES: [&str; 3] = ["bert", "roberta", "xlm-roberta"];
const DECODER_ARCHITECTURES: [&str; 1] = ["llama"];

async fn load_model(store: &dyn Store, reference: &str) -> Result<Loaded, ServeError> {
    let (name, version) = crate::store::parse_model_ref(reference);
    let row = store.model(name, version).await?.ok_or_else(|| StoreError::ModelNotFound {
        location: store.location().to_string(),
        name: name.to_string(),
        version: version.map(str::to_string),
    })?;
    let label = row.label();
    let weights_root = row.weights_root.ok_or_else(|| StoreError::Damaged {
        location: store.location().to_string(),
        what: format!("model {label} is ready but has no weights root"),
    })?;
    let material = store.model_material(row.id).await?.ok_or_else(|| StoreError::ModelNotFound {
        location: store.location().to_string(),
        name: row.name.clone(),
        version: Some(row.version.clone()),
    })?;
    let layers = store.layers(row.id).await?;
    if DECODER_ARCHITECTURES.contains(&row.architecture.as_str()) {
        let config = LlamaConfig::from_json(&label, &material.config_json)?;
        let metadata = material.tokenizer_material.as_deref().ok_or_else(|| ModelError::Tokenizer {
            model: label.clone(),
            what: "the store holds no tokenizer metadata for this model (re-ingest its GGUF)".into(),
        })?;
        let tokenizer = GgufTokenizer::from_metadata(&label, metadata)?;
        let chat_template = tokenizer.chat_template.as_deref().map(|source| ChatTemplate::new(&label, source)).transpose()?;
        return Ok(Loaded::Decoder(Box::new(DecoderParts {
            identity: (row.name, row.version, row.id, weights_root, row.created_at),
            config,
            tokenizer: Arc::new(tokenizer),
            chat_template,
            layers,
        })));
    }
    if !ENCODER_ARCHITECTURES.contains(&row.architecture.as_str()) {
        return Err(ServeError::Invalid(format!(
            "model {label} has architecture {:?}; the daemon serves {} (embeddings) and {} (generation)",
            row.architecture,
            ENCODER_ARCHITECTURES.join(", "),
            DECODER_ARCHITECTURES.join(", ")
        )));
    }
    let config = BertConfig::from_json(&label, &material.config_json)?;
    let tokenizer = Arc::new(BertTokenizer::new(&label, &material, &config)?);
    let dimension = config.hidden;
    let encoder = BertEncoder::new(&label, config, layers)?;
    let handle = ModelHandle::new(row.name, row.version, row.id, weights_root, dimension, row.created_at, tokenizer);
    Ok(Loaded::Encoder(Arc::new(handle), encoder))
}

/// The models to serve: those named, or every ready model of an architecture the daemon runs.
async fn model_references(store: &dyn Store, named: &[String]) -> Result<Vec<String>, ServeError> {
    if !named.is_empty() {
        return Ok(named.to_vec());
    }
    let rows = store.list_models().await?;
    let servable: Vec<String> = rows
        .iter()
        .filter(|r| {
            let arch = r.architecture.as_str();
            r.status == ModelStatus::Ready && (ENCODER_ARCHITECTURES.contains(&arch) || DECODER_ARCHITECTURES.contains(&arch))
        })
        .map(|r| r.label())
        .collect();
    if servable.is_empty() {
        return Err(ServeError::Invalid(format!(
            "the store {} holds no model to serve: ingest one (e.g. `hartonomous ingest model.safetensors` or a GGUF)",
            store.location()
        )));
    }
    Ok(servable)
}

/// A daemon that is loaded and listening. [`Daemon::run`] serves until shutdown.
pub struct Daemon {
    pub addr: SocketAddr,
    pub scheme: &'static str,
    pub tls: Option<tls::TlsFiles>,
    pub models: Vec<Arc<ModelHandle>>,
    /// Generation models served: label, context and sequences (no handle: those hold queues).
    pub generators: Vec<(String, usize, usize)>,
    pub adapter: String,
    pub budget: u64,
    state: Arc<AppState>,
    handle: axum_server::Handle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    gpu_thread: std::thread::JoinHandle<()>,
    generator_threads: Vec<std::thread::JoinHandle<()>>,
    lineage_task: tokio::task::JoinHandle<()>,
}

/// Loads the models, starts the GPU thread and the lineage writer, and binds the listener.
pub async fn start(store: Arc<dyn Store>, options: ServeOptions) -> Result<Daemon, ServeError> {
    if options.insecure_http && !options.listen.ip().is_loopback() {
        return Err(ServeError::Invalid(format!(
            "--insecure-http serves plain HTTP, which is for loopback development only; {} is not a loopback address (drop --insecure-http: SQL Server calls HTTPS only)",
            options.listen
        )));
    }
    let governance = Arc::new(crate::governance::Governance::load(store.clone(), options.governance_refresh).await?);
    let references = model_references(store.as_ref(), &options.models).await?;
    let mut encoders = Vec::new();
    let mut decoders = Vec::new();
    for reference in &references {
        match load_model(store.as_ref(), reference).await? {
            Loaded::Encoder(handle, encoder) => encoders.push((handle, encoder)),
            Loaded::Decoder(parts) => decoders.push(*parts),
        }
    }
    let gpu = Arc::new(tokio::task::spawn_blocking(Gpu::new).await.map_err(|e| ServeError::Invalid(format!("GPU start failed: {e}")))??);
    let adapter = gpu.report().to_string();
    let budget = options.gpu_memory.unwrap_or_else(|| default_budget(&gpu));
    let pager = Pager::new(gpu.clone(), store.clone(), tokio::runtime::Handle::current(), budget, options.weights_source);
    let pager_metrics = pager.metrics();
    let pager = Arc::new(Mutex::new(pager));
    let worker_metrics = Arc::new(WorkerMetrics::default());
    let models: Vec<Arc<ModelHandle>> = encoders.iter().map(|(h, _)| h.clone()).collect();
    let (jobs, queue) = mpsc::channel(options.queue_capacity.max(1));
    let worker = Worker::new(pager.clone(), encoders, options.max_batch_tokens, worker_metrics.clone());
    let gpu_thread = std::thread::Builder::new()
        .name("hartonomous-gpu".into())
        .spawn(move || worker.run(queue))
        .map_err(|e| ServeError::Invalid(format!("cannot start the GPU thread: {e}")))?;
    let (lineage, lineage_task) = LineageWriter::start(store.clone());
    let mut generators = Vec::new();
    let mut generator_threads = Vec::new();
    for parts in decoders {
        let label = format!("{}:{}", parts.identity.0, parts.identity.1);
        let model = LlamaModel::new(&label, parts.config, parts.layers, &gpu)?;
        let limits = (options.context, options.max_sequences, options.queue_capacity);
        let (generator, generation, queue) =
            Generator::new(parts.identity, parts.tokenizer, parts.chat_template, model, pager.clone(), lineage.clone(), limits)?;
        generators.push(generation);
        let thread = std::thread::Builder::new()
            .name(format!("hartonomous-generate-{}", generators.len()))
            .spawn(move || generator.run(queue))
            .map_err(|e| ServeError::Invalid(format!("cannot start a generation thread: {e}")))?;
        generator_threads.push(thread);
    }
    let generator_info = generators.iter().map(|g| (g.handle.label(), g.handle.context, g.handle.max_sequences)).collect();
    let search = Arc::new(SearchIndex::new(
        gpu.clone(),
        IndexOptions { storage: options.search_storage, gpu_budget: options.search_memory, ..IndexOptions::default() },
    ));
    let state = Arc::new(AppState {
        store,
        models: models.clone(),
        generators,
        jobs,
        queue_capacity: options.queue_capacity.max(1),
        lineage_metrics: lineage.metrics(),
        lineage,
        lineage_sync: options.lineage == LineageMode::Sync,
        metrics: ServeMetrics::default(),
        pager_metrics,
        worker_metrics,
        adapter: adapter.clone(),
        gpu: gpu.clone(),
        pager: pager.clone(),
        search_metrics: search.metrics(),
        search,
        ensemble_permits: Arc::new(tokio::sync::Semaphore::new(options.max_sequences.max(1))),
        governance,
        tenant_metrics: governance::TenantMetrics::default(),
    });

    let listener = std::net::TcpListener::bind(options.listen).map_err(|source| ServeError::Listen { addr: options.listen, source })?;
    listener.set_nonblocking(true).map_err(|source| ServeError::Listen { addr: options.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: options.listen, source })?;
    let handle = axum_server::Handle::new();
    // One port for both front doors: gRPC (HTTP/2) is routed by its service paths beside REST,
    // and dispatches through the REST router ([`grpc`]).
    let app = grpc::mount(api::router(state.clone())).await.into_make_service();
    let (scheme, tls, server) = if options.insecure_http {
        let server = axum_server::from_tcp(listener).handle(handle.clone());
        ("http", None, tokio::spawn(server.serve(app)))
    } else {
        // One process-wide provider: ring (see Cargo.toml for why not aws-lc-rs). Installing
        // twice (a second daemon in one process, as tests do) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let files = tls::certificate(options.tls.clone(), &options.data_dir)?;
        let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
            .await
            .map_err(|e| ServeError::Tls { what: format!("loading {} and {}: {e}", files.cert.display(), files.key.display()) })?;
        let server = axum_server::from_tcp_rustls(listener, config).handle(handle.clone());
        ("https", Some(files), tokio::spawn(server.serve(app)))
    };
    Ok(Daemon { addr, scheme, tls, models, generators: generator_info, adapter, budget, state, handle, server, gpu_thread, generator_threads, lineage_task })
}

impl Daemon {
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: no new connections,
    /// in-flight requests finish (up to `grace`), the GPU thread drains, lineage is flushed.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>, grace: Duration) -> Result<ShutdownReport, ServeError> {
        let Daemon { handle, mut server, gpu_thread, generator_threads, lineage_task, state, .. } = self;
        tokio::select! {
            result = &mut server => {
                return Err(ServeError::Invalid(format!("the server stopped on its own: {}", match result {
                    Ok(Ok(())) => "no error".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                })));
            }
            () = shutdown => {}
        }
        let started = Instant::now();
        handle.graceful_shutdown(Some(grace));
        // Returns once every connection has closed (or the grace period ended); the router, and
        // with it its share of the state, is dropped then.
        let _ = server.await;
        let backlog = state.lineage_metrics.backlog.load(Ordering::Relaxed);
        let lineage = state.lineage.clone();
        // Dropping the last sender closes the queue; the GPU thread answers what it holds and ends.
        drop(state);
        let _ = tokio::task::spawn_blocking(move || {
            let _ = gpu_thread.join();
            for thread in generator_threads {
                let _ = thread.join();
            }
        })
        .await;
        lineage.flush().await;
        drop(lineage);
        let _ = lineage_task.await;
        Ok(ShutdownReport { lineage_flushed: backlog, elapsed: started.elapsed() })
    }
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownReport {
    /// Lineage records that were still queued when shutdown began, all now stored.
    pub lineage_flushed: u64,
    pub elapsed: Duration,
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
