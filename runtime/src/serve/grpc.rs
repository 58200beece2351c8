//! The gRPC front door: `hartonomous.v1.Hartonomous` (`runtime/proto/hartonomous/v1/
//! hartonomous.proto`) and the standard `grpc.health.v1.Health`, served on the REST port (axum
//! routes the services' paths; HTTP/2 over the same TLS, ALPN `h2`).
//!
//! No operation is implemented twice. Each RPC turns its typed request into the REST JSON body
//! and sends it through the REST router inside the process (`tower::ServiceExt::oneshot` on a
//! clone), with the call's `authorization` metadata as the `Authorization` header; the JSON
//! answer becomes the typed response. So an RPC has exactly its endpoint's validation,
//! semantics, lineage and gate (keys, access rules, rate limits, ledger). An error answer
//! becomes a status through [`api::grpc_status`], the one mapping of both front doors.
//! `Generate` and `Chat` ask for server-sent events (`stream: true` with usage) and forward each
//! chunk as it arrives.
//!
//! proto3 cannot tell an empty string or list from an absent one: empty fields are sent to REST
//! as absent, so a missing field is refused in REST's words (`param` names it).

use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Map, Value};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::Status;
use tower::ServiceExt;

use super::api::{self, ApiError};

/// The messages, the server trait and the client generated from the proto by `build.rs`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("hartonomous.v1");
}

use pb::hartonomous_server::{Hartonomous, HartonomousServer};

/// `router` (the REST router) with the gRPC services added at their paths. The services call
/// the REST router as it is given, without them.
pub async fn mount(router: Router) -> Router {
    let api = HartonomousServer::new(GrpcApi { rest: router.clone() })
        // REST's body limit; answers are as large as REST's.
        .max_decoding_message_size(api::MAX_BODY_BYTES)
        .max_encoding_message_size(usize::MAX);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<HartonomousServer<GrpcApi>>().await;
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let router = route(router, api);
    route(router, health)
}

/// Routes every method of a generated service (`/{package}.{Service}/{Method}`) to it.
fn route<S>(router: Router, service: S) -> Router
where
    S: NamedService + tower::Service<Request<Body>, Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    router.route_service(&format!("/{}/{{*method}}", S::NAME), service)
}

/// The service: a handle to the REST router it dispatches through.
#[derive(Clone)]
pub struct GrpcApi {
    rest: Router,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateChunk, Status>> + Send>>;

impl GrpcApi {
    /// Sends one request through the REST router, as a client over HTTP would.
    async fn dispatch(&self, method: Method, path: &str, metadata: &MetadataMap, body: Option<Value>) -> Result<axum::response::Response, Status> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(value) = metadata.get("authorization") {
            let value = HeaderValue::from_bytes(value.as_encoded_bytes()).map_err(|_| {
                Status::unauthenticated("the authorization metadata is not a valid header value; send `Bearer <key>`")
            })?;
            request = request.header(header::AUTHORIZATION, value);
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| Status::internal(format!("building the REST request for {path}: {e}")))?;
        match self.rest.clone().oneshot(request).await {
            Ok(response) => Ok(response),
            Err(never) => match never {},
        }
    }

    /// A whole JSON answer, or the status of an error answer.
    async fn call(&self, method: Method, path: &str, metadata: &MetadataMap, body: Option<Value>) -> Result<Value, Status> {
        let response = self.dispatch(method, path, metadata, body).await?;
        let (parts, body) = response.into_parts();
        // The answer was built whole in memory by the handler; reading it back adds no bound.
        let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| Status::internal(format!("reading the answer of {path}: {e}")))?;
        if !parts.status.is_success() {
            return Err(rest_error(parts.status, &parts.headers, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| Status::internal(format!("the answer of {path} is not JSON: {e}")))
    }

    /// A streamed generation (`stream: true` is set here) as chunks.
    async fn stream(&self, path: &'static str, metadata: &MetadataMap, mut body: Map<String, Value>) -> Result<ChunkStream, Status> {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        let response = self.dispatch(Method::POST, path, metadata, Some(Value::Object(body))).await?;
        let (parts, body) = response.into_parts();
        if !parts.status.is_success() {
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            return Err(rest_error(parts.status, &parts.headers, &bytes));
        }
        Ok(Box::pin(sse_chunks(body)))
    }
}

/// The status of a REST error answer: its `error` object, status and `Retry-After`.
fn rest_error(status: StatusCode, headers: &HeaderMap, body: &Bytes) -> Status {
    let retry_after = headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<u64>().ok());
    let error = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned())
        .unwrap_or_else(|| json!({"message": String::from_utf8_lossy(body)}));
    api::grpc_status(status, &error, retry_after)
}

