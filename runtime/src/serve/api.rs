//! The REST API: `POST /v1/embeddings` (OpenAI's contract, which SQL Server 2025's
//! `CREATE EXTERNAL MODEL ... API_FORMAT = 'OpenAI'` speaks; FACTS.md), the generation endpoints
//! (in [`super::completions`]), `GET /v1/models`,
//! `GET /health`, `GET /metrics` and `GET /v1/lineage/{request_id}`.
//!
//! Errors are OpenAI's error JSON, `{"error":{"message","type","param","code"}}`. Request bodies
//! are parsed by hand from JSON values rather than derived, so that a wrong type is answered with
//! the field's name; unknown fields are ignored, as OpenAI does.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::governance::RequestContext;
use super::lineage::LineageRecord;
use crate::governance::Usage;
use crate::store::UsageQuery;
use super::worker::{EmbedJob, JobFailure, ModelHandle};
use super::AppState;
use crate::models::ModelError;
use crate::store::{ContentAtom, GraphNode, RunStatus};

/// Largest request body: a batch of long inputs fits many times over, and SQL Server sends at
/// most 100 MB (FACTS.md).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Most inputs in one request (OpenAI's limit is 2048).
pub const MAX_INPUTS: usize = 2048;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/completions", post(super::completions::completions))
        .route("/v1/chat/completions", post(super::completions::chat_completions))
        .route("/v1/search", post(super::vectors::search))
        .route("/v1/aggregate", post(super::vectors::aggregate))
        .route("/v1/ensemble", post(super::ensemble::ensemble))
        .route("/v1/models", get(models))
        .route("/v1/lineage/{request_id}", get(lineage))
        .route("/health", get(health))
        .route("/livez", get(live))
        .route("/metrics", get(metrics))
        .route("/v1/usage", get(usage))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), super::governance::gate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// An OpenAI-style error response.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) kind: &'static str,
    pub(super) message: String,
    pub(super) param: Option<&'static str>,
    pub(super) code: Option<&'static str>,
    pub(super) retry_after: Option<u32>,
}

impl ApiError {
    pub(super) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param),
            code: None,
            retry_after: None,
        }
    }

    /// 403: a rule or the caller's tenant does not allow it.
    pub(super) fn forbidden(param: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            kind: "permission_error",
            message: message.into(),
            param,
            code: Some("access_denied"),
            retry_after: None,
        }
    }

    pub(super) fn server(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, kind: "server_error", message: message.into(), param: None, code: Some(code), retry_after: None }
    }

    /// A body too large (413) or unreadable: still OpenAI's error shape, not axum's plain text.
    pub(super) fn body_rejected(rejection: &axum::extract::rejection::BytesRejection) -> Self {
        ApiError {
            status: rejection.status(),
            kind: "invalid_request_error",
            message: format!("{} (the body limit is {MAX_BODY_BYTES} bytes)", rejection.body_text()),
            param: Some("body"),
            code: Some("body_rejected"),
            retry_after: None,
        }
    }

    /// 503 with `Retry-After`: the GPU queue in front of a model is full.
    pub(super) fn queue_full(capacity: usize) -> Self {
        let mut e = ApiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            format!("the daemon's queue is full ({capacity} requests waiting); retry shortly"),
        );
        e.retry_after = Some(1);
        e
    }

    /// The answer to a job the GPU side could not run; `input_param` names the request field an
    /// input failure is about.
    pub(super) fn from_failure(failure: JobFailure, input_param: &'static str) -> Self {
        match failure {
            JobFailure::Corrupt(m) => ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "weights_corrupt", m),
            JobFailure::Unhealthy(m) => ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "model_unhealthy", m),
            JobFailure::Input(m) => ApiError::invalid(input_param, m),
            JobFailure::Internal(m) => ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "inference_failed", m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error_json()});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The gRPC code of an error answered with HTTP status `http`: the one table both front doors
