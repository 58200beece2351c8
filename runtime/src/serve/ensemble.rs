//! `POST /v1/ensemble`: several served models answer one input and their outputs are combined
//! on the GPU by a weighted average (weights normalised to sum 1):
//! - `embedding`: each member embeds the input(s); the averaged vector is renormalised (L2).
//!   Members must produce one dimension.
//! - `next_token`: each member's next-token distribution (softmax of its logits) for the prompt;
//!   the averaged probabilities are sampled (greedy at temperature 0). Members must share a
//!   vocabulary, and tokenize the prompt alike.
//! - `completion`: decoded step by step from the averaged distribution, every member holding its
//!   own KV cache of the sequence.
//!
//! Members run through the same pager as everything else, so tensors they share are resident
//! once. Generation members run beside the continuous batching of their models (on the request's
//! own thread, with caches of their own), not inside it. Lineage names every member's weights
//! root and weight.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hartonomous_loader::Hash256;
use serde_json::{json, Map, Value};

use super::api::{embed_texts, find_model, type_name, ApiError};
use super::completions::{integer, sampling_params, stop_sequences};
use super::generate::GeneratorHandle;
use super::lineage::{CompletionLineage, LineageRecord, MemberLineage};
use super::vectors::{json_endpoint, string_field, weighted_average};
use super::worker::ModelHandle;
use super::governance::RequestContext;
use super::AppState;
use crate::governance::Usage;
use crate::models::sampling::{Sampler, StopScanner};
use crate::store::{ContentAtom, ModelId, RunStatus};

/// Most members of one ensemble.
pub const MAX_MEMBERS: usize = 16;
/// `max_tokens` of a completion when the request gives none.
const DEFAULT_MAX_TOKENS: usize = 16;
/// Most alternatives reported per token.
const MAX_TOP_LOGPROBS: u64 = 20;

/// A member as the request names it.
struct Member {
    name: String,
    weight: f32,
}

fn parse_members(fields: &Map<String, Value>) -> Result<Vec<Member>, ApiError> {
    let Some(value) = fields.get("models").filter(|v| !v.is_null()) else {
        return Err(ApiError::invalid("models", "`models` is required: an array of {\"model\": NAME, \"weight\": W}"));
    };
    let Value::Array(items) = value else {
        return Err(ApiError::invalid("models", format!("`models` must be an array of members, got {}", type_name(value))));
    };
    if items.is_empty() || items.len() > MAX_MEMBERS {
        return Err(ApiError::invalid("models", format!("{} members; an ensemble has 1 to {MAX_MEMBERS}", items.len())));
    }
    let members = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(m) = item else {
                return Err(ApiError::invalid("models", format!("`models[{i}]` must be an object {{\"model\", \"weight\"}}, got {}", type_name(item))));
            };
            let name = match m.get("model") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(ApiError::invalid("models", format!("`models[{i}].model` must be a model name"))),
            };
            let weight = match m.get("weight") {
                None | Some(Value::Null) => 1.0,
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(w) if w.is_finite() && w >= 0.0 => w as f32,
                    _ => return Err(ApiError::invalid("models", format!("`models[{i}].weight` must be a non-negative number, got {n}"))),
                },
                Some(other) => return Err(ApiError::invalid("models", format!("`models[{i}].weight` must be a number, got {}", type_name(other)))),
            };
            Ok(Member { name, weight })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A model named twice is one member with the weights summed (lineage records a member once).
    let mut merged: Vec<Member> = Vec::with_capacity(members.len());
    for m in members {
        match merged.iter_mut().find(|x| x.name == m.name) {
            Some(x) => x.weight += m.weight,
            None => merged.push(m),
        }
    }
    let members = merged;
    if members.iter().all(|m| m.weight == 0.0) {
        return Err(ApiError::invalid("models", "every member's weight is 0; at least one must be positive"));
    }
    Ok(members)
}

/// Weights normalised to sum 1.
fn normalised(members: &[Member]) -> Vec<f32> {
    let total: f64 = members.iter().map(|m| f64::from(m.weight)).sum();
    members.iter().map(|m| (f64::from(m.weight) / total) as f32).collect()
}

pub async fn ensemble(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    json_endpoint(state, context, headers, body, |state, context, fields| async move { ensemble_inner(&state, &context, &fields, started).await })
        .await
}