// ---- reading answers --------------------------------------------------------------------------
// The answers are the REST handlers' own JSON: a missing field reads as its default.

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn optional_text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn unsigned(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or_default()
}

fn small(v: &Value, key: &str) -> u32 {
    u32::try_from(unsigned(v, key)).unwrap_or(u32::MAX)
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// f32 values written by serde_json (shortest round-trip form), read back to the same f32.
fn floats(v: Option<&Value>) -> Vec<f32> {
    v.and_then(Value::as_array).map_or_else(Vec::new, |a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN) as f32).collect())
}

fn usage(v: &Value) -> Option<pb::Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some(pb::Usage { prompt_tokens: small(u, "prompt_tokens"), completion_tokens: small(u, "completion_tokens"), total_tokens: small(u, "total_tokens") })
}

fn embeddings(v: &Value) -> Vec<pb::Embedding> {
    items(v, "data").iter().map(|d| pb::Embedding { values: floats(d.get("embedding")), index: small(d, "index") }).collect()
}

fn token(v: &Value) -> pb::Token {
    pb::Token {
        id: small(v, "id"),
        text: text(v, "text"),
        logprob: v.get("logprob").and_then(Value::as_f64).unwrap_or_default() as f32,
        top_logprobs: items(v, "top_logprobs").iter().map(token).collect(),
    }
}

// ---- writing requests -------------------------------------------------------------------------

/// The body's fields, where empty strings and lists stay absent.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn text(mut self, key: &str, value: &str) -> Self {
        if !value.is_empty() {
            self.0.insert(key.into(), json!(value));
        }
        self
    }

    fn some(mut self, key: &str, value: Option<impl Into<Value>>) -> Self {
        if let Some(value) = value {
            self.0.insert(key.into(), value.into());
        }
        self
    }

    fn list<T: Into<Value> + Clone>(mut self, key: &str, values: &[T]) -> Self {
        if !values.is_empty() {
            self.0.insert(key.into(), Value::Array(values.iter().cloned().map(Into::into).collect()));
        }
        self
    }

    fn sampling(self, sampling: Option<&pb::Sampling>) -> Self {
        let Some(s) = sampling else { return self };
        self.some("max_tokens", s.max_tokens)
            .some("temperature", s.temperature)
            .some("top_p", s.top_p)
            .some("top_k", s.top_k)
            .some("seed", s.seed)
            .some("repetition_penalty", s.repetition_penalty)
            .list("stop", &s.stop)
    }

    fn json(self) -> Value {
        Value::Object(self.0)
    }
}

fn vectors(vectors: &[pb::Vector]) -> Value {
    Value::Array(vectors.iter().map(|v| json!(v.values)).collect())
}

