//! The daemon's front gate: one axum layer, in front of every route but `/health` and `/livez`, that
//! authenticates the bearer key, applies the tenant's access rules to the operation and the
//! models the body names, takes a request from the tenant's rate bucket, and after the answer
//! writes the usage ledger row (through the lineage writer) and the per-tenant metrics. gRPC
//! calls pass through the same router ([`super::grpc`]), so one gate serves both front doors.
//!
//! Handlers say what a request used through the [`RequestContext`] the layer puts in the
//! request's extensions. The ledger row is written when the last clone of the context is
//! dropped: by the gate once a whole answer is sent, or, for a stream, when its body and
//! whatever still works for it (a generation thread's sequence) are done, so a client that leaves
//! mid-stream is billed for the tokens generated until the sequence stopped.
//!
//! Ledger rows are written for the billable operations (embed, generate, ensemble, search,
//! aggregate) that were admitted, whatever the handler answered; a 4xx or 5xx answer costs no
//! units. Requests refused at the gate have no row (an unauthenticated caller has no tenant);
//! they are counted in `hartonomous_tenant_refusals_total`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::Value;

use super::api::{ApiError, MAX_BODY_BYTES};
use super::AppState;
use crate::governance::{Admission, GovernanceError, Operation, Usage, OPEN_TENANT};
use crate::store::UsageRecord;

/// What the gate knows of an admitted request, and what its handler reports back. Clones share
/// one state; dropping the last writes the request's ledger row.
#[derive(Clone)]
pub struct RequestContext {
    pub tenant: String,
    inner: Arc<ContextInner>,
}

#[derive(Default)]
struct ContextInner {
    report: Mutex<Report>,
    /// Set by the gate once the answer's status is known (billable operations only).
    settle: Mutex<Option<Settle>>,
}

#[derive(Default)]
struct Report {
    usage: Usage,
    request_key: Option<String>,
}

impl RequestContext {
    /// A context for a request the gate did not see (e.g. a handler called directly): no row.
    pub fn open() -> Self {
        RequestContext { tenant: OPEN_TENANT.to_string(), inner: Arc::default() }
    }

    /// Records what the request used, and the key its lineage is stored under.
    pub fn report(&self, usage: Usage, request_key: Option<&str>) {
        let mut r = self.inner.report.lock().unwrap_or_else(|p| p.into_inner());
        r.usage = usage;
        if let Some(key) = request_key {
            r.request_key = Some(key.to_string());
        }
    }
}

impl Drop for ContextInner {
    fn drop(&mut self) {
        let settle = self.settle.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(settle) = settle {
            let report = self.report.get_mut().unwrap_or_else(|p| p.into_inner());
            settle.write(report.usage, report.request_key.take());
        }
    }
}

/// The operation a route performs; `None` for the routes left open (`/health`, `/livez`).
pub fn operation_of(method: &Method, path: &str) -> Option<Operation> {
    match (method, path) {
        (_, "/health" | "/livez") => None,
        (&Method::POST, "/v1/embeddings") => Some(Operation::Embed),
        (&Method::POST, "/v1/completions" | "/v1/chat/completions") => Some(Operation::Generate),
        (&Method::POST, "/v1/ensemble") => Some(Operation::Ensemble),
        (&Method::POST, "/v1/search") => Some(Operation::Search),
        (&Method::POST, "/v1/aggregate") => Some(Operation::Aggregate),
        (_, "/v1/models") => Some(Operation::Models),
        (_, "/v1/usage") => Some(Operation::Usage),
        (_, "/metrics") => Some(Operation::Metrics),
        (_, p) if p.starts_with("/v1/lineage/") => Some(Operation::Lineage),
        // Unknown routes still need a key: a 404 should not tell a stranger what exists.
        _ => Some(Operation::Models),
    }
}

fn billable(operation: Operation) -> bool {
    matches!(operation, Operation::Embed | Operation::Generate | Operation::Ensemble | Operation::Search | Operation::Aggregate)
}

