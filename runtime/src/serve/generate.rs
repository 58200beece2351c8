//! The generation thread: continuous batching of a Llama-family model's decoding. Each served
//! generation model has one such thread, its own KV pool of `max_sequences` slots and a bounded
//! queue in front (a full queue is the HTTP side's 503).
//!
//! Between decode steps, waiting requests join free slots: each is prefilled alone (its prompt in
//! one pass), then every live sequence's next token runs in one batched step, and sequences that
//! finish leave and free their slot. Each row's arithmetic is independent of the others in a step
//! (see `models::llama::LlamaModel::step`), so a request generates exactly what it would alone.
//!
//! The thread also writes each request's lineage (through the lineage writer's queue) when the
//! sequence ends, so a client that disconnects mid-stream still leaves its record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hartonomous_loader::Hash256;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::lineage::{CompletionLineage, LineageRecord, LineageWriter};
use super::worker::{Health, JobFailure};
use crate::models::chat_template::ChatTemplate;
use crate::models::gguf_tokenizer::GgufTokenizer;
use crate::models::llama::{KvPool, LlamaModel, SequenceStep};
use crate::models::sampling::{Sampled, Sampler, SamplingParams, StopScanner};
use crate::models::ModelError;
use crate::pager::Pager;
use crate::store::{ContentAtom, ModelId, RunStatus};

/// A served generation model as the HTTP side holds it: its description and its queue. The
/// queue's sender lives only here (not in the handle the thread also holds), so dropping the
/// daemon's state closes the queue and ends the thread.
pub struct Generation {
    pub handle: Arc<GeneratorHandle>,
    pub jobs: mpsc::Sender<GenerateJob>,
}

/// A generation model the daemon serves: what the HTTP side needs to check and shape requests.
pub struct GeneratorHandle {
    pub name: String,
    pub version: String,
    pub id: ModelId,
    pub weights_root: Hash256,
    pub created_at: String,
    pub tokenizer: Arc<GgufTokenizer>,
    pub chat_template: Option<ChatTemplate>,
    /// Tokens one sequence may hold, prompt and completion (a KV slot's capacity).
    pub context: usize,
    pub max_sequences: usize,
    pub queue_capacity: usize,
    pub metrics: Arc<GenerateMetrics>,
    /// The decoder itself, shared with ensembles (which run their own KV caches beside the
    /// continuous batching).
    pub model: Arc<LlamaModel>,
    health: Health,
}

