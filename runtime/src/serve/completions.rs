//! OpenAI's text generation endpoints: `POST /v1/completions` and `POST /v1/chat/completions`
//! (https://platform.openai.com/docs/api-reference/chat), answered whole or, with
//! `stream: true`, as server-sent events of OpenAI's chunk objects ending with `data: [DONE]`.
//!
//! Fields are checked by hand so that every refusal names the field (`param`): an unknown
//! model, an empty prompt, sampling values out of range, a prompt longer than the context (the
//! message says by how many tokens). `max_tokens` past the context is clipped and the answer
//! then ends with `finish_reason: "length"`. Extensions beside OpenAI's fields: `top_k` and
//! `repetition_penalty`; responses carry `hartonomous {request_id, weights_root, seed}`.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::Extension;

use super::governance::RequestContext;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::api::{is_json, type_name, ApiError};
use super::generate::{messages_atom, FinishReason, GenerateEvent, GenerateJob, GeneratorHandle, TokenChoice};
use tokio::sync::mpsc::Sender;
use super::worker::JobFailure;
use super::AppState;
use crate::models::chat_template::ChatMessage;
use crate::models::sampling::SamplingParams;
use crate::store::ContentAtom;

/// OpenAI's limits on the legacy `logprobs` and the chat `top_logprobs`.
const MAX_COMPLETION_LOGPROBS: u64 = 5;
const MAX_CHAT_TOP_LOGPROBS: u64 = 20;
/// OpenAI's default `max_tokens` for `/v1/completions` (chat defaults to the context's room).
const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Completions,
    Chat,
}

/// How the answer reports log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logprobs {
    Off,
    /// Completions' legacy object, with this many alternatives per token.
    Legacy(usize),
    /// Chat's `logprobs.content`, with this many alternatives per token.
    Chat(usize),
}

/// A request checked and tokenized, ready for the generation thread.
struct Checked {
    handle: Arc<GeneratorHandle>,
    jobs: Sender<GenerateJob>,
    prompt: Vec<u32>,
    prompt_atom: ContentAtom,
    max_tokens: usize,
    sampling: SamplingParams,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    logprobs: Logprobs,
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    serve(state, context, headers, body, Endpoint::Completions).await
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    serve(state, context, headers, body, Endpoint::Chat).await
}

async fn serve(
    state: Arc<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let result = match body {
        Ok(body) => generate(&state, &context, &headers, &body, endpoint, received).await,
        Err(rejection) => Err(ApiError::body_rejected(&rejection)),
    };
    if let Err(e) = &result {
        state.metrics.count_error(e.status.as_u16());
    }
    result
}

