//! The lineage writer: every request's record (the request, its inputs as content atoms, its
//! output embeddings or completion, one step per executed batch or generation, usage and the
//! graph edges) is written to the
//! store off the response path, in order, by one task. A store that fails is retried with
//! backoff until it answers: records are never dropped, the backlog shows in `/metrics`, and
//! shutdown waits for it ([`LineageWriter::flush`]).
//!
//! Retrying a record is safe where the store is idempotent (request key, step ordinal, edges);
//! a record already completed is skipped. A failure between storing a record's content atoms and
//! completing it adds a second reference to those atoms when retried: references then
//! over-count, never under-count, so no atom is ever freed while used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hartonomous_loader::Hash256;
use tokio::sync::{mpsc, oneshot};

use crate::store::{
    ContentAtom, Embedding, GraphNode, LineageEdge, ModelId, NewRequest, RequestCompletion, RunStatus, StepRecord, Store,
    StoreError, UsageRecord,
};

use super::worker::BatchInfo;

/// Everything recorded about one request.
#[derive(Debug, Clone)]
pub struct LineageRecord {
    pub request_key: String,
    pub tenant: String,
    pub operation: String,
    pub model_label: String,
    pub model: ModelId,
    pub weights_root: Hash256,
    pub status: RunStatus,
    pub duration_ms: f64,
    pub error: Option<String>,
    pub inputs: Vec<ContentAtom>,
    /// One per input on success; empty on failure (no output row for a failed request).
    pub outputs: Vec<Vec<f32>>,
    pub batches: Vec<BatchInfo>,
    pub prompt_tokens: u64,
    /// A text generation's output (the input is the prompt in `inputs`).
    pub completion: Option<CompletionLineage>,
    /// An ensemble's members, each with its normalised weight; empty for a single model. The
    /// outputs of an ensemble are no one model's embeddings, so they are not stored as such.
    pub members: Vec<MemberLineage>,
}

/// One member of an ensemble, as lineage records it.
#[derive(Debug, Clone)]
pub struct MemberLineage {
    pub model: ModelId,
    pub label: String,
    pub weights_root: Hash256,
    pub weight: f32,
}

/// What a completion produced and how: the text, its token count, and the sampling parameters
/// (seed included) with which the same weights reproduce it.
#[derive(Debug, Clone)]
pub struct CompletionLineage {
    pub text: String,
    pub completion_tokens: u64,
    pub parameters: serde_json::Value,
    pub compute_ms: f64,
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct LineageMetrics {
    /// Records accepted and not yet written.
    pub backlog: AtomicU64,
    pub written: AtomicU64,
    /// Failed attempts (each retried).
    pub retries: AtomicU64,
}

enum Message {
    Record(Box<LineageRecord>, Option<oneshot::Sender<()>>),
    /// A usage ledger row, and the key of the request whose lineage it joins (if it has any).
    Usage(Box<UsageRecord>, Option<String>),
    Flush(oneshot::Sender<()>),
}

/// The handle requests send records through. Cloning shares the one writer task.
#[derive(Clone)]
pub struct LineageWriter {
    tx: mpsc::UnboundedSender<Message>,
    metrics: Arc<LineageMetrics>,
}

/// Backoff between attempts: doubling from 50 ms to 5 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl LineageWriter {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let metrics = Arc::new(LineageMetrics::default());
        let task_metrics = metrics.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                match message {
                    Message::Flush(done) => {
                        let _ = done.send(());
                    }
                    Message::Usage(usage, request_key) => {
                        let what = format!("usage row {}", usage.usage_key.as_deref().unwrap_or("(unkeyed)"));
                        until_stored(&what, &task_metrics, || write_usage(store.as_ref(), &usage, request_key.as_deref())).await;
                        task_metrics.backlog.fetch_sub(1, Ordering::Relaxed);
                        task_metrics.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Message::Record(record, done) => {
                        let what = format!("lineage of request {}", record.request_key);
                        until_stored(&what, &task_metrics, || write(store.as_ref(), &record)).await;
                        task_metrics.backlog.fetch_sub(1, Ordering::Relaxed);
                        task_metrics.written.fetch_add(1, Ordering::Relaxed);
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    }
                }
            }
        });
        (LineageWriter { tx, metrics }, task)
    }

    pub fn metrics(&self) -> Arc<LineageMetrics> {
        self.metrics.clone()
    }

    /// Queues a record; the returned receiver fires once it is stored (`--lineage sync` waits
    /// on it). A writer that has stopped (only at shutdown) gives an already-closed receiver.
    pub fn submit(&self, record: LineageRecord) -> oneshot::Receiver<()> {
        let (done, stored) = oneshot::channel();
        self.metrics.backlog.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Message::Record(Box::new(record), Some(done))).is_err() {
            self.metrics.backlog.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("lineage writer has stopped; a record could not be queued");
        }
        stored
    }

    /// Queues a usage ledger row. Queued after the request's lineage record (the handler
    /// submits that before it answers), so the request row exists by the time it is written.
    pub fn submit_usage(&self, usage: UsageRecord, request_key: Option<String>) {
        self.metrics.backlog.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Message::Usage(Box::new(usage), request_key)).is_err() {
            self.metrics.backlog.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("lineage writer has stopped; a usage row could not be queued");
        }
    }

    /// Waits until every record queued before this call is stored.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