/// share (gRPC calls are answered by the REST router, whose status this maps).
pub fn grpc_code(http: StatusCode) -> tonic::Code {
    use tonic::Code;
    match http.as_u16() {
        // A body too large is the request's fault, and retrying it cannot help.
        400 | 413 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// The gRPC status of an error answer: `http` its HTTP status, `error` OpenAI's error object
/// (`{"message","type","param","code"}`), `retry_after` the seconds of its `Retry-After`.
///
/// The message is REST's. Metadata carries `x-error-type`, `x-error-code`, `x-error-param` and,
/// with a retry time, `retry-after` (seconds) and `grpc-retry-pushback-ms` (gRPC's retry
/// pushback); the status details carry the same as google.rpc `ErrorInfo` (reason: the code,
/// else the type; domain `hartonomous`), `BadRequest` (the field, for INVALID_ARGUMENT) and
/// `RetryInfo`.
pub fn grpc_status(http: StatusCode, error: &Value, retry_after: Option<u64>) -> tonic::Status {
    use tonic::metadata::{MetadataMap, MetadataValue};
    use tonic_types::{ErrorDetails, StatusExt};
    let text = |key: &str| error.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let code = grpc_code(http);
    let message = text("message").unwrap_or_else(|| http.canonical_reason().unwrap_or("error"));
    let mut metadata = MetadataMap::new();
    let mut info = std::collections::HashMap::new();
    for (key, field) in [("x-error-type", "type"), ("x-error-code", "code"), ("x-error-param", "param")] {
        if let Some(value) = text(field) {
            info.insert(field.to_string(), value.to_string());
            // A value that is not a valid header (never one of ours) is left to the details.
            if let Ok(v) = MetadataValue::try_from(value) {
                metadata.insert(key, v);
            }
        }
    }
    let mut details = ErrorDetails::new();
    let reason = text("code").or_else(|| text("type")).unwrap_or("error");
    details.set_error_info(reason, "hartonomous", info);
    if let (tonic::Code::InvalidArgument, Some(param)) = (code, text("param")) {
        details.add_bad_request_violation(param, message);
    }
    if let Some(seconds) = retry_after {
        metadata.insert("retry-after", MetadataValue::from(seconds));
        metadata.insert("grpc-retry-pushback-ms", MetadataValue::from(seconds.saturating_mul(1000)));
        details.set_retry_info(Some(std::time::Duration::from_secs(seconds)));
    }
    tonic::Status::with_error_details_and_metadata(code, message, details, metadata)
}

impl ApiError {
    /// OpenAI's error object of this error, as the REST answer's `error`.
    fn error_json(&self) -> Value {
        json!({"message": self.message, "type": self.kind, "param": self.param, "code": self.code})
    }

    /// The HTTP status of an error object met inside a stream of server-sent events, which
    /// carries none (the stream's 200 was sent before it): the inverse of [`Self::from_failure`],
    /// the only source of such errors.
    pub fn stream_error_status(error: &Value) -> StatusCode {
        match (error.get("type").and_then(Value::as_str), error.get("code").and_then(Value::as_str)) {
            (Some("invalid_request_error"), _) => StatusCode::BAD_REQUEST,
            (_, Some("model_unhealthy" | "queue_full" | "gpu_stopped")) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The same error answered to a gRPC caller.
impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        grpc_status(e.status, &e.error_json(), e.retry_after.map(u64::from))
    }
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        message: "no such endpoint: the daemon serves POST /v1/embeddings, POST /v1/completions, POST /v1/chat/completions, POST /v1/search, POST /v1/aggregate, POST /v1/ensemble, GET /v1/models, GET /v1/lineage/{request_id}, GET /v1/usage, GET /health and GET /metrics".into(),
        param: None,
        code: Some("unknown_url"),
        retry_after: None,
    }
}

/// One input as the request gave it.
enum Input {
    Text(String),
    Tokens(Vec<u32>),
}

impl Input {
    fn len_bytes(&self) -> usize {
        match self {
            Input::Text(text) => text.len(),
            Input::Tokens(ids) => ids.len() * 4,
        }
    }

    fn atom(&self) -> ContentAtom {
        match self {
            Input::Text(text) => ContentAtom::text(text.clone()),
            Input::Tokens(ids) => ContentAtom {
                modality: "tokens".into(),
                subtype: Some("u32le".into()),
                canonical_text: None,
                payload: Some(ids.iter().flat_map(|id| id.to_le_bytes()).collect()),
            },
        }
    }
}

/// Input bytes below which a request is tokenized on its own task.
const TOKENIZE_INLINE_BYTES: usize = 16 << 10;

/// Every input's ids ([CLS] … [SEP], truncated) and the truncation notes for the response.
fn tokenize_all(model: &ModelHandle, inputs: &[Input]) -> Result<(Vec<Vec<u32>>, Vec<Value>), ApiError> {
    let mut tokenized = Vec::with_capacity(inputs.len());
    let mut truncated = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        let encoded = match input {
            Input::Text(text) => model.tokenizer.encode_text(text),
            Input::Tokens(ids) => model.tokenizer.encode_ids(ids, index),
        }
        .map_err(|e| match e {
            ModelError::Input { what } => ApiError::invalid("input", what),
            other => ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "tokenizer", other.to_string()),
        })?;
        if let Some(original) = encoded.truncated_from {
            truncated.push(json!({"index": index, "tokens": original, "kept": encoded.ids.len()}));
        }
        tokenized.push(encoded.ids);
    }
    Ok((tokenized, truncated))
}