async fn generate(
    state: &Arc<AppState>,
    context: &RequestContext,
    headers: &HeaderMap,
    body: &[u8],
    endpoint: Endpoint,
    received: Instant,
) -> Result<Response, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::invalid("body", "send the request as JSON (content-type: application/json)"));
    }
    let request: Value = serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = &request else {
        return Err(ApiError::invalid("body", format!("the body must be a JSON object, got {}", type_name(&request))));
    };
    let checked = check(state, fields, endpoint)?;
    let request_key = uuid::Uuid::new_v4().to_string();
    let (events, mut replies) = mpsc::unbounded_channel();
    let handle = checked.handle.clone();
    let job = GenerateJob {
        request_key: request_key.clone(),
        context: context.clone(),
        operation: match endpoint {
            Endpoint::Completions => "completions",
            Endpoint::Chat => "chat.completions",
        },
        prompt: checked.prompt,
        prompt_atom: checked.prompt_atom,
        max_tokens: checked.max_tokens,
        sampling: checked.sampling.clone(),
        stop: checked.stop,
        events,
        received,
    };
    if let Err(e) = checked.jobs.try_send(job) {
        if matches!(e, mpsc::error::TrySendError::Closed(_)) {
            return Err(ApiError::server(
                StatusCode::SERVICE_UNAVAILABLE,
                "gpu_stopped",
                "the generation thread has stopped (the daemon is shutting down, or it failed: see its log)",
            ));
        }
        state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::queue_full(handle.queue_capacity));
    }
    let shape = Shape {
        endpoint,
        id: format!("{}-{request_key}", if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" }),
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        model: handle.name.clone(),
        logprobs: checked.logprobs,
        extra: json!({
            "request_id": request_key,
            "weights_root": handle.weights_root.to_hex(),
            "model_version": handle.version,
            "seed": checked.sampling.seed,
        }),
    };
    let mut response = if checked.stream {
        stream(shape, replies, checked.include_usage, state.lineage_sync).into_response()
    } else {
        let mut text = String::new();
        let mut tokens = Vec::new();
        let summary = loop {
            match replies.recv().await {
                Some(GenerateEvent::Delta { text: piece, tokens: t }) => {
                    text.push_str(&piece);
                    tokens.extend(t);
                }
                Some(GenerateEvent::Finished(summary)) => break summary,
                Some(GenerateEvent::Failed(failure)) => return Err(ApiError::from_failure(failure, "prompt")),
                None => {
                    return Err(ApiError::from_failure(
                        JobFailure::Internal("the generation thread stopped before answering (shutting down?)".into()),
                        "prompt",
                    ))
                }
            }
        };
        if state.lineage_sync {
            let _ = summary.lineage_stored.await;
        }
        let usage = usage(summary.prompt_tokens, summary.completion_tokens);
        Json(shape.whole(&text, &tokens, summary.finish_reason, usage)).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&request_key) {
        response.headers_mut().insert("x-request-id", v);
    }
    Ok(response)
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// What every response object of one request shares.
struct Shape {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    logprobs: Logprobs,
    extra: Value,
}

impl Shape {
    fn logprobs_json(&self, tokens: &[TokenChoice], text_offset: usize) -> Value {
        let alternatives = |t: &TokenChoice| -> Vec<Value> {
            t.top.iter().map(|(_, text, lp)| json!({"token": text, "logprob": lp, "bytes": text.as_bytes()})).collect()
        };
        match self.logprobs {
            Logprobs::Off => Value::Null,
            Logprobs::Chat(_) => json!({"content": tokens.iter().map(|t| json!({
                "token": t.text, "logprob": t.logprob, "bytes": t.text.as_bytes(), "top_logprobs": alternatives(t),
            })).collect::<Vec<_>>()}),
            Logprobs::Legacy(_) => {
                let mut offset = text_offset;
                let mut offsets = Vec::with_capacity(tokens.len());
                for t in tokens {
                    offsets.push(offset);
                    offset += t.text.len();
                }
                json!({
                    "tokens": tokens.iter().map(|t| t.text.clone()).collect::<Vec<_>>(),
                    "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                    "top_logprobs": tokens.iter().map(|t| t.top.iter().map(|(_, text, lp)| (text.clone(), json!(lp))).collect::<Map<String, Value>>()).collect::<Vec<_>>(),
                    "text_offset": offsets,
                })
            }
        }
    }

    fn whole(&self, text: &str, tokens: &[TokenChoice], finish: FinishReason, usage: Value) -> Value {
        let logprobs = self.logprobs_json(tokens, 0);
        let choice = match self.endpoint {
            Endpoint::Completions => json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish.as_str()}),
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": logprobs,
                "finish_reason": finish.as_str(),
            }),
        };
        let object = if self.endpoint == Endpoint::Chat { "chat.completion" } else { "text_completion" };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice], "usage": usage, "system_fingerprint": null, "hartonomous": self.extra,
        })
    }

    /// One streamed chunk: a text delta (or, for chat, the role), or the final `finish_reason`.
    fn chunk(&self, delta: Option<Value>, text: &str, tokens: &[TokenChoice], offset: usize, finish: Option<FinishReason>) -> Value {
        let logprobs = if tokens.is_empty() { Value::Null } else { self.logprobs_json(tokens, offset) };
        let finish = finish.map(FinishReason::as_str);
        let choice = match self.endpoint {
            Endpoint::Completions => json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}),
            Endpoint::Chat => {
                let delta = delta.unwrap_or_else(|| if finish.is_some() { json!({}) } else { json!({"content": text}) });
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
        };
        let object = if self.endpoint == Endpoint::Chat { "chat.completion.chunk" } else { "text_completion" };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice], "system_fingerprint": null, "hartonomous": self.extra,
        })
    }

    fn usage_chunk(&self, usage: Value) -> Value {
        let object = if self.endpoint == Endpoint::Chat { "chat.completion.chunk" } else { "text_completion" };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [], "usage": usage})
    }
}

