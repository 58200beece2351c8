//! Acceptance (issue 4, item 5): the `Store` contract suite (`support/contract.rs`), run on the
//! embedded SQLite store always, each case in a fresh file, and on SQL Server 2025 when
//! `HARTONOMOUS_MSSQL_URL` is set (skipped with a message naming the variable otherwise).

mod support;

use hartonomous_runtime::store::{self, sqlite::SCHEMA_VERSION, Store};

async fn fresh_sqlite() -> (tempfile::TempDir, Box<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store::open(dir.path().join("contract.db").to_str().expect("UTF-8")).await.expect("opens SQLite");
    (dir, store)
}

/// The SQL Server under test, or `None` (with a message) when the variable is unset. When it is
/// set, failing to open is a test failure, not a skip.
async fn mssql() -> Option<Box<dyn Store>> {
    let Ok(url) = std::env::var("HARTONOMOUS_MSSQL_URL") else {
        eprintln!("skipped: HARTONOMOUS_MSSQL_URL is not set (see sql/README.md to start a SQL Server 2025)");
        return None;
    };
    Some(store::open(&url).await.unwrap_or_else(|e| panic!("HARTONOMOUS_MSSQL_URL is set, but: {e}")))
}

/// The cases: the shared suite of `support/contract.rs`, and governance's, written here once over
/// `&dyn Store` like the others.
mod contract {
    pub use crate::support::contract::*;

    use hartonomous_loader::Hash256;
    use hartonomous_runtime::store::*;

    /// SHA-256 of `text`, standing in for a bearer token's hash.
    fn token_hash(text: &str) -> Hash256 {
        use sha2::{Digest, Sha256};
        Hash256(Sha256::digest(text.as_bytes()).into())
    }

