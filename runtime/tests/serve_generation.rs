//! Text generation end to end: SmolLM2-135M-Instruct ingested into a fresh SQLite store, served
//! over HTTPS, called with a real HTTP client (reqwest, trusting the daemon's certificate).
//! Greedy answers are compared with the float64 numpy reference's tokens and text
//! (`tests/fixtures/models/smollm2_reference.json`, made by `tests/scripts/make_llama_reference.py`),
//! alone and as 8 concurrent requests (half of them streamed), which continuous batching must not
//! change. Then the contract's refusals, seeded sampling, stop sequences, the 503 of a full
//! queue, and lineage read back with plain SQL.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hartonomous_runtime::serve::{self, ServeOptions, ShutdownReport};
use hartonomous_runtime::store::sqlite::SqliteStore;
use hartonomous_runtime::store::Store;
use serde_json::{json, Value};
use support::*;
use tokio::sync::oneshot;

const MODEL: &str = "SmolLM2-135M-Instruct";
const CONTEXT: usize = 256;

struct Stored {
    _dir: tempfile::TempDir,
    db: PathBuf,
    data: PathBuf,
}

fn stored_smollm2() -> Stored {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    let data = dir.path().join("data");
    run_ok(&["ingest", "--db", s(&db), s(&smollm2_path()), "--name", MODEL]);
    Stored { _dir: dir, db, data }
}

fn options(stored: &Stored, max_sequences: usize, queue_capacity: usize) -> ServeOptions {
    ServeOptions { queue_capacity, max_sequences, context: CONTEXT, ..support::daemon::options(stored.data.clone()) }
}

struct Daemon {
    base: String,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<ShutdownReport>>,
}

async fn start(stored: &Stored, options: ServeOptions) -> Daemon {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&stored.db, false).await.expect("opens the store"));
    let daemon = serve::start(store, options).await.expect("daemon starts");
    let pem = std::fs::read(&daemon.tls.as_ref().expect("HTTPS").cert).expect("certificate");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .https_only(true)
        .build()
        .expect("client");
    let base = format!("https://localhost:{}", daemon.addr.port());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        daemon
            .run(
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(60),
            )
            .await
            .expect("clean shutdown")
    });
    Daemon { base, client, shutdown: Some(tx), task: Some(task) }
}

impl Daemon {
    async fn post(&self, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, String) {
        let response = self.client.post(format!("{}{path}", self.base)).json(body).send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.expect("body"))
    }

    async fn json(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, text) = self.post(path, body).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} answered non-JSON ({e}): {text}")))
    }

    async fn stop(mut self) -> ShutdownReport {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running").await.expect("daemon task")
    }
}

/// What one request produced: text, finish reason, completion tokens.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    text: String,
    finish: String,
    completion_tokens: u64,
}

fn endpoint(chat: bool) -> &'static str {
    if chat {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    }
}

/// Sends `body` (to chat or completions), streamed or whole, and reads the answer.
async fn ask(daemon: &Daemon, chat: bool, body: &Value, stream: bool) -> Answer {
    let mut body = body.clone();
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let (status, headers, text) = daemon.post(endpoint(chat), &body).await;
        assert_eq!(status, 200, "{text}");
        assert!(headers["content-type"].to_str().expect("ascii").starts_with("text/event-stream"), "{headers:?}");
        let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        assert_eq!(events.last(), Some(&"[DONE]"), "the stream ends with [DONE]: {text}");
        let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).expect("chunk JSON")).collect();
        let object = if chat { "chat.completion.chunk" } else { "text_completion" };
        assert!(chunks.iter().all(|c| c["object"] == object), "{text}");
        if chat {
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant", "the first chat chunk names the role");
        }
        let mut out = String::new();
        let mut finish = None;
        for c in &chunks {
            if let Some(choice) = c["choices"].get(0) {
                let piece = if chat { &choice["delta"]["content"] } else { &choice["text"] };
                out.push_str(piece.as_str().unwrap_or(""));
                if let Some(f) = choice["finish_reason"].as_str() {
                    assert!(finish.is_none(), "one finish_reason per stream");
                    finish = Some(f.to_string());
                }
            }
        }
        let usage = &chunks.last().expect("a usage chunk")["usage"];
        Answer { text: out, finish: finish.expect("a finish_reason"), completion_tokens: usage["completion_tokens"].as_u64().expect("usage") }
    } else {
        let (status, v) = daemon.json(endpoint(chat), &body).await;
        assert_eq!(status, 200, "{v}");
        let choice = &v["choices"][0];
        let text = if chat {
            assert_eq!(choice["message"]["role"], "assistant");
            choice["message"]["content"].as_str()
        } else {
            choice["text"].as_str()
        };
        let usage = &v["usage"];
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(usage["prompt_tokens"].as_u64().expect("prompt tokens") + usage["completion_tokens"].as_u64().expect("completion tokens"))
        );
        Answer {
            text: text.expect("text").to_string(),
            finish: choice["finish_reason"].as_str().expect("finish_reason").to_string(),
            completion_tokens: usage["completion_tokens"].as_u64().expect("usage"),
        }
    }
}

