//! Vector operations over the store's embeddings: `POST /v1/search` (similarity search through
//! the GPU index of [`crate::search`], exact or with the coarse-key prefilter) and
//! `POST /v1/aggregate` (sum, average, weighted average, median, standard deviation and average
//! pairwise cosine over embeddings named by atom id or given inline, on the GPU).
//!
//! Every refusal names the field (`param`), as the other endpoints do.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hartonomous_kernels::ops::aggregate::{self, Aggregate, MAX_MEDIAN_N};
use hartonomous_kernels::ops::similarity::MAX_K;
use hartonomous_kernels::{DType, Gpu};
use serde_json::{json, Map, Value};

use super::api::{embed_texts, find_model, is_json, type_name, ApiError};
use super::completions::integer;
use super::governance::RequestContext;
use super::AppState;
use crate::governance::Usage;
use crate::search::{parse_metric, Refresh, SearchError, SearchMode, SearchRequest};
use crate::store::{ContentAtomId, ModelId, StoreError};

/// Most vectors in one aggregate or search request.
pub const MAX_VECTORS: usize = 65_536;

/// Reads the body as a JSON object, or says what is wrong with it.
pub(super) fn json_object(headers: &HeaderMap, body: Result<Bytes, axum::extract::rejection::BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    let body = body.map_err(|r| ApiError::body_rejected(&r))?;
    if !is_json(headers) {
        return Err(ApiError::invalid("body", "send the request as JSON (content-type: application/json)"));
    }
    match serde_json::from_slice(&body).map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))? {
        Value::Object(fields) => Ok(fields),
        other => Err(ApiError::invalid("body", format!("the body must be a JSON object, got {}", type_name(&other)))),
    }
}

/// Runs a JSON endpoint: counts the request, reads the body as a JSON object, answers with
/// `inner`, and counts an error answer in `/metrics`.
pub(super) async fn json_endpoint<F, Fut>(
    state: Arc<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    inner: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Arc<AppState>, RequestContext, Map<String, Value>) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let result = match json_object(&headers, body) {
        Ok(fields) => inner(state.clone(), context, fields).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        state.metrics.count_error(e.status.as_u16());
    }
    result
}

pub(super) fn string_field<'a>(fields: &'a Map<String, Value>, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::invalid(name, format!("`{name}` must be a string, got {}", type_name(other)))),
    }
}

fn store_error(e: StoreError) -> ApiError {
    ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string())
}

/// A model of the store by `NAME[:VERSION]` (any model with embeddings, served or not).
async fn stored_model(state: &AppState, name: &str) -> Result<ModelId, ApiError> {
    let (base, version) = crate::store::parse_model_ref(name);
    match state.store.model(base, version).await.map_err(store_error)? {
        Some(row) => Ok(row.id),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            message: format!("the store has no model `{name}` (hartonomous models lists them)"),
            param: Some("model"),
            code: Some("model_not_found"),
            retry_after: None,
        }),
    }
}

/// A vector of finite numbers.
fn vector(value: &Value, at: &str, param: &'static str) -> Result<Vec<f32>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(param, format!("{at} must be an array of numbers, got {}", type_name(value))));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(param, format!("{at} is an empty vector")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_f64() {
            Some(x) if x.is_finite() && x.abs() <= f64::from(f32::MAX) => Ok(x as f32),
            _ => Err(ApiError::invalid(param, format!("{at}[{i}] must be a finite number, got {v}"))),
        })
        .collect()
}

/// Queries as the request gave them.
enum Queries {
    Texts(Vec<String>),
    Vectors(Vec<Vec<f32>>),
}

fn parse_queries(value: Option<&Value>) -> Result<Queries, ApiError> {
    let value = value.ok_or_else(|| ApiError::invalid("query", "`query` is required: a text, a vector, or an array of either"))?;
    let queries = match value {
        Value::String(text) => Queries::Texts(vec![text.clone()]),
        Value::Array(items) if items.is_empty() => return Err(ApiError::invalid("query", "`query` is an empty array")),
        Value::Array(items) if items.iter().all(Value::is_number) => Queries::Vectors(vec![vector(value, "`query`", "query")?]),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            Queries::Texts(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        }
        Value::Array(items) if items.iter().all(Value::is_array) => Queries::Vectors(
            items.iter().enumerate().map(|(i, v)| vector(v, &format!("`query[{i}]`"), "query")).collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(ApiError::invalid(
                "query",
                format!("`query` must be a text, a vector, or an array of texts or of vectors (not mixed), got {}", type_name(other)),
            ))
        }
    };
    let n = match &queries {
        Queries::Texts(t) => t.len(),
        Queries::Vectors(v) => v.len(),
    };
    if n > super::api::MAX_INPUTS {
        return Err(ApiError::invalid("query", format!("{n} queries in one request; at most {}", super::api::MAX_INPUTS)));
    }
    if let Queries::Texts(texts) = &queries {
        if let Some(i) = texts.iter().position(|t| t.is_empty()) {
            return Err(ApiError::invalid("query", format!("query {i} is an empty text")));
        }
    }
    Ok(queries)
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    json_endpoint(state, context, headers, body, |state, context, fields| async move { search_inner(&state, &context, &fields).await }).await
}

