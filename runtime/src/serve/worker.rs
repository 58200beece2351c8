//! The embedding thread: one dedicated thread owns the encoders and shares the pager with the
//! generation threads ([`super::generate`]). Requests reach
//! it through a bounded queue (a full queue is the HTTP side's 503), and it batches whatever is
//! waiting by a token budget, so concurrent requests share forward passes.
//!
//! Batching never changes a result: inputs are padded to the longest in their batch and padding
//! is masked out of attention and pooling (`models::bert`), which the tests check bit for bit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hartonomous_loader::Hash256;
use tokio::sync::{mpsc, oneshot};

use crate::models::bert::{BertEncoder, BertTokenizer};
use crate::models::ModelError;
use crate::pager::Pager;
use crate::store::ModelId;

/// A model the daemon serves: what the HTTP side needs to validate and describe requests, and
/// its health, which the GPU thread sets when its weights turn out corrupt.
pub struct ModelHandle {
    pub name: String,
    pub version: String,
    pub id: ModelId,
    pub weights_root: Hash256,
    pub dimension: usize,
    pub created_at: String,
    pub tokenizer: Arc<BertTokenizer>,
    health: Health,
}

/// A served model's health: `Some(reason)` once its weights failed verification, after which
/// nothing is computed from it any more.
#[derive(Debug, Default)]
pub struct Health(Mutex<Option<String>>);

impl Health {
    pub fn unhealthy(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the first reason (later ones are consequences of it).
    pub fn mark_unhealthy(&self, model: &str, reason: String) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!(%model, %reason, "model marked unhealthy");
            *slot = Some(reason);
        }
    }
}

impl ModelHandle {
    pub fn new(
        name: String,
        version: String,
        id: ModelId,
        weights_root: Hash256,
        dimension: usize,
        created_at: String,
        tokenizer: Arc<BertTokenizer>,
    ) -> Self {
        ModelHandle { name, version, id, weights_root, dimension, created_at, tokenizer, health: Health::default() }
    }

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

/// One executed batch, for `InferenceSteps`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchInfo {
    pub batch: u64,
    /// Request keys whose inputs were in the batch.
    pub requests: Vec<String>,
    pub inputs: usize,
    /// Tokens of the inputs themselves.
    pub tokens: usize,
    /// Inputs × longest input: what the GPU computed.
    pub padded_tokens: usize,
    pub duration_ms: f64,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFailure {
    /// The model's weights failed verification; it is unhealthy from now on.
    Corrupt(String),
    /// The model was already unhealthy.
    Unhealthy(String),
    /// The input is at fault (it passed the HTTP checks but the model refused it).
    Input(String),
    /// Anything else: the store unreachable while paging, a GPU error, a budget too small.
    Internal(String),
}

pub struct EmbedJob {
    pub model: Arc<ModelHandle>,
    pub request_key: String,
    pub inputs: Vec<Vec<u32>>,
    pub reply: oneshot::Sender<Result<EmbedOutput, JobFailure>>,
}

impl EmbedJob {
    pub fn tokens(&self) -> usize {
        self.inputs.iter().map(Vec::len).sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOutput {
    pub vectors: Vec<Vec<f32>>,
    pub batches: Vec<BatchInfo>,
}

/// Counters of the GPU thread, exported at `/metrics`.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    pub batches: AtomicU64,
    pub batch_inputs: AtomicU64,
    pub batch_padded_tokens: AtomicU64,
    pub gpu_nanos: AtomicU64,
}

pub struct Worker {
    /// Shared with the generation threads: one budget, one residency, one set of metrics.
    pub pager: Arc<Mutex<Pager>>,
    pub encoders: Vec<(Arc<ModelHandle>, BertEncoder)>,
    /// Most padded tokens (inputs × longest) in one forward pass.
    pub max_batch_tokens: usize,
    pub metrics: Arc<WorkerMetrics>,
    next_batch: u64,
}

impl Worker {
    pub fn new(pager: Arc<Mutex<Pager>>, encoders: Vec<(Arc<ModelHandle>, BertEncoder)>, max_batch_tokens: usize, metrics: Arc<WorkerMetrics>) -> Self {
        Worker { pager, encoders, max_batch_tokens: max_batch_tokens.max(1), metrics, next_batch: 0 }
    }

