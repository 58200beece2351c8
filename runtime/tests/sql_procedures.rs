//! The T-SQL procedures (`sql/procedures/001_daemon_procedures.sql`) against the real daemon,
//! without a SQL Server (none runs on these machines): each procedure's request is sent exactly as
//! `sp_invoke_external_rest_endpoint` sends it (FACTS.md: POST, `content-type: application/json;
//! charset=utf-8`, `accept: application/json`, the payload the procedure builds), the answer is
//! wrapped as SQL Server wraps it in `@response` (`{"response": {"status": {"http": {"code",
//! "description"}}, "headers"}, "result": <body>}`), and every JSON path the procedure reads is
//! evaluated against that: the paths are taken from the .sql file itself, so a renamed field on
//! either side fails here.

mod support;

use std::sync::Arc;

use hartonomous_runtime::store::sqlite::SqliteStore;
use serde_json::{json, Value};
use support::daemon::TestDaemon;
use support::*;

const MINILM: &str = "all-MiniLM-L6-v2";
const SMOLLM2: &str = "SmolLM2-135M-Instruct";

fn procedures_sql() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/procedures/001_daemon_procedures.sql");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The text of `CREATE OR ALTER PROCEDURE dbo.<name>` up to its `GO`.
fn procedure(sql: &str, name: &str) -> String {
    let head = format!("CREATE OR ALTER PROCEDURE dbo.{name}\n");
    let start = sql.find(&head).unwrap_or_else(|| panic!("dbo.{name} is not in the procedures file"));
    let end = sql[start..].find("\nGO\n").map_or(sql.len(), |e| start + e);
    sql[start..end].to_string()
}

/// What a procedure reads from `@response`.
#[derive(Debug, Default)]
struct Reads {
    /// `JSON_VALUE(@response, N'…')`: a scalar there.
    values: Vec<String>,
    /// `JSON_QUERY(@response, N'…')`: an object or array there.
    queries: Vec<String>,
    /// `OPENJSON(@response, N'…') WITH (… '$.col' …)`: an array there, whose elements have each
    /// column path.
    tables: Vec<(String, Vec<String>)>,
}

fn literals_after(text: &str, call: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(call) {
        let start = from + at + call.len();
        if let Some(end) = text[start..].find('\'') {
            out.push((start + end, text[start..start + end].to_string()));
        }
        from = start;
    }
    out
}

fn reads(procedure: &str) -> Reads {
    let mut r = Reads {
        values: literals_after(procedure, "JSON_VALUE(@response, N'").into_iter().map(|(_, p)| p).collect(),
        queries: literals_after(procedure, "JSON_QUERY(@response, N'").into_iter().map(|(_, p)| p).collect(),
        ..Reads::default()
    };
    for (end, path) in literals_after(procedure, "OPENJSON(@response, N'") {
        let with = &procedure[end..];
        let open = with.find("WITH (").expect("OPENJSON … WITH (");
        let close = with[open..].find(") AS").expect("WITH (…) AS") + open;
        let columns = literals_after(&with[open..close], " '").into_iter().map(|(_, p)| p).collect();
        r.tables.push((path, columns));
    }
    r
}

/// A JSON path as SQL Server's JSON functions take it (`$.a.b[0].c`, lax mode): the value there,
/// or `None` where a step is missing.
fn at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let rest = path.strip_prefix('$').unwrap_or_else(|| panic!("{path} does not start with $"));
    let mut current = value;
    for step in rest.split('.').skip(1) {
        let (key, indexes) = match step.find('[') {
            Some(i) => (&step[..i], &step[i..]),
            None => (step, ""),
        };
        current = current.get(key)?;
        for index in indexes.split('[').skip(1) {
            let i: usize = index.trim_end_matches(']').parse().unwrap_or_else(|_| panic!("index in {path}"));
            current = current.get(i)?;
        }
    }
    Some(current)
}

/// The daemon's answer to the request `sp_invoke_external_rest_endpoint` sends, wrapped as SQL
/// Server wraps it.
async fn call_as_sql_server(daemon: &TestDaemon, key: &str, path: &str, payload: &str) -> Value {
    let response = daemon
        .client
        .post(format!("{}{path}", daemon.base))
        // The credential's HTTPEndpointHeaders secret (sql/setup/001_daemon_access.sql), which SQL
        // Server adds to every call under its URL prefix.
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json; charset=utf-8")
        .header("accept", "application/json")
        .body(payload.to_string())
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let headers: serde_json::Map<String, Value> =
        response.headers().iter().map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("")))).collect();
    let result: Value = response.json().await.expect("a JSON answer");
    json!({
        "response": {"status": {"http": {"code": status.as_u16(), "description": status.canonical_reason().unwrap_or("")}}, "headers": headers},
        "result": result,
    })
}

