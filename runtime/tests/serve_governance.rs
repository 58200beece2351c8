//! Tenants and governance end to end: keys, rules, limits and rates made with the CLI
//! (`hartonomous keys ...`, `hartonomous policy ...`), enforced by a daemon over HTTPS, and the
//! usage ledger read back through `GET /v1/usage` and with plain SQL on the store file.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hartonomous_runtime::serve::grpc::pb;
use hartonomous_runtime::serve::grpc::pb::hartonomous_client::HartonomousClient;
use hartonomous_runtime::serve::ServeOptions;
use hartonomous_runtime::store::sqlite::SqliteStore;
use serde_json::{json, Value};
use support::daemon::TestDaemon;
use support::*;

const MINILM: &str = "all-MiniLM-L6-v2";

/// `hartonomous keys create --json`: the key and its id.
fn create_key(db: &std::path::Path, tenant: &str) -> (String, String) {
    let out = run_ok(&["keys", "create", "--db", s(db), "--tenant", tenant, "--json"]);
    let v: Value = serde_json::from_str(out.trim()).expect("keys create --json prints JSON");
    (v["key"].as_str().expect("key").to_string(), v["key_id"].as_str().expect("key id").to_string())
}

struct Call {
    status: u16,
    retry_after: Option<String>,
    www_authenticate: Option<String>,
    body: Value,
}