fn parse_tokens(value: &Value, at: &str) -> Result<Vec<u32>, ApiError> {
    let Value::Array(items) = value else { return Err(ApiError::invalid("input", format!("{at} must be an array of token ids"))) };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| ApiError::invalid("input", format!("{at}[{i}] must be a non-negative integer token id, got {v}")))
        })
        .collect()
}

/// `input`: a string, an array of strings, an array of token ids, or an array of those.
fn parse_input(value: Option<&Value>) -> Result<Vec<Input>, ApiError> {
    let value = value.ok_or_else(|| ApiError::invalid("input", "`input` is required: a string, an array of strings, or token arrays"))?;
    let inputs = match value {
        Value::String(text) => vec![Input::Text(text.clone())],
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::invalid("input", "`input` is an empty array; send at least one input"))
        }
        Value::Array(items) if items.iter().all(Value::is_number) => vec![Input::Tokens(parse_tokens(value, "input")?)],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(Input::Text(text.clone())),
                Value::Array(_) => Ok(Input::Tokens(parse_tokens(item, &format!("input[{i}]"))?)),
                other => Err(ApiError::invalid(
                    "input",
                    format!("input[{i}] must be a string or an array of token ids, got {}", type_name(other)),
                )),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(ApiError::invalid(
                "input",
                format!("`input` must be a string, an array of strings, or token arrays, got {}", type_name(other)),
            ))
        }
    };
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid("input", format!("{} inputs in one request; at most {MAX_INPUTS}", inputs.len())));
    }
    Ok(inputs)
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A served embedding model by name (404 naming `model` when it is not served).
pub(super) fn find_model<'a>(state: &'a AppState, name: &str) -> Result<&'a Arc<ModelHandle>, ApiError> {
    let (base, version) = crate::store::parse_model_ref(name);
    state
        .models
        .iter()
        .find(|m| m.label() == name || (m.name == base && version.is_none_or(|v| v == m.version)))
        .ok_or_else(|| {
            let served: Vec<String> = state.models.iter().map(|m| m.name.clone()).collect();
            ApiError {
                status: StatusCode::NOT_FOUND,
                kind: "invalid_request_error",
                message: format!("the model `{name}` is not served here; served: {}", served.join(", ")),
                param: Some("model"),
                code: Some("model_not_found"),
                retry_after: None,
            }
        })
}

pub(super) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.to_ascii_lowercase().starts_with("application/json"))
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let result = match body {
        Ok(body) => embeddings_inner(&state, &context, &headers, body, started).await,
        Err(rejection) => Err(ApiError::body_rejected(&rejection)),
    };
    if let Err(e) = &result {
        state.metrics.count_error(e.status.as_u16());
    }
    result
}