impl GeneratorHandle {
    pub fn label(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    pub fn unhealthy(&self) -> Option<String> {
        self.health.unhealthy()
    }

    fn mark_unhealthy(&self, reason: String) {
        self.health.mark_unhealthy(&self.label(), reason);
    }
}

/// Counters of a generation thread, exported at `/metrics`.
#[derive(Debug, Default)]
pub struct GenerateMetrics {
    pub sequences_started: AtomicU64,
    pub sequences_finished: AtomicU64,
    pub live_sequences: AtomicU64,
    pub prefill_tokens: AtomicU64,
    pub decode_steps: AtomicU64,
    pub decode_tokens: AtomicU64,
    pub gpu_nanos: AtomicU64,
}

/// One request for text, as the HTTP side checked it.
pub struct GenerateJob {
    pub request_key: String,
    /// Whose request (lineage records the tenant); told the usage when the sequence ends, and
    /// held until then so that the request's ledger row is written after it.
    pub context: super::governance::RequestContext,
    /// `completions` or `chat.completions`.
    pub operation: &'static str,
    pub prompt: Vec<u32>,
    /// The prompt as the client sent it (text, or the chat messages as JSON), for lineage.
    pub prompt_atom: ContentAtom,
    /// Already clipped so that prompt + completion fit the context.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub events: mpsc::UnboundedSender<GenerateEvent>,
    pub received: Instant,
}

/// A generated token with its log-probability (and the most likely alternatives when asked).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenChoice {
    pub id: u32,
    pub text: String,
    pub logprob: f32,
    pub top: Vec<(u32, String, f32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End of sequence token or a stop sequence.
    Stop,
    /// `max_tokens` or the context reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// How a finished request went.
#[derive(Debug)]
pub struct GenerateSummary {
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub text: String,
    /// Fires once the request's lineage is stored (`--lineage sync` waits on it).
    pub lineage_stored: oneshot::Receiver<()>,
}

/// What the generation thread tells a request, in order: deltas, then one `Finished` or `Failed`.
#[derive(Debug)]
pub enum GenerateEvent {
    Delta { text: String, tokens: Vec<TokenChoice> },
    Finished(GenerateSummary),
    Failed(JobFailure),
}

/// A sequence holding a slot.
struct Sequence {
    job: GenerateJob,
    slot: usize,
    /// Tokens in the cache (the position the next fed token takes).
    position: usize,
    /// Prompt then generated ids: the repetition penalty's history.
    history: Vec<u32>,
    generated: usize,
    sampler: Sampler,
    stops: StopScanner,
    /// Bytes of the decoded completion already passed to the stop scanner.
    decoded_len: usize,
    text: String,
    started: Instant,
    decode_steps: u64,
    largest_batch: usize,
    gpu_ms: f64,
    finish: Option<FinishReason>,
    /// Answered with `Failed` already: `finish` only records it.
    failed: bool,
}

pub struct Generator {
    pub handle: Arc<GeneratorHandle>,
    model: Arc<LlamaModel>,
    pool: KvPool,
    pager: Arc<Mutex<Pager>>,
    lineage: LineageWriter,
}

impl Generator {
    /// Builds the HTTP side's [`Generation`] and the thread's state; `run` the latter on its own
    /// OS thread with the returned queue.
    #[allow(clippy::too_many_arguments)] // a model's identity, limits and shared services, each named
    pub fn new(
        (name, version, id, weights_root, created_at): (String, String, ModelId, Hash256, String),
        tokenizer: Arc<GgufTokenizer>,
        chat_template: Option<ChatTemplate>,
        model: LlamaModel,
        pager: Arc<Mutex<Pager>>,
        lineage: LineageWriter,
        (context, max_sequences, queue_capacity): (usize, usize, usize),
    ) -> Result<(Self, Generation, mpsc::Receiver<GenerateJob>), ModelError> {
        let context = context.min(model.config().context).max(2);
        let gpu = pager.lock().unwrap_or_else(|p| p.into_inner()).gpu().clone();
        let pool = model.new_pool(&gpu, max_sequences.max(1), context)?;
        let model = Arc::new(model);
        let (jobs, queue) = mpsc::channel(queue_capacity.max(1));
        let handle = Arc::new(GeneratorHandle {
            name,
            version,
            id,
            weights_root,
            created_at,
            tokenizer,
            chat_template,
            context,
            max_sequences: max_sequences.max(1),
            queue_capacity: queue_capacity.max(1),
            metrics: Arc::new(GenerateMetrics::default()),
            model: model.clone(),
            health: Health::default(),
        });
        tracing::info!(
            model = %handle.label(),
            sequences = handle.max_sequences,
            context,
            kv_bytes = pool.bytes(),
            "generation KV pool allocated"
        );
        let generation = Generation { handle: handle.clone(), jobs };
        Ok((Generator { handle, model, pool, pager, lineage }, generation, queue))
    }

    /// Runs until the queue is closed and every live sequence has finished.
    pub fn run(mut self, mut queue: mpsc::Receiver<GenerateJob>) {
        let mut free: Vec<usize> = (0..self.pool.slots()).rev().collect();
        let mut live: Vec<Sequence> = Vec::new();
        let mut closed = false;
        loop {
            // Join: waiting requests take free slots between steps (block only when idle).
            while !closed {
                let Some(&slot) = free.last() else { break };
                let job = if live.is_empty() {
                    match queue.blocking_recv() {
                        Some(job) => job,
                        None => {
                            closed = true;
                            break;
                        }
                    }
                } else {
                    match queue.try_recv() {
                        Ok(job) => job,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                };
                free.pop();
                match self.prefill(job, slot) {
                    Some(seq) if seq.finish.is_none() => live.push(seq),
                    Some(seq) => {
                        self.finish(seq);
                        free.push(slot);
                    }
                    None => free.push(slot),
                }
            }
            if live.is_empty() {
                if closed {
                    return;
                }
                continue;
            }
            self.decode_step(&mut live);
            let (done, running): (Vec<Sequence>, Vec<Sequence>) = live.into_iter().partition(|s| s.finish.is_some());
            live = running;
            for seq in done {
                free.push(seq.slot);
                self.finish(seq);
            }
        }
    }

    /// Prefills a new sequence and samples its first token. `None` when it failed or its client
    /// has gone (answered and recorded either way).
    fn prefill(&mut self, job: GenerateJob, slot: usize) -> Option<Sequence> {
        if job.events.is_closed() {
            self.fail(job, JobFailure::Internal("the client disconnected before generation started".into()));
            return None;
        }
        if let Some(reason) = self.handle.unhealthy() {
            self.fail(job, JobFailure::Unhealthy(reason));
            return None;
        }
        let (stops, sampler) = match (StopScanner::new(job.stop.clone()), Sampler::new(job.sampling.clone())) {
            (Ok(stops), Ok(sampler)) => (stops, sampler),
            (Err(e), _) | (_, Err(e)) => {
                self.fail(job, JobFailure::Input(e.to_string()));
                return None;
            }
        };
        let started = Instant::now();
        let step = SequenceStep { slot, position: 0, ids: &job.prompt };
        let result = {
            let mut pager = self.pager.lock().unwrap_or_else(|p| p.into_inner());
            self.model.step(&mut pager, &self.pool, &[step], false)
        };
        let elapsed = started.elapsed();
        let metrics = &self.handle.metrics;
        metrics.gpu_nanos.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                let failure = self.failure(e);
                self.fail(job, failure);
                return None;
            }
        };
        metrics.sequences_started.fetch_add(1, Ordering::Relaxed);
        metrics.live_sequences.fetch_add(1, Ordering::Relaxed);
        metrics.prefill_tokens.fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
        let mut seq = Sequence {
            slot,
            position: job.prompt.len(),
            history: job.prompt.clone(),
            generated: 0,
            sampler,
            stops,
            decoded_len: 0,
            text: String::new(),
            started,
            decode_steps: 0,
            largest_batch: 0,
            gpu_ms: elapsed.as_secs_f64() * 1e3,
            finish: None,
            failed: false,
            job,
        };
        self.accept(&mut seq, &logits);
        Some(seq)
    }

    /// One decode step of every live sequence, batched.
    fn decode_step(&mut self, live: &mut [Sequence]) {
        let last: Vec<u32> = live.iter().map(|s| *s.history.last().unwrap_or(&0)).collect();
        let steps: Vec<SequenceStep> = live
            .iter()
            .zip(&last)
            .map(|(s, id)| SequenceStep { slot: s.slot, position: s.position, ids: std::slice::from_ref(id) })
            .collect();
        let started = Instant::now();
        let result = {
            let mut pager = self.pager.lock().unwrap_or_else(|p| p.into_inner());
            self.model.step(&mut pager, &self.pool, &steps, false)
        };
        let elapsed = started.elapsed();
        let metrics = &self.handle.metrics;
        metrics.gpu_nanos.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        metrics.decode_steps.fetch_add(1, Ordering::Relaxed);
        metrics.decode_tokens.fetch_add(live.len() as u64, Ordering::Relaxed);
        match result {
            Ok(logits) => {
                let vocab = logits.len() / live.len().max(1);
                let batch = live.len();
                for (i, seq) in live.iter_mut().enumerate() {
                    seq.position += 1;
                    seq.decode_steps += 1;
                    seq.largest_batch = seq.largest_batch.max(batch);
                    seq.gpu_ms += elapsed.as_secs_f64() * 1e3;
                    self.accept(seq, &logits[i * vocab..(i + 1) * vocab]);
                }
            }
            Err(e) => {
                let failure = self.failure(e);
                for seq in live.iter_mut() {
                    let _ = seq.job.events.send(GenerateEvent::Failed(failure.clone()));
                    seq.finish = Some(FinishReason::Stop);
                    seq.failed = true;
                }
            }
        }
    }

    /// Samples the next token from `logits`, streams the text it completes, and decides whether
    /// the sequence is done.
    fn accept(&self, seq: &mut Sequence, logits: &[f32]) {
        if seq.job.events.is_closed() {
            // The client has gone: stop spending the GPU on it (its lineage still gets written).
            seq.finish = Some(FinishReason::Stop);
            return;
        }
        let sampled = match seq.sampler.sample(logits, &seq.history) {
            Ok(s) => s,
            Err(e) => {
                let _ = seq.job.events.send(GenerateEvent::Failed(JobFailure::Internal(format!("sampling failed: {e}"))));
                seq.finish = Some(FinishReason::Stop);
                seq.failed = true;
                return;
            }
        };
        let tokenizer = &self.handle.tokenizer;
        if Some(sampled.token) == tokenizer.eos || tokenizer.is_control(sampled.token) {
            seq.finish = Some(FinishReason::Stop);
            return;
        }
        seq.history.push(sampled.token);
        seq.generated += 1;
        let choice = self.choice(&sampled);
        // Byte-level pieces can split a UTF-8 character: text is released only up to the last
        // whole character, so a delta never carries half an emoji.
        let completion = &seq.history[seq.job.prompt.len()..];
        let decoded = tokenizer.decode(completion).unwrap_or_default();
        let whole = decoded.trim_end_matches('\u{FFFD}');
        let fresh = whole.get(seq.decoded_len..).unwrap_or("").to_string();
        seq.decoded_len = seq.decoded_len.max(whole.len());
        let step = seq.stops.push(&fresh);
        seq.text.push_str(&step.emit);
        let _ = seq.job.events.send(GenerateEvent::Delta { text: step.emit, tokens: vec![choice] });
        if step.stopped {
            seq.finish = Some(FinishReason::Stop);
        } else if seq.generated >= seq.job.max_tokens || seq.position + 1 > self.pool.capacity() {
            seq.finish = Some(FinishReason::Length);
        }
    }

    fn choice(&self, sampled: &Sampled) -> TokenChoice {
        let text = |id: u32| self.handle.tokenizer.decode(&[id]).unwrap_or_default();
        TokenChoice {
            id: sampled.token,
            text: text(sampled.token),
            logprob: sampled.logprob,
            top: sampled.top.iter().map(|&(id, lp)| (id, text(id), lp)).collect(),
        }
    }

    fn failure(&self, e: ModelError) -> JobFailure {
        match &e {
            ModelError::Pager(p) if p.is_corruption() => {
                self.handle.mark_unhealthy(e.to_string());
                JobFailure::Corrupt(e.to_string())
            }
            ModelError::Input { what } => JobFailure::Input(what.clone()),
            _ => JobFailure::Internal(e.to_string()),
        }
    }

    /// Answers a job that never started, and records it.
    fn fail(&self, job: GenerateJob, failure: JobFailure) {
        let message = match &failure {
            JobFailure::Corrupt(m) | JobFailure::Unhealthy(m) | JobFailure::Input(m) | JobFailure::Internal(m) => m.clone(),
        };
        let record = self.record(&job, RunStatus::Failed, Some(message), None);
        drop(self.lineage.submit(record)); // not waited on: the thread never blocks on the store
        job.context.report(crate::governance::Usage::default(), Some(&job.request_key));
        let _ = job.events.send(GenerateEvent::Failed(failure));
    }

    /// Flushes the held-back text, answers the request and queues its lineage.
    fn finish(&self, mut seq: Sequence) {
        self.handle.metrics.sequences_finished.fetch_add(1, Ordering::Relaxed);
        self.handle.metrics.live_sequences.fetch_sub(1, Ordering::Relaxed);
        if seq.failed {
            let record = self.record(&seq.job, RunStatus::Failed, Some("generation failed (see the daemon's log)".into()), None);
            drop(self.lineage.submit(record)); // not waited on: the thread never blocks on the store
            let usage = crate::governance::Usage { input_tokens: seq.job.prompt.len() as u64, output_tokens: seq.generated as u64, vectors: 0 };
            seq.job.context.report(usage, Some(&seq.job.request_key));
            return;
        }
        let finish = seq.finish.unwrap_or(FinishReason::Stop);
        if !seq.stops.stopped() {
            // The last piece may end in a partial character that no later token completes.
            let completion = &seq.history[seq.job.prompt.len()..];
            let decoded = self.handle.tokenizer.decode(completion).unwrap_or_default();
            let rest = decoded.get(seq.decoded_len..).unwrap_or("").to_string();
            let mut tail = seq.stops.push(&rest).emit;
            if !seq.stops.stopped() {
                tail.push_str(&seq.stops.finish());
            }
            if !tail.is_empty() {
                seq.text.push_str(&tail);
                let _ = seq.job.events.send(GenerateEvent::Delta { text: tail, tokens: Vec::new() });
            }
        }
        let parameters = json!({
            "sampling": {
                "temperature": seq.job.sampling.temperature,
                "top_k": seq.job.sampling.top_k,
                "top_p": seq.job.sampling.top_p,
                "repetition_penalty": seq.job.sampling.repetition_penalty,
                "seed": seq.job.sampling.seed,
            },
            "max_tokens": seq.job.max_tokens,
            "stop": seq.job.stop,
            "finish_reason": finish.as_str(),
            "prompt_tokens": seq.job.prompt.len(),
            "completion_tokens": seq.generated,
            "decode_steps": seq.decode_steps,
            "largest_decode_batch": seq.largest_batch,
            "queued_ms": seq.started.duration_since(seq.job.received).as_secs_f64() * 1e3,
        });
        let usage = crate::governance::Usage { input_tokens: seq.job.prompt.len() as u64, output_tokens: seq.generated as u64, vectors: 0 };
        seq.job.context.report(usage, Some(&seq.job.request_key));
        let lineage = CompletionLineage { text: seq.text.clone(), completion_tokens: seq.generated as u64, parameters, compute_ms: seq.gpu_ms };
        let record = self.record(&seq.job, RunStatus::Succeeded, None, Some(lineage));
        let lineage_stored = self.lineage.submit(record);
        let summary = GenerateSummary {
            finish_reason: finish,
            prompt_tokens: seq.job.prompt.len(),
            completion_tokens: seq.generated,
            text: seq.text,
            lineage_stored,
        };
        let _ = seq.job.events.send(GenerateEvent::Finished(summary));
    }

    fn record(&self, job: &GenerateJob, status: RunStatus, error: Option<String>, completion: Option<CompletionLineage>) -> LineageRecord {
        LineageRecord {
            request_key: job.request_key.clone(),
            tenant: job.context.tenant.clone(),
            operation: job.operation.into(),
            model_label: self.handle.label(),
            model: self.handle.id,
            weights_root: self.handle.weights_root,
            status,
            duration_ms: job.received.elapsed().as_secs_f64() * 1e3,
            error,
            inputs: vec![job.prompt_atom.clone()],
            outputs: Vec::new(),
            batches: Vec::new(),
            prompt_tokens: job.prompt.len() as u64,
            completion,
            members: Vec::new(),
        }
    }
}

/// The chat messages of a request as the prompt's content atom: canonical JSON of the messages.
pub fn messages_atom(messages: &Value) -> ContentAtom {
    ContentAtom {
        modality: "chat".into(),
        subtype: Some("openai-messages+json".into()),
        canonical_text: Some(messages.to_string()),
        payload: None,
    }
}