async fn ensemble_inner(state: &Arc<AppState>, context: &RequestContext, fields: &Map<String, Value>, started: Instant) -> Result<Response, ApiError> {
    let members = parse_members(fields)?;
    let output = string_field(fields, "output")?
        .ok_or_else(|| ApiError::invalid("output", "`output` is required: \"embedding\", \"next_token\" or \"completion\""))?;
    match output {
        "embedding" => embedding(state, context, fields, &members, started).await,
        "next_token" => generation(state, context, fields, &members, false, started).await,
        "completion" => generation(state, context, fields, &members, true, started).await,
        other => Err(ApiError::invalid("output", format!("`output` is {other:?}; it must be \"embedding\", \"next_token\" or \"completion\""))),
    }
}

/// A member not served as the output needs: a 400 naming the mismatch when it is served as the
/// other kind, else the 404 of the other endpoints, naming `models`.
fn member_not_found(state: &AppState, name: &str, wanted: &str, mut e: ApiError) -> ApiError {
    let (base, _) = crate::store::parse_model_ref(name);
    let other = if wanted == "embedding" {
        state.generators.iter().any(|g| g.handle.name == base || g.handle.label() == name).then_some("a generation model")
    } else {
        state.models.iter().any(|m| m.name == base || m.label() == name).then_some("an embedding model")
    };
    if let Some(kind) = other {
        let needed = if wanted == "embedding" { "embedding" } else { "generation" };
        return ApiError::invalid(
            "models",
            format!("the members do not match the output: `{name}` is {kind}, and `output: \"{wanted}\"` needs {needed} models only"),
        );
    }
    e.param = Some("models");
    e
}

fn members_json(labels: &[(String, Hash256)], weights: &[f32]) -> Value {
    Value::Array(
        labels
            .iter()
            .zip(weights)
            .map(|((label, root), w)| json!({"model": label, "weight": w, "weights_root": root.to_hex()}))
            .collect(),
    )
}

fn texts(fields: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let texts = match fields.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
        }
        Some(other) => return Err(ApiError::invalid("input", format!("`input` must be a text or a non-empty array of texts, got {}", type_name(other)))),
        None => return Err(ApiError::invalid("input", "`input` is required")),
    };
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(ApiError::invalid("input", format!("input {i} is an empty text")));
    }
    if texts.len() > super::api::MAX_INPUTS {
        return Err(ApiError::invalid("input", format!("{} inputs; at most {}", texts.len(), super::api::MAX_INPUTS)));
    }
    Ok(texts)
}

async fn embedding(
    state: &Arc<AppState>,
    context: &RequestContext,
    fields: &Map<String, Value>,
    members: &[Member],
    started: Instant,
) -> Result<Response, ApiError> {
    let handles: Vec<Arc<ModelHandle>> =
        members.iter().map(|m| find_model(state, &m.name).cloned().map_err(|e| member_not_found(state, &m.name, "embedding", e))).collect::<Result<_, _>>()?;
    if let Some(other) = handles.iter().find(|h| h.dimension != handles[0].dimension) {
        return Err(ApiError::invalid(
            "models",
            format!(
                "the members differ in dimension: {} gives {}, {} gives {}; an embedding ensemble needs one dimension",
                handles[0].label(),
                handles[0].dimension,
                other.label(),
                other.dimension
            ),
        ));
    }
    let texts = texts(fields)?;
    let request_key = uuid::Uuid::new_v4().to_string();
    let mut per_member = Vec::with_capacity(handles.len());
    let mut prompt_tokens = 0;
    for handle in &handles {
        let (output, tokens) = embed_texts(state, handle, &request_key, &texts, "input").await?;
        prompt_tokens += tokens;
        per_member.push(output.vectors);
    }
    let weights = normalised(members);
    let gpu = state.gpu.clone();
    let combine_weights = weights.clone();
    let combined = tokio::task::spawn_blocking(move || -> hartonomous_kernels::Result<Vec<Vec<f32>>> {
        (0..per_member[0].len())
            .map(|i| {
                let rows: Vec<Vec<f32>> = per_member.iter().map(|vectors| vectors[i].clone()).collect();
                let mut v = weighted_average(&gpu, &rows, &combine_weights)?;
                let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32);
                }
                Ok(v)
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "ensemble_failed", e.to_string()))?
    .map_err(|e| ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "ensemble_failed", format!("GPU: {e}")))?;
    let labels: Vec<(String, Hash256)> = handles.iter().map(|h| (h.label(), h.weights_root)).collect();
    let record = LineageRecord {
        request_key: request_key.clone(),
        tenant: context.tenant.clone(),
        operation: "ensemble.embedding".into(),
        model_label: handles[0].label(),
        model: handles[0].id,
        weights_root: handles[0].weights_root,
        status: RunStatus::Succeeded,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        error: None,
        inputs: texts.iter().map(|t| ContentAtom::text(t.clone())).collect(),
        outputs: combined.clone(),
        // The members' batches ran under their own models; the member steps record who ran.
        batches: Vec::new(),
        prompt_tokens: prompt_tokens as u64,
        completion: None,
        members: member_lineage(handles.iter().map(|h| (h.id, h.label(), h.weights_root)), &weights),
    };
    submit(state, record).await;
    context.report(Usage { input_tokens: prompt_tokens as u64, output_tokens: 0, vectors: combined.len() as u64 }, Some(&request_key));
    let data: Vec<Value> =
        combined.iter().enumerate().map(|(index, v)| json!({"object": "embedding", "embedding": v, "index": index})).collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": "ensemble",
        "members": members_json(&labels, &weights),
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        "hartonomous": {"request_id": request_key},
    }))
    .into_response())
}