async fn embeddings_inner(
    state: &Arc<AppState>,
    context: &RequestContext,
    headers: &HeaderMap,
    body: Bytes,
    started: Instant,
) -> Result<Response, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::invalid("body", "send the request as JSON (content-type: application/json)"));
    }
    let request: Value = serde_json::from_slice(&body).map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = &request else {
        return Err(ApiError::invalid("body", format!("the body must be a JSON object, got {}", type_name(&request))));
    };
    let model_name = match fields.get("model") {
        Some(Value::String(name)) => name.as_str(),
        Some(other) => return Err(ApiError::invalid("model", format!("`model` must be a string, got {}", type_name(other)))),
        None => return Err(ApiError::invalid("model", "`model` is required: the name of a served model (GET /v1/models)")),
    };
    let model = find_model(state, model_name)?.clone();
    let inputs = parse_input(fields.get("input"))?;
    let base64 = match fields.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(other) => {
            return Err(ApiError::invalid("encoding_format", format!("`encoding_format` must be \"float\" or \"base64\", got {other}")))
        }
    };
    match fields.get("dimensions") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64() == Some(model.dimension as u64) => {}
        Some(Value::Number(n)) => {
            return Err(ApiError::invalid(
                "dimensions",
                format!("`dimensions` is {n}, but {} produces {}-dimensional embeddings and does not shorten them; omit it or send {}", model.name, model.dimension, model.dimension),
            ))
        }
        Some(other) => return Err(ApiError::invalid("dimensions", format!("`dimensions` must be an integer, got {}", type_name(other)))),
    }

    // Tokenizing is CPU work: a large request goes to the blocking pool so that it does not
    // hold up the async workers serving everyone else.
    let atoms: Vec<ContentAtom> = inputs.iter().map(Input::atom).collect();
    let input_bytes: usize = inputs.iter().map(Input::len_bytes).sum();
    let (tokenized, truncated) = if input_bytes <= TOKENIZE_INLINE_BYTES {
        tokenize_all(&model, &inputs)?
    } else {
        let model = model.clone();
        tokio::task::spawn_blocking(move || tokenize_all(&model, &inputs))
            .await
            .map_err(|e| ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "tokenizer", format!("tokenizing failed: {e}")))??
    };
    let prompt_tokens: usize = tokenized.iter().map(Vec::len).sum();
    let request_key = uuid::Uuid::new_v4().to_string();
    let outcome = run_embed_job(state, &model, &request_key, tokenized).await?;

    let mut record = LineageRecord {
        request_key: request_key.clone(),
        tenant: context.tenant.clone(),
        operation: "embeddings".into(),
        model_label: model.label(),
        model: model.id,
        weights_root: model.weights_root,
        status: RunStatus::Succeeded,
        duration_ms: 0.0,
        error: None,
        inputs: atoms,
        outputs: Vec::new(),
        batches: Vec::new(),
        prompt_tokens: prompt_tokens as u64,
        completion: None,
        members: Vec::new(),
    };
    let output = match outcome {
        Ok(output) => output,
        Err(failure) => {
            let error = ApiError::from_failure(failure, "input");
            record.status = RunStatus::Failed;
            record.error = Some(error.message.clone());
            record.duration_ms = started.elapsed().as_secs_f64() * 1e3;
            let stored = state.lineage.submit(record);
            if state.lineage_sync {
                let _ = stored.await;
            }
            return Err(error);
        }
    };
    record.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    record.batches = output.batches.clone();
    let data: Vec<Value> = output
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "embedding": embedding, "index": index})
        })
        .collect();
    context.report(Usage { input_tokens: prompt_tokens as u64, output_tokens: 0, vectors: output.vectors.len() as u64 }, Some(&request_key));
    record.outputs = output.vectors;
    let stored = state.lineage.submit(record);
    if state.lineage_sync {
        let _ = stored.await;
    }
    let mut extra = json!({"request_id": request_key, "weights_root": model.weights_root.to_hex(), "model_version": model.version});
    if !truncated.is_empty() {
        extra["truncated"] = Value::Array(truncated);
    }
    let body = json!({
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        "hartonomous": extra,
    });
    let mut response = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&request_key) {
        response.headers_mut().insert("x-request-id", v);
    }
    Ok(response)
}