/// `/v1/lineage/{id}` with the id percent-encoded (RFC 3986 unreserved characters kept).
fn lineage_path(request_id: &str) -> String {
    let mut path = String::from("/v1/lineage/");
    for b in request_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

// ---- streams ----------------------------------------------------------------------------------

/// What every chunk of one generation repeats (REST leaves it out of the usage chunk).
#[derive(Default, Clone)]
struct ChunkIdentity {
    request_id: String,
    weights_root: String,
    model_version: String,
    seed: u64,
}

/// One server-sent event's `data` turned into a chunk: `Ok(None)` for a chunk that carries
/// nothing (the chat role announcement), `Err` for an error event.
fn chunk(data: &Value, identity: &mut ChunkIdentity) -> Result<Option<pb::GenerateChunk>, Status> {
    if let Some(error) = data.get("error") {
        return Err(api::grpc_status(ApiError::stream_error_status(error), error, None));
    }
    if let Some(extra) = data.get("hartonomous") {
        *identity = ChunkIdentity {
            request_id: text(extra, "request_id"),
            weights_root: text(extra, "weights_root"),
            model_version: text(extra, "model_version"),
            seed: unsigned(extra, "seed"),
        };
    }
    let choice = items(data, "choices").first();
    // Completions put the text in `text`, chat in `delta.content`.
    let piece = choice.map(|c| c.get("delta").map_or_else(|| text(c, "text"), |d| text(d, "content"))).unwrap_or_default();
    let finish_reason = choice.and_then(|c| optional_text(c, "finish_reason")).unwrap_or_default();
    let usage = usage(data);
    if piece.is_empty() && finish_reason.is_empty() && usage.is_none() {
        return Ok(None);
    }
    let id = identity.clone();
    Ok(Some(pb::GenerateChunk {
        text: piece,
        finish_reason,
        usage,
        request_id: id.request_id,
        weights_root: id.weights_root,
        model_version: id.model_version,
        seed: id.seed,
    }))
}

/// The next complete event's `data` (its `data:` lines joined), taken from the front of `buffer`.
fn next_event(buffer: &mut String) -> Option<String> {
    // axum's `Sse` ends lines with "\n" and events with a blank line.
    let end = buffer.find("\n\n")?;
    let event: String = buffer.drain(..end + 2).collect();
    let data: Vec<&str> = event
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    Some(data.join("\n"))
}

/// The chunks of a stream of server-sent events ending `data: [DONE]`, read as they arrive.
/// Dropping the stream (the gRPC caller went away) drops the REST body, which stops the
/// generation as a closed HTTP connection does.
fn sse_chunks(body: Body) -> impl Stream<Item = Result<pb::GenerateChunk, Status>> + Send {
    struct State {
        body: axum::body::BodyDataStream,
        buffer: String,
        pending: Vec<u8>,
        identity: ChunkIdentity,
        done: bool,
    }
    let state = State { body: body.into_data_stream(), buffer: String::new(), pending: Vec::new(), identity: ChunkIdentity::default(), done: false };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if state.done {
                return None;
            }
            if let Some(data) = next_event(&mut state.buffer) {
                if data == "[DONE]" {
                    return None;
                }
                let parsed = serde_json::from_str::<Value>(&data).map_err(|e| Status::internal(format!("a streamed chunk is not JSON ({e}): {data}")));
                match parsed.and_then(|v| chunk(&v, &mut state.identity)) {
                    Ok(Some(c)) => return Some((Ok(c), state)),
                    Ok(None) => continue,
                    Err(status) => {
                        state.done = true;
                        return Some((Err(status), state));
                    }
                }
            }
            match state.body.next().await {
                Some(Ok(bytes)) => {
                    // A UTF-8 character may be split between frames: keep its head for the next.
                    state.pending.extend_from_slice(&bytes);
                    let valid = match std::str::from_utf8(&state.pending) {
                        Ok(s) => s.len(),
                        Err(e) => e.valid_up_to(),
                    };
                    let head: Vec<u8> = state.pending.drain(..valid).collect();
                    state.buffer.push_str(&String::from_utf8_lossy(&head));
                }
                Some(Err(e)) => {
                    state.done = true;
                    return Some((Err(Status::internal(format!("reading the stream: {e}"))), state));
                }
                None => {
                    state.done = true;
                    let status = Status::internal("the stream ended before `data: [DONE]` (the daemon is shutting down?)");
                    return Some((Err(status), state));
                }
            }
        }
    })
}

// ---- the RPCs ---------------------------------------------------------------------------------

#[tonic::async_trait]
impl Hartonomous for GrpcApi {
    async fn embed(&self, request: tonic::Request<pb::EmbedRequest>) -> Result<tonic::Response<pb::EmbedResponse>, Status> {
        let r = request.get_ref();
        let body = Fields::default().text("model", &r.model).list("input", &r.input).json();
        let answer = self.call(Method::POST, "/v1/embeddings", request.metadata(), Some(body)).await?;
        let extra = answer.get("hartonomous").cloned().unwrap_or_default();
        Ok(tonic::Response::new(pb::EmbedResponse {
            data: embeddings(&answer),
            model: text(&answer, "model"),
            usage: usage(&answer),
            request_id: text(&extra, "request_id"),
            weights_root: text(&extra, "weights_root"),
            model_version: text(&extra, "model_version"),
            truncated: items(&extra, "truncated")
                .iter()
                .map(|t| pb::Truncation { index: small(t, "index"), tokens: small(t, "tokens"), kept: small(t, "kept") })
                .collect(),
        }))
    }

    type GenerateStream = ChunkStream;

    async fn generate(&self, request: tonic::Request<pb::GenerateRequest>) -> Result<tonic::Response<ChunkStream>, Status> {
        let r = request.get_ref();
        let body = Fields::default().text("model", &r.model).text("prompt", &r.prompt).sampling(r.sampling.as_ref());
        Ok(tonic::Response::new(self.stream("/v1/completions", request.metadata(), body.0).await?))
    }

    type ChatStream = ChunkStream;

    async fn chat(&self, request: tonic::Request<pb::ChatRequest>) -> Result<tonic::Response<ChunkStream>, Status> {
        let r = request.get_ref();
        let messages: Vec<Value> = r.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
        let body = Fields::default().text("model", &r.model).list("messages", &messages).sampling(r.sampling.as_ref());
        Ok(tonic::Response::new(self.stream("/v1/chat/completions", request.metadata(), body.0).await?))
    }