async fn search_inner(state: &Arc<AppState>, context: &RequestContext, fields: &Map<String, Value>) -> Result<Response, ApiError> {
    let model_name = string_field(fields, "model")?
        .ok_or_else(|| ApiError::invalid("model", "`model` is required: the model whose stored embeddings are searched"))?;
    let queries = parse_queries(fields.get("query"))?;
    let k = match integer(fields, "k")? {
        None => 10,
        Some(k) if (1..=MAX_K as u64).contains(&k) => k as usize,
        Some(k) => return Err(ApiError::invalid("k", format!("`k` is {k}; it must be between 1 and {MAX_K}"))),
    };
    let metric_name = string_field(fields, "metric")?.unwrap_or("cosine");
    let metric = parse_metric(metric_name)
        .ok_or_else(|| ApiError::invalid("metric", format!("`metric` is {metric_name:?}; it must be \"cosine\", \"l2\" or \"dot\"")))?;
    let modality = string_field(fields, "modality")?.map(str::to_string);
    let mode = match string_field(fields, "mode")?.unwrap_or("exact") {
        "exact" => {
            if fields.get("candidates").is_some_and(|v| !v.is_null()) {
                return Err(ApiError::invalid("candidates", "`candidates` is for `mode: \"hybrid\"`"));
            }
            SearchMode::Exact
        }
        "hybrid" => SearchMode::Hybrid {
            candidates: match integer(fields, "candidates")? {
                None => (k * 100).max(1000),
                Some(0) => return Err(ApiError::invalid("candidates", "`candidates` must be at least 1")),
                Some(c) if c < k as u64 => {
                    return Err(ApiError::invalid("candidates", format!("`candidates` ({c}) must be at least `k` ({k})")))
                }
                Some(c) => c.min(usize::MAX as u64) as usize,
            },
        },
        other => return Err(ApiError::invalid("mode", format!("`mode` is {other:?}; it must be \"exact\" or \"hybrid\""))),
    };
    let request_key = uuid::Uuid::new_v4().to_string();
    // A text query is embedded by the served model; a vector query searches any stored model.
    let (model, vectors, query_tokens) = match queries {
        Queries::Texts(texts) => {
            let handle = find_model(state, model_name)?.clone();
            let (output, tokens) = embed_texts(state, &handle, &request_key, &texts, "query").await?;
            (handle.id, output.vectors, tokens)
        }
        Queries::Vectors(vectors) => (stored_model(state, model_name).await?, vectors, 0),
    };
    let query_count = vectors.len();
    let request = SearchRequest { queries: vectors, k, metric, modality, mode };
    let outcome = state.search.search(state.store.as_ref(), model, request).await.map_err(|e| match e {
        SearchError::Invalid { field, reason } => ApiError::invalid(field, reason),
        SearchError::Store(e) => store_error(e),
        other => ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "search_failed", other.to_string()),
    })?;
    // The hits' atoms, for their text or payload reference.
    let mut ids: Vec<ContentAtomId> = outcome.results.iter().flat_map(|r| r.hits.iter().map(|h| h.atom)).collect();
    ids.sort_unstable();
    ids.dedup();
    let atoms = state.store.content_atoms(&ids).await.map_err(store_error)?;
    let atom_of = |id: ContentAtomId| ids.binary_search(&id).ok().and_then(|i| atoms[i].as_ref());
    let data: Vec<Value> = outcome
        .results
        .iter()
        .enumerate()
        .map(|(index, result)| {
            let results: Vec<Value> = result
                .hits
                .iter()
                .map(|hit| {
                    let atom = atom_of(hit.atom);
                    json!({
                        "atom_id": hit.atom.0,
                        "score": hit.score,
                        "atom_hash": atom.map(|a| a.hash.to_hex()),
                        "modality": atom.map(|a| a.modality.clone()),
                        "text": atom.and_then(|a| a.text.clone()),
                        "payload_bytes": atom.and_then(|a| a.payload_bytes),
                    })
                })
                .collect();
            json!({"index": index, "candidates_scanned": result.scanned, "results": results})
        })
        .collect();
    let refresh = match outcome.refresh {
        Refresh::Unchanged => json!({"kind": "unchanged", "rows": 0}),
        Refresh::Appended(n) => json!({"kind": "appended", "rows": n}),
        Refresh::Reloaded(n) => json!({"kind": "reloaded", "rows": n}),
    };
    context.report(Usage { input_tokens: query_tokens as u64, output_tokens: 0, vectors: query_count as u64 }, None);
    let body = json!({
        "object": "list",
        "model": model_name,
        "metric": metric_name,
        "mode": match mode { SearchMode::Exact => "exact", SearchMode::Hybrid { .. } => "hybrid" },
        "k": k,
        "data": data,
        "usage": {"prompt_tokens": query_tokens, "total_tokens": query_tokens},
        "hartonomous": {
            "request_id": request_key,
            "index": {"rows": outcome.indexed_rows, "storage": state.search.options().storage.as_str(), "refresh": refresh},
        },
    });
    Ok(Json(body).into_response())
}