/// Server-sent events: a task turns the generation thread's events into OpenAI chunks. When the
/// client goes away the stream is dropped, the task's sends fail, and dropping its receiver tells
/// the generation thread to stop the sequence.
fn stream(
    shape: Shape,
    mut replies: mpsc::UnboundedReceiver<GenerateEvent>,
    include_usage: bool,
    lineage_sync: bool,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let data = |v: Value| Event::default().data(v.to_string());
        if shape.endpoint == Endpoint::Chat && tx.send(data(shape.chunk(Some(json!({"role": "assistant", "content": ""})), "", &[], 0, None))).await.is_err() {
            return;
        }
        let mut offset = 0;
        loop {
            let event = match replies.recv().await {
                Some(GenerateEvent::Delta { text, tokens }) => {
                    let wants_tokens = shape.logprobs != Logprobs::Off && !tokens.is_empty();
                    if text.is_empty() && !wants_tokens {
                        continue;
                    }
                    let chunk = shape.chunk(None, &text, if wants_tokens { &tokens } else { &[] }, offset, None);
                    offset += text.len();
                    data(chunk)
                }
                Some(GenerateEvent::Finished(summary)) => {
                    if tx.send(data(shape.chunk(None, "", &[], offset, Some(summary.finish_reason)))).await.is_err() {
                        return;
                    }
                    if include_usage && tx.send(data(shape.usage_chunk(usage(summary.prompt_tokens, summary.completion_tokens)))).await.is_err() {
                        return;
                    }
                    if lineage_sync {
                        let _ = summary.lineage_stored.await;
                    }
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    return;
                }
                Some(GenerateEvent::Failed(failure)) => {
                    let error = ApiError::from_failure(failure, "prompt");
                    let body = json!({"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}});
                    let _ = tx.send(data(body)).await;
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    return;
                }
                None => return,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Sse::new(events)
}

fn find_generator<'a>(state: &'a AppState, fields: &Map<String, Value>) -> Result<&'a super::generate::Generation, ApiError> {
    let name = match fields.get("model") {
        Some(Value::String(name)) => name.as_str(),
        Some(other) => return Err(ApiError::invalid("model", format!("`model` must be a string, got {}", type_name(other)))),
        None => return Err(ApiError::invalid("model", "`model` is required: the name of a served model (GET /v1/models)")),
    };
    let (base, version) = crate::store::parse_model_ref(name);
    let found = state
        .generators
        .iter()
        .find(|g| g.handle.label() == name || (g.handle.name == base && version.is_none_or(|v| v == g.handle.version)));
    if let Some(generation) = found {
        return Ok(generation);
    }
    let served: Vec<String> = state.generators.iter().map(|g| g.handle.name.clone()).collect();
    let why = if state.models.iter().any(|m| m.name == base) {
        format!("`{name}` is an embedding model: call /v1/embeddings with it")
    } else {
        format!("the model `{name}` is not served here")
    };
    let mut e = ApiError::invalid("model", format!("{why}; generation models served: {}", if served.is_empty() { "none".into() } else { served.join(", ") }));
    e.code = Some("model_not_found");
    Err(e)
}

pub(super) fn number(fields: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(ApiError::invalid(name, format!("`{name}` must be a number, got {}", type_name(other)))),
    }
}

pub(super) fn integer(fields: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(name, format!("`{name}` must be a non-negative integer, got {n}"))),
        Some(other) => Err(ApiError::invalid(name, format!("`{name}` must be an integer, got {}", type_name(other)))),
    }
}