fn member_lineage(members: impl Iterator<Item = (ModelId, String, Hash256)>, weights: &[f32]) -> Vec<MemberLineage> {
    members.zip(weights).map(|((model, label, weights_root), &weight)| MemberLineage { model, label, weights_root, weight }).collect()
}

async fn submit(state: &AppState, record: LineageRecord) {
    let stored = state.lineage.submit(record);
    if state.lineage_sync {
        let _ = stored.await;
    }
}

fn find_generator(state: &AppState, name: &str) -> Result<Arc<GeneratorHandle>, ApiError> {
    let (base, version) = crate::store::parse_model_ref(name);
    state
        .generators
        .iter()
        .map(|g| &g.handle)
        .find(|h| h.label() == name || (h.name == base && version.is_none_or(|v| v == h.version)))
        .cloned()
        .ok_or_else(|| {
            let served: Vec<String> = state.generators.iter().map(|g| g.handle.name.clone()).collect();
            ApiError {
                status: StatusCode::NOT_FOUND,
                kind: "invalid_request_error",
                message: format!("the generation model `{name}` is not served here; served: {}", served.join(", ")),
                param: Some("models"),
                code: Some("model_not_found"),
                retry_after: None,
            }
        })
}

/// What one generation ensemble produced.
struct Generated {
    tokens: Vec<u32>,
    /// (logprob, top alternatives) of each token under the averaged distribution.
    logprobs: Vec<(f32, Vec<(u32, f32)>)>,
    text: String,
    finish: &'static str,
    compute_ms: f64,
}