/// The reference's greedy cases as requests: the chat prompts (ChatML with the template's
/// default system message) as chat messages, the others as plain prompts; and what each must
/// answer: the reference's 32 tokens, cut at the first `<|im_end|>` (where the server stops).
fn reference_requests() -> Vec<(bool, Value, Answer)> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(fixture("models/smollm2_reference.json")).expect("fixture")).expect("JSON");
    let user = regex_user();
    doc["greedy"]
        .as_array()
        .expect("greedy")
        .iter()
        .map(|case| {
            let prompt = case["prompt_text"].as_str().expect("prompt");
            let text = case["text"].as_str().expect("text");
            let ids: Vec<u64> = case["generated_ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id")).collect();
            let (text, finish, tokens) = match (text.find("<|im_end|>"), ids.iter().position(|&id| id == 2)) {
                (Some(cut), Some(n)) => (text[..cut].to_string(), "stop", n as u64),
                _ => (text.to_string(), "length", ids.len() as u64),
            };
            let answer = Answer { text, finish: finish.into(), completion_tokens: tokens };
            match user(prompt) {
                Some(message) => (true, json!({"model": MODEL, "messages": [{"role": "user", "content": message}], "max_tokens": 32, "temperature": 0}), answer),
                None => (false, json!({"model": MODEL, "prompt": prompt, "max_tokens": 32, "temperature": 0}), answer),
            }
        })
        .collect()
}