/// The aggregates of `POST /v1/aggregate` by API name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Sum,
    Average,
    WeightedAverage,
    Median,
    StdDev,
    AveragePairwiseCosine,
}

const OPERATIONS: &str = "\"sum\", \"average\", \"weighted_average\", \"median\", \"std_dev\" or \"average_pairwise_cosine\"";

impl Operation {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "sum" => Operation::Sum,
            "average" => Operation::Average,
            "weighted_average" => Operation::WeightedAverage,
            "median" => Operation::Median,
            "std_dev" => Operation::StdDev,
            "average_pairwise_cosine" => Operation::AveragePairwiseCosine,
            _ => return None,
        })
    }
}

pub async fn aggregate(
    State(state): State<Arc<AppState>>,
    Extension(context): Extension<RequestContext>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    json_endpoint(state, context, headers, body, |state, context, fields| async move { aggregate_inner(&state, &context, &fields).await }).await
}

async fn aggregate_inner(state: &Arc<AppState>, context: &RequestContext, fields: &Map<String, Value>) -> Result<Response, ApiError> {
    let name = string_field(fields, "operation")?.ok_or_else(|| ApiError::invalid("operation", format!("`operation` is required: {OPERATIONS}")))?;
    let operation =
        Operation::parse(name).ok_or_else(|| ApiError::invalid("operation", format!("`operation` is {name:?}; it must be {OPERATIONS}")))?;
    let vectors: Vec<Vec<f32>> = match (fields.get("vectors").filter(|v| !v.is_null()), fields.get("atom_ids").filter(|v| !v.is_null())) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("atom_ids", "send `vectors` or `atom_ids`, not both")),
        (None, None) => return Err(ApiError::invalid("vectors", "`vectors` (an array of vectors) or `atom_ids` with `model` is required")),
        (Some(Value::Array(items)), None) => {
            items.iter().enumerate().map(|(i, v)| vector(v, &format!("`vectors[{i}]`"), "vectors")).collect::<Result<_, _>>()?
        }
        (Some(other), None) => return Err(ApiError::invalid("vectors", format!("`vectors` must be an array of vectors, got {}", type_name(other)))),
        (None, Some(ids)) => {
            let Value::Array(items) = ids else {
                return Err(ApiError::invalid("atom_ids", format!("`atom_ids` must be an array of atom ids, got {}", type_name(ids))));
            };
            if items.len() > MAX_VECTORS {
                return Err(ApiError::invalid("atom_ids", format!("{} atom ids; at most {MAX_VECTORS} per request", items.len())));
            }
            let ids: Vec<ContentAtomId> = items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_i64().filter(|&id| id > 0).map(ContentAtomId).ok_or_else(|| ApiError::invalid("atom_ids", format!("`atom_ids[{i}]` must be a positive integer, got {v}")))
                })
                .collect::<Result<_, _>>()?;
            let model_name =
                string_field(fields, "model")?.ok_or_else(|| ApiError::invalid("model", "`model` is required with `atom_ids`: whose embeddings of them"))?;
            let model = stored_model(state, model_name).await?;
            let found = state.store.embeddings_of_atoms(model, &ids).await.map_err(store_error)?;
            let missing: Vec<String> = ids.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(id, _)| id.0.to_string()).collect();
            if !missing.is_empty() {
                return Err(ApiError::invalid("atom_ids", format!("model {model_name} has no embedding of atom(s) {}", missing.join(", "))));
            }
            found.into_iter().flatten().collect()
        }
    };
    if vectors.is_empty() {
        return Err(ApiError::invalid("vectors", "no vectors to aggregate"));
    }
    if vectors.len() > MAX_VECTORS {
        return Err(ApiError::invalid("vectors", format!("{} vectors; at most {MAX_VECTORS} per request", vectors.len())));
    }
    let dimension = vectors[0].len();
    if let Some(i) = vectors.iter().position(|v| v.len() != dimension) {
        return Err(ApiError::invalid("vectors", format!("vector {i} has {} dimensions, vector 0 has {dimension}: all must match", vectors[i].len())));
    }
    if operation == Operation::Median && vectors.len() > MAX_MEDIAN_N {
        return Err(ApiError::invalid("vectors", format!("the median takes at most {MAX_MEDIAN_N} vectors, got {}", vectors.len())));
    }
    let weights = match (operation, fields.get("weights").filter(|v| !v.is_null())) {
        (Operation::WeightedAverage, None) => return Err(ApiError::invalid("weights", "`weighted_average` needs `weights`, one per vector")),
        (Operation::WeightedAverage, Some(w)) => {
            let w = vector(w, "`weights`", "weights")?;
            if w.len() != vectors.len() {
                return Err(ApiError::invalid("weights", format!("{} weights for {} vectors", w.len(), vectors.len())));
            }
            if w.iter().any(|&x| x < 0.0) || w.iter().all(|&x| x == 0.0) {
                return Err(ApiError::invalid("weights", "weights must be non-negative and not all zero"));
            }
            Some(w)
        }
        (_, Some(_)) => return Err(ApiError::invalid("weights", "`weights` is for `weighted_average` only")),
        (_, None) => None,
    };
    let gpu = state.gpu.clone();
    let n = vectors.len();
    let result = tokio::task::spawn_blocking(move || run_aggregate(&gpu, operation, &vectors, weights.as_deref()))
        .await
        .map_err(|e| ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "aggregate_failed", e.to_string()))?
        .map_err(|e| ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "aggregate_failed", format!("GPU: {e}")))?;
    context.report(Usage { input_tokens: 0, output_tokens: 0, vectors: n as u64 }, None);
    let body = json!({
        "object": "aggregate",
        "operation": name,
        "count": n,
        "dimension": dimension,
        "result": match result {
            AggregateResult::Vector(v) => json!(v),
            AggregateResult::Scalar(x) => json!(x),
        },
    });
    Ok(Json(body).into_response())
}

