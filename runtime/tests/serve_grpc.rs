//! gRPC end to end: MiniLM, a 3-block student of it and SmolLM2 ingested into a fresh SQLite store
//! by the real binary, the daemon over HTTPS, and a tonic client over TLS (trusting the daemon's
//! certificate, by the name it holds) on the REST port. Every RPC is compared with the same
//! request sent over REST by reqwest: embeddings and ensemble vectors bit for bit, greedy
//! generations' text and usage, search hits (ids, scores, order), aggregates, the model list,
//! lineage; then the health service, and errors: a status per REST error with the field named.

mod support;

use std::sync::Arc;

use hartonomous_runtime::serve::grpc::pb;
use hartonomous_runtime::serve::grpc::pb::hartonomous_client::HartonomousClient;
use hartonomous_runtime::store::sqlite::SqliteStore;
use serde_json::{json, Value};
use support::daemon::TestDaemon;
use support::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

const MINILM: &str = "all-MiniLM-L6-v2";
const STUDENT: &str = "minilm-student3";
const SMOLLM2: &str = "SmolLM2-135M-Instruct";

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("an array").iter().map(|x| x.as_f64().expect("a number") as f32).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// REST's `usage` as the proto's.
fn usage(v: &Value) -> pb::Usage {
    let n = |k: &str| v["usage"][k].as_u64().unwrap_or(0) as u32;
    pb::Usage { prompt_tokens: n("prompt_tokens"), completion_tokens: n("completion_tokens"), total_tokens: n("total_tokens") }
}