/// Every path `name` reads resolves in at least one of `responses` (a procedure with a CASE over
/// outputs reads each path from one kind of answer), with the kind of value the function needs.
#[track_caller]
fn assert_reads_resolve(name: &str, procedure: &str, responses: &[&Value]) {
    let r = reads(procedure);
    assert!(!r.values.is_empty() || !r.queries.is_empty() || !r.tables.is_empty(), "{name} reads nothing from @response");
    for path in &r.values {
        assert!(
            responses.iter().any(|w| at(w, path).is_some_and(|v| !v.is_null() && !v.is_object() && !v.is_array())),
            "{name}: JSON_VALUE {path} is no scalar in {responses:?}"
        );
    }
    for path in &r.queries {
        assert!(
            responses.iter().any(|w| at(w, path).is_some_and(|v| v.is_object() || v.is_array())),
            "{name}: JSON_QUERY {path} is no object or array in {responses:?}"
        );
    }
    for (path, columns) in &r.tables {
        // OPENJSON ... WITH gives a row per element of an array, or one row for an object.
        let rows_at = |w: &Value| -> Vec<Value> {
            match at(w, path) {
                Some(Value::Array(items)) => items.clone(),
                Some(object @ Value::Object(_)) => vec![object.clone()],
                _ => Vec::new(),
            }
        };
        let has_columns = |rows: &[Value]| {
            !rows.is_empty()
                && columns.iter().all(|c| {
                    let key = c.strip_prefix("$.").expect("a column path");
                    rows.iter().all(|row| row.get(key).is_some())
                })
        };
        assert!(
            responses.iter().any(|w| has_columns(&rows_at(w))),
            "{name}: OPENJSON {path} WITH {columns:?} finds no rows with those columns in {responses:?}"
        );
    }
}