/// The models a request body names: `model` (a string), and `models` (an array of strings or
/// of objects with a `model`). A body that is not JSON names none: its handler answers the 400.
fn models_named(body: &[u8]) -> Vec<String> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else { return Vec::new() };
    let mut names = Vec::new();
    if let Some(Value::String(m)) = fields.get("model") {
        names.push(m.clone());
    }
    if let Some(Value::Array(members)) = fields.get("models") {
        for member in members {
            match member {
                Value::String(m) => names.push(m.clone()),
                Value::Object(o) => {
                    if let Some(Value::String(m)) = o.get("model") {
                        names.push(m.clone());
                    }
                }
                _ => {}
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn bearer(request: &Request) -> Option<String> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

impl From<GovernanceError> for ApiError {
    fn from(e: GovernanceError) -> Self {
        match e {
            GovernanceError::Unauthenticated(message) => ApiError {
                status: StatusCode::UNAUTHORIZED,
                kind: "authentication_error",
                message,
                param: None,
                code: Some("invalid_api_key"),
                retry_after: None,
            },
            GovernanceError::Forbidden { message, .. } => ApiError::forbidden(None, message),
            GovernanceError::RateLimited { what, retry_after, .. } => {
                let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u32;
                ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    kind: "rate_limit_error",
                    message: format!("{what}; retry in {seconds} s"),
                    param: None,
                    code: Some("rate_limit_exceeded"),
                    retry_after: Some(seconds),
                }
            }
            GovernanceError::Store(e) => ApiError::server(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()),
        }
    }
}

/// How much of an over-limit body the gate reads and throws away before it answers 413.
///
/// A client that sends its whole body before it reads the answer (reqwest, curl, SQL Server's
/// `sp_invoke_external_rest_endpoint`) sees a 413 only if the server reads what it sends: a
/// server that answers and closes with unread bytes in its socket resets the connection, and
/// the client reports a broken pipe instead of the answer (RFC 9112 §9.6 on tear-down). SQL
/// Server sends at most 100 MB (FACTS.md), so a body up to that size is drained, within
/// [`DRAIN_DEADLINE`]; past either bound the gate answers at once and the connection closes.
const DRAIN_LIMIT_BYTES: usize = 100_000_000;

/// How long the gate goes on draining an over-limit body.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the gate did not hand a body on.
enum BodyRefusal {
    /// Past [`MAX_BODY_BYTES`]; `drained` when the whole body was read (the connection stays
    /// usable).
    TooLarge { drained: bool },
    /// The transport failed mid-body.
    Unreadable(axum::Error),
}

/// The request body whole, within [`MAX_BODY_BYTES`]; an over-limit body is drained (see
/// [`DRAIN_LIMIT_BYTES`]) so that the client can read the refusal.
async fn read_body(body: Body) -> Result<Bytes, BodyRefusal> {
    let declared = axum::body::HttpBody::size_hint(&body).exact();
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > DRAIN_LIMIT_BYTES as u64) {
        return Err(BodyRefusal::TooLarge { drained: false });
    }
    let mut whole = Vec::with_capacity(declared.map_or(0, |n| n.min(MAX_BODY_BYTES as u64) as usize));
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyRefusal::Unreadable)?;
        seen += chunk.len();
        if seen > MAX_BODY_BYTES {
            // Up to 16 MiB already read: not kept while the rest is drained.
            drop(whole);
            let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(chunk) => seen += chunk.len(),
                        Err(_) => return false,
                    }
                    if seen > DRAIN_LIMIT_BYTES {
                        return false;
                    }
                }
                true
            })
            .await
            .unwrap_or(false);
            return Err(BodyRefusal::TooLarge { drained });
        }
        whole.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(whole))
}