    async fn ensemble(&self, request: tonic::Request<pb::EnsembleRequest>) -> Result<tonic::Response<pb::EnsembleResponse>, Status> {
        let r = request.get_ref();
        let members: Vec<Value> = r
            .models
            .iter()
            .map(|m| Fields::default().text("model", &m.model).some("weight", m.weight).json())
            .collect();
        // One text goes as a string: the form every output takes (generation outputs take no other).
        let input = match r.input.as_slice() {
            [] => None,
            [one] => Some(json!(one)),
            many => Some(json!(many)),
        };
        let body = Fields::default()
            .list("models", &members)
            .some("input", input)
            .text("output", &r.output)
            .sampling(r.sampling.as_ref())
            .some("top_logprobs", r.top_logprobs)
            .json();
        let answer = self.call(Method::POST, "/v1/ensemble", request.metadata(), Some(body)).await?;
        let extra = answer.get("hartonomous").cloned().unwrap_or_default();
        let tokens: Vec<pb::Token> = match answer.get("token") {
            Some(t) if t.is_object() => vec![token(t)],
            _ => items(&answer, "tokens").iter().map(token).collect(),
        };
        let generated = match answer.get("token") {
            Some(t) => text(t, "text"),
            None => text(&answer, "text"),
        };
        Ok(tonic::Response::new(pb::EnsembleResponse {
            data: embeddings(&answer),
            text: generated,
            finish_reason: text(&answer, "finish_reason"),
            tokens,
            members: items(&answer, "members")
                .iter()
                .map(|m| pb::EnsembleMemberUsed {
                    model: text(m, "model"),
                    weight: m.get("weight").and_then(Value::as_f64).unwrap_or_default() as f32,
                    weights_root: text(m, "weights_root"),
                })
                .collect(),
            usage: usage(&answer),
            request_id: text(&extra, "request_id"),
            seed: extra.get("seed").and_then(Value::as_u64),
            json: answer.to_string(),
        }))
    }

    async fn search(&self, request: tonic::Request<pb::SearchRequest>) -> Result<tonic::Response<pb::SearchResponse>, Status> {
        let r = request.get_ref();
        let query = match (r.texts.is_empty(), r.vectors.is_empty()) {
            (false, false) => return Err(ApiError::invalid("query", "send `texts` or `vectors`, not both").into()),
            (false, true) => Some(json!(r.texts)),
            (true, false) => Some(vectors(&r.vectors)),
            (true, true) => None,
        };
        let body = Fields::default()
            .text("model", &r.model)
            .some("query", query)
            .some("k", r.k)
            .some("metric", r.metric.clone())
            .some("modality", r.modality.clone())
            .some("mode", r.mode.clone())
            .some("candidates", r.candidates)
            .json();
        let answer = self.call(Method::POST, "/v1/search", request.metadata(), Some(body)).await?;
        let data = items(&answer, "data")
            .iter()
            .map(|d| pb::SearchResult {
                index: small(d, "index"),
                candidates_scanned: unsigned(d, "candidates_scanned"),
                hits: items(d, "results")
                    .iter()
                    .map(|h| pb::SearchHit {
                        atom_id: h.get("atom_id").and_then(Value::as_i64).unwrap_or_default(),
                        score: h.get("score").and_then(Value::as_f64).unwrap_or(f64::NAN) as f32,
                        atom_hash: text(h, "atom_hash"),
                        modality: text(h, "modality"),
                        text: optional_text(h, "text"),
                        payload_bytes: h.get("payload_bytes").and_then(Value::as_u64),
                    })
                    .collect(),
            })
            .collect();
        let request_id = answer.get("hartonomous").map(|e| text(e, "request_id")).unwrap_or_default();
        Ok(tonic::Response::new(pb::SearchResponse { data, usage: usage(&answer), request_id, json: answer.to_string() }))
    }