/// The user message of a ChatML prompt with one user turn.
fn regex_user() -> impl Fn(&str) -> Option<String> {
    |prompt: &str| {
        let start = prompt.find("<|im_start|>user\n")? + "<|im_start|>user\n".len();
        let end = prompt[start..].find("<|im_end|>")? + start;
        Some(prompt[start..end].to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn greedy_answers_match_the_reference_alone_and_eight_at_once_streamed_or_not() {
    let stored = stored_smollm2();
    let daemon = start(&stored, options(&stored, 8, 64)).await;
    let requests = reference_requests();
    assert_eq!(requests.iter().filter(|(chat, ..)| *chat).count(), 2, "two chat and two plain prompts");

    for (chat, body, want) in &requests {
        let got = ask(&daemon, *chat, body, false).await;
        assert_eq!(&got, want, "alone: {body}");
    }

    // Eight at once: the four requests, each whole and streamed.
    let daemon = Arc::new(daemon);
    let mut tasks = Vec::new();
    for stream in [false, true] {
        for (chat, body, want) in requests.clone() {
            let daemon = daemon.clone();
            tasks.push(tokio::spawn(async move { (ask(&daemon, chat, &body, stream).await, want, stream, body) }));
        }
    }
    for task in tasks {
        let (got, want, stream, body) = task.await.expect("request task");
        assert_eq!(got, want, "concurrent (stream={stream}): {body}");
    }
    let (_, metrics) = {
        let r = daemon.client.get(format!("{}/metrics", daemon.base)).send().await.expect("metrics");
        (r.status(), r.text().await.expect("text"))
    };
    let metric = |name: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let (steps, tokens) = (metric("hartonomous_generate_decode_steps_total"), metric("hartonomous_generate_decode_tokens_total"));
    assert!(tokens > steps, "decode steps were batched: {tokens} tokens in {steps} steps");
    let daemon = Arc::try_unwrap(daemon).unwrap_or_else(|_| panic!("no request holds the daemon"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_name_the_field_and_long_answers_are_clipped_to_the_context() {
    let stored = stored_smollm2();
    let daemon = start(&stored, options(&stored, 2, 8)).await;
    let refused = |body: Value, chat: bool, param: &'static str, says: &'static str| {
        let daemon = &daemon;
        async move {
            let (status, v) = daemon.json(endpoint(chat), &body).await;
            assert_eq!(status, 400, "{body} -> {v}");
            assert_eq!(v["error"]["param"], param, "{v}");
            let message = v["error"]["message"].as_str().expect("message");
            assert!(message.contains(says), "{message:?} should say {says:?}");
        }
    };
    refused(json!({"model": "nope", "prompt": "hi"}), false, "model", "not served").await;
    refused(json!({"prompt": "hi"}), false, "model", "required").await;
    refused(json!({"model": MODEL, "prompt": ""}), false, "prompt", "empty").await;
    refused(json!({"model": MODEL, "messages": []}), true, "messages", "empty").await;
    refused(json!({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}), true, "messages", "wizard").await;
    refused(json!({"model": MODEL, "prompt": "hi", "temperature": 3}), false, "temperature", "temperature").await;
    refused(json!({"model": MODEL, "prompt": "hi", "top_p": 0}), false, "top_p", "top_p").await;
    refused(json!({"model": MODEL, "prompt": "hi", "max_tokens": 0}), false, "max_tokens", "at least 1").await;
    refused(json!({"model": MODEL, "prompt": "hi", "n": 2}), false, "n", "one choice").await;
    refused(json!({"model": MODEL, "prompt": "hi", "stop": ["a", ""]}), false, "stop", "").await;
    // 300 tokens of prompt in a 256-token context: 45 too many (one is kept for the answer).
    let long: Vec<u32> = (0..300).map(|i| 1000 + i).collect();
    refused(json!({"model": MODEL, "prompt": long}), false, "prompt", "300 tokens, 45 more than fit").await;

    // max_tokens past the context: clipped, and the answer ends with `length` at the context.
    let prompt: Vec<u32> = (0..250).map(|i| 1000 + (i * 7) % 3000).collect();
    let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": 1000, "temperature": 0});
    let got = ask(&daemon, false, &body, false).await;
    assert_eq!((got.finish.as_str(), got.completion_tokens), ("length", 6), "{got:?}");

    // Seeded sampling: the same seed gives the same text, another seed (almost surely) not.
    let sampled = |seed: u64| json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.0, "top_p": 0.95, "seed": seed});
    let (a, b, c) = (ask(&daemon, false, &sampled(7), false).await, ask(&daemon, false, &sampled(7), true).await, ask(&daemon, false, &sampled(8), false).await);
    assert_eq!(a, b, "same seed, same text (whole and streamed)");
    assert_ne!(a.text, c.text, "seeds 7 and 8 gave the same 12 sampled tokens");

    // A stop sequence ends the answer before it, with `stop`.
    let body = json!({"model": MODEL, "prompt": "Photosynthesis is the process by which", "max_tokens": 32, "temperature": 0, "stop": ["energy"]});
    let got = ask(&daemon, false, &body, false).await;
    assert_eq!((got.text.as_str(), got.finish.as_str()), (" plants convert sunlight into ", "stop"), "{got:?}");
    let got = ask(&daemon, false, &body, true).await;
    assert_eq!((got.text.as_str(), got.finish.as_str()), (" plants convert sunlight into ", "stop"), "streamed: {got:?}");
    daemon.stop().await;

    // Lineage: the stop request's prompt and completion as content atoms, its weights root and
    // seed in the generate step, and the edge prompt -> completion.
    let conn = raw(&stored.db);
    let completed = count(
        &conn,
        "SELECT COUNT(*) FROM AtomGraphEdges e \
         JOIN AtomGraphNodes f ON f.NodeId = e.FromNode AND f.NodeKind = 'atom' JOIN Atoms p ON p.AtomId = f.RefId \
         JOIN AtomGraphNodes t ON t.NodeId = e.ToNode AND t.NodeKind = 'atom' JOIN Atoms c ON c.AtomId = t.RefId \
         WHERE e.RelationType = 'completed_as' AND p.CanonicalText = 'Photosynthesis is the process by which' \
         AND c.CanonicalText = ' plants convert sunlight into '",
    );
    assert_eq!(completed, 1, "the prompt -> completion edge (content-addressed: both requests share it)");
    // By value: a LIKE on the text also matched drawn seeds that begin with 7 (a flaky failure).
    let seeded = count(&conn, "SELECT COUNT(*) FROM InferenceSteps WHERE Operation = 'generate' AND json_extract(ParametersJson, '$.sampling.seed') = 7");
    assert_eq!(seeded, 2, "the seed is in the generate step's parameters");
    let roots = count(&conn, "SELECT COUNT(*) FROM InferenceSteps s JOIN Models m ON m.WeightsRoot = s.WeightsRoot WHERE s.Operation = 'generate'");
    assert_eq!(roots, 6, "every answered request's generate step carries the model's weights root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_generation_queue_answers_503_and_a_client_that_leaves_frees_its_sequence() {
    let stored = stored_smollm2();
    // One sequence at a time and one waiting: of six long requests sent at once, at most two
    // are taken; the others are refused at once.
    let daemon = Arc::new(start(&stored, options(&stored, 1, 1)).await);
    let body = json!({"model": MODEL, "prompt": "The history of the printing press", "max_tokens": 16, "temperature": 0});
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (daemon, body) = (daemon.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let (status, headers, text) = daemon.post("/v1/completions", &body).await;
            (status, headers.get("retry-after").map(|v| v.to_str().unwrap_or("").to_string()), text)
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        let (status, retry_after, text) = task.await.expect("task");
        if status == 503 {
            assert_eq!(retry_after.as_deref(), Some("1"), "{text}");
            assert!(text.contains("queue_full"), "{text}");
        } else {
            assert_eq!(status, 200, "{text}");
        }
        statuses.push(status);
    }
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert!(refused >= 4, "at most two of six requests fit one sequence and one queue place: {statuses:?}");

    // A streaming client that goes away mid-answer frees its sequence (the next request is
    // served by the only slot) and still leaves its lineage, with the text generated so far.
    let mut body = json!({"model": MODEL, "prompt": "Photosynthesis is the process by which", "max_tokens": 200, "temperature": 0, "stream": true});
    let mut response = daemon.client.post(format!("{}/v1/completions", daemon.base)).json(&body).send().await.expect("sent");
    let request_id = response.headers()["x-request-id"].to_str().expect("ascii").to_string();
    let mut seen = String::new();
    while !seen.contains("plants") {
        let chunk = response.chunk().await.expect("chunk").expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    body["stream"] = json!(false);
    body["max_tokens"] = json!(2);
    let next = tokio::time::timeout(Duration::from_secs(120), daemon.json("/v1/completions", &body)).await.expect("served after the disconnect");
    assert_eq!(next.0, 200, "{}", next.1);
    let daemon = Arc::try_unwrap(daemon).unwrap_or_else(|_| panic!("no request holds the daemon"));
    daemon.stop().await;
    let conn = raw(&stored.db);
    let (status, completion_tokens): (String, i64) = conn
        .query_row(
            "SELECT r.Status, u.OutputTokens FROM InferenceRequests r JOIN UsageLedger u ON u.RequestId = r.RequestId WHERE r.RequestKey = ?1",
            [&request_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the disconnected request's lineage");
    assert_eq!(status, "succeeded");
    assert!((2..200).contains(&completion_tokens), "stopped early, after some tokens: {completion_tokens}");
}