/// The axum layer (`axum::middleware::from_fn_with_state`).
pub async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(operation) = operation_of(request.method(), request.uri().path()) else {
        let mut request = request;
        request.extensions_mut().insert(RequestContext::open());
        return next.run(request).await;
    };
    let started = Instant::now();
    let token = bearer(&request);
    // The models a rule is checked against come from the body: read it (within the same limit
    // the handlers apply) and hand it on unchanged.
    let (parts, body) = request.into_parts();
    let (body, models) = if parts.method == Method::POST {
        match read_body(body).await {
            Ok(bytes) => {
                let models = models_named(&bytes);
                (Body::from(bytes), models)
            }
            Err(refusal) => {
                let (status, message) = match refusal {
                    BodyRefusal::TooLarge { drained } => (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "the body is larger than the limit of {MAX_BODY_BYTES} bytes{}",
                            if drained { "" } else { " (the rest was not read; the connection closes)" }
                        ),
                    ),
                    BodyRefusal::Unreadable(e) => (StatusCode::BAD_REQUEST, format!("the body could not be read: {e}")),
                };
                return ApiError {
                    status,
                    kind: "invalid_request_error",
                    message,
                    param: Some("body"),
                    code: Some("body_rejected"),
                    retry_after: None,
                }
                .into_response();
            }
        }
    } else {
        (body, Vec::new())
    };
    let admission = match state.governance.admit(token.as_deref(), operation, &models).await {
        Ok(admission) => admission,
        Err(e) => {
            let tenant = match &e {
                GovernanceError::Forbidden { tenant, .. } | GovernanceError::RateLimited { tenant, .. } => tenant.clone(),
                GovernanceError::Unauthenticated(_) => "(unauthenticated)".to_string(),
                GovernanceError::Store(_) => "(unknown)".to_string(),
            };
            let error = ApiError::from(e);
            state.tenant_metrics.refused(&tenant, operation, error.status.as_u16());
            let mut response = error.into_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return response;
        }
    };
    let context = RequestContext { tenant: admission.tenant.clone(), inner: Arc::default() };
    let mut request = Request::from_parts(parts, body);
    request.extensions_mut().insert(context.clone());
    let response = next.run(request).await;
    if !billable(operation) {
        state.tenant_metrics.answered(&admission.tenant, operation, response.status().as_u16(), &Usage::default(), 0.0);
        return response;
    }
    let settle = Settle { state: state.clone(), admission, models, status: response.status().as_u16(), started };
    *context.inner.settle.lock().unwrap_or_else(|p| p.into_inner()) = Some(settle);
    let streaming = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !streaming {
        return response;
    }
    // The body holds the context until it ends or the client leaves.
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk: Result<Bytes, axum::Error>| {
        let _held_until_the_stream_ends = &context;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// What the ledger row of an answered request needs besides its usage.
struct Settle {
    state: Arc<AppState>,
    admission: Admission,
    models: Vec<String>,
    status: u16,
    started: Instant,
}

impl Settle {
    fn write(self, usage: Usage, request_key: Option<String>) {
        let units = if self.status < 400 { self.admission.billing_units(&usage) } else { 0.0 };
        self.state.governance.charge_tokens(&self.admission, usage.input_tokens + usage.output_tokens);
        self.state.tenant_metrics.answered(&self.admission.tenant, self.admission.operation, self.status, &usage, units);
        let record = UsageRecord {
            usage_key: Some(uuid::Uuid::new_v4().to_string()),
            tenant: self.admission.tenant.clone(),
            request: None,
            operation: self.admission.operation.as_str().to_string(),
            model: None,
            model_name: self.models.join(","),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            vectors: usage.vectors,
            compute_ms: self.started.elapsed().as_secs_f64() * 1e3,
            billing_units: units,
            status_code: self.status,
        };
        self.state.lineage.submit_usage(record, request_key);
    }
}

/// Requests, refusals, tokens, vectors and billing units by tenant and operation, for
/// `/metrics`.
#[derive(Default)]
pub struct TenantMetrics {
    counts: Mutex<HashMap<(String, &'static str), TenantCounts>>,
}

#[derive(Default, Clone)]
pub struct TenantCounts {
    /// By HTTP status answered.
    pub answered: HashMap<u16, u64>,
    /// Refused at the gate, by status (401, 403, 429).
    pub refused: HashMap<u16, u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub vectors: u64,
    pub billing_units: f64,
}

impl TenantMetrics {
    fn with(&self, tenant: &str, operation: Operation, f: impl FnOnce(&mut TenantCounts)) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        f(counts.entry((tenant.to_string(), operation.as_str())).or_default());
    }

    fn refused(&self, tenant: &str, operation: Operation, status: u16) {
        self.with(tenant, operation, |c| *c.refused.entry(status).or_default() += 1);
    }

    fn answered(&self, tenant: &str, operation: Operation, status: u16, usage: &Usage, units: f64) {
        self.with(tenant, operation, |c| {
            *c.answered.entry(status).or_default() += 1;
            c.input_tokens += usage.input_tokens;
            c.output_tokens += usage.output_tokens;
            c.vectors += usage.vectors;
            c.billing_units += units;
        });
    }

    /// A copy of every (tenant, operation)'s counts.
    pub fn snapshot(&self) -> Vec<((String, &'static str), TenantCounts)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = counts.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_operations_and_only_health_is_open() {
        assert_eq!(operation_of(&Method::GET, "/health"), None);
        assert_eq!(operation_of(&Method::POST, "/v1/embeddings"), Some(Operation::Embed));
        assert_eq!(operation_of(&Method::POST, "/v1/chat/completions"), Some(Operation::Generate));
        assert_eq!(operation_of(&Method::GET, "/v1/lineage/abc"), Some(Operation::Lineage));
        assert_eq!(operation_of(&Method::GET, "/nowhere"), Some(Operation::Models));
    }

    #[test]
    fn the_models_a_body_names_are_found_in_model_and_models() {
        assert_eq!(models_named(br#"{"model":"minilm","input":"x"}"#), vec!["minilm"]);
        let ensemble = br#"{"models":[{"model":"b","weight":1},{"model":"a"},"c",{"model":"a"}]}"#;
        assert_eq!(models_named(ensemble), vec!["a", "b", "c"]);
        assert!(models_named(b"not json").is_empty());
    }
}