    /// Governance: keys (their tenant created with the default plan), a taken key id or secret
    /// refused, revocation, rules appended per tenant, tenants and rates upserted, the seeded
    /// standard rates, and the usage ledger read back newest first. Names are unique to the run,
    /// and only this run's rows are looked at, as a SQL Server test database is shared.
    pub async fn governance_rows_round_trip(store: &dyn Store) {
        let (a, b) = (unique("tenant-a"), unique("tenant-b"));
        let ours = |tenant: &str| tenant == a || tenant == b;

        // Keys: the first one creates its tenant with the standard plan and no limits.
        let key = |id: &str, tenant: &str| NewApiKey {
            key_id: id.to_string(),
            tenant: tenant.to_string(),
            label: format!("label of {id}"),
            key_hash: token_hash(&format!("secret of {id}")),
        };
        let (k1, k2) = (key(&unique("k1"), &a), key(&unique("k2"), &a));
        store.add_api_key(&k1).await.expect("first key");
        store.add_api_key(&k2).await.expect("second key");
        let same_id = NewApiKey { key_hash: token_hash(&unique("another secret")), ..k1.clone() };
        match store.add_api_key(&same_id).await {
            Err(StoreError::InvalidRecord { what, .. }) => assert!(what.contains(&k1.key_id), "{what}"),
            other => panic!("a taken key id must be refused, got {other:?}"),
        }
        let same_secret = NewApiKey { key_id: unique("k3"), ..k2.clone() };
        assert!(matches!(store.add_api_key(&same_secret).await, Err(StoreError::InvalidRecord { .. })), "a taken secret");
        assert!(store.revoke_api_key(&k2.key_id).await.expect("revoke"), "k2 was valid");
        assert!(!store.revoke_api_key(&k2.key_id).await.expect("revoke again"), "k2 is revoked already");
        assert!(!store.revoke_api_key(&unique("nobody")).await.expect("revoke unknown"));

        // Rules: appended per tenant, positions from 1; the first rule of b creates tenant b.
        let rule = |tenant: &str, effect: RuleEffect, operation: &str, pattern: &str| NewAccessRule {
            tenant: tenant.to_string(),
            effect,
            operation: operation.to_string(),
            model_pattern: pattern.to_string(),
        };
        let a1 = store.add_access_rule(&rule(&a, RuleEffect::Allow, "embed", "minilm:*")).await.expect("rule a1");
        let b1 = store.add_access_rule(&rule(&b, RuleEffect::Deny, "*", "*")).await.expect("rule b1");
        let a2 = store.add_access_rule(&rule(&a, RuleEffect::Deny, "generate", "smol?:1")).await.expect("rule a2");
        let rows = store.governance().await.expect("governance");
        let rules: Vec<(String, i64, i64, RuleEffect, String, String)> = rows
            .rules
            .iter()
            .filter(|r| ours(&r.tenant))
            .map(|r| (r.tenant.clone(), r.position, r.rule_id, r.effect, r.operation.clone(), r.model_pattern.clone()))
            .collect();
        let mut expected = vec![
            (a.clone(), 1, a1, RuleEffect::Allow, "embed".to_string(), "minilm:*".to_string()),
            (a.clone(), 2, a2, RuleEffect::Deny, "generate".to_string(), "smol?:1".to_string()),
            (b.clone(), 1, b1, RuleEffect::Deny, "*".to_string(), "*".to_string()),
        ];
        expected.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
        assert_eq!(rules, expected, "by tenant, then position");
        assert!(store.remove_access_rule(a1).await.expect("remove"), "a1 existed");
        assert!(!store.remove_access_rule(a1).await.expect("remove again"), "a1 is gone");
        let a3 = store.add_access_rule(&rule(&a, RuleEffect::Allow, "*", "*")).await.expect("rule a3");
        let rows = store.governance().await.expect("governance");
        let positions: Vec<(String, i64, i64)> =
            rows.rules.iter().filter(|r| ours(&r.tenant)).map(|r| (r.tenant.clone(), r.position, r.rule_id)).collect();
        let mut expected = vec![(a.clone(), 2, a2), (a.clone(), 3, a3), (b.clone(), 1, b1)];
        expected.sort();
        assert_eq!(positions, expected, "a removed rule leaves its place empty; new rules go last");

        // Tenants: created with the default plan and no limits, then updated.
        let default = |name: &str| TenantSettings {
            name: name.to_string(),
            plan: DEFAULT_PLAN.to_string(),
            requests_per_minute: None,
            tokens_per_minute: None,
        };
        let mut expected = vec![default(&a), default(&b)];
        expected.sort_by(|x, y| x.name.cmp(&y.name));
        let tenants: Vec<TenantSettings> = rows.tenants.iter().filter(|t| ours(&t.name)).cloned().collect();
        assert_eq!(tenants, expected, "by name");
        let plan = unique("plan");
        let limited = TenantSettings { name: b.clone(), plan: plan.clone(), requests_per_minute: Some(60), tokens_per_minute: Some(10_000) };
        store.put_tenant(&limited).await.expect("put tenant");
        store.put_tenant(&default(&a)).await.expect("put tenant unchanged");

        // Rates: the standard plan is seeded; a plan's rate is created, then replaced.
        let mut rate = OperationRate {
            plan: plan.clone(),
            operation: "embed".into(),
            per_request: 0.5,
            per_1k_input_tokens: 0.25,
            per_1k_output_tokens: 0.0,
            per_vector: 0.001,
        };
        store.put_rate(&rate).await.expect("put rate");
        rate.per_request = 0.75;
        rate.per_1k_output_tokens = 2.0;
        store.put_rate(&rate).await.expect("replace rate");

        let rows = store.governance().await.expect("governance");
        assert_eq!(rows.tenants.iter().find(|t| t.name == b), Some(&limited));
        assert_eq!(rows.tenants.iter().find(|t| t.name == a), Some(&default(&a)));
        let plan_rates: Vec<&OperationRate> = rows.rates.iter().filter(|r| r.plan == plan).collect();
        assert_eq!(plan_rates, vec![&rate], "one row per (plan, operation), the last one put");
        let standard_embed = rows
            .rates
            .iter()
            .find(|r| r.plan == DEFAULT_PLAN && r.operation == "embed")
            .expect("the schema seeds the standard plan's embed rate");
        assert_eq!(standard_embed.per_1k_input_tokens, 0.1);
        for operation in ["embed", "generate", "ensemble", "search", "aggregate"] {
            assert!(rows.rates.iter().any(|r| r.plan == DEFAULT_PLAN && r.operation == operation), "standard {operation}");
        }

        // Keys read back: hash kept, k2 revoked once, k1 still valid.
        let keys: Vec<&ApiKeyRow> = rows.keys.iter().filter(|k| ours(&k.tenant)).collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        for (sent, revoked) in [(&k1, false), (&k2, true)] {
            let row = keys.iter().find(|k| k.key_id == sent.key_id).expect("key stored");
            assert_eq!((&row.tenant, &row.label, row.key_hash), (&sent.tenant, &sent.label, sent.key_hash));
            assert!(row.created_at.contains('T') && row.created_at.ends_with('Z'), "ISO 8601 UTC: {}", row.created_at);
            assert_eq!(row.revoked_at.is_some(), revoked, "{row:?}");
            if let Some(at) = &row.revoked_at {
                assert!(at.contains('T') && at.ends_with('Z') && at.as_str() >= row.created_at.as_str(), "{at}");
            }
        }

        // Usage: three rows, one of them written twice under its key and counted once.
        let request = NewRequest {
            request_key: unique("usage-request"),
            tenant: a.clone(),
            operation: "embed".into(),
            model_names: vec!["m:1".into()],
        };
        let request_id = store.record_request(&request).await.expect("request");
        let record = |tenant: &str, request: Option<RequestId>, operation: &str, n: u16| UsageRecord {
            usage_key: Some(unique("usage")),
            tenant: tenant.to_string(),
            request,
            operation: operation.to_string(),
            model: None,
            model_name: format!("m:{n}"),
            input_tokens: 10 * u64::from(n),
            output_tokens: u64::from(n),
            vectors: u64::from(n),
            compute_ms: 1.25 * f64::from(n),
            billing_units: 0.001 * f64::from(n),
            status_code: 200 + n,
        };
        let first = record(&a, Some(request_id), "embed", 1);
        let second = record(&b, None, "generate", 2);
        let third = record(&a, None, "search", 3);
        store.record_usage(&first).await.expect("usage 1");
        store.record_usage(&second).await.expect("usage 2");
        store.record_usage(&second).await.expect("usage 2 retried");
        store.record_usage(&third).await.expect("usage 3");
        type Seen = (String, Option<String>, String, String, u64, u64, u64, f64, f64, u16);
        let expect = |u: &UsageRecord, request_id: Option<&str>| -> Seen {
            (
                u.tenant.clone(),
                request_id.map(str::to_string),
                u.operation.clone(),
                u.model_name.clone(),
                u.input_tokens,
                u.output_tokens,
                u.vectors,
                u.compute_ms,
                u.billing_units,
                u.status_code,
            )
        };
        let seen = |rows: &[UsageRow]| -> Vec<Seen> {
            rows.iter()
                .filter(|r| ours(&r.tenant))
                .map(|r| {
                    assert!(r.recorded_at.contains('T') && r.recorded_at.ends_with('Z'), "ISO 8601 UTC: {}", r.recorded_at);
                    (
                        r.tenant.clone(),
                        r.request_id.clone(),
                        r.operation.clone(),
                        r.model.clone(),
                        r.input_tokens,
                        r.output_tokens,
                        r.vectors,
                        r.duration_ms,
                        r.billing_units,
                        r.status,
                    )
                })
                .collect()
        };
        let query = |tenant: Option<&str>, since: Option<&str>, limit: usize| UsageQuery {
            tenant: tenant.map(str::to_string),
            since: since.map(str::to_string),
            limit,
        };
        let key = Some(request.request_key.as_str());
        // Every tenant (other runs' rows filtered out), newest first, the retried row once.
        let all = store.usage(&query(None, None, 1000)).await.expect("usage of all tenants");
        assert_eq!(seen(&all), vec![expect(&third, None), expect(&second, None), expect(&first, key)]);
        assert_eq!(store.usage(&query(None, None, 1)).await.expect("one row").len(), 1, "the limit holds");
        let of_a = store.usage(&query(Some(&a), None, 10)).await.expect("usage of a");
        assert_eq!(seen(&of_a), vec![expect(&third, None), expect(&first, key)]);
        assert!(of_a[0].usage_id > of_a[1].usage_id, "newest first");
        assert_eq!(seen(&store.usage(&query(Some(&a), None, 1)).await.expect("newest of a")), vec![expect(&third, None)]);
        assert_eq!(seen(&store.usage(&query(Some(&b), None, 10)).await.expect("usage of b")), vec![expect(&second, None)]);
        // Since: the oldest row's own time includes it; a time to come includes nothing.
        let oldest = of_a[1].recorded_at.clone();
        let since_oldest = store.usage(&query(Some(&a), Some(&oldest), 10)).await.expect("usage since");
        assert_eq!(seen(&since_oldest), seen(&of_a), "since {oldest}");
        assert!(store.usage(&query(Some(&a), Some("2999-01-01T00:00:00Z"), 10)).await.expect("usage since").is_empty());
        assert!(store.usage(&query(None, None, 0)).await.expect("limit 0").is_empty());
        // The request's lineage shows its one row, with the new columns.
        let lineage = store.lineage(request_id).await.expect("lineage").expect("recorded");
        assert_eq!(lineage.usage, vec![UsageRecord { usage_key: None, ..first }]);
    }
}