/// A streamed generation read whole: its text, finish reason, usage and chunk count.
async fn collect(mut stream: tonic::Streaming<pb::GenerateChunk>) -> (String, String, Option<pb::Usage>, usize) {
    let (mut text, mut finish, mut usage, mut chunks) = (String::new(), String::new(), None, 0);
    while let Some(chunk) = stream.message().await.expect("a chunk, not an error") {
        text.push_str(&chunk.text);
        if !chunk.finish_reason.is_empty() {
            finish = chunk.finish_reason.clone();
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
        assert!(!chunk.request_id.is_empty(), "every chunk names its request: {chunk:?}");
        chunks += 1;
    }
    (text, finish, usage, chunks)
}

#[track_caller]
fn assert_refused(status: &tonic::Status, code: tonic::Code, field: &str) {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), code, "{status:?}");
    let param = status.metadata().get("x-error-param").and_then(|v| v.to_str().ok());
    assert_eq!(param, Some(field), "the metadata names the field: {status:?}");
    if code == tonic::Code::InvalidArgument {
        let violations = status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
        assert_eq!(violations.first().map(|v| v.field.as_str()), Some(field), "BadRequest names the field: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_what_rest_answers_on_the_same_port_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    run_ok(&["ingest", "--db", s(&db), s(&minilm_path()), "--name", MINILM]);
    run_ok(&["student", "--db", s(&db), "--from", MINILM, "--name", STUDENT, "--layers", "0-2"]);
    run_ok(&["ingest", "--db", s(&db), s(&smollm2_path()), "--name", SMOLLM2]);
    let store = Arc::new(SqliteStore::open(&db, false).await.expect("opens the store"));
    let daemon = TestDaemon::start(store, support::daemon::options(dir.path().join("data"))).await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&daemon.certificate)).domain_name("localhost");
    let channel = Channel::from_shared(daemon.base.clone()).expect("URI").tls_config(tls).expect("TLS").connect().await.expect("connects over TLS");
    let mut grpc = HartonomousClient::new(channel.clone());

    // Embed: the same vectors, bit for bit.
    let sentences = ["The cat sat on the mat.", "A recipe for sourdough bread.", "The goalkeeper saved a penalty."];
    let embedded = grpc
        .embed(pb::EmbedRequest { model: MINILM.into(), input: sentences.iter().map(|t| t.to_string()).collect() })
        .await
        .expect("Embed")
        .into_inner();
    let rest = daemon.ok("/v1/embeddings", &json!({"model": MINILM, "input": sentences})).await;
    assert_eq!(embedded.data.len(), sentences.len());
    for (g, r) in embedded.data.iter().zip(rest["data"].as_array().expect("data")) {
        assert_eq!(bits(&g.values), bits(&floats(&r["embedding"])), "embedding {}", g.index);
        assert_eq!(u64::from(g.index), r["index"].as_u64().expect("index"));
    }
    assert_eq!(embedded.usage, Some(usage(&rest)));
    assert_eq!((embedded.model.as_str(), embedded.weights_root.as_str()), (MINILM, rest["hartonomous"]["weights_root"].as_str().expect("root")));
    assert_ne!(embedded.request_id, rest["hartonomous"]["request_id"].as_str().expect("id"), "two requests, two lineage records");

    // GetLineage of the Embed: that request, as REST reads it.
    let lineage = grpc.get_lineage(pb::GetLineageRequest { request_id: embedded.request_id.clone() }).await.expect("GetLineage").into_inner();
    let rest_lineage = daemon.client.get(format!("{}/v1/lineage/{}", daemon.base, embedded.request_id)).send().await.expect("sent");
    let rest_lineage: Value = rest_lineage.json().await.expect("JSON");
    assert_eq!((lineage.request_id.as_str(), lineage.operation.as_str()), (embedded.request_id.as_str(), "embeddings"));
    assert_eq!(lineage.status, rest_lineage["status"].as_str().expect("status"));
    assert_eq!(lineage.models.len(), 1, "{lineage:?}");
    assert!(lineage.models[0].starts_with(MINILM), "{lineage:?}");
    assert_eq!(serde_json::from_str::<Value>(&lineage.json).expect("json"), rest_lineage, "`json` is the REST body");

    // Generate and Chat, greedy: the streamed text and usage equal REST's whole answer.
    let sampling = pb::Sampling { max_tokens: Some(8), temperature: Some(0.0), ..Default::default() };
    let prompt = "The capital of France is";
    let stream = grpc
        .generate(pb::GenerateRequest { model: SMOLLM2.into(), prompt: prompt.into(), sampling: Some(sampling.clone()) })
        .await
        .expect("Generate")
        .into_inner();
    let (text, finish, streamed_usage, chunks) = collect(stream).await;
    let rest = daemon.ok("/v1/completions", &json!({"model": SMOLLM2, "prompt": prompt, "max_tokens": 8, "temperature": 0})).await;
    assert_eq!(text, rest["choices"][0]["text"].as_str().expect("text"));
    assert_eq!(finish, rest["choices"][0]["finish_reason"].as_str().expect("finish"));
    assert_eq!(streamed_usage, Some(usage(&rest)));
    assert!(chunks >= 3, "streamed in pieces, then the finish and the usage: {chunks} chunks");

    let messages = vec![pb::ChatMessage { role: "user".into(), content: "What is 2 + 2?".into() }];
    let stream = grpc
        .chat(pb::ChatRequest { model: SMOLLM2.into(), messages, sampling: Some(sampling.clone()) })
        .await
        .expect("Chat")
        .into_inner();
    let (text, finish, streamed_usage, _) = collect(stream).await;
    let rest = daemon
        .ok("/v1/chat/completions", &json!({"model": SMOLLM2, "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8, "temperature": 0}))
        .await;
    assert_eq!(text, rest["choices"][0]["message"]["content"].as_str().expect("content"));
    assert_eq!(finish, rest["choices"][0]["finish_reason"].as_str().expect("finish"));
    assert_eq!(streamed_usage, Some(usage(&rest)));

    // Ensemble of two embedding models: the same averaged vectors and members.
    let members = vec![
        pb::EnsembleMember { model: MINILM.into(), weight: Some(3.0) },
        pb::EnsembleMember { model: STUDENT.into(), weight: Some(1.0) },
    ];
    let inputs: Vec<String> = sentences[..2].iter().map(|t| t.to_string()).collect();
    let ensembled = grpc
        .ensemble(pb::EnsembleRequest { models: members, input: inputs.clone(), output: "embedding".into(), ..Default::default() })
        .await
        .expect("Ensemble")
        .into_inner();
    let rest = daemon
        .ok("/v1/ensemble", &json!({"models": [{"model": MINILM, "weight": 3}, {"model": STUDENT, "weight": 1}], "input": inputs, "output": "embedding"}))
        .await;
    assert_eq!(ensembled.data.len(), 2);
    for (g, r) in ensembled.data.iter().zip(rest["data"].as_array().expect("data")) {
        assert_eq!(bits(&g.values), bits(&floats(&r["embedding"])), "ensemble embedding {}", g.index);
    }
    let weights: Vec<f32> = ensembled.members.iter().map(|m| m.weight).collect();
    assert_eq!(weights, vec![0.75, 0.25], "normalised weights: {:?}", ensembled.members);
    assert_eq!(ensembled.usage, Some(usage(&rest)));

    // Search, by text and by vector: the same hits in the same order with the same scores.
    let by_text = pb::SearchRequest { model: MINILM.into(), texts: vec!["How do I bake bread?".into()], k: Some(3), ..Default::default() };
    let query = embedded.data[2].values.clone();
    let by_vector = pb::SearchRequest { model: MINILM.into(), vectors: vec![pb::Vector { values: query.clone() }], k: Some(3), metric: Some("dot".into()), ..Default::default() };
    for (request, body) in [
        (by_text, json!({"model": MINILM, "query": ["How do I bake bread?"], "k": 3})),
        (by_vector, json!({"model": MINILM, "query": [query], "k": 3, "metric": "dot"})),
    ] {
        let found = grpc.search(request).await.expect("Search").into_inner();
        let rest = daemon.ok("/v1/search", &body).await;
        let hits = &found.data[0].hits;
        let rest_hits = rest["data"][0]["results"].as_array().expect("results");
        assert_eq!(hits.len(), rest_hits.len(), "{body}");
        assert!(!hits.is_empty(), "the embedded sentences are found");
        for (g, r) in hits.iter().zip(rest_hits) {
            assert_eq!(g.atom_id, r["atom_id"].as_i64().expect("atom id"), "{body}");
            assert_eq!(g.score.to_bits(), (r["score"].as_f64().expect("score") as f32).to_bits(), "{body}");
            assert_eq!(g.text.as_deref(), r["text"].as_str());
        }
        assert_eq!(found.data[0].candidates_scanned, rest["data"][0]["candidates_scanned"].as_u64().expect("scanned"));
    }

    // Aggregate: a vector and a scalar.
    let x = vec![vec![1.0f32, -2.0, 0.5], vec![0.25, 4.0, -1.0], vec![3.0, 0.0, 2.0]];
    let request = |operation: &str| pb::AggregateRequest {
        operation: operation.into(),
        vectors: x.iter().map(|v| pb::Vector { values: v.clone() }).collect(),
        weights: if operation == "weighted_average" { vec![1.0, 2.0, 0.5] } else { Vec::new() },
        ..Default::default()
    };
    for operation in ["weighted_average", "median", "average_pairwise_cosine"] {
        let got = grpc.aggregate(request(operation)).await.expect("Aggregate").into_inner();
        let mut body = json!({"operation": operation, "vectors": x});
        if operation == "weighted_average" {
            body["weights"] = json!([1.0, 2.0, 0.5]);
        }
        let rest = daemon.ok("/v1/aggregate", &body).await;
        assert_eq!((got.count, got.dimension), (3, 3));
        match got.result {
            Some(pb::aggregate_response::Result::Vector(v)) => assert_eq!(bits(&v.values), bits(&floats(&rest["result"])), "{operation}"),
            Some(pb::aggregate_response::Result::Scalar(c)) => assert_eq!(c, rest["result"].as_f64().expect("scalar"), "{operation}"),
            None => panic!("{operation}: no result"),
        }
    }

    // ListModels: the same ids in the same order.
    let models = grpc.list_models(pb::ListModelsRequest {}).await.expect("ListModels").into_inner();
    let rest = daemon.client.get(format!("{}/v1/models", daemon.base)).send().await.expect("sent").json::<Value>().await.expect("JSON");
    let ids: Vec<&str> = models.models.iter().map(|m| m.id.as_str()).collect();
    let rest_ids: Vec<&str> = rest["data"].as_array().expect("data").iter().map(|m| m["id"].as_str().expect("id")).collect();
    assert_eq!(ids, rest_ids);
    let minilm = models.models.iter().find(|m| m.id == MINILM).expect("MiniLM listed");
    assert_eq!((minilm.kind.as_str(), minilm.dimension, minilm.healthy), ("embeddings", Some(384), true));

    // The standard health service, for the whole server and for the API.
    let mut health = HealthClient::new(channel);
    for service in ["", "hartonomous.v1.Hartonomous"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.expect("Check").into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }

    // Errors: REST's, as statuses naming the field.
    let unknown = grpc.embed(pb::EmbedRequest { model: "no-such-model".into(), input: vec!["x".into()] }).await.expect_err("unknown model");
    assert_refused(&unknown, tonic::Code::NotFound, "model");
    let (_, rest) = daemon.post("/v1/embeddings", &json!({"model": "no-such-model", "input": ["x"]})).await;
    assert_eq!(unknown.message(), rest["error"]["message"].as_str().expect("message"), "REST's message");
    let bad_k = pb::SearchRequest { model: MINILM.into(), texts: vec!["x".into()], k: Some(0), ..Default::default() };
    assert_refused(&grpc.search(bad_k).await.expect_err("k = 0"), tonic::Code::InvalidArgument, "k");
    let missing = grpc.embed(pb::EmbedRequest { model: MINILM.into(), input: Vec::new() }).await.expect_err("no input");
    assert_refused(&missing, tonic::Code::InvalidArgument, "input");
    let cold = pb::Sampling { temperature: Some(-1.0), ..Default::default() };
    let refused = grpc.generate(pb::GenerateRequest { model: SMOLLM2.into(), prompt: prompt.into(), sampling: Some(cold) }).await.expect_err("temperature -1");
    assert_refused(&refused, tonic::Code::InvalidArgument, "temperature");
    let nothing = grpc.get_lineage(pb::GetLineageRequest { request_id: "no-such-request".into() }).await.expect_err("unknown request");
    assert_refused(&nothing, tonic::Code::NotFound, "request_id");

    daemon.stop().await;
}