async fn generation(
    state: &Arc<AppState>,
    context: &RequestContext,
    fields: &Map<String, Value>,
    members: &[Member],
    completion: bool,
    started: Instant,
) -> Result<Response, ApiError> {
    let output = if completion { "completion" } else { "next_token" };
    let handles: Vec<Arc<GeneratorHandle>> =
        members.iter().map(|m| find_generator(state, &m.name).map_err(|e| member_not_found(state, &m.name, output, e))).collect::<Result<_, _>>()?;
    let first = &handles[0];
    if let Some(other) = handles.iter().find(|h| h.tokenizer.vocab_size() != first.tokenizer.vocab_size()) {
        return Err(ApiError::invalid(
            "models",
            format!(
                "the members differ in vocabulary: {} has {} tokens, {} has {}; their distributions cannot be averaged",
                first.label(),
                first.tokenizer.vocab_size(),
                other.label(),
                other.tokenizer.vocab_size()
            ),
        ));
    }
    let prompt_text = match fields.get("input") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(ApiError::invalid("input", "`input` is an empty prompt")),
        Some(other) => return Err(ApiError::invalid("input", format!("`input` must be the prompt text, got {}", type_name(other)))),
        None => return Err(ApiError::invalid("input", "`input` is required: the prompt text")),
    };
    let prompt = first.tokenizer.encode(&prompt_text).map_err(|e| ApiError::invalid("input", e.to_string()))?;
    for other in &handles[1..] {
        let ids = other.tokenizer.encode(&prompt_text).map_err(|e| ApiError::invalid("input", e.to_string()))?;
        if ids != prompt {
            return Err(ApiError::invalid(
                "models",
                format!("{} and {} tokenize the prompt differently: their vocabularies differ", first.label(), other.label()),
            ));
        }
    }
    let window = handles.iter().map(|h| h.context).min().unwrap_or(0);
    if prompt.len() >= window {
        return Err(ApiError::invalid(
            "input",
            format!("the prompt is {} tokens, {} more than fit: the members' smallest context is {window} tokens", prompt.len(), prompt.len() + 1 - window),
        ));
    }
    let max_tokens = if completion {
        match integer(fields, "max_tokens")? {
            Some(0) => return Err(ApiError::invalid("max_tokens", "`max_tokens` must be at least 1")),
            Some(n) => (n.min(usize::MAX as u64) as usize).min(window - prompt.len()),
            None => DEFAULT_MAX_TOKENS.min(window - prompt.len()),
        }
    } else {
        1
    };
    let top_logprobs = match integer(fields, "top_logprobs")? {
        Some(n) if n > MAX_TOP_LOGPROBS => return Err(ApiError::invalid("top_logprobs", format!("`top_logprobs` is {n}; at most {MAX_TOP_LOGPROBS}"))),
        n => n.map(|n| n as usize),
    };
    let sampling = sampling_params(fields, top_logprobs)?;
    let seed = sampling.seed;
    let sampler = Sampler::new(sampling.clone()).map_err(|e| ApiError::invalid(e.field, e.to_string()))?;
    let stops = StopScanner::new(stop_sequences(fields)?).map_err(|e| ApiError::invalid("stop", e.to_string()))?;
    let weights = normalised(members);
    // Each running generation ensemble holds a KV cache per member: bounded like the decoders'
    // sequences, and a full house is a 503.
    let permit = state.ensemble_permits.clone().try_acquire_owned().map_err(|_| {
        state.metrics.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut e = ApiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "ensembles_full",
            "as many generation ensembles are running as --max-sequences allows; retry shortly",
        );
        e.retry_after = Some(1);
        e
    })?;
    let request_key = uuid::Uuid::new_v4().to_string();
    let job_state = state.clone();
    let job_handles = handles.clone();
    let job_weights = weights.clone();
    let job_prompt = prompt.clone();
    let generated = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        run_generation(&job_state, &job_handles, &job_weights, &job_prompt, max_tokens, sampler, stops)
    })
        .await
        .map_err(|e| ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "ensemble_failed", e.to_string()))?
        .map_err(|e| ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "ensemble_failed", e))?;
    let labels: Vec<(String, Hash256)> = handles.iter().map(|h| (h.label(), h.weights_root)).collect();
    let parameters = json!({
        "temperature": sampling.temperature,
        "top_k": sampling.top_k,
        "top_p": sampling.top_p,
        "repetition_penalty": sampling.repetition_penalty,
        "seed": seed,
        "max_tokens": max_tokens,
        "members": members_json(&labels, &weights),
    });
    let record = LineageRecord {
        request_key: request_key.clone(),
        tenant: context.tenant.clone(),
        operation: if completion { "ensemble.completion" } else { "ensemble.next_token" }.into(),
        model_label: first.label(),
        model: first.id,
        weights_root: first.weights_root,
        status: RunStatus::Succeeded,
        duration_ms: started.elapsed().as_secs_f64() * 1e3,
        error: None,
        inputs: vec![ContentAtom::text(prompt_text)],
        outputs: Vec::new(),
        batches: Vec::new(),
        prompt_tokens: prompt.len() as u64,
        completion: Some(CompletionLineage {
            text: generated.text.clone(),
            completion_tokens: generated.tokens.len() as u64,
            parameters,
            compute_ms: generated.compute_ms,
        }),
        members: member_lineage(handles.iter().map(|h| (h.id, h.label(), h.weights_root)), &weights),
    };
    submit(state, record).await;
    let piece = |id: u32| first.tokenizer.decode(&[id]).unwrap_or_default();
    let token_json = |(i, &id): (usize, &u32)| {
        let (logprob, top) = &generated.logprobs[i];
        json!({
            "id": id,
            "text": piece(id),
            "logprob": logprob,
            "top_logprobs": top.iter().map(|&(t, lp)| json!({"id": t, "text": piece(t), "logprob": lp})).collect::<Vec<_>>(),
        })
    };
    let tokens: Vec<Value> = generated.tokens.iter().enumerate().map(token_json).collect();
    let usage = Usage { input_tokens: prompt.len() as u64, output_tokens: generated.tokens.len() as u64, vectors: 0 };
    context.report(usage, Some(&request_key));
    let body = if completion {
        json!({
            "object": "ensemble.completion",
            "text": generated.text,
            "tokens": tokens,
            "finish_reason": generated.finish,
            "members": members_json(&labels, &weights),
            "usage": {"prompt_tokens": prompt.len(), "completion_tokens": generated.tokens.len(), "total_tokens": prompt.len() + generated.tokens.len()},
            "hartonomous": {"request_id": request_key, "seed": seed},
        })
    } else {
        json!({
            "object": "ensemble.next_token",
            "token": tokens.first().cloned().unwrap_or(Value::Null),
            "members": members_json(&labels, &weights),
            "usage": {"prompt_tokens": prompt.len(), "completion_tokens": 1, "total_tokens": prompt.len() + 1},
            "hartonomous": {"request_id": request_key, "seed": seed},
        })
    };
    Ok(Json(body).into_response())
}