    async fn aggregate(&self, request: tonic::Request<pb::AggregateRequest>) -> Result<tonic::Response<pb::AggregateResponse>, Status> {
        let r = request.get_ref();
        let body = Fields::default()
            .text("operation", &r.operation)
            .some("vectors", (!r.vectors.is_empty()).then(|| vectors(&r.vectors)))
            .text("model", &r.model)
            .list("atom_ids", &r.atom_ids)
            .list("weights", &r.weights)
            .json();
        let answer = self.call(Method::POST, "/v1/aggregate", request.metadata(), Some(body)).await?;
        let result = match answer.get("result") {
            Some(Value::Array(_)) => Some(pb::aggregate_response::Result::Vector(pb::Vector { values: floats(answer.get("result")) })),
            Some(Value::Number(n)) => n.as_f64().map(pb::aggregate_response::Result::Scalar),
            _ => None,
        };
        Ok(tonic::Response::new(pb::AggregateResponse {
            operation: text(&answer, "operation"),
            count: unsigned(&answer, "count"),
            dimension: small(&answer, "dimension"),
            result,
        }))
    }

    async fn list_models(&self, request: tonic::Request<pb::ListModelsRequest>) -> Result<tonic::Response<pb::ListModelsResponse>, Status> {
        let answer = self.call(Method::GET, "/v1/models", request.metadata(), None).await?;
        let models = items(&answer, "data")
            .iter()
            .map(|m| {
                let extra = m.get("hartonomous").cloned().unwrap_or_default();
                let count = |key| extra.get(key).and_then(Value::as_u64).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
                pb::Model {
                    id: text(m, "id"),
                    kind: text(&extra, "kind"),
                    version: text(&extra, "version"),
                    weights_root: text(&extra, "weights_root"),
                    dimension: count("dimension"),
                    context: count("context"),
                    healthy: extra.get("healthy").and_then(Value::as_bool).unwrap_or_default(),
                    created: m.get("created").and_then(Value::as_i64).unwrap_or_default(),
                }
            })
            .collect();
        Ok(tonic::Response::new(pb::ListModelsResponse { models, json: answer.to_string() }))
    }

    async fn get_lineage(&self, request: tonic::Request<pb::GetLineageRequest>) -> Result<tonic::Response<pb::GetLineageResponse>, Status> {
        let id = &request.get_ref().request_id;
        if id.is_empty() {
            return Err(ApiError::invalid("request_id", "`request_id` is required: the `request_id` of an earlier answer").into());
        }
        let answer = self.call(Method::GET, &lineage_path(id), request.metadata(), None).await?;
        Ok(tonic::Response::new(pb::GetLineageResponse {
            request_id: text(&answer, "request_id"),
            tenant: text(&answer, "tenant"),
            operation: text(&answer, "operation"),
            models: items(&answer, "models").iter().filter_map(Value::as_str).map(str::to_string).collect(),
            status: text(&answer, "status"),
            json: answer.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_and_their_data_lines_joined() {
        let mut buffer = String::from("data: {\"a\":1}\n\ndata: x\ndata: y\n\ndata: [DO");
        assert_eq!(next_event(&mut buffer).as_deref(), Some("{\"a\":1}"));
        assert_eq!(next_event(&mut buffer).as_deref(), Some("x\ny"));
        assert_eq!(next_event(&mut buffer), None, "an event is complete only at its blank line");
        buffer.push_str("NE]\n\n");
        assert_eq!(next_event(&mut buffer).as_deref(), Some("[DONE]"));
    }

    #[test]
    fn chunks_carry_text_finish_and_usage_and_an_error_event_is_a_status() {
        let mut id = ChunkIdentity::default();
        let role = json!({"choices": [{"delta": {"role": "assistant", "content": ""}, "finish_reason": null}], "hartonomous": {"request_id": "r", "seed": 7}});
        assert!(matches!(chunk(&role, &mut id), Ok(None)), "the role announcement carries nothing");
        let piece = json!({"choices": [{"text": "Hi", "finish_reason": null}], "hartonomous": {"request_id": "r", "seed": 7}});
        let c = chunk(&piece, &mut id).ok().flatten().unwrap_or_default();
        assert_eq!((c.text.as_str(), c.request_id.as_str(), c.seed), ("Hi", "r", 7));
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        let c = chunk(&usage, &mut id).ok().flatten().unwrap_or_default();
        assert_eq!(c.usage.map(|u| u.total_tokens), Some(5));
        assert_eq!(c.request_id, "r", "the usage chunk keeps the generation's identity");
        let error = json!({"error": {"message": "busy", "type": "server_error", "param": null, "code": "model_unhealthy"}});
        assert_eq!(chunk(&error, &mut id).err().map(|s| s.code()), Some(tonic::Code::Unavailable));
    }

    #[test]
    fn lineage_ids_are_percent_encoded() {
        assert_eq!(lineage_path("3f2a-b_c.d~e"), "/v1/lineage/3f2a-b_c.d~e");
        assert_eq!(lineage_path("a/b c"), "/v1/lineage/a%2Fb%20c");
    }
}