    /// Runs until the queue is closed and drained: every job taken gets its reply.
    pub fn run(mut self, mut queue: mpsc::Receiver<EmbedJob>) {
        while let Some(first) = queue.blocking_recv() {
            let mut tokens = first.tokens();
            let mut jobs = vec![first];
            while tokens < self.max_batch_tokens {
                match queue.try_recv() {
                    Ok(job) => {
                        tokens += job.tokens();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            // One model at a time, in order of first arrival.
            while !jobs.is_empty() {
                let model = jobs[0].model.id;
                let (same, rest): (Vec<EmbedJob>, Vec<EmbedJob>) = jobs.into_iter().partition(|j| j.model.id == model);
                jobs = rest;
                self.run_model(same);
            }
        }
    }

    fn run_model(&mut self, jobs: Vec<EmbedJob>) {
        let handle = jobs[0].model.clone();
        if let Some(reason) = handle.unhealthy() {
            for job in jobs {
                let _ = job.reply.send(Err(JobFailure::Unhealthy(reason.clone())));
            }
            return;
        }
        match self.embed_jobs(&handle, &jobs) {
            Ok(mut outputs) => {
                for (job, output) in jobs.into_iter().zip(outputs.drain(..)) {
                    let _ = job.reply.send(Ok(output));
                }
            }
            Err(e) => {
                let failure = match &e {
                    ModelError::Pager(p) if p.is_corruption() => {
                        handle.mark_unhealthy(e.to_string());
                        JobFailure::Corrupt(e.to_string())
                    }
                    ModelError::Input { what } => JobFailure::Input(what.clone()),
                    _ => JobFailure::Internal(e.to_string()),
                };
                for job in jobs {
                    let _ = job.reply.send(Err(failure.clone()));
                }
            }
        }
    }

    /// Every input of `jobs`, sorted by length (less padding) and cut into forward passes of at
    /// most `max_batch_tokens` padded tokens; results scattered back to their jobs.
    fn embed_jobs(&mut self, handle: &ModelHandle, jobs: &[EmbedJob]) -> Result<Vec<EmbedOutput>, ModelError> {
        let encoder_index = self
            .encoders
            .iter()
            .position(|(h, _)| h.id == handle.id)
            .ok_or_else(|| ModelError::Input { what: format!("model {} is not loaded by this daemon", handle.label()) })?;
        let mut order: Vec<(usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, job)| (0..job.inputs.len()).map(move |i| (j, i)))
            .collect();
        order.sort_by_key(|&(j, i)| jobs[j].inputs[i].len());
        let mut outputs: Vec<EmbedOutput> = jobs
            .iter()
            .map(|job| EmbedOutput { vectors: vec![Vec::new(); job.inputs.len()], batches: Vec::new() })
            .collect();
        let mut start = 0;
        while start < order.len() {
            // Sorted ascending, so the last input taken is the longest.
            let mut end = start + 1;
            while end < order.len() {
                let longest = jobs[order[end].0].inputs[order[end].1].len().max(1);
                if (end + 1 - start) * longest > self.max_batch_tokens {
                    break;
                }
                end += 1;
            }
            let chunk = &order[start..end];
            let slices: Vec<&[u32]> = chunk.iter().map(|&(j, i)| jobs[j].inputs[i].as_slice()).collect();
            let started = Instant::now();
            let (_, encoder) = &self.encoders[encoder_index];
            let vectors = {
                let mut pager = self.pager.lock().unwrap_or_else(|p| p.into_inner());
                encoder.embed(&mut pager, &slices)?
            };
            let elapsed = started.elapsed();
            let longest = slices.iter().map(|s| s.len()).max().unwrap_or(0);
            let mut requests: Vec<String> = chunk.iter().map(|&(j, _)| jobs[j].request_key.clone()).collect();
            requests.sort();
            requests.dedup();
            let info = BatchInfo {
                batch: self.next_batch,
                requests,
                inputs: slices.len(),
                tokens: slices.iter().map(|s| s.len()).sum(),
                padded_tokens: slices.len() * longest,
                duration_ms: elapsed.as_secs_f64() * 1e3,
            };
            self.next_batch += 1;
            self.metrics.batches.fetch_add(1, Ordering::Relaxed);
            self.metrics.batch_inputs.fetch_add(info.inputs as u64, Ordering::Relaxed);
            self.metrics.batch_padded_tokens.fetch_add(info.padded_tokens as u64, Ordering::Relaxed);
            self.metrics.gpu_nanos.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
            for (&(j, i), vector) in chunk.iter().zip(vectors) {
                outputs[j].vectors[i] = vector;
                if outputs[j].batches.last().map(|b| b.batch) != Some(info.batch) {
                    outputs[j].batches.push(info.clone());
                }
            }
            start = end;
        }
        Ok(outputs)
    }
}