/// The members' probabilities (softmax of their logits, in f64), averaged on the GPU and handed
/// to the sampler as log-probabilities (whose softmax is the averaged distribution again).
fn run_generation(
    state: &AppState,
    handles: &[Arc<GeneratorHandle>],
    weights: &[f32],
    prompt: &[u32],
    max_tokens: usize,
    mut sampler: Sampler,
    mut stops: StopScanner,
) -> Result<Generated, String> {
    let started = Instant::now();
    let capacity = prompt.len() + max_tokens;
    let mut caches = handles
        .iter()
        .map(|h| h.model.new_cache(&state.gpu, capacity).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let tokenizer = &handles[0].tokenizer;
    let mut history = prompt.to_vec();
    let mut generated = Generated { tokens: Vec::new(), logprobs: Vec::new(), text: String::new(), finish: "length", compute_ms: 0.0 };
    let mut next: Vec<u32> = prompt.to_vec();
    // Bytes of the decoded completion given to the stop scanner so far; a token that ends
    // inside a UTF-8 character shows as U+FFFD until the next completes it, so that tail waits.
    let mut fed = 0;
    while generated.tokens.len() < max_tokens {
        let mut distributions = Vec::with_capacity(handles.len());
        for (handle, cache) in handles.iter().zip(caches.iter_mut()) {
            let logits = {
                let mut pager = state.pager.lock().unwrap_or_else(|p| p.into_inner());
                handle.model.forward(&mut pager, cache, &next, false).map_err(|e| e.to_string())?
            };
            distributions.push(softmax(&logits));
        }
        let averaged = weighted_average(&state.gpu, &distributions, weights).map_err(|e| format!("GPU: {e}"))?;
        let log_probs: Vec<f32> = averaged.iter().map(|&p| p.ln()).collect();
        let sampled = sampler.sample(&log_probs, &history).map_err(|e| e.to_string())?;
        history.push(sampled.token);
        if Some(sampled.token) == tokenizer.eos || tokenizer.is_control(sampled.token) {
            generated.finish = "stop";
            break;
        }
        generated.tokens.push(sampled.token);
        generated.logprobs.push((sampled.logprob, sampled.top));
        let decoded = tokenizer.decode(&generated.tokens).unwrap_or_default();
        let whole = decoded.trim_end_matches('\u{FFFD}');
        let step = stops.push(whole.get(fed..).unwrap_or(""));
        fed = fed.max(whole.len());
        generated.text.push_str(&step.emit);
        if step.stopped {
            generated.finish = "stop";
            break;
        }
        next = vec![sampled.token];
    }
    if !stops.stopped() {
        let decoded = tokenizer.decode(&generated.tokens).unwrap_or_default();
        let step = stops.push(decoded.get(fed..).unwrap_or(""));
        generated.text.push_str(&step.emit);
        if step.stopped {
            generated.finish = "stop";
        } else {
            generated.text.push_str(&stops.finish());
        }
    }
    generated.compute_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(generated)
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&v| if v.is_finite() { f64::from(v - max).exp() } else { 0.0 }).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|&e| (e / total) as f32).collect()
}
