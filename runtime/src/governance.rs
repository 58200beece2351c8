//! Tenants and governance: who is calling (API keys, stored only as SHA-256), what they may do
//! (ordered allow/deny rules over operation × model, evaluated deny-first), how fast (token
//! buckets of requests and of tokens per minute) and what it costs (billing units from the
//! per-operation rates of the tenant's plan). The rows live in the store
//! ([`crate::store::governance`]); this module decides. It knows nothing of HTTP or gRPC: the
//! daemon's front doors map its errors ([`GovernanceError`]) to their status codes.
//!
//! Rules, deny-first: a request for operation `op` on model `m` is refused when any of the
//! tenant's deny rules matches (the first such rule, by position, is named); otherwise it is
//! allowed when an allow rule matches; otherwise it is refused (nothing allows it). A rule
//! matches when its operation is `op` or `*` and its model pattern (a glob: `*` any run, `?` one
//! character) matches `NAME:VERSION` or `NAME`. Operations on no model (listing models,
//! lineage, usage, metrics) are matched as the empty name, so only a
//! pattern of `*` covers them.
//!
//! The daemon reads the rows into a snapshot and re-reads them when it is older than the
//! refresh interval (`--governance-refresh`, 5 s by default), and at once (at most once a
//! second) when a key it does not know is presented: a new key works at once, a revoked key
//! stops working within the interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hartonomous_loader::Hash256;
use sha2::{Digest, Sha256};

use crate::store::{
    AccessRule, ApiKeyRow, GovernanceRows, OperationRate, RuleEffect, Store, StoreError, TenantSettings, DEFAULT_PLAN,
};

/// The tenant of every request while no key exists (an open daemon).
pub const OPEN_TENANT: &str = "default";

/// Bearer tokens start with this, so a leaked one is recognisable (and secret scanners can
/// match it).
pub const KEY_PREFIX: &str = "hk_";

/// What a request does, as access rules and rates name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Embed,
    Generate,
    Ensemble,
    Search,
    Aggregate,
    Models,
    Lineage,
    Usage,
    Metrics,
}

impl Operation {
    pub const ALL: [Operation; 9] = [
        Operation::Embed,
        Operation::Generate,
        Operation::Ensemble,
        Operation::Search,
        Operation::Aggregate,
        Operation::Models,
        Operation::Lineage,
        Operation::Usage,
        Operation::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Embed => "embed",
            Operation::Generate => "generate",
            Operation::Ensemble => "ensemble",
            Operation::Search => "search",
            Operation::Aggregate => "aggregate",
            Operation::Models => "models",
            Operation::Lineage => "lineage",
            Operation::Usage => "usage",
            Operation::Metrics => "metrics",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Operation::ALL.into_iter().find(|op| op.as_str() == text)
    }

    /// The names a rule's operation may take: every operation, or `*`.
    pub fn names() -> String {
        let mut names: Vec<&str> = Operation::ALL.iter().map(|op| op.as_str()).collect();
        names.push("*");
        names.join(", ")
    }
}

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    /// No key, an unknown key, or a revoked one (401 / UNAUTHENTICATED).
    #[error("{0}")]
    Unauthenticated(String),
    /// A rule denies it, or none allows it (403 / PERMISSION_DENIED).
    #[error("{message}")]
    Forbidden { tenant: String, message: String },
    /// Over the tenant's requests or tokens a minute (429 / RESOURCE_EXHAUSTED).
    #[error("{what}")]
    RateLimited { tenant: String, what: String, retry_after: Duration },
    /// The governance rows could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new bearer token: `hk_` and 64 hex digits (244 random bits, from two v4 UUIDs, which draw on
