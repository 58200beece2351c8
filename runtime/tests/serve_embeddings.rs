//! The daemon end to end: MiniLM ingested into a fresh SQLite store, served over HTTPS, called
//! with a real HTTP client (reqwest with rustls, trusting the daemon's generated certificate),
//! and its embeddings compared with the float64 numpy reference in
//! `tests/fixtures/models/minilm_embeddings.json` (made by `tests/scripts/make_bert_reference.py`,
//! cross-checked there against sentence-transformers). Lineage is read back with plain SQL.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hartonomous_runtime::pager::{PagerMetrics, WeightsSource};
use hartonomous_runtime::serve::{self, LineageMode, ServeOptions, ShutdownReport};
use hartonomous_runtime::store::sqlite::SqliteStore;
use hartonomous_runtime::store::Store;
use serde_json::{json, Value};
use support::*;
use tokio::sync::oneshot;

const MODEL: &str = "all-MiniLM-L6-v2";

/// The acceptance bar: cosine similarity with the float64 reference for every sentence.
const MIN_COSINE: f64 = 0.9999;

struct Case {
    name: String,
    text: String,
    token_ids: Vec<u32>,
    embedding: Vec<f64>,
}

fn reference_cases() -> Vec<Case> {
    let path = fixture("models/minilm_embeddings.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("reference fixture")).expect("JSON");
    doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().expect("name").into(),
            text: c["text"].as_str().expect("text").into(),
            token_ids: c["token_ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect(),
            embedding: c["embedding"].as_array().expect("embedding").iter().map(|v| v.as_f64().expect("f64")).collect(),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "embedding lengths");
    let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let x = f64::from(x);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// A temporary store with MiniLM ingested (by the real binary).
struct Stored {
    _dir: tempfile::TempDir,
    db: PathBuf,
    data: PathBuf,
}

fn stored_minilm(extra: &[(&Path, &str)], geometry_max_points: Option<&str>) -> Stored {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    let data = dir.path().join("data");
    let mut args = vec!["ingest", "--db", s(&db)];
    let minilm = minilm_path();
    args.extend([s(&minilm), "--name", MODEL]);
    if let Some(points) = geometry_max_points {
        args.extend(["--geometry-max-points", points]);
    }
    run_ok(&args);
    for (file, name) in extra {
        run_ok(&["ingest", "--db", s(&db), s(file), "--name", name]);
    }
    Stored { _dir: dir, db, data }
}

/// A daemon started in this process over HTTPS, with a client that trusts its certificate.
struct Daemon {
    base: String,
    client: reqwest::Client,
    pager: Arc<PagerMetrics>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<ShutdownReport>>,
}

fn options(stored: &Stored) -> ServeOptions {
    ServeOptions { max_sequences: 8, context: 512, ..support::daemon::options(stored.data.clone()) }
}

async fn open_store(db: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(db, false).await.expect("opens the store"))
}

async fn start(store: Arc<dyn Store>, options: ServeOptions) -> Daemon {
    let daemon = serve::start(store, options).await.expect("daemon starts");
    let tls = daemon.tls.clone().expect("HTTPS");
    let pem = std::fs::read(&tls.cert).expect("certificate");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .https_only(true)
        .build()
        .expect("client");
    // The certificate names localhost; connecting by that name checks it for real.
    let base = format!("https://localhost:{}", daemon.addr.port());
    let pager = daemon.state().pager_metrics.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        daemon
            .run(
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(30),
            )
            .await
            .expect("clean shutdown")
    });
    Daemon { base, client, pager, shutdown: Some(tx), task: Some(task) }
}

impl Daemon {
    async fn post(&self, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .client
            .post(format!("{}/v1/embeddings", self.base))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body: Value = response.json().await.expect("JSON response");
        (status, headers, body)
    }

    async fn embed(&self, inputs: Value) -> Vec<Vec<f32>> {
        let (status, _, body) = self.post(json!({"model": MODEL, "input": inputs})).await;
        assert_eq!(status, 200, "{body}");
        vectors(&body)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.expect("request sent");
        (response.status().as_u16(), response.text().await.expect("body"))
    }

    async fn stop(mut self) -> ShutdownReport {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running").await.expect("daemon task")
    }
}

fn vectors(body: &Value) -> Vec<Vec<f32>> {
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["embedding"].as_array().expect("float array").iter().map(|v| v.as_f64().expect("number") as f32).collect())
        .collect()
}