/// Queues an embedding job on the GPU thread and waits for it: `Err` when it cannot be queued
/// (503), `Ok(Err(failure))` when the GPU side could not run it.
async fn run_embed_job(
    state: &AppState,
    model: &Arc<ModelHandle>,
    request_key: &str,
    tokenized: Vec<Vec<u32>>,
) -> Result<Result<super::worker::EmbedOutput, JobFailure>, ApiError> {
    let (reply, answer) = oneshot::channel();
    let job = EmbedJob { model: model.clone(), request_key: request_key.to_string(), inputs: tokenized, reply };
    if let Err(e) = state.jobs.try_send(job) {
        if matches!(e, tokio::sync::mpsc::error::TrySendError::Closed(_)) {
            return Err(ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "gpu_stopped", "the GPU thread has stopped (the daemon is shutting down, or it failed: see its log)"));
        }
        state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::queue_full(state.queue_capacity));
    }
    Ok(answer.await.unwrap_or_else(|_| Err(JobFailure::Internal("the GPU thread stopped before answering (shutting down?)".into()))))
}

/// Embeds `texts` with a served model (for search queries and ensemble members): the vectors
/// and the tokens they took. `param` names the request field the texts came from.
pub(super) async fn embed_texts(
    state: &AppState,
    model: &Arc<ModelHandle>,
    request_key: &str,
    texts: &[String],
    param: &'static str,
) -> Result<(super::worker::EmbedOutput, usize), ApiError> {
    let inputs: Vec<Input> = texts.iter().cloned().map(Input::Text).collect();
    let (tokenized, _) = tokenize_all(model, &inputs).map_err(|mut e| {
        if e.param == Some("input") {
            e.param = Some(param);
        }
        e
    })?;
    let tokens = tokenized.iter().map(Vec::len).sum();
    let output = run_embed_job(state, model, request_key, tokenized).await?.map_err(|f| ApiError::from_failure(f, param))?;
    Ok((output, tokens))
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut data: Vec<Value> = state
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m.name,
                "object": "model",
                "created": unix_seconds(&m.created_at),
                "owned_by": "hartonomous",
                "hartonomous": {
                    "kind": "embeddings",
                    "version": m.version,
                    "weights_root": m.weights_root.to_hex(),
                    "dimension": m.dimension,
                    "max_tokens": m.tokenizer.max_tokens(),
                    "healthy": m.unhealthy().is_none(),
                }
            })
        })
        .collect();
    data.extend(state.generators.iter().map(|g| {
        let g = &g.handle;
        json!({
            "id": g.name,
            "object": "model",
            "created": unix_seconds(&g.created_at),
            "owned_by": "hartonomous",
            "hartonomous": {
                "kind": "generation",
                "version": g.version,
                "weights_root": g.weights_root.to_hex(),
                "context": g.context,
                "max_sequences": g.max_sequences,
                "chat_template": g.chat_template.is_some(),
                "healthy": g.unhealthy().is_none(),
            }
        })
    }));
    Json(json!({"object": "list", "data": data}))
}

/// Seconds since 1970 of an ISO 8601 UTC time as the store writes it (`2026-11-24T01:02:03.456Z`).
fn unix_seconds(iso: &str) -> i64 {
    let num = |range: std::ops::Range<usize>| iso.get(range).and_then(|s| s.parse::<i64>().ok());
    let (Some(y), Some(mo), Some(d)) = (num(0..4), num(5..7), num(8..10)) else { return 0 };
    let (h, mi, s) = (num(11..13).unwrap_or(0), num(14..16).unwrap_or(0), num(17..19).unwrap_or(0));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + h * 3600 + mi * 60 + s
}