/// JSON text as T-SQL's `STRING_ESCAPE(…, 'json')` inside `"…"` gives it.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_procedure_reads_what_the_daemon_answers_as_sql_server_wraps_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    run_ok(&["ingest", "--db", s(&db), s(&minilm_path()), "--name", MINILM]);
    run_ok(&["ingest", "--db", s(&db), s(&smollm2_path()), "--name", SMOLLM2]);
    // The daemon requires keys, as in production: the credential carries the tenant's key.
    let created: Value =
        serde_json::from_str(run_ok(&["keys", "create", "--db", s(&db), "--tenant", "sqlserver", "--json"]).trim()).expect("keys create --json");
    let key = created["key"].as_str().expect("the key").to_string();
    run_ok(&["policy", "allow", "--db", s(&db), "--tenant", "sqlserver", "--operation", "*", "--model", "*"]);
    let store = Arc::new(SqliteStore::open(&db, false).await.expect("opens the store"));
    let daemon = TestDaemon::start(store, support::daemon::options(dir.path().join("data"))).await;
    let sql = procedures_sql();

    // sp_GenerateEmbedding: {"model":"…","input":"…"} to /v1/embeddings.
    let text = "SQL Server calls the daemon; the \"quotes\" and\nnewlines survive STRING_ESCAPE.";
    let payload = format!(r#"{{"model":{},"input":{}}}"#, quoted(MINILM), quoted(text));
    let embedding = call_as_sql_server(&daemon, &key, "/v1/embeddings", &payload).await;
    assert_eq!(embedding["response"]["status"]["http"]["code"], 200, "{embedding}");
    assert_reads_resolve("sp_GenerateEmbedding", &procedure(&sql, "sp_GenerateEmbedding"), &[&embedding]);
    let vector = at(&embedding, "$.result.data[0].embedding").and_then(Value::as_array).expect("the vector");
    assert_eq!(vector.len(), 384, "fits VECTOR(1998) after zero padding");

    // A corpus to search and aggregate: embedded (and so stored) through the daemon.
    let corpus = ["Invoices are due within thirty days.", "The warehouse ships orders every morning.", "Refunds are issued to the original card."];
    let stored = call_as_sql_server(&daemon, &key, "/v1/embeddings", &json!({"model": MINILM, "input": corpus}).to_string()).await;
    assert_eq!(stored["response"]["status"]["http"]["code"], 200, "{stored}");

    // sp_SemanticSearch: {"model","query","k","metric"} to /v1/search; a result set from OPENJSON.
    let payload = format!(r#"{{"model":{},"query":{},"k":3,"metric":"cosine"}}"#, quoted(MINILM), quoted("when must I pay?"));
    let search = call_as_sql_server(&daemon, &key, "/v1/search", &payload).await;
    assert_eq!(search["response"]["status"]["http"]["code"], 200, "{search}");
    assert_reads_resolve("sp_SemanticSearch", &procedure(&sql, "sp_SemanticSearch"), &[&search]);
    assert_eq!(at(&search, "$.result.data[0].results[0].text"), Some(&json!(corpus[0])), "{search}");
    let atom_ids: Vec<i64> = search["result"]["data"][0]["results"].as_array().expect("results").iter().filter_map(|h| h["atom_id"].as_i64()).collect();

    // sp_EnsembleInference: {"models": <@models>, "input", "output"} to /v1/ensemble, for each output.
    let mut ensembles = Vec::new();
    for (models, output) in [
        (json!([{"model": MINILM, "weight": 1}, {"model": MINILM, "weight": 1}]), "embedding"),
        (json!([{"model": SMOLLM2, "weight": 1}]), "next_token"),
        (json!([{"model": SMOLLM2, "weight": 1}]), "completion"),
    ] {
        let payload = format!(r#"{{"models":{models},"input":{},"output":"{output}"}}"#, quoted("The capital of France is"));
        let answer = call_as_sql_server(&daemon, &key, "/v1/ensemble", &payload).await;
        assert_eq!(answer["response"]["status"]["http"]["code"], 200, "{answer}");
        ensembles.push(answer);
    }
    assert_reads_resolve("sp_EnsembleInference", &procedure(&sql, "sp_EnsembleInference"), &ensembles.iter().collect::<Vec<_>>());

    // sp_GenerateText: {"model","prompt","max_tokens","temperature"} to /v1/completions; the
    // temperature as CONVERT(NVARCHAR, @temperature, 3) writes 0 (`0.0000000000000000e+000`).
    let payload = format!(r#"{{"model":{},"prompt":{},"max_tokens":4,"temperature":0.0000000000000000e+000}}"#, quoted(SMOLLM2), quoted("Hello"));
    let generated = call_as_sql_server(&daemon, &key, "/v1/completions", &payload).await;
    assert_eq!(generated["response"]["status"]["http"]["code"], 200, "{generated}");
    assert_reads_resolve("sp_GenerateText", &procedure(&sql, "sp_GenerateText"), &[&generated]);

    // sp_AggregateEmbeddings: {"operation","model","atom_ids": <@atom_ids>} to /v1/aggregate; a
    // vector (JSON_QUERY) or, for the average pairwise cosine, a number (JSON_VALUE).
    let mut aggregates = Vec::new();
    for operation in ["average", "average_pairwise_cosine"] {
        let payload = format!(r#"{{"operation":"{operation}","model":{},"atom_ids":{}}}"#, quoted(MINILM), json!(atom_ids));
        let answer = call_as_sql_server(&daemon, &key, "/v1/aggregate", &payload).await;
        assert_eq!(answer["response"]["status"]["http"]["code"], 200, "{answer}");
        aggregates.push(answer);
    }
    assert_reads_resolve("sp_AggregateEmbeddings", &procedure(&sql, "sp_AggregateEmbeddings"), &aggregates.iter().collect::<Vec<_>>());

    // sp_CallDaemon reads the status of every answer and, on a refusal, the daemon's message and
    // the field it names.
    let payload = format!(r#"{{"model":"no-such-model","input":{}}}"#, quoted("x"));
    let refused = call_as_sql_server(&daemon, &key, "/v1/embeddings", &payload).await;
    assert_eq!(refused["response"]["status"]["http"]["code"], 404, "{refused}");
    assert_reads_resolve("sp_CallDaemon", &procedure(&sql, "sp_CallDaemon"), &[&refused]);
    // A credential with a wrong or revoked key: 401, with the message sp_CallDaemon raises.
    let unauthorised = call_as_sql_server(&daemon, "hk_wrong", "/v1/embeddings", &payload).await;
    assert_eq!(unauthorised["response"]["status"]["http"]["code"], 401, "{unauthorised}");
    assert!(at(&unauthorised, "$.result.error.message").and_then(Value::as_str).is_some_and(|m| m.contains("API key")), "{unauthorised}");
    daemon.stop().await;
}

#[test]
fn the_path_reader_follows_sql_servers_paths_and_finds_every_read() {
    let doc = json!({"result": {"data": [{"embedding": [1.0, 2.0]}], "text": "x"}});
    assert_eq!(at(&doc, "$.result.data[0].embedding"), Some(&json!([1.0, 2.0])));
    assert_eq!(at(&doc, "$.result.text"), Some(&json!("x")));
    assert_eq!(at(&doc, "$.result.data[1].embedding"), None);
    assert_eq!(at(&doc, "$.result.missing"), None);
    let sql = procedures_sql();
    let search = reads(&procedure(&sql, "sp_SemanticSearch"));
    assert_eq!(search.tables.len(), 1, "{search:?}");
    assert_eq!(search.tables[0].1.len(), 6, "six columns in the WITH clause: {search:?}");
    let call = reads(&procedure(&sql, "sp_CallDaemon"));
    assert!(call.values.iter().any(|p| p == "$.response.status.http.code"), "{call:?}");
}