async fn call(daemon: &TestDaemon, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Call {
    let url = format!("{}{path}", daemon.base);
    let mut request = match method {
        "GET" => daemon.client.get(url),
        _ => daemon.client.post(url),
    };
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request sent");
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (retry_after, www_authenticate) = (header("retry-after"), header("www-authenticate"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Call { status, retry_after, www_authenticate, body }
}

/// An Embed RPC with `key` (if any) as its `authorization` metadata.
fn grpc_embed(text: &str, key: Option<&str>) -> tonic::Request<pb::EmbedRequest> {
    let mut request = tonic::Request::new(pb::EmbedRequest { model: MINILM.into(), input: vec![text.into()] });
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ASCII metadata"));
    }
    request
}

fn embed_body(text: &str) -> Value {
    json!({"model": MINILM, "input": text})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rules_limits_and_the_ledger_are_enforced_and_recorded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    run_ok(&["ingest", "--db", s(&db), s(&minilm_path()), "--name", MINILM]);

    // acme may do anything but search; globex may only list models; `limited` has 2 requests a
    // minute; `metered` 10 tokens a minute. acme is on a plan with its own embed rate.
    let (acme, _) = create_key(&db, "acme");
    let (globex, _) = create_key(&db, "globex");
    let (old_acme, old_acme_id) = create_key(&db, "acme");
    let (limited, _) = create_key(&db, "limited");
    let (metered, _) = create_key(&db, "metered");
    let policy = |args: &[&str]| {
        let mut all = vec!["policy"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--db", s(&db)]);
        run_ok(&all)
    };
    policy(&["allow", "--tenant", "acme", "--operation", "*", "--model", "*"]);
    policy(&["deny", "--tenant", "acme", "--operation", "search", "--model", "all-MiniLM*"]);
    policy(&["allow", "--tenant", "globex", "--operation", "models", "--model", "*"]);
    policy(&["allow", "--tenant", "limited", "--operation", "embed", "--model", "*"]);
    policy(&["allow", "--tenant", "metered", "--operation", "embed", "--model", "*"]);
    policy(&["limits", "--tenant", "limited", "--requests-per-minute", "2"]);
    policy(&["limits", "--tenant", "metered", "--tokens-per-minute", "10"]);
    policy(&["rate", "--plan", "gold", "--operation", "embed", "--per-request", "1", "--per-1k-input-tokens", "2"]);
    policy(&["limits", "--tenant", "acme", "--plan", "gold"]);
    // Bad input to the CLI is refused with what to fix.
    let out = hartonomous(&["policy", "allow", "--db", s(&db), "--tenant", "acme", "--operation", "embedd", "--model", "*"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one of embed, generate"), "{}", String::from_utf8_lossy(&out.stderr));

    let store = Arc::new(SqliteStore::open(&db, false).await.expect("opens the store"));
    let options = ServeOptions {
        models: vec![MINILM.into()],
        max_sequences: 1,
        // Re-read the rows on every request, so a revocation made by the CLI shows at once.
        governance_refresh: Duration::ZERO,
        ..support::daemon::options(dir.path().join("data"))
    };
    let daemon = TestDaemon::start(store, options).await;

    // /health is open; everything else needs a key.
    assert_eq!(call(&daemon, "GET", "/health", None, None).await.status, 200);
    let anonymous = call(&daemon, "POST", "/v1/embeddings", None, Some(&embed_body("hello"))).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(anonymous.body["error"]["type"], "authentication_error", "{}", anonymous.body);
    assert_eq!(anonymous.www_authenticate.as_deref(), Some("Bearer"));
    assert_eq!(call(&daemon, "GET", "/v1/models", None, None).await.status, 401);
    assert_eq!(call(&daemon, "GET", "/nowhere", None, None).await.status, 401, "unknown routes do not answer strangers");
    let forged = call(&daemon, "GET", "/v1/models", Some("hk_0000000000000000000000000000000000000000000000000000000000000000"), None).await;
    assert_eq!(forged.status, 401, "{}", forged.body);

    // acme: embeddings allowed; search denied by its deny rule although `allow * *` matches too.
    let mut acme_tokens = Vec::new();
    let mut acme_request_ids = Vec::new();
    for text in ["Invoices are due within thirty days.", "The warehouse ships every morning."] {
        let answer = call(&daemon, "POST", "/v1/embeddings", Some(&acme), Some(&embed_body(text))).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        acme_tokens.push(answer.body["usage"]["prompt_tokens"].as_u64().expect("usage"));
        acme_request_ids.push(answer.body["hartonomous"]["request_id"].as_str().expect("request id").to_string());
    }
    // The same gate stands before gRPC: refusals as status codes, and an admitted call is
    // ledgered like a REST one.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&daemon.certificate))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(daemon.base.clone()).expect("URI").tls_config(tls).expect("TLS").connect().await.expect("connects");
    let mut grpc = HartonomousClient::new(channel);
    let anonymous = grpc.embed(grpc_embed("hello", None)).await.expect_err("no key");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated, "{anonymous:?}");
    let forbidden = grpc.embed(grpc_embed("hello", Some(&globex))).await.expect_err("globex may not embed");
    assert_eq!(forbidden.code(), tonic::Code::PermissionDenied, "{forbidden:?}");
    let embedded = grpc.embed(grpc_embed("Refunds go to the original card.", Some(&acme))).await.expect("acme may embed").into_inner();
    acme_tokens.push(u64::from(embedded.usage.expect("usage").prompt_tokens));
    acme_request_ids.push(embedded.request_id);

    let searched = call(&daemon, "POST", "/v1/search", Some(&acme), Some(&json!({"model": MINILM, "query": "when to pay?", "k": 1}))).await;
    assert_eq!(searched.status, 403, "{}", searched.body);
    assert_eq!(searched.body["error"]["type"], "permission_error");
    let message = searched.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("deny search all-MiniLM*"), "the refusal names the rule: {message}");
    let lineage = call(&daemon, "GET", &format!("/v1/lineage/{}", acme_request_ids[0]), Some(&acme), None).await;
    assert_eq!(lineage.status, 200, "{}", lineage.body);
    assert_eq!(lineage.body["tenant"], "acme", "lineage records the tenant: {}", lineage.body);

    // globex: listing models only.
    assert_eq!(call(&daemon, "GET", "/v1/models", Some(&globex), None).await.status, 200);
    let refused = call(&daemon, "POST", "/v1/embeddings", Some(&globex), Some(&embed_body("hello"))).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body["error"]["message"].as_str().unwrap_or_default().contains("no rule allows"), "{}", refused.body);

    // A revoked key is refused.
    assert_eq!(call(&daemon, "GET", "/v1/models", Some(&old_acme), None).await.status, 200);
    run_ok(&["keys", "revoke", &old_acme_id, "--db", s(&db)]);
    let revoked = call(&daemon, "GET", "/v1/models", Some(&old_acme), None).await;
    assert_eq!(revoked.status, 401, "{}", revoked.body);
    assert!(revoked.body["error"]["message"].as_str().unwrap_or_default().contains("revoked"), "{}", revoked.body);

    // Over the requests a minute: 429 with Retry-After.
    for _ in 0..2 {
        let ok = call(&daemon, "POST", "/v1/embeddings", Some(&limited), Some(&embed_body("one more"))).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
    }
    let limited_answer = call(&daemon, "POST", "/v1/embeddings", Some(&limited), Some(&embed_body("one more"))).await;
    assert_eq!(limited_answer.status, 429, "{}", limited_answer.body);
    assert_eq!(limited_answer.body["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = limited_answer.retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
    // 2 a minute refill one every 30 s.
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    let exhausted = grpc.embed(grpc_embed("one more", Some(&limited))).await.expect_err("over the limit");
    assert_eq!(exhausted.code(), tonic::Code::ResourceExhausted, "{exhausted:?}");
    assert!(exhausted.metadata().get("retry-after").is_some(), "retry information in the metadata: {exhausted:?}");

    // Over the tokens a minute: the first request (more than 10 tokens) is let in and charged,
    // the next waits for the bucket to refill.
    let long = "A sentence of well over ten tokens, so that one request empties the bucket.";
    let first = call(&daemon, "POST", "/v1/embeddings", Some(&metered), Some(&embed_body(long))).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 10);
    let second = call(&daemon, "POST", "/v1/embeddings", Some(&metered), Some(&embed_body("short"))).await;
    assert_eq!(second.status, 429, "{}", second.body);
    assert!(second.body["error"]["message"].as_str().unwrap_or_default().contains("10 tokens a minute"), "{}", second.body);

    // The ledger: a row per admitted request, written just after each answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let usage = call(&daemon, "GET", "/v1/usage", Some(&acme), None).await;
        assert_eq!(usage.status, 200, "{}", usage.body);
        let rows = usage.body["data"].as_array().cloned().unwrap_or_default();
        if rows.len() >= 3 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows.len(), 3, "acme made three billable requests that were let in (two REST, one gRPC): {rows:?}");
    // Newest first.
    for (row, (tokens, request_id)) in rows.iter().rev().zip(acme_tokens.iter().zip(&acme_request_ids)) {
        assert_eq!(row["tenant"], "acme");
        assert_eq!(row["operation"], "embed");
        assert_eq!(row["model"], MINILM);
        assert_eq!(row["status"], 200);
        assert_eq!(row["input_tokens"].as_u64(), Some(*tokens));
        assert_eq!(row["vectors"], 1);
        assert_eq!(row["request_id"].as_str(), Some(request_id.as_str()));
        // Plan gold, set above: 1 unit a request and 2 per thousand input tokens.
        let expected = 1.0 + 2.0 * *tokens as f64 / 1000.0;
        let units = row["billing_units"].as_f64().expect("units");
        assert!((units - expected).abs() < 1e-12, "units {units}, expected {expected}");
    }
    let other = call(&daemon, "GET", "/v1/usage?tenant=limited", Some(&acme), None).await;
    assert_eq!(other.status, 403, "a tenant reads only its own usage: {}", other.body);

    // Per-tenant metrics.
    let metrics = call(&daemon, "GET", "/metrics", Some(&acme), None).await;
    let text = metrics.body.as_str().unwrap_or_default().to_string();
    assert!(text.contains(r#"hartonomous_tenant_requests_total{operation="embed",status="200",tenant="acme"} 3"#), "{text}");
    assert!(text.contains(r#"hartonomous_tenant_refusals_total{operation="embed",status="429",tenant="limited"} 2"#), "{text}");
    daemon.stop().await;

    // The same ledger in SQL, read beside the store's own code: every tenant's rows and tokens.
    let conn = raw(&db);
    let by_tenant = |tenant: &str| {
        conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(InputTokens), 0), COALESCE(SUM(BillingUnits), 0) FROM UsageLedger WHERE Tenant = ?1",
            [tenant],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, f64>(2)?)),
        )
        .expect("ledger query")
    };
    let (acme_rows, acme_input, _) = by_tenant("acme");
    assert_eq!((acme_rows, acme_input), (3, acme_tokens.iter().sum::<u64>() as i64));
    assert_eq!(by_tenant("limited").0, 2, "the refused third request has no row");
    assert_eq!(by_tenant("metered").0, 1);
    assert_eq!(by_tenant("globex").0, 0, "listing models is not billed");
    let (_, metered_input, metered_units) = by_tenant("metered");
    // The standard plan's embed rate (schema seed): 0.1 units per thousand input tokens.
    assert!((metered_units - 0.1 * metered_input as f64 / 1000.0).abs() < 1e-12, "{metered_units}");
}