/// One test per contract case and backend, so a failure names both.
macro_rules! contract_tests {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let (_dir, store) = fresh_sqlite().await;
                    contract::$case(store.as_ref()).await;
                    // Each case cleans up: a fresh store is left without orphans or damage.
                    let report = store.verify(None).await.expect("verify");
                    assert!(report.is_clean(), "{:#?}", report.damage);
                    assert_eq!(report.atoms, 0, "the case left atoms behind");
                }
            )*
        }
        mod mssql {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(store) = mssql().await {
                        contract::$case(store.as_ref()).await;
                    }
                }
            )*
        }
    };
}

contract_tests!(
    model_round_trip,
    derived_models_share_atoms_and_keep_lineage,
    dedup_and_remove,
    uncommitted_writes_are_invisible,
    begin_reports_an_existing_model,
    writer_refuses_inconsistent_layers,
    fetch_atoms_in_batches,
    embeddings_and_nearest,
    embeddings_for_the_search_index,
    lineage_is_idempotent,
    model_names_resolve,
    governance_rows_round_trip,
);

#[tokio::test]
async fn a_store_of_a_newer_schema_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("future.db");
    drop(store::open(path.to_str().expect("UTF-8")).await.expect("creates"));
    rusqlite::Connection::open(&path)
        .and_then(|c| c.execute("INSERT INTO SchemaVersion (Version, Description) VALUES (99, 'from the future')", []))
        .expect("writes a newer version");
    let err = store::open(path.to_str().expect("UTF-8")).await.err().expect("refused");
    let text = err.to_string();
    let supported = format!("up to {SCHEMA_VERSION}");
    assert!(text.contains(path.to_str().unwrap()) && text.contains("99") && text.contains(&supported), "{text}");
}