pub(super) fn boolean(fields: &Map<String, Value>, name: &'static str) -> Result<bool, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::invalid(name, format!("`{name}` must be a boolean, got {}", type_name(other)))),
    }
}

/// `temperature`, `top_k`, `top_p`, `repetition_penalty` and `seed` (a fresh one when absent,
/// so that the answer can report it), checked; shared by the generation and ensemble endpoints.
pub(super) fn sampling_params(fields: &Map<String, Value>, top_logprobs: Option<usize>) -> Result<SamplingParams, ApiError> {
    let defaults = SamplingParams::default();
    let seed = match fields.get("seed") {
        None | Some(Value::Null) => u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or([0; 8])),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(v), _) => v,
            (None, Some(v)) => v as u64,
            _ => return Err(ApiError::invalid("seed", format!("`seed` must be an integer, got {n}"))),
        },
        Some(other) => return Err(ApiError::invalid("seed", format!("`seed` must be an integer, got {}", type_name(other)))),
    };
    let sampling = SamplingParams {
        temperature: number(fields, "temperature")?.map_or(defaults.temperature, |v| v as f32),
        top_k: integer(fields, "top_k")?.map_or(defaults.top_k, |v| v.min(usize::MAX as u64) as usize),
        top_p: number(fields, "top_p")?.map_or(defaults.top_p, |v| v as f32),
        repetition_penalty: number(fields, "repetition_penalty")?.map_or(defaults.repetition_penalty, |v| v as f32),
        seed,
        top_logprobs,
    };
    sampling.validate().map_err(|e| ApiError::invalid(e.field, e.to_string()))?;
    Ok(sampling)
}

/// `stop`: a string or an array of strings, checked as the stop scanner takes them.
pub(super) fn stop_sequences(fields: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stop = match fields.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_str().map(str::to_string).ok_or_else(|| ApiError::invalid("stop", format!("`stop[{i}]` must be a string"))))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(ApiError::invalid("stop", format!("`stop` must be a string or an array of strings, got {}", type_name(other)))),
    };
    crate::models::sampling::StopScanner::new(stop.clone()).map_err(|e| ApiError::invalid("stop", e.to_string()))?;
    Ok(stop)
}

/// Token ids given directly as a prompt.
fn token_ids(values: &[Value], vocab: usize) -> Result<Vec<u32>, ApiError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(id as u32),
            _ => Err(ApiError::invalid("prompt", format!("`prompt[{i}]` ({v}) is not a token id below the vocabulary size {vocab}"))),
        })
        .collect()
}