/// The value of a Prometheus counter or gauge in `/metrics` text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_match_the_float64_reference_alone_batched_and_concurrently() {
    let stored = stored_minilm(&[], None);
    let daemon = start(open_store(&stored.db).await, options(&stored)).await;
    let cases = reference_cases();
    assert!(cases.iter().any(|c| c.name == "punctuation_only") && cases.iter().any(|c| c.name == "long_untruncated"));

    let mut alone = Vec::new();
    for case in &cases {
        let (status, _, body) = daemon.post(json!({"model": MODEL, "input": case.text})).await;
        assert_eq!(status, 200, "{body}");
        let truncated = &body["hartonomous"]["truncated"];
        if case.name == "long_truncated" {
            // The fixture's script counted 365 tokens and kept 256, as sentence-transformers.
            assert_eq!(truncated, &json!([{"index": 0, "tokens": 365, "kept": 256}]), "{}", case.name);
        } else {
            assert!(truncated.is_null(), "{}: not truncated, yet the response says {truncated}", case.name);
        }
        let v = vectors(&body).remove(0);
        let cos = cosine(&v, &case.embedding);
        assert!(cos >= MIN_COSINE, "{}: cosine {cos} with the float64 reference is below {MIN_COSINE}", case.name);
        alone.push(v);
    }
    // One request with every case: padded to the longest, masked; must not change a bit.
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let batched = daemon.embed(json!(texts)).await;
    for ((case, a), b) in cases.iter().zip(&alone).zip(&batched) {
        assert_eq!(a, b, "{}: batched embedding differs from the one computed alone", case.name);
    }
    // Concurrent requests, batched together by the GPU thread.
    let futures: Vec<_> = cases.iter().map(|c| daemon.embed(json!([c.text]))).collect();
    let concurrent = futures_util::future::join_all(futures).await;
    for ((case, a), b) in cases.iter().zip(&alone).zip(&concurrent) {
        assert_eq!(a, &b[0], "{}: embedding differs when sent concurrently with others", case.name);
    }
    // Token arrays (the text's ids without [CLS]/[SEP]) give the same embedding as the text.
    let short = cases.iter().find(|c| c.name == "short").expect("short case");
    let inner = &short.token_ids[1..short.token_ids.len() - 1];
    let from_ids = daemon.embed(json!(inner)).await.remove(0);
    assert_eq!(from_ids, alone[cases.iter().position(|c| c.name == "short").expect("short")]);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_tokenizer_gives_the_reference_token_ids_and_truncates_as_sentence_transformers() {
    use hartonomous_runtime::models::bert::{BertConfig, BertTokenizer};
    let stored = stored_minilm(&[], None);
    let store = open_store(&stored.db).await;
    let row = store.model(MODEL, None).await.expect("query").expect("model");
    let material = store.model_material(row.id).await.expect("query").expect("material");
    let config = BertConfig::from_json(MODEL, &material.config_json).expect("config");
    assert_eq!(config.max_tokens, 256, "sentence_bert_config.json's max_seq_length comes from the store");
    let tokenizer = BertTokenizer::new(MODEL, &material, &config).expect("tokenizer");
    for case in reference_cases() {
        let encoded = tokenizer.encode_text(&case.text).expect("encodes");
        assert_eq!(encoded.ids, case.token_ids, "{}: token ids differ from the reference tokenizer", case.name);
        assert_eq!(encoded.truncated_from.is_some(), case.name == "long_truncated", "{}", case.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_end_to_end_answers_the_openai_contract_and_records_lineage() {
    let stored = stored_minilm(&[], None);
    let daemon = start(open_store(&stored.db).await, options(&stored)).await;

    let (status, headers, body) = daemon
        .post(json!({"model": MODEL, "input": ["hello world", "bonjour le monde"], "user": "ignored", "unknown_field": {"x": 1}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], MODEL);
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"].as_array().expect("floats").len(), 384);
    }
    // Counted with the `tokenizers` package: [CLS] hello world [SEP] is 4 tokens,
    // [CLS] bon ##jou ##r le monde [SEP] is 7.
    assert_eq!(body["usage"], json!({"prompt_tokens": 11, "total_tokens": 11}));
    let request_id = body["hartonomous"]["request_id"].as_str().expect("request id").to_string();
    assert_eq!(headers["x-request-id"], request_id.as_str());
    let weights_root = body["hartonomous"]["weights_root"].as_str().expect("weights root").to_string();

    // base64: the same floats as little-endian f32 bytes.
    let (status, _, b64) = daemon.post(json!({"model": MODEL, "input": "hello world", "encoding_format": "base64", "dimensions": 384})).await;
    assert_eq!(status, 200, "{b64}");
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().expect("base64 string"))
        .expect("valid base64");
    let decoded: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    assert_eq!(decoded, vectors(&body)[0]);

    // Errors: OpenAI's shape, the right status, the field named.
    for (request, status, param, needle) in [
        (json!({"model": MODEL, "input": "x", "dimensions": 128}), 400, "dimensions", "384"),
        (json!({"model": MODEL, "input": 5}), 400, "input", "got a number"),
        (json!({"model": 7, "input": "x"}), 400, "model", "must be a string"),
        (json!({"input": "x"}), 400, "model", "required"),
        (json!({"model": MODEL, "input": ["a", ["b"]]}), 400, "input", "input[1][0]"),
        (json!({"model": MODEL, "input": "x", "encoding_format": "int8"}), 400, "encoding_format", "base64"),
        (json!({"model": "no-such-model", "input": "x"}), 404, "model", MODEL),
        (json!({"model": MODEL, "input": [[999999]]}), 400, "input", "vocabulary"),
    ] {
        let (got, _, body) = daemon.post(request.clone()).await;
        assert_eq!(got, status, "{request} → {body}");
        assert_eq!(body["error"]["param"], param, "{request} → {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{request}: message {message:?} should mention {needle:?}");
        assert!(body["error"]["type"].is_string() && body["error"].get("code").is_some(), "{body}");
    }
    let raw_response = daemon
        .client
        .post(format!("{}/v1/embeddings", daemon.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(raw_response.status().as_u16(), 400);
    // An oversized body is read to its end before the 413 (a server that answers with bytes
    // unread resets the connection, and the client sees a broken pipe instead of the answer);
    // the same connection then carries the next request.
    let pem = std::fs::read(stored.data.join("tls/hartonomous-cert.pem")).expect("certificate");
    let separate = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .build()
        .expect("client");
    let too_large = separate
        .post(format!("{}/v1/embeddings", daemon.base))
        .header("content-type", "application/json")
        .body(vec![b' '; 17 << 20])
        .send()
        .await
        .expect("sent");
    assert_eq!(too_large.status().as_u16(), 413);
    let refused: Value = too_large.json().await.expect("OpenAI error JSON for an oversized body");
    assert_eq!(refused["error"]["param"], "body", "{refused}");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(message.contains("16777216") && !message.contains("not read"), "drained, and says the limit: {message}");
    let after = separate
        .post(format!("{}/v1/embeddings", daemon.base))
        .json(&json!({"model": MODEL, "input": "after the refusal"}))
        .send()
        .await
        .expect("the connection that carried the refused body carries the next request");
    assert_eq!(after.status().as_u16(), 200);

    // A request past 16 KiB of text is tokenized on the blocking pool: same contract.
    let many: Vec<String> = (0..40).map(|i| format!("paragraph {i}: {}", "several plain words in a row ".repeat(20))).collect();
    let (status, _, big) = daemon.post(json!({"model": MODEL, "input": many})).await;
    assert_eq!(status, 200, "{big}");
    assert_eq!(vectors(&big).len(), 40);

    let (status, models) = daemon.get("/v1/models").await;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).expect("JSON");
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"][0]["hartonomous"]["weights_root"], weights_root.as_str());
    let (status, health) = daemon.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let (status, metrics) = daemon.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metric(&metrics, "hartonomous_pager_misses_total") > 0.0);
    assert_eq!(metric(&metrics, "hartonomous_lineage_backlog"), 0.0, "lineage sync: nothing pending");

    // Lineage, read with plain SQL (the daemon ran with --lineage sync).
    let conn = raw(&stored.db);
    let (status, operation, models_json): (String, String, String) = conn
        .query_row(
            "SELECT Status, Operation, ModelNames FROM InferenceRequests WHERE RequestKey = ?1",
            [&request_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("request row");
    assert_eq!((status.as_str(), operation.as_str()), ("succeeded", "embeddings"));
    assert!(models_json.contains(MODEL));
    let inputs = count(&conn, "SELECT COUNT(*) FROM Atoms WHERE Modality = 'text' AND CanonicalText IN ('hello world', 'bonjour le monde')");
    assert_eq!(inputs, 2, "each input text is one content atom");
    let stored_vector: Vec<u8> = conn
        .query_row(
            "SELECT e.EmbeddingVector FROM AtomEmbeddings e JOIN Atoms a ON a.AtomId = e.AtomId WHERE a.CanonicalText = 'hello world'",
            [],
            |r| r.get(0),
        )
        .expect("embedding row");
    let stored_vector: Vec<f32> = stored_vector.chunks(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect();
    assert_eq!(stored_vector, vectors(&body)[0], "the stored embedding is the one returned");
    let step_root: Vec<u8> = conn
        .query_row(
            "SELECT s.WeightsRoot FROM InferenceSteps s JOIN InferenceRequests r ON r.RequestId = s.RequestId WHERE r.RequestKey = ?1",
            [&request_id],
            |r| r.get(0),
        )
        .expect("step row");
    assert_eq!(hex::encode(step_root), weights_root, "the step records the exact weights that ran");
    let edges: Vec<String> = {
        let mut st = conn
            .prepare("SELECT e.RelationType FROM AtomGraphEdges e JOIN InferenceRequests r ON r.RequestId = e.RequestId WHERE r.RequestKey = ?1 ORDER BY e.EdgeId")
            .expect("prepare");
        st.query_map([&request_id], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    for relation in ["ran", "input", "output", "embedded_as", "produced"] {
        assert!(edges.iter().any(|e| e == relation), "edge {relation} missing from {edges:?}");
    }
    assert_eq!(edges.iter().filter(|e| *e == "embedded_as").count(), 2, "input → output, one per input");

    let (status, lineage) = daemon.get(&format!("/v1/lineage/{request_id}")).await;
    assert_eq!(status, 200, "{lineage}");
    let lineage: Value = serde_json::from_str(&lineage).expect("JSON");
    assert_eq!(lineage["status"], "succeeded");
    assert_eq!(lineage["steps"][0]["weights_root"], weights_root.as_str());
    assert_eq!(lineage["usage"][0]["input_tokens"], 11);
    let (status, _) = daemon.get("/v1/lineage/no-such-request").await;
    assert_eq!(status, 404);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_sharing_tensors_share_gpu_buffers_and_a_small_budget_still_embeds_correctly() {
    // A copy of the model folder (configuration and tokenizer included) with one tensor changed.
    let dir = tempfile::tempdir().expect("temp dir");
    let source_folder = minilm_path().parent().expect("model folder").to_path_buf();
    for entry in std::fs::read_dir(&source_folder).expect("model folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json" || e == "txt") {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    std::fs::create_dir_all(dir.path().join("1_Pooling")).expect("mkdir");
    std::fs::copy(source_folder.join("1_Pooling/config.json"), dir.path().join("1_Pooling/config.json")).expect("copy");
    let changed = dir.path().join("model.safetensors");
    write_with_tensor_changed(&minilm_path(), &changed, "encoder.layer.5.output.dense.weight", 4);
    let stored = stored_minilm(&[(&changed, "minilm-finetuned")], None);
    let daemon = start(open_store(&stored.db).await, options(&stored)).await;
    let first = daemon.embed(json!("shared weights")).await;
    let after_first = daemon.pager.counts();
    let (status, _, body) = daemon.post(json!({"model": "minilm-finetuned", "input": "shared weights"})).await;
    assert_eq!(status, 200, "{body}");
    let after_second = daemon.pager.counts();
    // The second model differs in one tensor: exactly one more page-in, the rest are shared.
    assert_eq!(after_second.misses - after_first.misses, 1, "{after_first:?} → {after_second:?}");
    assert!(after_second.hits - after_first.hits >= 100, "{after_first:?} → {after_second:?}");
    assert_ne!(vectors(&body)[0], first[0], "the changed tensor changes the output");
    daemon.stop().await;

    // 60 MiB: less than the model's 90.9 MB of weights, more than its largest tensor (46.9 MB).
    let mut small = options(&stored);
    small.gpu_memory = Some(60 << 20);
    small.models = vec![MODEL.into()];
    let daemon = start(open_store(&stored.db).await, small).await;
    for case in reference_cases().iter().filter(|c| ["short", "unicode_punct", "long_untruncated"].contains(&c.name.as_str())) {
        let v = daemon.embed(json!(case.text)).await.remove(0);
        let cos = cosine(&v, &case.embedding);
        assert!(cos >= MIN_COSINE, "{} under a small budget: cosine {cos}", case.name);
    }
    let counts = daemon.pager.counts();
    assert!(counts.evictions > 0, "a budget below the model's size must evict: {counts:?}");
    assert!(counts.resident_bytes <= 60 << 20, "{counts:?}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_atom_fails_the_request_names_it_and_writes_no_output() {
    let stored = stored_minilm(&[], None);
    let conn = raw(&stored.db);
    let (atom_id, atom_hash): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT a.AtomId, a.ContentHash FROM TensorAtoms a JOIN TensorAtomCoefficients c ON c.AtomId = a.AtomId \
             JOIN ModelLayers l ON l.LayerId = c.LayerId WHERE l.TensorName = 'encoder.layer.3.attention.self.query.weight' \
             ORDER BY c.Ordinal LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("an atom of the layer");
    // Flip one bit of the stored payload.
    let payload: Vec<u8> = conn.query_row("SELECT Payload FROM TensorAtoms WHERE AtomId = ?1", [atom_id], |r| r.get(0)).expect("payload");
    let mut damaged = payload.clone();
    damaged[100] ^= 1;
    conn.execute("UPDATE TensorAtoms SET Payload = ?2 WHERE AtomId = ?1", rusqlite::params![atom_id, damaged]).expect("damage");
    drop(conn);

    let daemon = start(open_store(&stored.db).await, options(&stored)).await;
    let (status, _, body) = daemon.post(json!({"model": MODEL, "input": "this must not be computed"})).await;
    assert_eq!(status, 500, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(&hex::encode(&atom_hash)), "the error names the atom: {message}");
    assert!(message.contains("encoder.layer.3.attention.self.query.weight"), "the error names the layer: {message}");
    assert_eq!(body["error"]["code"], "weights_corrupt");
    // From now on the model is unhealthy: refused at once, and /health says so.
    let (status, _, body) = daemon.post(json!({"model": MODEL, "input": "again"})).await;
    assert_eq!(status, 503, "{body}");
    let (status, health) = daemon.get("/health").await;
    assert_eq!(status, 503, "{health}");
    daemon.stop().await;

    let conn = raw(&stored.db);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM AtomEmbeddings"), 0, "no output row");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM Atoms WHERE Modality = 'embedding'"), 0, "no output atom");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM InferenceRequests WHERE Status = 'failed'"), 2, "both failures recorded");
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM InferenceRequests WHERE Status <> 'failed'"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_written_while_the_store_is_locked_lands_after_it_is_released() {
    let stored = stored_minilm(&[], None);
    let store = open_store(&stored.db).await;
    // Fail fast on the lock so the writer's retry path runs, rather than waiting 30 s.
    store.set_busy_timeout(Duration::from_millis(100)).await.expect("busy timeout");
    let mut opts = options(&stored);
    opts.lineage = LineageMode::Async;
    let daemon = start(store, opts).await;
    daemon.embed(json!("warm up: pages every tensor in")).await;

    // Another process holds the write lock: the store is unavailable for writing.
    let blocker = raw(&stored.db);
    blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock the store");
    let texts: Vec<String> = (0..5).map(|i| format!("sentence number {i} while the store is locked")).collect();
    let mut served = Vec::new();
    for text in &texts {
        let (status, _, body) = daemon.post(json!({"model": MODEL, "input": text})).await;
        assert_eq!(status, 200, "requests are served while lineage cannot be written: {body}");
        served.push(body["hartonomous"]["request_id"].as_str().expect("id").to_string());
    }
    // The writer has failed and is retrying; the backlog shows.
    let mut saw_backlog = false;
    for _ in 0..50 {
        let (_, metrics) = daemon.get("/metrics").await;
        if metric(&metrics, "hartonomous_lineage_retries_total") > 0.0 && metric(&metrics, "hartonomous_lineage_backlog") > 0.0 {
            saw_backlog = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_backlog, "while the store is locked, /metrics shows retries and a backlog");
    blocker.execute_batch("ROLLBACK").expect("release the lock");
    drop(blocker);

    let mut drained = false;
    for _ in 0..200 {
        let (_, metrics) = daemon.get("/metrics").await;
        if metric(&metrics, "hartonomous_lineage_backlog") == 0.0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(drained, "the backlog drains once the store is back");
    daemon.stop().await;
    let conn = raw(&stored.db);
    for key in &served {
        let status: String = conn
            .query_row("SELECT Status FROM InferenceRequests WHERE RequestKey = ?1", [key], |r| r.get(0))
            .unwrap_or_else(|e| panic!("request {key} lineage missing: {e}"));
        assert_eq!(status, "succeeded");
    }
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM AtomEmbeddings e JOIN Atoms a ON a.AtomId = e.AtomId WHERE a.CanonicalText LIKE 'sentence number % while the store is locked'"),
        5,
        "every embedding landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geometry_paged_and_atom_paged_layers_give_identical_embeddings() {
    // Every layer up to 600k elements gets geometry: the norms, biases and all 384×384 and
    // 384×1536 matrices; only the embedding tables stay atoms-only.
    let stored = stored_minilm(&[], Some("600000"));
    let conn = raw(&stored.db);
    let with_geometry = count(&conn, "SELECT COUNT(*) FROM ModelLayers WHERE WeightsGeometry IS NOT NULL");
    assert!(with_geometry >= 100, "{with_geometry} layers with geometry");
    drop(conn);
    let texts: Vec<String> = reference_cases().into_iter().map(|c| c.text).collect();

    let from_atoms = start(open_store(&stored.db).await, options(&stored)).await;
    let a = from_atoms.embed(json!(texts)).await;
    from_atoms.stop().await;
    let mut geometry = options(&stored);
    geometry.weights_source = WeightsSource::Geometry;
    let from_geometry = start(open_store(&stored.db).await, geometry).await;
    let g = from_geometry.embed(json!(texts)).await;
    from_geometry.stop().await;
    assert_eq!(a, g, "geometry-paged weights must give bit-identical embeddings");

    // And the geometry path is really taken, and verified: damage one layer's geometry.
    let conn = raw(&stored.db);
    let wkb: Vec<u8> = conn
        .query_row("SELECT WeightsGeometry FROM ModelLayers WHERE TensorName = 'encoder.layer.0.output.LayerNorm.bias'", [], |r| r.get(0))
        .expect("geometry");
    let mut damaged = wkb.clone();
    // Point 0's Y (the value): byte order (1) + type (4) + count (4), then X (8 bytes), then Y;
    // flip a mantissa bit that survives the conversion to f32 (bit 40 of the f64).
    let y = 1 + 4 + 4 + 8;
    damaged[y + 5] ^= 0x01;
    conn.execute(
        "UPDATE ModelLayers SET WeightsGeometry = ?1 WHERE TensorName = 'encoder.layer.0.output.LayerNorm.bias'",
        [damaged],
    )
    .expect("damage geometry");
    drop(conn);
    let mut geometry = options(&stored);
    geometry.weights_source = WeightsSource::Geometry;
    let daemon = start(open_store(&stored.db).await, geometry).await;
    let (status, _, body) = daemon.post(json!({"model": MODEL, "input": "x"})).await;
    assert_eq!(status, 500, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("encoder.layer.0.output.LayerNorm.bias"), "{body}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_never_loses_an_accepted_request() {
    let stored = stored_minilm(&[], None);
    let mut opts = options(&stored);
    opts.queue_capacity = 1;
    opts.max_batch_tokens = 64;
    opts.lineage = LineageMode::Async;
    let daemon = start(open_store(&stored.db).await, opts).await;
    daemon.embed(json!("warm up")).await;
    let long = "a fairly long sentence that keeps the encoder busy for a while ".repeat(6);
    let futures: Vec<_> = (0..48).map(|_| daemon.post(json!({"model": MODEL, "input": long}))).collect();
    let results = futures_util::future::join_all(futures).await;
    let ok = results.iter().filter(|(s, _, _)| *s == 200).count();
    let busy: Vec<_> = results.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(ok >= 1, "some requests are served");
    assert!(!busy.is_empty(), "a queue of one must turn some of 48 concurrent requests away");
    for (_, headers, body) in &busy {
        assert_eq!(headers.get("retry-after").map(|v| v.to_str().unwrap_or("")), Some("1"), "{body}");
        assert_eq!(body["error"]["code"], "queue_full");
    }
    assert_eq!(ok + busy.len(), 48, "every request is answered 200 or 503");
    daemon.stop().await;
    let conn = raw(&stored.db);
    // Served requests (and the warm-up) all have lineage after shutdown flushed it.
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM InferenceRequests WHERE Status = 'succeeded'"), ok as i64 + 1);
}