/// A store written by a build of schema version 1 (before models' lineage) opens, is upgraded
/// in place, keeps its rows, and takes derived models.
#[tokio::test]
async fn a_store_of_schema_version_1_is_upgraded_to_models_lineage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("v1.db");
    // Version 1's schema: today's without what version 2 added.
    let mut v1 = include_str!("../src/store/sqlite/schema.sql").to_string();
    for added in [
        "    ParentModelId     INTEGER NULL REFERENCES Models (ModelId),\n",
        "    DerivedBy         TEXT    NULL,\n",
        "CREATE INDEX IF NOT EXISTS IX_Models_ParentModelId ON Models (ParentModelId);\n",
    ] {
        assert!(v1.contains(added), "schema.sql no longer has {added:?}: update this test");
        v1 = v1.replace(added, "");
    }
    {
        let c = rusqlite::Connection::open(&path).expect("creates");
        c.execute_batch(&v1).expect("version 1 schema");
        c.execute_batch(
            "CREATE TABLE SchemaVersion (Version INTEGER PRIMARY KEY, Description TEXT NOT NULL, \
             AppliedAt TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))) STRICT;
             INSERT INTO SchemaVersion (Version, Description) VALUES (1, 'version 1');
             INSERT INTO Models (Name, Version, Architecture, Format, TokenizerKind, ParameterCount, TensorCount, Status, ConfigJson)
             VALUES ('old', '1', 'test', 'synthetic', 'none', 0, 0, 'ingesting', '{}');",
        )
        .expect("a version 1 store with one row");
    }
    let store = store::open(path.to_str().expect("UTF-8")).await.expect("opens and upgrades");
    let models = store.list_models().await.expect("list");
    assert_eq!(models.len(), 1);
    assert_eq!((models[0].name.as_str(), models[0].parent, models[0].derived_by.as_deref()), ("old", None, None));
    let version: i64 = rusqlite::Connection::open(&path)
        .and_then(|c| c.query_row("SELECT MAX(Version) FROM SchemaVersion", [], |r| r.get(0)))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION, "upgraded to the newest version");
    drop(store);
    // Opening again changes nothing, and the upgraded store passes the lineage contract.
    let store = store::open(path.to_str().expect("UTF-8")).await.expect("opens again");
    contract::derived_models_share_atoms_and_keep_lineage(store.as_ref()).await;
}

#[tokio::test]
async fn opening_is_idempotent_and_reads_need_an_existing_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("h.db");
    let url = format!("sqlite:{}", path.display());
    assert!(matches!(store::open_existing(&url).await, Err(store::StoreError::NotFound { .. })));
    for _ in 0..2 {
        let s = store::open(&url).await.expect("opens");
        assert!(s.list_models().await.expect("list").is_empty());
    }
    let (rows, distinct, newest): (i64, i64, i64) = rusqlite::Connection::open(&path)
        .and_then(|c| {
            c.query_row("SELECT COUNT(*), COUNT(DISTINCT Version), MAX(Version) FROM SchemaVersion", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .expect("reads");
    assert_eq!((rows, newest), (distinct, SCHEMA_VERSION), "opening twice records each version once");
    let mode: String = rusqlite::Connection::open(&path)
        .and_then(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
        .expect("reads");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_file_that_is_not_a_store_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"these are not the pages you are looking for, not at all, no").expect("write");
    let err = store::open(path.to_str().expect("UTF-8")).await.err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("notes.txt") && text.contains("not a SQLite database"), "{text}");
}