/// The prompt's ids and its content atom for lineage.
fn prompt(handle: &GeneratorHandle, fields: &Map<String, Value>, endpoint: Endpoint, vocab: usize) -> Result<(Vec<u32>, ContentAtom), ApiError> {
    // The tokenizer puts BOS first where the model asks for it.
    let encode = |text: &str, param: &'static str| -> Result<Vec<u32>, ApiError> {
        handle.tokenizer.encode(text).map_err(|e| ApiError::invalid(param, e.to_string()))
    };
    let (ids, atom) = match endpoint {
        Endpoint::Completions => match fields.get("prompt") {
            Some(Value::String(text)) => (encode(text, "prompt")?, ContentAtom::text(text.clone())),
            Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
                let ids = token_ids(items, vocab)?;
                let atom = ContentAtom {
                    modality: "tokens".into(),
                    subtype: Some("u32le".into()),
                    canonical_text: None,
                    payload: Some(ids.iter().flat_map(|id| id.to_le_bytes()).collect()),
                };
                (ids, atom)
            }
            Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
                let text = items[0].as_str().unwrap_or_default();
                (encode(text, "prompt")?, ContentAtom::text(text))
            }
            Some(Value::Array(items)) => {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("`prompt` must be a string, an array of token ids, or an array of one string; got an array of {} items (send one request per prompt)", items.len()),
                ))
            }
            Some(other) => return Err(ApiError::invalid("prompt", format!("`prompt` must be a string or an array of token ids, got {}", type_name(other)))),
            None => return Err(ApiError::invalid("prompt", "`prompt` is required")),
        },
        Endpoint::Chat => {
            let Some(template) = &handle.chat_template else {
                return Err(ApiError::invalid("messages", format!("{} has no chat template in its GGUF metadata: use /v1/completions", handle.name)));
            };
            let messages = match fields.get("messages") {
                Some(Value::Array(items)) if !items.is_empty() => items,
                Some(Value::Array(_)) => return Err(ApiError::invalid("messages", "`messages` is empty: send at least one message")),
                Some(other) => return Err(ApiError::invalid("messages", format!("`messages` must be an array, got {}", type_name(other)))),
                None => return Err(ApiError::invalid("messages", "`messages` is required")),
            };
            let mut parsed = Vec::with_capacity(messages.len());
            for (i, m) in messages.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str).ok_or_else(|| ApiError::invalid("messages", format!("`messages[{i}].role` must be a string")))?;
                if !matches!(role, "system" | "developer" | "user" | "assistant") {
                    return Err(ApiError::invalid("messages", format!("`messages[{i}].role` is {role:?}: use system, developer, user or assistant")));
                }
                let content = match m.get("content") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Null) | None if role == "assistant" => String::new(),
                    // Content parts: only text parts can reach a text model.
                    Some(Value::Array(parts)) => {
                        let mut text = String::new();
                        for (j, part) in parts.iter().enumerate() {
                            match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                                (Some("text"), Some(t)) => text.push_str(t),
                                _ => return Err(ApiError::invalid("messages", format!("`messages[{i}].content[{j}]` is not a text part: this model reads text only"))),
                            }
                        }
                        text
                    }
                    _ => return Err(ApiError::invalid("messages", format!("`messages[{i}].content` must be a string or an array of text parts"))),
                };
                let role = if role == "developer" { "system" } else { role };
                parsed.push(ChatMessage { role: role.into(), content });
            }
            let bos = handle.tokenizer.bos.and_then(|id| handle.tokenizer.decode(&[id]).ok()).unwrap_or_default();
            let eos = handle.tokenizer.eos.and_then(|id| handle.tokenizer.decode(&[id]).ok()).unwrap_or_default();
            let text = template.render(&parsed, true, &bos, &eos).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            let ids = handle.tokenizer.encode(&text).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            (ids, messages_atom(&Value::Array(messages.clone())))
        }
    };
    if ids.is_empty() {
        let field = if endpoint == Endpoint::Chat { "messages" } else { "prompt" };
        return Err(ApiError::invalid(field, format!("`{field}` is empty: give the model some text to continue")));
    }
    Ok((ids, atom))
}