enum AggregateResult {
    Vector(Vec<f32>),
    Scalar(f64),
}

/// One aggregate on the GPU: the vectors uploaded as [N, D], one kernel, D floats back (or D + N
/// for the average pairwise cosine, whose last step is a scalar). `weights` is used by the
/// weighted average only (the caller checked it is there).
fn run_aggregate(gpu: &Gpu, operation: Operation, vectors: &[Vec<f32>], weights: Option<&[f32]>) -> hartonomous_kernels::Result<AggregateResult> {
    let (n, d) = (vectors.len(), vectors[0].len());
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    let x = gpu.upload_f32(&flat, &[n, d])?;
    let out = gpu.empty(&[d], DType::F32)?;
    let weights = match (operation, weights) {
        (Operation::WeightedAverage, Some(w)) => Some(gpu.upload_f32(w, &[n])?),
        // Equal weights: the plain average.
        (Operation::WeightedAverage, None) => return run_aggregate(gpu, Operation::Average, vectors, None),
        _ => None,
    };
    let op = match (operation, &weights) {
        (Operation::AveragePairwiseCosine, _) => {
            let norms = gpu.empty(&[n], DType::F32)?;
            gpu.run(|rec| aggregate::unit_sum(rec, &x, &norms, &out))?;
            let (sum, norms) = (gpu.download_f32(&out)?, gpu.download_f32(&norms)?);
            return Ok(AggregateResult::Scalar(aggregate::average_pairwise_cosine(&sum, &norms)));
        }
        (Operation::WeightedAverage, Some(w)) => Aggregate::WeightedMean(w),
        (Operation::Sum, _) => Aggregate::Sum,
        (Operation::Average | Operation::WeightedAverage, _) => Aggregate::Mean,
        (Operation::Median, _) => Aggregate::Median,
        (Operation::StdDev, _) => Aggregate::StdDev,
    };
    gpu.run(|rec| aggregate::aggregate(rec, &x, op, &out))?;
    Ok(AggregateResult::Vector(gpu.download_f32(&out)?))
}

/// The weighted average of equal-length vectors on the GPU (weights normalised), for ensembles.
pub(super) fn weighted_average(gpu: &Gpu, vectors: &[Vec<f32>], weights: &[f32]) -> hartonomous_kernels::Result<Vec<f32>> {
    let out = gpu.empty(&[vectors[0].len()], DType::F32)?;
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    let x = gpu.upload_f32(&flat, &[vectors.len(), vectors[0].len()])?;
    let w = gpu.upload_f32(weights, &[vectors.len()])?;
    gpu.run(|rec| aggregate::aggregate(rec, &x, Aggregate::WeightedMean(&w), &out))?;
    gpu.download_f32(&out)
}