/// Runs `attempt` until it succeeds, counting and logging each failure and backing off.
async fn until_stored<F, Fut>(what: &str, metrics: &LineageMetrics, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut backoff = FIRST_BACKOFF;
    while let Err(e) = attempt().await {
        metrics.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(what, error = %e, retry_in_ms = backoff.as_millis() as u64, "write failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A usage row, joined to its request's lineage (written before it, in the same queue).
async fn write_usage(store: &dyn Store, usage: &UsageRecord, request_key: Option<&str>) -> Result<(), StoreError> {
    match (request_key, usage.request) {
        (Some(key), None) => {
            let request = store.find_request(key).await?;
            store.record_usage(&UsageRecord { request, ..usage.clone() }).await
        }
        _ => store.record_usage(usage).await,
    }
}

/// The output of an embedding request as a content atom: its f32 little-endian bytes.
pub fn embedding_atom(vector: &[f32]) -> ContentAtom {
    ContentAtom {
        modality: "embedding".into(),
        subtype: Some(format!("f32le/{}", vector.len())),
        canonical_text: None,
        payload: Some(vector.iter().flat_map(|v| v.to_le_bytes()).collect()),
    }
}

async fn write(store: &dyn Store, r: &LineageRecord) -> Result<(), StoreError> {
    let request = store
        .record_request(&NewRequest {
            request_key: r.request_key.clone(),
            tenant: r.tenant.clone(),
            operation: r.operation.clone(),
            model_names: if r.members.is_empty() {
                vec![r.model_label.clone()]
            } else {
                r.members.iter().map(|m| m.label.clone()).collect()
            },
        })
        .await?;
    if let Some(existing) = store.lineage(request).await? {
        if existing.status != RunStatus::Running {
            return Ok(());
        }
    }
    let inputs = store.put_content_atoms(&r.inputs).await?;
    let edge = |from: GraphNode, to: GraphNode, relation: &str| LineageEdge {
        from,
        to,
        relation: relation.into(),
        weight: 1.0,
        request: Some(request),
    };
    let (req_node, model_node) = (GraphNode::Request(request), GraphNode::Model(r.model));
    let mut edges = Vec::new();
    if r.members.is_empty() {
        edges.push(edge(model_node, req_node, "ran"));
    }
    for m in &r.members {
        edges.push(LineageEdge { weight: f64::from(m.weight), ..edge(GraphNode::Model(m.model), req_node, "ran") });
    }
    edges.extend(inputs.iter().map(|&a| edge(GraphNode::Atom(a), req_node, "input")));
    if !r.outputs.is_empty() {
        let output_atoms: Vec<ContentAtom> = r.outputs.iter().map(|v| embedding_atom(v)).collect();
        let outputs = store.put_content_atoms(&output_atoms).await?;
        if r.members.is_empty() {
            let embeddings: Vec<Embedding> =
                inputs.iter().zip(&r.outputs).map(|(&atom, vector)| Embedding { atom, vector: vector.clone() }).collect();
            store.put_embeddings(r.model, &embeddings).await?;
        }
        for (&input, &output) in inputs.iter().zip(&outputs) {
            edges.push(edge(req_node, GraphNode::Atom(output), "output"));
            edges.push(edge(GraphNode::Atom(input), GraphNode::Atom(output), "embedded_as"));
            edges.push(edge(model_node, GraphNode::Atom(output), "produced"));
        }
    }
    if let Some(c) = &r.completion {
        let output = store.put_content_atoms(&[ContentAtom::text(c.text.clone())]).await?;
        for &out in &output {
            edges.push(edge(req_node, GraphNode::Atom(out), "output"));
            edges.extend(inputs.iter().map(|&prompt| edge(GraphNode::Atom(prompt), GraphNode::Atom(out), "completed_as")));
            edges.push(edge(model_node, GraphNode::Atom(out), "produced"));
        }
        store
            .record_step(&StepRecord {
                request,
                ordinal: 0,
                operation: "generate".into(),
                model: Some(r.model),
                weights_root: Some(r.weights_root),
                parameters_json: c.parameters.to_string(),
                status: r.status,
                duration_ms: Some(c.compute_ms),
                tenant: r.tenant.clone(),
            })
            .await?;
    }
    for (ordinal, batch) in r.batches.iter().enumerate() {
        let parameters = serde_json::json!({
            "batch": batch.batch,
            "requests": batch.requests,
            "inputs": batch.inputs,
            "tokens": batch.tokens,
            "padded_tokens": batch.padded_tokens,
        });
        store
            .record_step(&StepRecord {
                request,
                ordinal: ordinal as u32,
                operation: "embed_batch".into(),
                model: Some(r.model),
                weights_root: Some(r.weights_root),
                parameters_json: parameters.to_string(),
                status: r.status,
                duration_ms: Some(batch.duration_ms),
                tenant: r.tenant.clone(),
            })
            .await?;
    }
    let first_member_step = r.batches.len() + usize::from(r.completion.is_some());
    for (i, m) in r.members.iter().enumerate() {
        store
            .record_step(&StepRecord {
                request,
                ordinal: (first_member_step + i) as u32,
                operation: "ensemble_member".into(),
                model: Some(m.model),
                weights_root: Some(m.weights_root),
                parameters_json: serde_json::json!({"model": m.label, "weight": m.weight}).to_string(),
                status: r.status,
                duration_ms: None,
                tenant: r.tenant.clone(),
            })
            .await?;
    }
    for e in &edges {
        store.add_lineage_edge(e).await?;
    }
    store
        .complete_request(
            request,
            &RequestCompletion { status: r.status, duration_ms: r.duration_ms, error_message: r.error.clone() },
        )
        .await
}