/// the operating system's generator), with its public id (its first 11 characters) and its hash.
pub fn new_key() -> (String, String, Hash256) {
    let token = format!("{KEY_PREFIX}{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let key_id = token[..KEY_PREFIX.len() + 8].to_string();
    let hash = key_hash(&token);
    (token, key_id, hash)
}

/// SHA-256 of a bearer token: what the store keeps.
pub fn key_hash(token: &str) -> Hash256 {
    Hash256(Sha256::digest(token.as_bytes()).into())
}

/// `*` matches any run of characters, `?` one; everything else itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with one backtrack point for the last `*`: linear in practice.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Checks a rule's fields before it is stored, with a message that says what to fix.
pub fn check_rule(operation: &str, model_pattern: &str) -> Result<(), String> {
    if operation != "*" && Operation::parse(operation).is_none() {
        return Err(format!("operation {operation:?} is not one of {}", Operation::names()));
    }
    if model_pattern.is_empty() {
        return Err("the model pattern is empty: use * for every model, or e.g. minilm* or smollm2:2".into());
    }
    Ok(())
}

/// The decision on one (operation, model): `Ok(rule id)` of the allow rule that lets it
/// through, or the reason it is refused.
pub fn decide(rules: &[&AccessRule], tenant: &str, operation: Operation, model: &str) -> Result<i64, String> {
    let (name, _) = crate::store::parse_model_ref(model);
    let matches = |r: &&&AccessRule| {
        (r.operation == "*" || r.operation == operation.as_str())
            && (glob_matches(&r.model_pattern, model) || glob_matches(&r.model_pattern, name))
    };
    let target = if model.is_empty() { String::new() } else { format!(" on model {model:?}") };
    if let Some(deny) = rules.iter().filter(|r| r.effect == RuleEffect::Deny).find(matches) {
        return Err(format!(
            "tenant {tenant:?} may not {}{target}: rule {} (deny {} {}) forbids it",
            operation.as_str(),
            deny.rule_id,
            deny.operation,
            deny.model_pattern
        ));
    }
    if let Some(allow) = rules.iter().filter(|r| r.effect == RuleEffect::Allow).find(matches) {
        return Ok(allow.rule_id);
    }
    Err(if rules.is_empty() {
        format!("tenant {tenant:?} has no access rules, so nothing is allowed: add one with `hartonomous policy allow --tenant {tenant} --operation {} --model '*'`", operation.as_str())
    } else {
        format!("tenant {tenant:?} may not {}{target}: no rule allows it (rules are deny by default)", operation.as_str())
    })
}

/// A token bucket: holds up to `capacity`, refills `capacity` a minute, continuously. It may go
/// negative (tokens are charged after a request, when they are known); a request is admitted
/// while the balance is at least what it needs now.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    balance: f64,
    at: Instant,
}

impl Bucket {
    fn new(capacity: u64, now: Instant) -> Self {
        Bucket { capacity: capacity as f64, balance: capacity as f64, at: now }
    }

    fn refill(&mut self, capacity: u64, now: Instant) {
        self.capacity = capacity as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.balance = (self.balance + elapsed * self.capacity / 60.0).min(self.capacity);
        self.at = now;
    }

    /// Time until the balance reaches `need`.
    fn wait_for(&self, need: f64) -> Duration {
        if self.balance >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.balance) * 60.0 / self.capacity)
        }
    }
}

#[derive(Debug, Default)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// The governance rows as the daemon enforces them.
struct Snapshot {
    /// Whether any key (revoked or not) exists: then every request needs one.
    keys_configured: bool,
    keys: HashMap<Hash256, ApiKeyRow>,
    tenants: HashMap<String, TenantSettings>,
    rules: Vec<AccessRule>,
    rates: HashMap<(String, String), OperationRate>,
    loaded_at: Instant,
}

impl Snapshot {
    fn new(rows: GovernanceRows) -> Self {
        Snapshot {
            keys_configured: !rows.keys.is_empty(),
            keys: rows.keys.into_iter().map(|k| (k.key_hash, k)).collect(),
            tenants: rows.tenants.into_iter().map(|t| (t.name.clone(), t)).collect(),
            rules: rows.rules,
            rates: rows.rates.into_iter().map(|r| ((r.plan.clone(), r.operation.clone()), r)).collect(),
            loaded_at: Instant::now(),
        }
    }

    fn tenant(&self, name: &str) -> TenantSettings {
        self.tenants.get(name).cloned().unwrap_or_else(|| TenantSettings {
            name: name.to_string(),
            plan: DEFAULT_PLAN.to_string(),
            requests_per_minute: None,
            tokens_per_minute: None,
        })
    }
}

/// A request let in: its tenant, and what the ledger needs to price it.
#[derive(Debug, Clone)]
pub struct Admission {
    pub tenant: String,
    pub key_id: Option<String>,
    pub operation: Operation,
    pub rate: Option<OperationRate>,
    pub tokens_per_minute: Option<u64>,
}

/// What a request used, as the ledger prices it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub vectors: u64,
}

impl Admission {
    /// Billing units: the plan's fixed part plus its parts per 1k tokens and per vector.
    pub fn billing_units(&self, usage: &Usage) -> f64 {
        self.rate.as_ref().map_or(0.0, |r| {
            r.per_request
                + r.per_1k_input_tokens * usage.input_tokens as f64 / 1000.0
                + r.per_1k_output_tokens * usage.output_tokens as f64 / 1000.0
                + r.per_vector * usage.vectors as f64
        })
    }
}

/// The daemon's gatekeeper: one per daemon, shared by every front door.
pub struct Governance {
    store: Arc<dyn Store>,
    refresh: Duration,
    snapshot: tokio::sync::RwLock<Arc<Snapshot>>,
    /// One reload at a time; holds when the last forced reload happened.
    reloading: tokio::sync::Mutex<Instant>,
    buckets: Mutex<HashMap<String, Buckets>>,
}