/// Liveness: answers at once without touching the store or the models (a process probe, and the
/// benchmark harness's no-op route).
async fn live() -> &'static str {
    "ok"
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let store = match state.store.list_models().await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    let health: Vec<(String, Option<String>)> = state
        .models
        .iter()
        .map(|m| (m.label(), m.unhealthy()))
        .chain(state.generators.iter().map(|g| (g.handle.label(), g.handle.unhealthy())))
        .collect();
    let models: Vec<Value> =
        health.iter().map(|(label, reason)| json!({"model": label, "healthy": reason.is_none(), "reason": reason})).collect();
    let ready = store.is_ok() && !health.is_empty() && health.iter().all(|(_, reason)| reason.is_none());
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "store": match &store { Ok(()) => json!({"reachable": true}), Err(e) => json!({"reachable": false, "error": e}) },
        "models": models,
        "adapter": state.adapter,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.render(&state) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e).into_response(),
    }
}

async fn lineage(State(state): State<Arc<AppState>>, Path(request_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let store_error = |e: crate::store::StoreError| ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string());
    let not_found = || ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        message: format!("no lineage recorded for request {request_id} (records are written shortly after the response; see hartonomous_lineage_backlog)"),
        param: Some("request_id"),
        code: Some("lineage_not_found"),
        retry_after: None,
    };
    let id = state.store.find_request(&request_id).await.map_err(store_error)?.ok_or_else(not_found)?;
    let l = state.store.lineage(id).await.map_err(store_error)?.ok_or_else(not_found)?;
    let node = |n: GraphNode| json!({"kind": n.kind(), "id": n.ref_id()});
    Ok(Json(json!({
        "request_id": l.request.request_key,
        "tenant": l.request.tenant,
        "operation": l.request.operation,
        "models": l.request.model_names,
        "status": l.status,
        "duration_ms": l.duration_ms,
        "error": l.error_message,
        "steps": l.steps.iter().map(|s| json!({
            "ordinal": s.ordinal,
            "operation": s.operation,
            "model_id": s.model.map(|m| m.0),
            "weights_root": s.weights_root.map(|w| w.to_hex()),
            "parameters": serde_json::from_str::<Value>(&s.parameters_json).unwrap_or(Value::Null),
            "status": s.status,
            "duration_ms": s.duration_ms,
        })).collect::<Vec<_>>(),
        "edges": l.edges.iter().map(|e| json!({"from": node(e.from), "to": node(e.to), "relation": e.relation})).collect::<Vec<_>>(),
        "usage": l.usage.iter().map(|u| json!({
            "tenant": u.tenant,
            "operation": u.operation,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "vectors": u.vectors,
            "duration_ms": u.compute_ms,
            "billing_units": u.billing_units,
            "status": u.status_code,
        })).collect::<Vec<_>>(),
    })))
}

/// Most ledger rows one `GET /v1/usage` returns.
const MAX_USAGE_ROWS: usize = 10_000;

/// `GET /v1/usage?tenant=&since=&limit=`: usage ledger rows, newest first. With keys configured a
/// caller sees its own tenant's rows only.
async fn usage(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<RequestContext>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = match query.get("limit") {
        None => 100,
        Some(text) => text.parse::<usize>().ok().filter(|n| (1..=MAX_USAGE_ROWS).contains(n)).ok_or_else(|| {
            ApiError::invalid("limit", format!("`limit` is {text:?}; it must be an integer from 1 to {MAX_USAGE_ROWS}"))
        })?,
    };
    let since = query.get("since").cloned();
    if let Some(since) = &since {
        if !looks_like_iso_time(since) {
            return Err(ApiError::invalid("since", format!("`since` is {since:?}; send an ISO 8601 UTC time such as 2026-11-24T00:00:00Z")));
        }
    }
    let tenant = match (state.governance.keys_configured().await, query.get("tenant")) {
        (true, Some(asked)) if *asked != context.tenant => {
            return Err(ApiError::forbidden(Some("tenant"), format!("a key of tenant {:?} may read only its own usage, not {asked:?}", context.tenant)))
        }
        (true, _) => Some(context.tenant.clone()),
        (false, asked) => asked.cloned(),
    };
    let rows = state
        .store
        .usage(&UsageQuery { tenant, since, limit })
        .await
        .map_err(|e| ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()))?;
    let total_units: f64 = rows.iter().map(|r| r.billing_units).sum();
    Ok(Json(json!({"object": "list", "data": rows, "total_billing_units": total_units})))
}