fn check(state: &AppState, fields: &Map<String, Value>, endpoint: Endpoint) -> Result<Checked, ApiError> {
    let generation = find_generator(state, fields)?;
    let (handle, jobs) = (generation.handle.clone(), generation.jobs.clone());
    if let Some(reason) = handle.unhealthy() {
        return Err(ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "model_unhealthy", reason));
    }
    let vocab = handle.tokenizer.vocab_size();
    // Refused rather than ignored: a client asking for these would silently get something else.
    if let Some(n) = integer(fields, "n")? {
        if n != 1 {
            return Err(ApiError::invalid("n", format!("`n` is {n}: one choice per request is served; send {n} requests with different seeds")));
        }
    }
    if let Some(best_of) = integer(fields, "best_of")? {
        if best_of != 1 {
            return Err(ApiError::invalid("best_of", "`best_of` other than 1 is not served"));
        }
    }
    if boolean(fields, "echo")? {
        return Err(ApiError::invalid("echo", "`echo` is not served: the prompt is yours already"));
    }
    if fields.get("suffix").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid("suffix", "`suffix` (insertion) is not served by this model"));
    }
    if fields.get("logit_bias").is_some_and(|v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty())) {
        return Err(ApiError::invalid("logit_bias", "`logit_bias` is not served"));
    }
    for name in ["frequency_penalty", "presence_penalty"] {
        if number(fields, name)?.is_some_and(|v| v != 0.0) {
            return Err(ApiError::invalid(
                if name == "frequency_penalty" { "frequency_penalty" } else { "presence_penalty" },
                format!("`{name}` is not served; `repetition_penalty` (e.g. 1.1) is"),
            ));
        }
    }
    let (prompt, prompt_atom) = prompt(&handle, fields, endpoint, vocab)?;
    let context = handle.context;
    if prompt.len() >= context {
        let field = if endpoint == Endpoint::Chat { "messages" } else { "prompt" };
        return Err(ApiError::invalid(
            field,
            format!(
                "the prompt is {} tokens, {} more than fit: the context is {context} tokens and at least one is needed for the completion",
                prompt.len(),
                prompt.len() + 1 - context
            ),
        ));
    }
    let room = context - prompt.len();
    let requested = match endpoint {
        Endpoint::Completions => integer(fields, "max_tokens")?.map(|v| ("max_tokens", v)),
        Endpoint::Chat => match integer(fields, "max_completion_tokens")? {
            Some(v) => Some(("max_completion_tokens", v)),
            None => integer(fields, "max_tokens")?.map(|v| ("max_tokens", v)),
        },
    };
    let max_tokens = match requested {
        Some((field, 0)) => return Err(ApiError::invalid(field, format!("`{field}` must be at least 1"))),
        Some((_, v)) => (v.min(usize::MAX as u64) as usize).min(room),
        None if endpoint == Endpoint::Completions => COMPLETIONS_DEFAULT_MAX_TOKENS.min(room),
        None => room,
    };
    let logprobs = match endpoint {
        Endpoint::Completions => match integer(fields, "logprobs")? {
            None => Logprobs::Off,
            Some(n) if n <= MAX_COMPLETION_LOGPROBS => Logprobs::Legacy(n as usize),
            Some(n) => return Err(ApiError::invalid("logprobs", format!("`logprobs` is {n}; at most {MAX_COMPLETION_LOGPROBS}"))),
        },
        Endpoint::Chat => {
            let top = integer(fields, "top_logprobs")?;
            if let Some(n) = top.filter(|&n| n > MAX_CHAT_TOP_LOGPROBS) {
                return Err(ApiError::invalid("top_logprobs", format!("`top_logprobs` is {n}; at most {MAX_CHAT_TOP_LOGPROBS}")));
            }
            match (boolean(fields, "logprobs")?, top) {
                (true, top) => Logprobs::Chat(top.unwrap_or(0) as usize),
                (false, Some(_)) => return Err(ApiError::invalid("top_logprobs", "`top_logprobs` needs `logprobs: true`")),
                (false, None) => Logprobs::Off,
            }
        }
    };
    let sampling = sampling_params(
        fields,
        match logprobs {
            Logprobs::Off => None,
            Logprobs::Legacy(n) | Logprobs::Chat(n) => Some(n),
        },
    )?;
    let stop = stop_sequences(fields)?;
    let stream = boolean(fields, "stream")?;
    let include_usage = match fields.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => boolean(o, "include_usage")?,
        Some(other) => return Err(ApiError::invalid("stream_options", format!("`stream_options` must be an object, got {}", type_name(other)))),
    };
    Ok(Checked { handle, jobs, prompt, prompt_atom, max_tokens, sampling, stop, stream, include_usage, logprobs })
}