/// Forced reloads (an unknown key) happen at most this often, so random keys cannot make every
/// request a store round-trip.
const FORCED_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

impl Governance {
    /// Reads the rows once; `refresh` is how old the snapshot may grow before it is re-read.
    pub async fn load(store: Arc<dyn Store>, refresh: Duration) -> Result<Self, StoreError> {
        let rows = store.governance().await?;
        let long_ago = Instant::now().checked_sub(FORCED_RELOAD_INTERVAL).unwrap_or_else(Instant::now);
        Ok(Governance {
            store,
            refresh,
            snapshot: tokio::sync::RwLock::new(Arc::new(Snapshot::new(rows))),
            reloading: tokio::sync::Mutex::new(long_ago),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Whether requests need a key (any key exists).
    pub async fn keys_configured(&self) -> bool {
        self.snapshot.read().await.keys_configured
    }

    async fn current(&self) -> Result<Arc<Snapshot>, StoreError> {
        let snapshot = self.snapshot.read().await.clone();
        if snapshot.loaded_at.elapsed() < self.refresh {
            return Ok(snapshot);
        }
        self.reload(false).await
    }

    async fn reload(&self, forced: bool) -> Result<Arc<Snapshot>, StoreError> {
        let mut last_forced = self.reloading.lock().await;
        let snapshot = self.snapshot.read().await.clone();
        // Another request may have reloaded while this one waited for the lock.
        let fresh = if forced { last_forced.elapsed() < FORCED_RELOAD_INTERVAL } else { snapshot.loaded_at.elapsed() < self.refresh };
        if fresh {
            return Ok(snapshot);
        }
        let loaded = Arc::new(Snapshot::new(self.store.governance().await?));
        if forced {
            *last_forced = Instant::now();
        }
        *self.snapshot.write().await = loaded.clone();
        Ok(loaded)
    }

    /// Admits a request: `bearer` is the token from `Authorization: Bearer ...`; `models` the
    /// models it names (each must be allowed; none for operations on no model). Charges one
    /// request to the tenant's bucket and refuses while its token bucket is empty.
    pub async fn admit(&self, bearer: Option<&str>, operation: Operation, models: &[String]) -> Result<Admission, GovernanceError> {
        let mut snapshot = self.current().await?;
        let (tenant, key_id) = if !snapshot.keys_configured {
            (OPEN_TENANT.to_string(), None)
        } else {
            let token = bearer.ok_or_else(|| {
                GovernanceError::Unauthenticated(
                    "this daemon requires an API key: send `Authorization: Bearer hk_...` (create one with `hartonomous keys create --tenant NAME`)".into(),
                )
            })?;
            let hash = key_hash(token);
            if !snapshot.keys.contains_key(&hash) {
                snapshot = self.reload(true).await?;
            }
            let key = snapshot.keys.get(&hash).ok_or_else(|| GovernanceError::Unauthenticated("the API key is not known to this daemon".into()))?;
            if let Some(at) = &key.revoked_at {
                return Err(GovernanceError::Unauthenticated(format!("the API key {} was revoked at {at}", key.key_id)));
            }
            let rules: Vec<&AccessRule> = snapshot.rules.iter().filter(|r| r.tenant == key.tenant).collect();
            let targets: Vec<&str> = if models.is_empty() { vec![""] } else { models.iter().map(String::as_str).collect() };
            for model in targets {
                decide(&rules, &key.tenant, operation, model)
                    .map_err(|message| GovernanceError::Forbidden { tenant: key.tenant.clone(), message })?;
            }
            (key.tenant.clone(), Some(key.key_id.clone()))
        };
        let settings = snapshot.tenant(&tenant);
        self.take_request(&settings)?;
        Ok(Admission {
            rate: snapshot.rates.get(&(settings.plan.clone(), operation.as_str().to_string())).cloned(),
            tenant,
            key_id,
            operation,
            tokens_per_minute: settings.tokens_per_minute,
        })
    }

    fn take_request(&self, settings: &TenantSettings) -> Result<(), GovernanceError> {
        if settings.requests_per_minute.is_none() && settings.tokens_per_minute.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = all.entry(settings.name.clone()).or_default();
        if let Some(tpm) = settings.tokens_per_minute {
            let bucket = buckets.tokens.get_or_insert_with(|| Bucket::new(tpm, now));
            bucket.refill(tpm, now);
            // Tokens are charged after the request; while the balance is below zero, wait.
            let wait = bucket.wait_for(0.0);
            if !wait.is_zero() {
                return Err(GovernanceError::RateLimited {
                    tenant: settings.name.clone(),
                    what: format!("tenant {:?} is over its {tpm} tokens a minute", settings.name),
                    retry_after: wait,
                });
            }
        } else {
            buckets.tokens = None;
        }
        if let Some(rpm) = settings.requests_per_minute {
            let bucket = buckets.requests.get_or_insert_with(|| Bucket::new(rpm, now));
            bucket.refill(rpm, now);
            let wait = bucket.wait_for(1.0);
            if !wait.is_zero() {
                return Err(GovernanceError::RateLimited {
                    tenant: settings.name.clone(),
                    what: format!("tenant {:?} is over its {rpm} requests a minute", settings.name),
                    retry_after: wait,
                });
            }
            bucket.balance -= 1.0;
        } else {
            buckets.requests = None;
        }
        Ok(())
    }

    /// Charges the tokens a finished request used to its tenant's bucket.
    pub fn charge_tokens(&self, admission: &Admission, tokens: u64) {
        let Some(tpm) = admission.tokens_per_minute else { return };
        let now = Instant::now();
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = all.entry(admission.tenant.clone()).or_default().tokens.get_or_insert_with(|| Bucket::new(tpm, now));
        bucket.refill(tpm, now);
        bucket.balance -= tokens as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: i64, effect: RuleEffect, operation: &str, pattern: &str) -> AccessRule {
        AccessRule { rule_id: id, tenant: "acme".into(), position: id, effect, operation: operation.into(), model_pattern: pattern.into() }
    }

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("*", "minilm:1"));
        assert!(glob_matches("mini*", "minilm"));
        assert!(glob_matches("*lm:?", "minilm:1"));
        assert!(!glob_matches("*lm:?", "minilm:12"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
        assert!(!glob_matches("smollm2", "smollm2-instruct"));
        assert!(glob_matches("smollm2*", "smollm2-instruct"));
    }

    #[test]
    fn a_deny_wins_over_an_allow_that_matches_the_same_request_whatever_their_order() {
        let allow = rule(1, RuleEffect::Allow, "*", "*");
        let deny = rule(2, RuleEffect::Deny, "generate", "smollm2*");
        for rules in [vec![&allow, &deny], vec![&deny, &allow]] {
            let refused = decide(&rules, "acme", Operation::Generate, "smollm2:1").unwrap_err();
            assert!(refused.contains("rule 2"), "{refused}");
            assert_eq!(decide(&rules, "acme", Operation::Embed, "smollm2:1"), Ok(1));
            assert_eq!(decide(&rules, "acme", Operation::Generate, "minilm:1"), Ok(1));
        }
    }

    #[test]
    fn nothing_is_allowed_without_an_allow_rule() {
        let refused = decide(&[], "acme", Operation::Embed, "minilm").unwrap_err();
        assert!(refused.contains("no access rules"), "{refused}");
        let only_search = rule(1, RuleEffect::Allow, "search", "*");
        let refused = decide(&[&only_search], "acme", Operation::Embed, "minilm").unwrap_err();
        assert!(refused.contains("no rule allows"), "{refused}");
        // Operations on no model are matched as the empty name: only `*` covers them.
        let models_of_minilm = rule(2, RuleEffect::Allow, "models", "minilm*");
        assert!(decide(&[&models_of_minilm], "acme", Operation::Models, "").is_err());
    }

    #[test]
    fn rules_are_checked_before_they_are_stored() {
        assert!(check_rule("embed", "*").is_ok());
        assert!(check_rule("*", "minilm*").is_ok());
        assert!(check_rule("embedd", "*").unwrap_err().contains("embed, generate"));
        assert!(check_rule("embed", "").is_err());
    }

    #[test]
    fn keys_are_long_random_and_stored_only_as_their_hash() {
        let (a, id_a, hash_a) = new_key();
        let (b, _, _) = new_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert!(a.starts_with(&id_a));
        // Independent: `printf %s "$token" | sha256sum`.
        assert_eq!(hex::encode(hash_a.0), hex::encode(Sha256::digest(a.as_bytes())));
    }

    #[test]
    fn a_bucket_refills_continuously_and_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(60, t0);
        bucket.balance = -30.0;
        // 60 a minute is one a second: 30 below zero is 30 s from zero and 31 s from one.
        assert_eq!(bucket.wait_for(0.0).as_secs(), 30);
        assert_eq!(bucket.wait_for(1.0).as_secs(), 31);
        bucket.refill(60, t0 + Duration::from_secs(10));
        assert!((bucket.balance - -20.0).abs() < 1e-9);
        bucket.refill(60, t0 + Duration::from_secs(1000));
        assert_eq!(bucket.balance, 60.0, "never above its capacity");
    }
}