/// `YYYY-MM-DDTHH:MM...`: enough to compare with the ledger's ISO 8601 text.
fn looks_like_iso_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && (b.len() == 10 || b[10] == b'T')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_become_unix_seconds() {
        // Independent: `date -u -d 2026-11-24T01:02:03Z +%s`.
        assert_eq!(unix_seconds("2026-11-24T01:02:03.456Z"), 1_795_482_123);
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), 0);
        assert_eq!(unix_seconds("garbage"), 0);
    }

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        use tonic::Code;
        let table = [
            (400, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (413, Code::InvalidArgument),
            (429, Code::ResourceExhausted),
            (500, Code::Internal),
            (503, Code::Unavailable),
            (504, Code::DeadlineExceeded),
            (502, Code::Internal),
        ];
        for (http, code) in table {
            let status = StatusCode::from_u16(http).unwrap_or(StatusCode::IM_A_TEAPOT);
            assert_eq!(grpc_code(status), code, "HTTP {http}");
        }
    }

    #[test]
    fn an_api_error_becomes_a_status_with_its_field_code_and_retry_time() {
        use tonic_types::StatusExt;
        let status = tonic::Status::from(ApiError::queue_full(4));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let header = |k: &str| status.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(header("retry-after").as_deref(), Some("1"));
        assert_eq!(header("grpc-retry-pushback-ms").as_deref(), Some("1000"));
        assert_eq!(header("x-error-code").as_deref(), Some("queue_full"));
        assert_eq!(status.get_details_retry_info().and_then(|r| r.retry_delay), Some(std::time::Duration::from_secs(1)));
        assert_eq!(status.get_details_error_info().map(|i| i.reason), Some("queue_full".to_string()));

        let status = tonic::Status::from(ApiError::invalid("k", "`k` is 0"));
        assert_eq!((status.code(), status.message()), (tonic::Code::InvalidArgument, "`k` is 0"));
        assert_eq!(status.metadata().get("x-error-param").and_then(|v| v.to_str().ok()), Some("k"));
        let fields: Vec<String> = status.get_details_bad_request().map(|b| b.field_violations.into_iter().map(|v| v.field).collect()).unwrap_or_default();
        assert_eq!(fields, vec!["k".to_string()]);
        assert!(status.metadata().get("retry-after").is_none());
    }

    #[test]
    fn errors_inside_a_stream_get_the_status_their_failure_had() {
        for failure in [
            JobFailure::Corrupt("atom".into()),
            JobFailure::Unhealthy("model".into()),
            JobFailure::Input("too long".into()),
            JobFailure::Internal("gone".into()),
        ] {
            let error = ApiError::from_failure(failure, "prompt");
            assert_eq!(ApiError::stream_error_status(&error.error_json()), error.status, "{error:?}");
        }
    }

    #[test]
    fn inputs_of_every_openai_shape_parse_and_wrong_types_name_the_field() {
        assert_eq!(parse_input(Some(&json!("a"))).map(|v| v.len()).ok(), Some(1));
        assert_eq!(parse_input(Some(&json!(["a", "b"]))).map(|v| v.len()).ok(), Some(2));
        assert_eq!(parse_input(Some(&json!([1, 2, 3]))).map(|v| v.len()).ok(), Some(1));
        assert_eq!(parse_input(Some(&json!([[1, 2], [3]]))).map(|v| v.len()).ok(), Some(2));
        let err = parse_input(Some(&json!(["a", 5]))).err().map(|e| e.message).unwrap_or_default();
        assert!(err.contains("input[1]"), "{err}");
        let err = parse_input(Some(&json!([[1, -2]]))).err().map(|e| e.message).unwrap_or_default();
        assert!(err.contains("input[0][1]"), "{err}");
        assert!(parse_input(Some(&json!([]))).is_err());
        assert!(parse_input(None).is_err());
        assert!(parse_input(Some(&json!({"text": "a"}))).is_err());
    }
}
